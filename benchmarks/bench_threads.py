"""PPO iterations on an idle and on a busy machine: every thread, one
thread, and the loop's own choice (rlhf._threads.AdaptiveThreads).

    python benchmarks/bench_threads.py [--iterations 80] [--rounds 3]

One PPO fit on a 10,000 x 16 table (4 samples per prompt, 4 epochs), timed
per iteration (the fit with N iterations minus the fit with 5, so that the
set-up and the first iterations' trials are not counted), best of
--rounds, in each setting:

- "all threads": the loop's choice switched off, every thread throughout;
- "one thread": the loop's choice switched off, the kernels capped at one;
- "adaptive": as PPO runs by default.

and under three loads: no other process, then one and two competing
processes (each a Python busy loop, started before and killed after), so
that on 2 cores "two" holds both.  The results are the same bits in every
setting (tests/test_threads.py); only the time differs.
"""
import argparse
import multiprocessing
import time

import numpy as np

import rlhf
from rlhf import _core, _threads
from _timing import machine


def spin():
    while True:
        pass


def fit(reference, rewards, n_iterations):
    rlhf.PPO(beta=0.2, n_iterations=n_iterations, random_state=0,
             progress=False).fit(
        reference, rewards)


def per_iteration(mode, reference, rewards, n_iterations, rounds):
    fixed = mode != "adaptive"
    original = _threads.AdaptiveThreads.active
    if fixed:
        # the loop's choice off: every thread, capped below for "one"
        _threads.AdaptiveThreads.active = property(lambda self: False)
    previous = _core.thread_cap(1 if mode == "one thread" else 0)
    try:
        best = np.inf
        for _ in range(rounds):
            start = time.perf_counter()
            fit(reference, rewards, 5)
            short = time.perf_counter() - start
            start = time.perf_counter()
            fit(reference, rewards, n_iterations)
            long = time.perf_counter() - start
            best = min(best, (long - short) / (n_iterations - 5))
        return best
    finally:
        _core.thread_cap(previous)
        _threads.AdaptiveThreads.active = original


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}; {_core.default_threads()} OpenMP threads")
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(16), size=10_000)
    rewards = rng.normal(size=(10_000, 16))
    fit(reference, rewards, 5)  # warm-up: thread pool, page faults
    modes = ["all threads", "one thread", "adaptive"]
    print("| competing processes | " + " | ".join(modes)
          + " | adaptive vs the better fixed |")
    print("| --- | --- | --- | --- | --- |")
    for n_busy in (0, 1, 2):
        busy = [multiprocessing.Process(target=spin, daemon=True)
                for _ in range(n_busy)]
        for process in busy:
            process.start()
        time.sleep(0.5)
        try:
            times = {mode: per_iteration(mode, reference, rewards,
                                         args.iterations, args.rounds)
                     for mode in modes}
        finally:
            for process in busy:
                process.kill()
                process.join()
        better = min(times["all threads"], times["one thread"])
        print(f"| {n_busy} | " + " | ".join(
            f"{times[mode] * 1e3:.2f} ms" for mode in modes)
            + f" | {times['adaptive'] / better:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
