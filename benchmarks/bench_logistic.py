"""rlhf.LogisticRegression against scikit-learn's, in the same process.

Three problems from the README table: the lecture's 8 mirrored rows (time
per fit call), 2,000,000 x 64 dense mirrored rows, and sparse text-like
rows (CSR, 2^18 columns).  Both estimators fit the same objective with the
same stopping rules (rlhf in compat='1.7', the installed scikit-learn's), so
besides the times the script prints both n_iter_ and the largest
coefficient difference.

    python benchmarks/bench_logistic.py [--quick]
"""
import argparse
import warnings

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import rlhf
from _timing import best_time, machine


def mirrored(n_pairs, n_features, seed):
    rng = np.random.default_rng(seed)
    diff = rng.normal(size=(n_pairs, n_features))
    w = rng.normal(size=n_features) / np.sqrt(n_features)
    flip = rng.random(n_pairs) > 1 / (1 + np.exp(-diff @ w))
    diff[flip] *= -1  # the preferred item first
    X = np.empty((2 * n_pairs, n_features))
    X[0::2] = diff
    X[1::2] = -diff
    y = np.tile([1, 0], n_pairs)
    return X, y


def text_like(n_rows, n_cols, nnz_per_row, seed):
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    indptr = np.arange(n_rows + 1) * nnz_per_row
    indices = rng.integers(0, n_cols, size=n_rows * nnz_per_row)
    data = rng.poisson(1.0, size=indices.size) + 1.0
    X = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
    X.sum_duplicates()
    w = rng.normal(size=n_cols) * 0.3
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-(X @ w)))).astype(int)
    return X, y


def compare(name, X, y, repeat, number=1):
    ours = rlhf.LogisticRegression(compat="1.7")
    peer = SkLogisticRegression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ours = best_time(lambda: ours.fit(X, y), repeat, number)
        t_peer = best_time(lambda: peer.fit(X, y), repeat, number)
    diff = np.abs(np.r_[ours.coef_.ravel(), ours.intercept_]
                  - np.r_[peer.coef_.ravel(), peer.intercept_]).max()
    print(f"| {name} | {t_peer * 1e3:.3g} ms | {t_ours * 1e3:.3g} ms | "
          f"{t_peer / t_ours:.1f}x | {peer.n_iter_[0]} / {ours.n_iter_[0]} | "
          f"{diff:.1e} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="smaller problems, for a smoke test")
    args = parser.parse_args()
    print(f"machine: {machine()}; scikit-learn {sklearn.__version__}")
    print("| problem | scikit-learn | rlhf | speed-up | n_iter_ sklearn / "
          "rlhf | max coef diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    from rlhf.__main__ import lecture_data, mirrored_rows
    _, features, preferences = lecture_data()
    X, y = mirrored_rows(features, preferences)
    compare("lecture, 8 rows x 2 (per fit call)", X, y, repeat=5,
            number=200)
    n_pairs = 20_000 if args.quick else 1_000_000
    X, y = mirrored(n_pairs, 64, seed=0)
    compare(f"{2 * n_pairs:,} x 64 dense mirrored rows", X, y,
            repeat=1 if not args.quick else 3)
    del X, y
    n_rows = 20_000 if args.quick else 200_000
    X, y = text_like(n_rows, 2 ** 18, 40, seed=1)
    compare(f"{n_rows:,} x 2^18 sparse rows, 40 non-zeros each", X, y,
            repeat=2 if not args.quick else 3)


if __name__ == "__main__":
    main()
