"""The Bradley-Terry term of a strict comparison without a tie model,
-log sigmoid(d) and its derivative -sigmoid(-d), whose exp and log1p are
polynomials (csrc/fastexp.h exp_nonpositive_gradual, csrc/bradley_terry.c
log1p_unit) so that the loop over comparisons vectorises: checked against
libm through NumPy over the whole range of d, with the bounds that
bradley_terry.c's strict_terms states (the loss below 2.5 ulp, the
derivative below 3 ulp, relative to the exact value; one subnormal step
where the result underflows)."""
import numpy as np
import pytest

from rlhf import _core

# libm in extended precision (x86's 80-bit long double: 11 more bits) is
# exact at double's scale; where long double is double, libm's own error
# (below 1 ulp for exp and log1p, so below 2 for their composition) is
# added to the bounds
EXTENDED = np.finfo(np.longdouble).nmant >= 63
LIBM_SLACK = 0.0 if EXTENDED else 2.0
LOSS_ULPS = 2.5
COEF_ULPS = 3.0


def exact(d):
    """-log sigmoid(d) and -sigmoid(-d) by libm, in long double."""
    d = np.asarray(d, dtype=np.longdouble)
    with np.errstate(over="ignore"):
        loss = np.maximum(-d, 0) + np.log1p(np.exp(-np.abs(d)))
        coef = -1 / (1 + np.exp(d))
    return loss, coef


def ulps(value, reference):
    """|value - reference| in units of the last place of the double
    nearest reference (one subnormal step, 2^-1074, below DBL_MIN)."""
    spacing = np.spacing(np.abs(reference.astype(np.float64)))
    return np.abs((value.astype(np.longdouble) - reference) /
                  spacing.astype(np.longdouble)).astype(np.float64)


def losses_one_by_one(d):
    """The loss of one comparison between items of strengths d and 0 (no
    penalty), a call each: the objective sums the comparisons."""
    pair = np.array([[0, 1]], dtype=np.int64)
    problem = (None, 2, 0, pair, None, None, None, 0, 0.0)
    return np.array([_core.bt_loss_grad(problem, np.array([v, 0.0]))[0]
                     for v in d])


def coefs(d):
    """The derivative of every comparison of item i (strength d[i]) with
    the last item (strength 0): the gradient of item i, its one
    comparison's."""
    n = len(d)
    pairs = np.stack([np.arange(n), np.full(n, n)], 1).astype(np.int64)
    problem = (None, n + 1, 0, pairs, None, None, None, 0, 0.0)
    return _core.bt_loss_grad(problem, np.r_[d, 0.0])[1][:n]


def edges():
    tiny = np.array([5e-324, 1e-310, 2.2250738585072014e-308, 1e-300,
                     1e-100, 1e-20, 1e-17, 2.0**-53, 1e-10])
    # exp(-d) turns subnormal past 708.4 and underflows to 0 past 745.13
    large = np.array([1.0, 2.0, 36.0, 37.5, 40.0, 100.0, 700.0, 708.39,
                      708.3964185322641, 708.4, 709.0, 709.78, 710.0,
                      740.0, 744.0, 744.44, 745.0, 745.13, 745.1332191019411,
                      745.14, 745.2, 746.0, 746.1, 750.0, 1e3, 1e10, 1e300])
    ends = np.r_[0.0, tiny, large, np.nextafter(large, 0),
                 np.nextafter(large, np.inf)]
    return np.r_[ends, -ends, -0.0]


def dense():
    rng = np.random.default_rng(0)
    return np.r_[np.linspace(-760.0, 760.0, 400_001),
                 rng.uniform(-40.0, 40.0, 400_000),
                 rng.normal(size=100_000),
                 np.logspace(-323, 2.9, 20_000),
                 -np.logspace(-323, 2.9, 20_000)]


def test_derivative_against_libm_over_the_whole_range():
    d = np.r_[edges(), dense()]
    reference = exact(d)[1]
    err = ulps(coefs(d), reference)
    worst = np.argmax(err)
    assert err[worst] < COEF_ULPS + LIBM_SLACK, (d[worst], err[worst])


@pytest.mark.parametrize("which", ["edges", "dense"])
def test_loss_against_libm_over_the_whole_range(which):
    if which == "edges":
        d = edges()
    else:
        # every 25th point: one call per comparison
        d = dense()[::25]
    loss = losses_one_by_one(d)
    err = ulps(loss, exact(d)[0])
    worst = np.argmax(err)
    assert err[worst] < LOSS_ULPS + LIBM_SLACK, (d[worst], err[worst])


def test_small_losses_keep_their_relative_accuracy():
    """For large d the loss is exp(-d) to double precision (log1p(e) = e
    once e^2 / 2 is below half an ulp of e): relative accuracy all the way
    to the subnormals, and 0 only where exp(-d) rounds to 0."""
    d = np.r_[np.linspace(38.0, 746.0, 20_001), 745.1332191019411,
              745.1332191019412]
    loss = losses_one_by_one(d)
    reference = np.exp(-d.astype(np.longdouble))
    assert (loss > 0).all() or (loss[d > 745.1332191019412] == 0).all()
    np.testing.assert_array_equal(loss > 0, reference.astype(np.float64) > 0)
    assert ulps(loss, reference).max() <= 1.0 + LIBM_SLACK / 2


def test_signs_zeros_and_infinities():
    loss = losses_one_by_one([0.0, -0.0, np.inf, -np.inf, 800.0, -800.0])
    np.testing.assert_array_equal(loss[2:], [0.0, np.inf, 0.0, 800.0])
    # log 2 (log1p_unit(1) is 1 ulp above the double nearest it)
    assert loss[0] == loss[1]
    assert ulps(loss[:1], exact([0.0])[0])[0] < LOSS_ULPS
    # (infinite strengths make the penalty's 0 * inf a NaN)
    c = coefs(np.array([0.0, -0.0, 800.0, -800.0, 1e300, -1e300]))
    np.testing.assert_array_equal(c, [-0.5, -0.5, 0.0, -1.0, 0.0, -1.0])
    assert np.isnan(losses_one_by_one([np.nan])).all()


def test_weights_scale_each_term_exactly():
    """A weight s multiplies the unweighted term once: s * loss and
    s * coef, the same bits as the unweighted pass for s = 1."""
    rng = np.random.default_rng(1)
    d = rng.normal(scale=5.0, size=1000)
    n = len(d)
    pairs = np.stack([np.arange(n), np.full(n, n)], 1).astype(np.int64)
    weight = rng.uniform(0.5, 2.0, n)
    x = np.r_[d, 0.0]
    plain = _core.bt_loss_grad((None, n + 1, 0, pairs, None, None, None, 0,
                                0.0), x)[1][:n]
    ones = _core.bt_loss_grad((None, n + 1, 0, pairs, np.ones(n), None,
                               None, 0, 0.0), x)[1][:n]
    weighted = _core.bt_loss_grad((None, n + 1, 0, pairs, weight, None,
                                   None, 0, 0.0), x)[1][:n]
    np.testing.assert_array_equal(ones, plain)
    np.testing.assert_array_equal(weighted, weight * plain)
