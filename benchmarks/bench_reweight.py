"""rlhf.reweight against the lecture's NumPy expression, same process.

    python benchmarks/bench_reweight.py
"""
import numpy as np

import rlhf
from _timing import best_time, machine


def lecture(policy, rewards, eta=0.5):
    advantage = rewards - rewards.mean(axis=-1, keepdims=True)
    policy = np.exp(np.log(policy + 1e-6) + eta * advantage)
    return policy / policy.sum(axis=-1, keepdims=True)


def main():
    print(f"machine: {machine()}")
    print("| table | NumPy expression | rlhf.reweight | speed-up | max rel "
          "diff |")
    print("| --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for shape in [(4, 4), (4000, 1000), (100_000, 16)]:
        policy = rng.dirichlet(np.ones(shape[1]), size=shape[0])
        rewards = rng.normal(size=shape)
        number = 2000 if shape[0] == 4 else 1
        t_numpy = best_time(lambda: lecture(policy, rewards), 9, number)
        t_ours = best_time(lambda: rlhf.reweight(policy, rewards), 9, number)
        expected = lecture(policy, rewards)
        rel = np.abs(rlhf.reweight(policy, rewards) / expected - 1).max()
        print(f"| {shape[0]:,} x {shape[1]:,} | {t_numpy * 1e3:.3g} ms | "
              f"{t_ours * 1e3:.3g} ms | {t_numpy / t_ours:.1f}x | "
              f"{rel:.1e} |", flush=True)


if __name__ == "__main__":
    main()
