"""One PPO iteration on the C kernels against the same iteration on their
NumPy twins (rlhf/_reference.py), and against PyTorch when installed.

    python benchmarks/bench_policy.py

Timed per iteration (fit with 11 iterations minus fit with 1, over 10),
so fit's input checks and set-up, the same NumPy code on both sides, are
left out.  An iteration: log-softmax of the policy, one sample per prompt and
n_samples, reward shaping with the k1 KL estimate, leave-one-out
advantages, then n_epochs = 4 passes of the clipped surrogate's gradient
and an Adam step, and the policy's statistics (expected reward, KL,
entropy).  Same seeds, so the C and NumPy runs draw the same samples and
end at the same policy (the difference is printed).
"""
import numpy as np

import rlhf
from rlhf import _reference
from _timing import best_time, machine


class TwinPPO(rlhf.PPO):
    _kernels = _reference


def torch_iteration(torch, reference, rewards, n_samples, n_epochs, beta,
                    clip, lr):
    """The same update written with PyTorch tensors and autograd (its own
    sampler, so not the same draws)."""
    ref_logp = torch.log(torch.as_tensor(reference))
    r = torch.as_tensor(rewards)
    theta = torch.zeros_like(ref_logp, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    with torch.no_grad():
        logp = torch.log_softmax(ref_logp + theta, dim=1)
        actions = torch.multinomial(logp.exp(), n_samples, replacement=True)
        old = logp.gather(1, actions)
        shaped = r.gather(1, actions) - beta * (old - ref_logp.gather(
            1, actions))
        total = shaped.sum(1, keepdim=True)
        adv = shaped - (total - shaped) / (n_samples - 1)
    for _ in range(n_epochs):
        opt.zero_grad()
        lp = torch.log_softmax(ref_logp + theta, dim=1).gather(1, actions)
        rho = torch.exp(lp - old)
        loss = -torch.minimum(rho * adv, rho.clamp(1 - clip, 1 + clip)
                              * adv).mean(1).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logp = torch.log_softmax(ref_logp + theta, dim=1)
        p = logp.exp()
        return ((p * r).sum(1).mean(), (p * (logp - ref_logp)).sum(1).mean(),
                -(p * logp).sum(1).mean())


def main():
    print(f"machine: {machine()}, OpenMP: {bool(rlhf._core.has_openmp())}")
    rng = np.random.default_rng(0)
    print("| problem | NumPy twin | rlhf (C) | speed-up | PyTorch CPU | "
          "speed-up vs PyTorch | max policy diff C vs twin |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:
        torch = None
    for n_prompts, k in [(100, 16), (10_000, 16)]:
        reference = rng.dirichlet(np.ones(k), size=n_prompts)
        rewards = rng.normal(size=(n_prompts, k))
        rounds = 20 if n_prompts < 1000 else 9

        def fit(cls, n_iterations):
            return lambda: cls(n_iterations=n_iterations,
                               random_state=0).fit(reference, rewards)

        # the four fits are timed in turn, round after round, so that a
        # burst of load on the machine hits both sides alike
        calls = {(cls, i): fit(cls, i) for cls in (TwinPPO, rlhf.PPO)
                 for i in (1, 11)}
        best = {key: np.inf for key in calls}
        for _ in range(rounds):
            for key, call in calls.items():
                best[key] = min(best[key], best_time(call, 1))
        # one iteration: fit with 11 iterations minus fit with 1, over 10
        t_twin = (best[TwinPPO, 11] - best[TwinPPO, 1]) / 10
        t_ours = (best[rlhf.PPO, 11] - best[rlhf.PPO, 1]) / 10
        diff = np.abs(calls[rlhf.PPO, 11]().policy_
                      - calls[TwinPPO, 11]().policy_).max()
        if torch is not None:
            torch_fn = lambda: torch_iteration(  # noqa
                torch, reference, rewards, 4, 4, 0.1, 0.2, 0.1)
            t_torch = best_time(torch_fn, rounds)
            torch_cols = (f"{t_torch * 1e3:.3g} ms | "
                          f"{t_torch / t_ours:.1f}x")
        else:
            torch_cols = "not installed | -"
        print(f"| {n_prompts:,} x {k} | {t_twin * 1e3:.3g} ms | "
              f"{t_ours * 1e3:.3g} ms | {t_twin / t_ours:.1f}x | "
              f"{torch_cols} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
