"""How the cost of a reward-model fit grows with the number of comparisons.

    python benchmarks/bench_scaling.py [--max 1e8] [--sklearn-max 1e7]
                                       [--plot scaling.png]

For n = 10^3, 10^4, ... up to --max comparisons: items with 16 dense
N(0, 1) features (n / 10 items, at least 100 and at most 10^6), winners
drawn from the Bradley-Terry model, and one fit of rlhf.RewardModel(C=2)
and, up to --sklearn-max, of the lecture's way (the mirrored difference
rows and scikit-learn's LogisticRegression(C=1), the same optimum).  Each
contender runs in a fresh process after a small warm-up fit; it reports
the wall time of the better of two fits (of one, when a fit takes more
than 10 s) and the extra peak memory of the first (peak RSS above the RSS
once the data exist).  Prints a table and saves a log-log plot of both against n.
Beyond one machine's memory, see bench_dask.py (comparisons in Parquet
files, fitted out of core).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# the process's memory as bench_reward.py reads it
from bench_reward import _peak_since_reset as peak_rss_bytes
from bench_reward import current_rss_bytes, lecture_fit

HERE = os.path.dirname(os.path.abspath(__file__))
N_FEATURES = 16


def problem(n_comparisons, seed=0):
    n_items = int(min(max(n_comparisons // 10, 100), 1_000_000))
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, N_FEATURES))
    w = rng.normal(size=N_FEATURES) / np.sqrt(N_FEATURES)
    r = F @ w
    comparisons = np.empty((n_comparisons, 2), dtype=np.int64)
    # in blocks, so that generating 10^8 comparisons stays near their size
    for start in range(0, n_comparisons, 10_000_000):
        m = min(10_000_000, n_comparisons - start)
        a = rng.integers(0, n_items, m)
        b = (a + 1 + rng.integers(0, n_items - 1, m)) % n_items
        first = rng.random(m) < 1 / (1 + np.exp(-(r[a] - r[b])))
        comparisons[start:start + m, 0] = np.where(first, a, b)
        comparisons[start:start + m, 1] = np.where(first, b, a)
    return F, comparisons


def run_one(which, n):
    import rlhf

    def fit(F, comparisons):
        if which == "rlhf":
            return rlhf.RewardModel(C=2.0).fit(F, comparisons).n_iter_
        return int(lecture_fit(F, comparisons, 1.0).n_iter_[0])

    fit(*problem(20_000, seed=1))  # warm-up: thread pools, lazy imports
    F, comparisons = problem(n)
    base = current_rss_bytes()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the high-water mark back to the current RSS
    start = time.perf_counter()
    n_iter = fit(F, comparisons)
    seconds = time.perf_counter() - start
    extra = (peak_rss_bytes() - base) / 2**20
    if seconds < 10:
        # the better of two fits (the first still pays for fresh pages)
        start = time.perf_counter()
        fit(F, comparisons)
        seconds = min(seconds, time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "n_iter": n_iter,
                      "extra_mib": extra}))


def measure(which, n):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", which, str(n)],
        capture_output=True, text=True, check=True, cwd=HERE)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for which, label, marker in (("sklearn", "mirrored rows + scikit-learn",
                                  "s"), ("rlhf", "rlhf.RewardModel", "o")):
        points = [(n, r[which]) for n, r in rows if which in r]
        n = [p[0] for p in points]
        axes[0].loglog(n, [p[1]["seconds"] for p in points], marker=marker,
                       label=label)
        axes[1].loglog(n, [max(p[1]["extra_mib"], 0.1) for p in points],
                       marker=marker, label=label)
    axes[0].set(xlabel="comparisons", ylabel="fit time (s)",
                title="time of one fit")
    axes[1].set(xlabel="comparisons", ylabel="extra peak memory (MiB)",
                title="memory beyond the data")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.4)
        ax.legend()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max", type=float, default=1e8)
    parser.add_argument("--sklearn-max", type=float, default=1e7)
    parser.add_argument("--plot", default=os.path.join(HERE, "scaling.png"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]))
        return
    from _timing import machine
    print(f"machine: {machine()}; load average "
          f"{os.getloadavg()[0]:.2f}; {N_FEATURES} features")
    print("| comparisons | items | scikit-learn | rlhf | speed-up | "
          "extra memory scikit-learn / rlhf | iterations |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    n = 1000
    while n <= args.max:
        row = {"rlhf": measure("rlhf", n)}
        if n <= args.sklearn_max:
            row["sklearn"] = measure("sklearn", n)
        rows.append((n, row))
        ours, peer = row["rlhf"], row.get("sklearn")
        items = int(min(max(n // 10, 100), 1_000_000))
        print(f"| {n:,} | {items:,} | "
              + (f"{peer['seconds']:.3g} s | " if peer else "- | ")
              + f"{ours['seconds']:.3g} s | "
              + (f"{peer['seconds'] / ours['seconds']:.1f}x | " if peer
                 else "- | ")
              + (f"{peer['extra_mib']:,.0f} / " if peer else "- / ")
              + f"{ours['extra_mib']:,.0f} MiB | "
              + (f"{peer['n_iter']} / " if peer else "")
              + f"{ours['n_iter']} |", flush=True)
        n *= 10
    plot(rows, args.plot)


if __name__ == "__main__":
    main()
