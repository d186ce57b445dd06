"""Two small kernels around the Bradley-Terry objective: bt_loss_grad at
several points on one check of the data (what a fit does, and what the
benchmark times), and pair_counts, the pairwise accuracy's counts in one
pass, checked against NumPy."""
import threading

import numpy as np
import pytest

from rlhf import _core, _reference


def _problem(rng, n_items=300, n=5000, d=6, ties=False, weights=False):
    F = rng.normal(size=(n_items, d))
    pairs = rng.integers(0, n_items, size=(n, 2)).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    m = len(pairs)
    tie = (rng.random(m) < 0.2).astype(np.uint8) if ties else None
    sw = rng.random(m) + 0.5 if weights else None
    return (F, n_items, 0, pairs, sw, None, tie, 1 if ties else 0, 0.3)


def _sparse(problem, rng, n_cols=50, density=0.2):
    """The problem with sparse CSR features (the kernel's tuple)."""
    import scipy.sparse as sp
    S = sp.random(problem[1], n_cols, density=density, format="csr",
                  random_state=rng.integers(2**31))
    S.sort_indices()
    return ((S.data, S.indices.astype(np.int64), S.indptr.astype(np.int64),
             n_cols),) + problem[1:]


@pytest.mark.parametrize("ties,weights,sparse",
                         [(False, False, False), (True, True, False),
                          (False, False, True), (True, True, True)])
def test_rows_equal_single_calls_bitwise(ties, weights, sparse):
    """Several points take the faster paths a fit takes (sparse features
    by columns, built once): the same bits as one call at each point,
    whose F^T g is the serial sum over rows."""
    rng = np.random.default_rng(0)
    problem = _problem(rng, ties=ties, weights=weights)
    if sparse:
        problem = _sparse(problem, rng)
    n_coef = 50 if sparse else problem[0].shape[1]
    n_params = n_coef + (1 if ties else 0)
    X = rng.normal(size=(5, n_params))
    losses, grads = _core.bt_loss_grad(problem, X)
    assert losses.shape == (5,) and grads.shape == (5, n_params)
    for i in range(5):
        loss, grad = _core.bt_loss_grad(problem, X[i])
        assert losses[i] == loss
        np.testing.assert_array_equal(grads[i], grad)
    # threads do not change the bits
    l1, g1 = _core.bt_loss_grad(problem, X, n_threads=1)
    np.testing.assert_array_equal(l1, losses)
    np.testing.assert_array_equal(g1, grads)


def test_no_rows_and_bad_shapes():
    rng = np.random.default_rng(1)
    problem = _problem(rng)
    losses, grads = _core.bt_loss_grad(problem, np.zeros((0, 6)))
    assert losses.shape == (0,) and grads.shape == (0, 6)
    with pytest.raises(ValueError, match="x must have 6 columns, got 5"):
        _core.bt_loss_grad(problem, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="x must have length 6, got 7"):
        _core.bt_loss_grad(problem, np.zeros(7))
    with pytest.raises(ValueError, match="1- or 2-dimensional"):
        _core.bt_loss_grad(problem, np.zeros((2, 2, 6)))


@pytest.mark.parametrize("n", [0, 1, 1000, 200_000])
def test_pair_counts_against_numpy(n):
    rng = np.random.default_rng(n)
    # rounded rewards so that equal rewards occur
    r = np.round(rng.normal(size=50), 1)
    pairs = rng.integers(0, 50, size=(n, 2)).astype(np.int64)
    tie = (rng.random(n) < 0.3).astype(np.uint8)
    assert _core.pair_counts(r, pairs) == _reference.pair_counts(r, pairs)
    assert _core.pair_counts(r, pairs, tie) == \
        _reference.pair_counts(r, pairs, tie)
    assert _core.pair_counts(r, pairs, tie, n_threads=1) == \
        _core.pair_counts(r, pairs, tie, n_threads=2)


def test_pair_counts_errors_and_stray_indices():
    r = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="pairs must have 2 columns"):
        _core.pair_counts(r, np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match="ties must have length 2"):
        _core.pair_counts(r, np.zeros((2, 2), np.int64), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="rewards must not be empty"):
        _core.pair_counts(np.zeros(0), np.zeros((2, 2), np.int64))
    # out-of-range indices are clamped, never read out of bounds: -5 -> 0,
    # 99 -> 2
    pairs = np.array([[-5, 99], [99, -5], [1, 1]], np.int64)
    assert _core.pair_counts(r, pairs) == (1, 1, 3)


def test_pair_counts_while_another_thread_writes_the_pairs():
    rng = np.random.default_rng(2)
    r = rng.normal(size=1000)
    pairs = rng.integers(0, 1000, size=(300_000, 2)).astype(np.int64)
    stop = threading.Event()

    def scribble():
        w = np.random.default_rng(3)
        while not stop.is_set():
            k = w.integers(0, len(pairs))
            pairs[k] = w.integers(-10**12, 10**12, size=2)

    t = threading.Thread(target=scribble)
    t.start()
    try:
        for _ in range(50):
            wins, equal, total = _core.pair_counts(r, pairs)
            assert total == len(pairs) and 0 <= wins + equal <= total
    finally:
        stop.set()
        t.join()


def test_the_numpy_twins_agree():
    rng = np.random.default_rng(4)
    problem = _problem(rng, n=2000, ties=True, weights=True)
    X = rng.normal(size=(3, 7))
    losses, grads = _core.bt_loss_grad(problem, X)
    ref_losses, ref_grads = _reference.bt_loss_grad(problem, X)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-10, atol=1e-10)
    r = np.round(rng.normal(size=40), 1)
    pairs = rng.integers(-3, 45, size=(3000, 2)).astype(np.int64)
    tie = (rng.random(3000) < 0.3).astype(np.uint8)
    assert _core.pair_counts(r, pairs, tie) == \
        _reference.pair_counts(r, pairs, tie)
