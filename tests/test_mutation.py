"""Another thread writing into the caller's arrays during a fit cannot
crash the kernels.

Kernels run with the GIL released, so Python code in another thread can
write into an input array while a kernel reads it.  Indices are checked
with the GIL held and then read from a private copy, so a write of an
index far out of range changes nothing the kernel sees.  Each case runs in
a child process (a crash would kill pytest) and must either finish with
the same coefficients as a fit on an untouched copy, or, when the write
landed before the copy was taken, raise a ValueError that names the
argument.
"""
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # seconds a case

ROOT = pathlib.Path(__file__).resolve().parent.parent

SCRIPT = """
import sys, threading, time, warnings
import numpy as np
import rlhf
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
{setup}
pristine = {copy}
expected = {fit_pristine}

def vandal():
    time.sleep({delay})
    for _ in range(200):
        {write}
        time.sleep(0.001)

writer = threading.Thread(target=vandal)
writer.start()
try:
    got = {fit}
except ValueError as error:
    writer.join()
    assert {names} in str(error), str(error)
    print("refused")
    sys.exit(0)
writer.join()
assert np.array_equal(got, expected)
print("same")
"""

CASES = {
    "reward_model_comparisons": dict(
        setup="""
F = rng.normal(size=(1000, 20))
pairs = rng.integers(0, 1000, size=(2_000_000, 2))
pairs = pairs[pairs[:, 0] != pairs[:, 1]]
def fit(comparisons):
    return rlhf.RewardModel(solver="lbfgs", max_iter=30, tol=1e-300).fit(
        F, comparisons).coef_
""",
        copy="pairs.copy()",
        fit_pristine="fit(pristine)",
        write="pairs[::7, 0] = 10**12",
        fit="fit(pairs)",
        names="'comparisons'",
        delay=0.3,
    ),
    "logistic_csr_indices": dict(
        setup="""
import scipy.sparse as sp
n, d = 400_000, 200
cols = np.arange(10) * 20 + rng.integers(0, 20, size=(n, 10))
X = sp.csr_matrix((rng.normal(size=10 * n), cols.ravel(),
                   np.arange(0, 10 * n + 1, 10)), shape=(n, d))
X.indices = X.indices.astype(np.int64)
X.indptr = X.indptr.astype(np.int64)
y = (rng.random(n) < 0.5).astype(int)
def fit(M):
    return rlhf.LogisticRegression(max_iter=30, tol=1e-300).fit(M, y).coef_
""",
        copy="X.copy()",
        fit_pristine="fit(pristine)",
        write="X.indices[::3] = 10**12; X.indptr[1::2] = 10**12",
        fit="fit(X)",
        names="'X'",
        delay=0.3,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_writes_into_index_arrays_during_a_fit(case):
    if "csr" in case:
        pytest.importorskip("scipy.sparse")
    script = SCRIPT.format(**CASES[case])
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    assert out.stdout.strip() in ("same", "refused"), out.stdout
