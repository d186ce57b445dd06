"""rlhf.RewardModel against the lecture's way of fitting a reward model.

The lecture builds one mirrored row per comparison (the feature difference
with label 1, its negation with label 0) and fits scikit-learn's
LogisticRegression.  RewardModel(C=2C) has the same optimum (DESIGN.md)
and works in item space.  Each contender runs in a fresh subprocess so
that its extra peak memory (peak RSS minus the RSS once the data exist) is
its own.

    python benchmarks/bench_reward.py [--quick] [--no-warmup]

Problem: n_items items with 64 dense N(0, 1) features, true weights
N(0, 1/64), comparisons between random pairs with the winner drawn from
the Bradley-Terry model.  Also reports rlhf's time per evaluation (on data
checked and copied once, as inside a fit) beside the memory-bandwidth
bound: the bytes one evaluation must read (F twice, the comparisons once,
scores and item gradients) over the bandwidth of a large NumPy reduction
measured in the same run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def problem(n_items, n_comparisons, n_features, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, n_features))
    w = rng.normal(size=n_features) / np.sqrt(n_features)
    a = rng.integers(0, n_items, n_comparisons)
    b = (a + 1 + rng.integers(0, n_items - 1, n_comparisons)) % n_items
    r = F @ w
    first = rng.random(n_comparisons) < 1 / (1 + np.exp(-(r[a] - r[b])))
    comparisons = np.where(first[:, None], np.stack([a, b], 1),
                           np.stack([b, a], 1))
    return F, comparisons


def current_rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def lecture_fit(F, comparisons, C):
    """The lecture's way: one row per comparison with the feature
    difference and label 1, its negation with label 0, and scikit-learn's
    LogisticRegression(C) (the optimum of RewardModel(C=2C))."""
    import warnings
    from sklearn.linear_model import LogisticRegression
    diff = F[comparisons[:, 0]] - F[comparisons[:, 1]]
    X = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    del diff
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C).fit(X, y)


def run_one(which, n_items, n_comparisons, C, warmup=True):
    """Fit once in this process; print a JSON line of the results."""
    import rlhf

    def fit(F, comparisons):
        if which == "rlhf":
            model = rlhf.RewardModel(C=2 * C).fit(F, comparisons)
            return model.coef_, model.n_iter_, {"solver": model.solver_}
        model = lecture_fit(F, comparisons, C)
        return model.coef_.ravel(), int(model.n_iter_[0]), {}

    # a small fit first, so that one-off costs (thread pools, lazy imports,
    # first page faults of the allocator) are not timed on either side
    if warmup:
        fit(*problem(2_000, 20_000, 64, seed=1))
    F, comparisons = problem(n_items, n_comparisons, 64)
    base = current_rss_bytes()
    # the peak so far came from generating the data: reset the high-water
    # mark to the current level (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = time.perf_counter()
    coef, n_iter, extra = fit(F, comparisons)
    seconds = time.perf_counter() - start
    peak = _peak_since_reset()
    print(json.dumps({"seconds": seconds, "extra_peak": peak - base,
                      "coef": coef.tolist(), "n_iter": n_iter, **extra}))


def _peak_since_reset():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_subprocess(which, n_items, n_comparisons, C, warmup):
    out = subprocess.run(
        [sys.executable, __file__, "--one", which, str(n_items),
         str(n_comparisons), str(C), "1" if warmup else "0"],
        check=True, capture_output=True, text=True, cwd=HERE)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bandwidth():
    """Bytes per second of a large NumPy reduction (a read-only stream)."""
    big = np.ones(1 << 26)  # 512 MiB
    big.sum()
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - start)
    return big.nbytes / best


def per_evaluation(n_items, n_comparisons, k=11):
    """Seconds per evaluation of loss and gradient as a fit makes them
    (on data checked and copied once: bt_loss_grad at k points in one call,
    less one call at one point, over k - 1), the seconds of one call at one
    point (which also checks and copies the comparisons and allocates its
    scratch), and the bytes an evaluation must read."""
    import rlhf
    from rlhf import _core
    F, comparisons = problem(n_items, n_comparisons, 64)
    prob = (F, n_items, 0, comparisons.astype(np.int64), None, None, None,
            0, 0.5)
    model = rlhf.RewardModel(C=2.0).fit(F, comparisons)
    x = model.coef_
    xs = np.tile(x, (k, 1))
    _core.bt_loss_grad(prob, x)  # warm-up: thread pool, page faults
    one = many = np.inf
    for _ in range(10):
        start = time.perf_counter()
        _core.bt_loss_grad(prob, x)
        one = min(one, time.perf_counter() - start)
        start = time.perf_counter()
        _core.bt_loss_grad(prob, xs)
        many = min(many, time.perf_counter() - start)
    # F twice, comparisons once, scores and item gradients written and read
    bytes_read = 2 * F.nbytes + comparisons.astype(np.int64).nbytes + \
        4 * 8 * n_items + 8 * n_comparisons
    return (many - one) / (k - 1), one, bytes_read


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-warmup", action="store_true",
                        help="time each side's first fit in its process")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        which, n_items, n_comparisons, C, warmup = args.one
        run_one(which, int(n_items), int(n_comparisons), float(C),
                warmup == "1")
        return
    sys.path.insert(0, HERE)
    from _timing import machine
    import sklearn
    print(f"machine: {machine()}; scikit-learn {sklearn.__version__}")
    n_items, n_comparisons = ((10_000, 100_000) if args.quick
                              else (100_000, 1_000_000))
    C = 1.0
    runs = {"rlhf": [], "sklearn": []}
    for _ in range(1 if args.quick else 3):
        for which in runs:
            runs[which].append(in_subprocess(which, n_items, n_comparisons,
                                              C, not args.no_warmup))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    ours, peer = best["rlhf"], best["sklearn"]
    diff = np.abs(np.array(ours["coef"]) - np.array(peer["coef"])).max()
    scale = np.abs(np.array(peer["coef"])).max()
    print(f"{n_comparisons:,} comparisons among {n_items:,} items, 64 "
          f"features, C={C} (RewardModel C={2 * C}); best of "
          f"{len(runs['rlhf'])} runs, each in a fresh process")
    print("| | lecture's way (mirrored rows + scikit-learn) | "
          "rlhf.RewardModel | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| wall time | {peer['seconds']:.2f} s | {ours['seconds']:.3f} s "
          f"| {peer['seconds'] / ours['seconds']:.0f}x |")
    print(f"| extra peak memory | {peer['extra_peak'] / 2**20:,.0f} MiB | "
          f"{ours['extra_peak'] / 2**20:,.0f} MiB | "
          f"{peer['extra_peak'] / max(ours['extra_peak'], 1):.0f}x |")
    print(f"| iterations | {peer['n_iter']} | {ours['n_iter']} "
          f"({ours['solver']}) | |")
    print(f"max |coef difference| {diff:.1e} (largest |coef| {scale:.2f})")
    seconds, one_call, nbytes = per_evaluation(n_items, n_comparisons)
    bw = bandwidth()
    bound = nbytes / bw
    print(f"rlhf: {ours['seconds'] / ours['n_iter'] * 1e3:.1f} ms per "
          f"iteration (fit time / iterations); one evaluation of loss and "
          f"gradient as a fit makes it {seconds * 1e3:.1f} ms against a "
          f"memory-bandwidth bound of {bound * 1e3:.1f} ms "
          f"({seconds / bound:.1f}x; {nbytes / 2**20:.0f} MiB read at "
          f"{bw / 1e9:.1f} GB/s); a lone call, which also checks and copies "
          f"the comparisons, {one_call * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
