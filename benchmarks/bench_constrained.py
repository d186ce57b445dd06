"""rlhf.constrained_policy against the peers a user would reach for, same
process: a vectorised NumPy bisection on the multiplier over all rows at
once, and SciPy's SLSQP on the primal problem, row by row.

    python benchmarks/bench_constrained.py
"""
import numpy as np

import rlhf
from _timing import best_time, machine


def numpy_bisection(reference, rewards, costs, beta, budget, n_iter=100):
    """Vectorised bisection on lam for E_lam[c] = budget in every row (rows
    whose free optimum meets the budget keep lam = 0)."""
    logp = np.log(reference)

    def policy(lam):
        z = logp + (rewards - lam[:, None] * costs) / beta
        z -= z.max(axis=1, keepdims=True)
        w = np.exp(z)
        return w / w.sum(axis=1, keepdims=True)

    zero = np.zeros(len(budget))
    binding = (policy(zero) * costs).sum(axis=1) > budget
    lo, hi = zero.copy(), np.ones(len(budget))
    while True:
        too_low = binding & ((policy(hi) * costs).sum(axis=1) > budget)
        if not too_low.any():
            break
        lo[too_low] = hi[too_low]
        hi[too_low] *= 2
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        above = (policy(mid) * costs).sum(axis=1) > budget
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    lam = np.where(binding, hi, 0.0)
    return policy(lam), lam


def slsqp_rows(reference, rewards, costs, beta, budget):
    from scipy.optimize import minimize

    out = np.empty_like(reference)
    k = reference.shape[1]
    for i in range(reference.shape[0]):
        p, r, c, b = reference[i], rewards[i], costs[i], budget[i]

        def fun(x):
            x = np.maximum(x, 1e-300)
            return -(x @ r - beta * np.sum(x * np.log(x / p)))

        def jac(x):
            x = np.maximum(x, 1e-300)
            return -(r - beta * (np.log(x / p) + 1.0))

        out[i] = minimize(
            fun, p.copy(), jac=jac, method="SLSQP",
            bounds=[(1e-15, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0},
                         {"type": "ineq", "fun": lambda x: b - x @ c}],
            options={"ftol": 1e-12, "maxiter": 1000}).x
    return out


def problem(n, k, rng):
    reference = rng.dirichlet(np.ones(k), size=n)
    rewards = rng.normal(size=(n, k))
    costs = rng.normal(size=(n, k))
    budget = costs.min(axis=1) + 0.5 * (
        (reference * costs).sum(axis=1) - costs.min(axis=1))
    return reference, rewards, costs, budget


def main():
    print(f"machine: {machine()}")
    print("| problem | peer | peer time | rlhf time | speed-up | max abs "
          "policy diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    beta = 0.5
    cases = [
        ((100_000, 16), "NumPy bisection, all rows at once",
         numpy_bisection, 3),
        ((50, 16), "SciPy SLSQP, row by row", slsqp_rows, 1),
    ]
    for shape, name, peer, repeat in cases:
        reference, rewards, costs, budget = problem(*shape, rng)
        def run_peer():
            return peer(reference, rewards, costs, beta, budget)
        t_peer = best_time(run_peer, repeat)
        t_ours = best_time(lambda: rlhf.constrained_policy(
            reference, rewards, costs, beta, budget), 5)
        ours = rlhf.constrained_policy(reference, rewards, costs, beta,
                                       budget)[0]
        theirs = run_peer()
        theirs = theirs[0] if isinstance(theirs, tuple) else theirs
        print(f"| {shape[0]:,} x {shape[1]} | {name} | "
              f"{t_peer * 1e3:.3g} ms | {t_ours * 1e3:.3g} ms | "
              f"{t_peer / t_ours:.0f}x | {np.abs(ours - theirs).max():.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
