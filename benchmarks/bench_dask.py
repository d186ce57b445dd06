"""RewardModel fitted out of core with Dask: comparisons in Parquet files.

    python make_parquet.py 20000000 --out /tmp/rlhf_bt_parquet_20M
    python bench_dask.py --data /tmp/rlhf_bt_parquet_20M [--memory-limit 300MiB]
                         [--solver auto] [--check-rows 50000000]
                         [--features-by-rows ROWS]

Fits the files written by make_parquet.py with ``RewardModel.fit`` on
a LocalCluster of 2 worker processes (one thread each) whose memory limit
is well below the comparisons' size in memory (16 bytes each as the
kernel reads them), so the partitions are read again from the Parquet
files at every evaluation (out of core).  Reports the wall time (the
cluster's start not included), iterations and evaluations, the peak
resident memory of each worker process (VmHWM), and checks the optimum:
against RewardModel.fit on the same comparisons in memory when there are
at most --check-rows of them (relative difference of the coefficients),
and against the true weights, within their Laplace standard errors
(z-scores).

With --features-by-rows ROWS the item features too are read from disk:
a Dask array whose chunks of ROWS rows each worker reads from
features.npy when a task needs them, so that features
larger than a worker's memory limit are never copied whole to one
(make_parquet.py --items 2000000 --features 64 writes 977 MiB of them).
That path fits with L-BFGS and forms no Laplace Hessian: the check
against the true weights is then left out.
"""
import argparse
import glob
import json
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402


def peak_rss():
    """The peak resident memory of this process, in bytes (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def load_rows(path, start, stop):
    """Rows [start, stop) of a C-ordered .npy file, read (not mapped, so
    that a worker's resident memory counts only the rows it holds)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        version = fmt.read_magic(fh)
        read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                       else fmt.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        assert not fortran
        fh.seek(fh.tell() + start * shape[1] * dtype.itemsize)
        rows = np.fromfile(fh, dtype=dtype, count=(stop - start) * shape[1])
    return rows.reshape(stop - start, shape[1])


def features_on_disk(path, shape, rows):
    """The features as a Dask array of row chunks, each loaded from the
    .npy file by the worker that needs it."""
    import dask
    import dask.array as da
    blocks = [da.from_delayed(dask.delayed(load_rows)(path, i,
                                                      min(i + rows, shape[0])),
                              shape=(min(i + rows, shape[0]) - i, shape[1]),
                              dtype=np.float64)
              for i in range(0, shape[0], rows)]
    return da.concatenate(blocks, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/rlhf_bt_parquet_20M")
    parser.add_argument("--memory-limit", default="300MiB")
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--check-rows", type=int, default=50_000_000)
    parser.add_argument("--features-by-rows", type=int, default=0,
                        metavar="ROWS")
    args = parser.parse_args()

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import rlhf

    features_path = os.path.join(args.data, "features.npy")
    features = np.load(features_path, mmap_mode="r")
    with open(os.path.join(args.data, "truth.json")) as fh:
        truth = json.load(fh)
    files = sorted(glob.glob(os.path.join(args.data, "part-*.parquet")))
    n = truth["n_comparisons"]
    disk = sum(os.path.getsize(f) for f in files)
    print(f"# {machine()}")
    print(f"{n:,} comparisons in {len(files)} Parquet files ({disk / 2**20:,.0f}"
          f" MiB on disk, {16 * n / 2**20:,.0f} MiB as the kernel's int64 "
          f"pairs), {features.shape[0]} items x {features.shape[1]} "
          "features")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit,
                      dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        ddf = dd.read_parquet(files)
        model = rlhf.RewardModel(C=args.C, solver=args.solver, tol=1e-10,
                                 verbose=1)
        if args.features_by_rows:
            fitted_on = features_on_disk(features_path, features.shape,
                                         args.features_by_rows)
        else:
            fitted_on = np.ascontiguousarray(features)
        start = time.perf_counter()
        model.fit(fitted_on, ddf)  # a Dask DataFrame: rlhf._dask.fit_dask
        wall = time.perf_counter() - start
        # passes over the data: the first (checks, counts), one per
        # evaluation, one per Newton step (the Hessian), the last
        passes = 2 + model._fit_info["n_fev"] + (
            model.n_iter_ if model.solver_ == "newton" else 0)
        peaks = client.run(peak_rss)
        limit = cluster.workers[0].memory_manager.memory_limit \
            if hasattr(cluster.workers[0], "memory_manager") else None
    info = model._fit_info
    print(f"RewardModel.fit on Dask: {wall:.1f} s wall, solver "
          f"{model.solver_}, {model.n_iter_} iterations, {info['n_fev']} evaluations "
          f"({ddf.npartitions} partitions, out of core): {passes} passes "
          f"over the data, {wall / passes:.1f} s and "
          f"{n / (wall / passes) / 1e6:.1f} M comparisons/s each")
    print("peak resident memory per worker: " + ", ".join(
        f"{p / 2**20:.0f} MiB" for p in peaks.values())
        + f" (memory limit {args.memory_limit} each"
        + (f" = {limit / 2**20:.0f} MiB" if limit else "") + ")")

    if n <= args.check_rows:
        import pandas as pd
        frame = pd.concat([pd.read_parquet(f) for f in files])
        pairs = np.column_stack([frame["preferred"].to_numpy(np.int64),
                                 frame["other"].to_numpy(np.int64)])
        del frame
        start = time.perf_counter()
        reference = rlhf.RewardModel(C=args.C, solver=args.solver,
                                     tol=1e-10, progress=False).fit(
                                         features, pairs)
        in_memory = time.perf_counter() - start
        diff = (np.max(np.abs(model.coef_ - reference.coef_))
                / np.max(np.abs(reference.coef_)))
        print(f"in-memory RewardModel.fit: {in_memory:.1f} s, "
              f"{reference.n_iter_} iterations; max relative coefficient "
              f"difference {diff:.1e}")
    if args.features_by_rows:
        return
    w = np.asarray(truth["weights"])
    se = model.summary().std_err
    z = (model.coef_ - w) / se
    print("true weights within their standard errors: max |z| = "
          f"{np.max(np.abs(z)):.2f} over {len(w)} weights (std err "
          f"{se.min():.1e} to {se.max():.1e}; the penalty 1/C biases by "
          f"about {np.max(np.abs(w)) / args.C / (n / 4):.0e})")


if __name__ == "__main__":
    main()
