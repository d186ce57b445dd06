"""Write N Bradley-Terry comparisons of a known world as Parquet files.

    python make_parquet.py [N] [--out DIR] [--items 1000] [--features 8]
                           [--rows-per-file 1000000] [--seed 0]

The world: ``--items`` items with standard normal features and true reward
weights ``w`` (standard normal, seeded); each comparison draws two
distinct items uniformly and orders them by a Bradley-Terry draw,
``P(a first) = sigmoid(r_a - r_b)``, ``r = features @ w``.  Files
``part-00000.parquet``, ... hold the int32 columns ``preferred`` and
``other`` (8 bytes per comparison before compression); ``features.npy``
and ``truth.json`` (the weights, the seed) sit beside them.  Written one
file at a time, so memory stays at one file's rows whatever N is.  N
defaults to 200 million (about 1.6 GB); the data go under /tmp, never
into the repository.
"""
import argparse
import json
import os
import time

import numpy as np


def write(n, out, n_items=1000, n_features=8, rows_per_file=1_000_000,
          seed=0):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith("part-") and name.endswith(".parquet"):
            os.remove(os.path.join(out, name))
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_items, n_features))
    weights = rng.normal(size=n_features)
    rewards = features @ weights
    np.save(os.path.join(out, "features.npy"), features)
    with open(os.path.join(out, "truth.json"), "w") as fh:
        json.dump({"weights": weights.tolist(), "n_comparisons": n,
                   "n_items": n_items, "seed": seed}, fh)
    written = 0
    for k in range((n + rows_per_file - 1) // rows_per_file):
        m = min(rows_per_file, n - written)
        a = rng.integers(0, n_items, m)
        b = (a + rng.integers(1, n_items, m)) % n_items
        d = rewards[a] - rewards[b]
        first = rng.random(m) < np.exp(-np.logaddexp(0.0, -d))
        table = pa.table({
            "preferred": np.where(first, a, b).astype(np.int32),
            "other": np.where(first, b, a).astype(np.int32)})
        pq.write_table(table, os.path.join(out, f"part-{k:05d}.parquet"))
        written += m
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=200_000_000)
    parser.add_argument("--out", default="/tmp/rlhf_bt_parquet")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--rows-per-file", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    n = write(args.n, args.out, args.items, args.features,
              args.rows_per_file, args.seed)
    size = sum(os.path.getsize(os.path.join(args.out, f))
               for f in os.listdir(args.out))
    print(f"{n:,} comparisons in {args.out}: {size / 2**20:,.0f} MiB, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
