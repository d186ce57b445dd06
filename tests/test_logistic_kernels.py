"""The logistic kernels: C against the NumPy twin, against finite
differences, against SciPy, and the solvers' rules."""
import sys

import numpy as np
import pytest

from rlhf import _core
from rlhf import _reference as ref

sparse = pytest.importorskip("scipy.sparse")
optimize = pytest.importorskip("scipy.optimize")


def problem(n, d, seed, density=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if density is not None:
        X[rng.random(size=X.shape) > density] = 0.0
    w_true = rng.normal(size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    sw = rng.uniform(0.1, 3.0, size=n)
    return X, y, sw


def csr_tuple(X):
    m = sparse.csr_matrix(X)
    return (m.data, m.indices.astype(np.int64), m.indptr.astype(np.int64),
            m.shape[1])


SHAPES = [(1, 1), (2, 3), (17, 5), (5000, 7), (300, 40)]


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_loss_grad_equals_twin(n, d, fit_intercept, layout):
    X, y, sw = problem(n, d, seed=n * 31 + d, density=0.3)
    Xk = X if layout == "dense" else csr_tuple(X)
    w = np.random.default_rng(1).normal(size=d + fit_intercept)
    for scale, alpha in [(1.0, 1.0), (1.0 / sw.sum(), 0.01), (1.0, 0.0)]:
        loss, grad = _core.logistic_loss_grad(Xk, y, sw, w, fit_intercept,
                                              scale, alpha)
        loss_ref, grad_ref = ref.logistic_loss_grad(X, y, sw, w,
                                                    fit_intercept, scale,
                                                    alpha)
        assert loss == pytest.approx(loss_ref, rel=1e-12)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-10,
                                   atol=1e-12 * np.abs(grad_ref).max())


def test_loss_is_stable_at_extreme_scores():
    """log(1 + exp(z)) at z = +-800 without overflow: the exact values are
    800 (y=0, z=800) and 0 (z=-800)."""
    X = np.array([[800.0], [-800.0]])
    loss, grad = _core.logistic_loss_grad(X, np.zeros(2), np.ones(2),
                                          np.array([1.0]), False, 1.0, 0.0)
    assert loss == 800.0
    np.testing.assert_allclose(grad, [800.0])


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_gradient_and_hessian_against_finite_differences(fit_intercept,
                                                         layout):
    X, y, sw = problem(40, 4, seed=3, density=0.6)
    Xk = X if layout == "dense" else csr_tuple(X)
    w = np.random.default_rng(2).normal(size=4 + fit_intercept) * 0.5
    args = (Xk, y, sw)
    f0, g0 = _core.logistic_loss_grad(*args, w, fit_intercept, 1.0, 0.7)
    H = _core.logistic_hessian(*args, w, fit_intercept, 1.0, 0.7)
    h = 1e-6
    for j in range(len(w)):
        e = np.zeros_like(w)
        e[j] = h
        fp, gp = _core.logistic_loss_grad(*args, w + e, fit_intercept, 1.0,
                                          0.7)
        fm, gm = _core.logistic_loss_grad(*args, w - e, fit_intercept, 1.0,
                                          0.7)
        assert (fp - fm) / (2 * h) == pytest.approx(g0[j], rel=1e-7,
                                                    abs=1e-8)
        np.testing.assert_allclose((gp - gm) / (2 * h), H[:, j], rtol=1e-6,
                                   atol=1e-7)
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_allclose(
        H, ref.logistic_hessian(X, y, sw, w, fit_intercept, 1.0, 0.7),
        rtol=1e-12, atol=1e-12)


def test_threads_do_not_change_the_bits():
    X, y, sw = problem(20000, 9, seed=5)
    w = np.linspace(-1, 1, 10)
    results = [_core.logistic_loss_grad(X, y, sw, w, True, 1.0, 1.0,
                                        n_threads=t) for t in (1, 2, 3)]
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        assert grad.tobytes() == results[0][1].tobytes()


# -- L-BFGS --------------------------------------------------------------


def rosenbrock(x):
    f = float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return f, g


def quadratic_matrix(seed, n):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    return A @ A.T + n * np.eye(n), rng.normal(size=n)


def quadratic(seed, n):
    A, b = quadratic_matrix(seed, n)

    def fun(x):
        return float(0.5 * x @ A @ x - b @ x), A @ x - b

    return fun, np.linalg.solve(A, b)


def recording(fun):
    points = []

    def wrapped(x):
        points.append(np.array(x, copy=True))
        return fun(x)

    return wrapped, points


@pytest.mark.parametrize("n", [2, 5, 10])
@pytest.mark.parametrize("gtol", [1e-3, 1e-6])
def test_lbfgs_follows_scipy_lbfgsb_on_rosenbrock(n, gtol):
    """The same evaluation points as SciPy's L-BFGS-B (no bounds), up to
    the rounding of the direction's two forms, and the same count."""
    x0 = np.full(n, -1.2)
    x0[1::2] = 1.0
    ours_fun, ours_points = recording(rosenbrock)
    scipy_fun, scipy_points = recording(rosenbrock)
    x, f, g, n_iter, n_fev, status = _core.lbfgs_minimize(
        ours_fun, x0, gtol=gtol, max_iter=1000)
    result = optimize.minimize(scipy_fun, x0, jac=True, method="L-BFGS-B",
                               options={"gtol": gtol, "maxiter": 1000})
    assert n_iter == result.nit
    assert n_fev == len(ours_points)
    assert len(ours_points) == len(scipy_points)
    # the two forms of the direction round differently; Rosenbrock's valley
    # amplifies that near the end, still far below the gtol scale
    np.testing.assert_allclose(np.array(ours_points), np.array(scipy_points),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.array(ours_points[:20]),
                               np.array(scipy_points[:20]), rtol=1e-9,
                               atol=1e-12)
    assert status in (0, 1)


@pytest.mark.parametrize("seed", range(4))
def test_lbfgs_reaches_the_quadratic_minimum(seed):
    """For f = x'Ax/2 - b'x, ||x - x*|| <= ||g|| / lambda_min(A)."""
    fun, x_star = quadratic(seed, 8)
    x, f, g, n_iter, _, status = _core.lbfgs_minimize(
        fun, np.zeros(8), gtol=1e-7, ftol=0.0, max_iter=500)
    assert status == 0 and np.abs(g).max() <= 1e-7
    lam_min = np.linalg.eigvalsh(quadratic_matrix(seed, 8)[0]).min()
    assert np.linalg.norm(x - x_star) <= np.linalg.norm(g) / lam_min * (
        1 + 1e-6) + 1e-15


@pytest.mark.parametrize("seed", range(6))
def test_lbfgs_equals_twin(seed):
    X, y, sw = problem(60 + 10 * seed, 3 + seed, seed=seed)
    for gtol, max_iter in [(1e-4, 100), (1e-8, 100), (1e-6, 3)]:
        args = (X, y, sw, True, 1.0, 0.5, "lbfgs", gtol, 2.22e-9, max_iter,
                20)
        ours = _core.logistic_fit(*args)
        twin = ref.logistic_fit(*args)
        np.testing.assert_allclose(ours[0], twin[0], rtol=1e-9, atol=1e-12)
        assert ours[3:] == twin[3:]


def test_lbfgs_zero_gradient_at_start_is_iteration_zero():
    X = np.array([[1.0], [1.0]])
    w, f, g, n_iter, n_fev, status = _core.logistic_fit(
        X, np.array([0.0, 1.0]), np.ones(2), True, 1.0, 1.0, "lbfgs", 1e-4,
        2.22e-9, 100, 20)
    assert (n_iter, n_fev, status) == (0, 1, 0)
    np.testing.assert_array_equal(w, 0.0)


def test_lbfgs_max_iter_zero_takes_one_step_like_scipy():
    """SciPy tests the limit after the first iteration; scikit-learn then
    reports n_iter_ = min(nit, max_iter) = 0."""
    fun, _ = quadratic(0, 3)
    ours = _core.lbfgs_minimize(fun, np.zeros(3), max_iter=0)
    result = optimize.minimize(fun, np.zeros(3), jac=True,
                               method="L-BFGS-B", options={"maxiter": 0})
    assert ours[3] == result.nit == 1
    np.testing.assert_allclose(ours[0], result.x, rtol=1e-12)


def test_lbfgs_callback_errors_propagate():
    def broken(x):
        raise KeyError("inside the objective")

    with pytest.raises(KeyError, match="inside the objective"):
        _core.lbfgs_minimize(broken, np.zeros(2))
    with pytest.raises(TypeError, match="tuple"):
        _core.lbfgs_minimize(lambda x: 1.0, np.zeros(2))
    with pytest.raises(ValueError, match="gradient"):
        _core.lbfgs_minimize(lambda x: (1.0, np.zeros(3)), np.zeros(2))
    with pytest.raises(ValueError, match="not finite"):
        _core.lbfgs_minimize(lambda x: (np.nan, np.zeros(2)), np.zeros(2))


def test_lbfgs_line_search_failure_is_reported():
    """An objective whose gradient points the wrong way: no step decreases
    f, the search gives up after maxls evaluations and keeps x0."""
    def lying(x):
        return float(x @ x), -2 * x - 1.0

    x, f, g, n_iter, n_fev, status = _core.lbfgs_minimize(
        lying, np.ones(2), maxls=5)
    assert status == 3 and n_iter == 0 and n_fev == 1 + 5
    np.testing.assert_array_equal(x, np.ones(2))


# -- Newton ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_newton_reaches_the_optimum_scipy_finds(seed, layout):
    X, y, sw = problem(200, 6, seed=seed, density=0.5)
    Xk = X if layout == "dense" else csr_tuple(X)
    w, f, g, n_iter, _, status = _core.logistic_fit(
        Xk, y, sw, True, 1.0, 0.3, "newton", 1e-10, 0.0, 100, 20)
    assert status in (0, 1)
    assert np.abs(g).max() <= 1e-10 * max(1.0, np.abs(
        _core.logistic_loss_grad(Xk, y, sw, np.zeros(7), True, 1.0,
                                 0.3)[1]).max())

    def fg(v):
        return ref.logistic_loss_grad(X, y, sw, v, True, 1.0, 0.3)

    tight = optimize.minimize(fg, np.zeros(7), jac=True, method="BFGS",
                              options={"gtol": 1e-11, "maxiter": 10000})
    np.testing.assert_allclose(w, tight.x, rtol=1e-7, atol=1e-8)
    assert f <= tight.fun + 1e-12 * abs(tight.fun)
    np.testing.assert_allclose(
        w, ref.logistic_fit(X, y, sw, True, 1.0, 0.3, "newton", 1e-10, 0.0,
                            100, 20)[0], rtol=1e-10, atol=1e-12)


def test_newton_without_penalty_on_separable_data_stays_finite():
    """No optimum exists: Newton's steps grow, the ridge keeps the
    factorisation alive, and max_iter ends it with finite numbers."""
    X = np.array([[1.0], [2.0], [-1.0], [-2.0]])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    w, f, g, n_iter, _, status = _core.logistic_fit(
        X, y, np.ones(4), True, 1.0, 0.0, "newton", 1e-10, 0.0, 30, 20)
    assert np.isfinite(w).all() and f >= 0.0
    assert w[0] > 5.0  # moving off towards the separating direction


# -- safety of the wrapper ------------------------------------------------


def test_inputs_are_not_written_and_views_work():
    X, y, sw = problem(50, 4, seed=9)
    big = np.asfortranarray(np.repeat(X, 2, axis=0))
    view = big[::2]
    before = [a.copy() for a in (view, y, sw)]
    readonly = view.copy()
    readonly.setflags(write=False)
    a = _core.logistic_fit(view, y, sw, True, 1.0, 1.0, "lbfgs", 1e-6,
                           2.22e-9, 100, 20)
    b = _core.logistic_fit(np.ascontiguousarray(X), y, sw, True, 1.0, 1.0,
                           "lbfgs", 1e-6, 2.22e-9, 100, 20)
    c = _core.logistic_fit(readonly, y, sw, True, 1.0, 1.0, "lbfgs", 1e-6,
                           2.22e-9, 100, 20)
    for arr, copy in zip((view, y, sw), before):
        np.testing.assert_array_equal(arr, copy)
    assert a[0].tobytes() == b[0].tobytes() == c[0].tobytes()


@pytest.mark.parametrize("bad, match", [
    ((np.ones(3), np.array([0, 1], np.int64), np.array([0, 2, 3], np.int64),
      2), "inconsistent"),
    ((np.ones(2), np.array([0, 5], np.int64), np.array([0, 1, 2], np.int64),
      2), "outside"),
    ((np.ones(2), np.array([0, -1], np.int64), np.array([0, 1, 2], np.int64),
      2), "outside"),
    ((np.ones(2), np.array([0, 1], np.int64), np.array([0, 2, 1, 2],
                                                        np.int64), 2),
     "non-decreasing"),
    (np.ones(3), "2-dimensional"),
])
def test_wrapper_rejects_malformed_matrices(bad, match):
    n = 2 if isinstance(bad, tuple) else 3
    with pytest.raises(ValueError, match=match):
        _core.logistic_fit(bad, np.zeros(n), np.ones(n), True, 1.0, 1.0,
                           "lbfgs", 1e-4, 2.22e-9, 10, 20)


def test_wrapper_rejects_mismatched_lengths():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="y must have length 3"):
        _core.logistic_fit(X, np.zeros(2), np.ones(3), True, 1.0, 1.0,
                           "lbfgs", 1e-4, 2.22e-9, 10, 20)
    with pytest.raises(ValueError, match="sample_weight must have length"):
        _core.logistic_fit(X, np.zeros(3), np.ones(4), True, 1.0, 1.0,
                           "lbfgs", 1e-4, 2.22e-9, 10, 20)
    with pytest.raises(ValueError, match="w must have length 3"):
        _core.logistic_loss_grad(X, np.zeros(3), np.ones(3), np.ones(2),
                                 True, 1.0, 1.0)
    with pytest.raises(ValueError, match="solver"):
        _core.logistic_fit(X, np.zeros(3), np.ones(3), True, 1.0, 1.0,
                           "sgd", 1e-4, 2.22e-9, 10, 20)


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="CPython only")
def test_no_reference_leaks():
    X, y, sw = problem(30, 3, seed=4)
    arrays = (X, y, sw)
    counts = [sys.getrefcount(a) for a in arrays]
    for _ in range(200):
        _core.logistic_fit(X, y, sw, True, 1.0, 1.0, "lbfgs", 1e-4, 2.22e-9,
                           50, 20)
        _core.logistic_loss_grad(X, y, sw, np.zeros(4), True, 1.0, 1.0)
        _core.logistic_hessian(X, y, sw, np.zeros(4), True, 1.0, 1.0)
        try:
            _core.logistic_fit(X, y[:-1], sw, True, 1.0, 1.0, "lbfgs", 1e-4,
                               2.22e-9, 50, 20)
        except ValueError:
            pass
    assert [sys.getrefcount(a) for a in arrays] == counts
