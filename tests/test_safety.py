"""rlhf.safety: constrained_policy against SciPy's SLSQP, closed forms,
the KKT conditions and its NumPy twin; shape_rewards; mask_policy."""
import sys

import numpy as np
import pytest

import rlhf
from rlhf import _core
from rlhf import _reference as ref


def objective(policy, reference, rewards, beta):
    """E_pi[r] - beta KL(pi || pi_ref), 0 log 0 = 0."""
    support = policy > 0
    kl = np.sum(policy[support] * np.log(policy[support] / reference[support]))
    return policy @ rewards - beta * kl


def random_problem(seed, k=None):
    rng = np.random.default_rng(seed)
    k = k or int(rng.integers(2, 7))
    reference = rng.dirichlet(np.ones(k))
    rewards = rng.normal(size=k)
    costs = rng.normal(size=k)
    beta = float(rng.choice([0.1, 0.3, 1.0, 3.0]))
    return rng, reference, rewards, costs, beta


def slsqp(reference, rewards, costs, beta, budget):
    optimize = pytest.importorskip("scipy.optimize")
    k = reference.size

    def fun(x):
        x = np.maximum(x, 1e-300)
        return -(x @ rewards - beta * np.sum(x * np.log(x / reference)))

    def jac(x):
        x = np.maximum(x, 1e-300)
        return -(rewards - beta * (np.log(x / reference) + 1.0))

    result = optimize.minimize(
        fun, reference.copy(), jac=jac, method="SLSQP",
        bounds=[(1e-15, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0,
                      "jac": lambda x: np.ones(k)},
                     {"type": "ineq", "fun": lambda x: budget - x @ costs,
                      "jac": lambda x: -costs}],
        options={"ftol": 1e-12, "maxiter": 1000})
    # status 8: the line search stopped at the rounding floor of f
    assert result.success or result.status == 8, result.message
    return result.x


@pytest.mark.parametrize("seed", range(30))
def test_matches_slsqp(seed):
    rng, reference, rewards, costs, beta = random_problem(seed)
    free = reference * np.exp(rewards / beta)
    free /= free.sum()
    # a binding budget between the cheapest response and the free optimum,
    # and a slack one above it
    for budget in (costs.min() + rng.uniform(0.05, 0.95)
                   * (free @ costs - costs.min()),
                   free @ costs + 0.1):
        policy, lam = rlhf.constrained_policy(reference, rewards, costs,
                                              beta, budget)
        expected = slsqp(reference, rewards, costs, beta, budget)
        assert abs(objective(policy, reference, rewards, beta)
                   - objective(expected, reference, rewards, beta)) < 1e-7
        assert policy @ costs <= budget + 1e-8
        assert abs(policy.sum() - 1.0) < 1e-14
        # complementary slackness, and lam == 0 exactly when slack
        assert lam >= 0.0
        assert abs(lam * (policy @ costs - budget)) < 1e-10
        if budget > free @ costs:
            assert lam == 0.0
            np.testing.assert_allclose(policy, free, rtol=1e-13)
        else:
            assert lam > 0.0
            assert abs(policy @ costs - budget) < 1e-12


@pytest.mark.parametrize("seed", range(10))
def test_stationarity(seed):
    """KKT: the policy is the Gibbs policy of the shaped reward at the
    returned multiplier, i.e. the KL-regularised optimum of
    shape_rewards(r, c, lam) (rlhf.reweight from pi_ref with eta = 1/beta,
    eps = 0)."""
    rng, reference, rewards, costs, beta = random_problem(100 + seed)
    budget = costs.min() + 0.3 * (reference @ costs - costs.min())
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, beta,
                                          budget)
    gibbs = rlhf.reweight(reference, rlhf.shape_rewards(rewards, costs, lam),
                          eta=1.0 / beta, eps=0.0)
    np.testing.assert_allclose(policy, gibbs, rtol=1e-9)


def test_two_responses_closed_form():
    """pi_ref = (1/2, 1/2), r = (1, 0), c = (1, 0), budget b: the constraint
    forces pi_1 = b, so lam = 1 - beta log(b / (1 - b))."""
    for beta in (0.1, 1.0, 10.0):
        for b in (0.05, 0.25, 0.4):
            free = 1.0 / (1.0 + np.exp(-1.0 / beta))
            policy, lam = rlhf.constrained_policy([0.5, 0.5], [1.0, 0.0],
                                                  [1.0, 0.0], beta, b)
            if b >= free:
                assert lam == 0.0
                continue
            np.testing.assert_allclose(policy, [b, 1 - b], rtol=1e-13)
            np.testing.assert_allclose(lam, 1 - beta * np.log(b / (1 - b)),
                                       rtol=1e-12)


def test_batched_rows_and_per_prompt_budget():
    rng = np.random.default_rng(7)
    n, k = 25, 6
    reference = rng.dirichlet(np.ones(k), size=n)
    rewards = rng.normal(size=(n, k))
    costs = rng.normal(size=(n, k))
    budget = costs.min(axis=1) + rng.uniform(0.0, 1.5, size=n)
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 0.5,
                                          budget)
    assert policy.shape == (n, k) and lam.shape == (n,)
    for i in range(n):
        row_policy, row_lam = rlhf.constrained_policy(
            reference[i], rewards[i], costs[i], 0.5, budget[i])
        np.testing.assert_array_equal(policy[i], row_policy)
        assert lam[i] == row_lam
    # costs shared by every prompt broadcast
    budget = np.maximum(budget, costs[0].min())
    shared, _ = rlhf.constrained_policy(reference, rewards, costs[0], 0.5,
                                        budget)
    full, _ = rlhf.constrained_policy(reference, rewards,
                                      np.tile(costs[0], (n, 1)), 0.5, budget)
    np.testing.assert_array_equal(shared, full)
    # one reference policy for every prompt
    shared, _ = rlhf.constrained_policy(reference[0], rewards, costs, 0.5,
                                        np.maximum(budget, costs.min(axis=1)))
    full, _ = rlhf.constrained_policy(np.tile(reference[0], (n, 1)), rewards,
                                      costs, 0.5,
                                      np.maximum(budget, costs.min(axis=1)))
    np.testing.assert_array_equal(shared, full)


def test_budget_at_least_cost_is_the_limit():
    """Only the cheapest responses (1 and 2) are feasible: the optimum is
    pi_ref exp(r / beta) renormalised on them, the limit lam -> inf."""
    reference = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    costs = np.array([1.0, 0.5, 0.5, 2.0, -5.0])  # the last has no mass
    rewards = np.array([3.0, 1.0, 0.0, 4.0, 9.0])
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 1.0, 0.5)
    assert lam == np.inf
    w = np.array([0.0, 0.2 * np.e, 0.3, 0.0, 0.0])
    np.testing.assert_allclose(policy, w / w.sum(), rtol=1e-15)
    # equal rewards on them: the reference renormalised
    policy, lam = rlhf.constrained_policy(reference, [3.0, 1.0, 1.0, 4.0, 9.0],
                                          costs, 1.0, 0.5)
    np.testing.assert_allclose(policy, [0.0, 0.4, 0.6, 0.0, 0.0], rtol=1e-15)
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 1.0, 0.5)
    # approaching it from above: the policy converges to the limit
    near, lam_near = rlhf.constrained_policy(reference, rewards, costs, 1.0,
                                             0.5 + 1e-9)
    assert np.isfinite(lam_near) and lam_near > 10
    np.testing.assert_allclose(near, policy, atol=1e-8)


def test_budget_below_least_cost_raises():
    with pytest.raises(ValueError, match=r"budget 0\.4.*least achievable "
                       r"cost 0\.5.*row\(s\) \[0\]"):
        rlhf.constrained_policy([0.5, 0.5, 0.0], [0.0, 1.0, 2.0],
                                [0.5, 1.0, 0.0], 1.0, 0.4)
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        rlhf.constrained_policy([[0.5, 0.5], [0.5, 0.5]], [0.0, 1.0],
                                [[0.0, 1.0], [0.5, 1.0]], 1.0, [0.1, 0.1])


def test_budget_slack_when_costs_constant():
    policy, lam = rlhf.constrained_policy([0.5, 0.5], [1.0, 0.0], [2.0, 2.0],
                                          1.0, 2.0)
    assert lam == 0.0
    np.testing.assert_allclose(policy, [1 / (1 + np.exp(-1)),
                                        1 / (1 + np.exp(1))], rtol=1e-14)


# extreme inputs, each against a closed form ---------------------------------

def test_huge_rewards():
    """Points (c, r) = (0, -1e300), (0.25, 0), (1, 1e300) with beta = 1:
    the reward gaps dwarf beta, so the optimum under budget 0.5 mixes the
    two hull neighbours of c = 0.5 to meet it, pi = (1/3, 0, 2/3), at
    lam = 1e300 / 0.75 (the slope between them) up to beta-sized terms."""
    reference = np.full(3, 1 / 3)
    rewards = np.array([1e300, -1e300, 0.0])
    costs = np.array([1.0, 0.0, 0.25])
    for impl in (rlhf.constrained_policy, twin_row):
        policy, lam = impl(reference, rewards, costs, 1.0, 0.5)
        assert np.all(np.isfinite(policy))
        np.testing.assert_allclose(policy, [1 / 3, 0.0, 2 / 3], rtol=1e-12,
                                   atol=1e-300)
        np.testing.assert_allclose(lam, 1e300 / 0.75, rtol=1e-12)
        assert abs(policy @ costs - 0.5) < 1e-15


def twin_row(reference, rewards, costs, beta, budget):
    policy, lam = ref.constrained_policy(reference[None], rewards[None],
                                         costs[None], [budget], beta)
    return policy[0], lam[0]


def test_tiny_beta_is_the_linear_programme():
    """beta = 1e-300: the linear programme max E[r] s.t. E[c] <= b, whose
    answer mixes the hull neighbours (0.5, 0.6) and (1, 1) of b = 0.75,
    pi = (1/2, 0, 1/2), at the hull slope lam = 0.8."""
    reference = np.full(3, 1 / 3)
    rewards = np.array([1.0, 0.0, 0.6])
    costs = np.array([1.0, 0.0, 0.5])
    for impl in (rlhf.constrained_policy, twin_row):
        policy, lam = impl(reference, rewards, costs, 1e-300, 0.75)
        np.testing.assert_allclose(policy, [0.5, 0.0, 0.5], rtol=1e-12,
                                   atol=1e-300)
        np.testing.assert_allclose(lam, 0.8, rtol=1e-12)
    optimize = pytest.importorskip("scipy.optimize")
    lp = optimize.linprog(-rewards, A_ub=[costs], b_ub=[0.75],
                          A_eq=[np.ones(3)], b_eq=[1.0], bounds=(0, 1))
    np.testing.assert_allclose(policy @ rewards, -lp.fun, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e3, 1e6])
@pytest.mark.parametrize("relative_beta", [2e-16, 1e-14, 1e-10])
@pytest.mark.parametrize("gap", [0.0, 1.0, 3.0])
def test_ill_conditioned_near_ties(scale, relative_beta, gap):
    """r = (R, 0, R/2 + delta), c = (1, 0, 1/2): three nearly collinear
    points, and beta so small against R that r - lam c cancels to far
    below beta.  With y = (R - lam) / (2 beta) and d = delta / beta the
    logits are (2y, 0, y + d); E[c] = 0.6 is the quadratic
    0.4 a^2 - 0.1 e^d a - 0.6 = 0 in a = e^y.  Naive double arithmetic
    in r - lam c is off by up to 0.06 here (the kernel's exact logits are
    what make it right)."""
    beta = scale * relative_beta
    rewards = np.array([scale, 0.0, scale / 2 + gap * beta])
    d = (rewards[2] - scale / 2) / beta  # exact difference, one rounding
    a = (0.1 * np.exp(d) + np.sqrt(0.01 * np.exp(2 * d) + 0.96)) / 0.8
    w = np.array([a * a, 1.0, a * np.exp(d)])
    expected = w / w.sum()
    costs = np.array([1.0, 0.0, 0.5])
    for impl in (rlhf.constrained_policy, twin_row):
        policy, lam = impl(np.full(3, 1 / 3), rewards, costs, beta, 0.6)
        np.testing.assert_allclose(policy, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(lam, scale - 2 * beta * np.log(a),
                                   rtol=1e-15)


def test_huge_beta_is_the_cost_tilt():
    """beta = 1e300 with rewards of order 1: r / beta vanishes, and the
    optimum is the reference tilted by exp(-s c) with s = lam / beta the
    root of E[c] = b (found here by SciPy's brentq)."""
    optimize = pytest.importorskip("scipy.optimize")
    reference = np.array([0.1, 0.2, 0.3, 0.4])
    costs = np.array([2.0, 1.0, 0.0, 3.0])
    rewards = np.array([1.0, -1.0, 0.5, 2.0])
    budget = 1.0

    def tilt(s):
        w = reference * np.exp(-s * costs)
        return w / w.sum()

    s = optimize.brentq(lambda s: tilt(s) @ costs - budget, 0.0, 50.0,
                        xtol=1e-15)
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 1e300,
                                          budget)
    np.testing.assert_allclose(policy, tilt(s), rtol=1e-12)
    np.testing.assert_allclose(lam / 1e300, s, rtol=1e-10)


def test_tiny_reference_probabilities():
    """pi_ref = (1e-300, 1/2, 1/2), r = (800, 0, 0), c = (1, 0, 0),
    beta = 1, budget 1/2: pi_1 = 1/2 needs 1e-300 exp(800 - lam) = 1, so
    lam = 800 + log(1e-300); np.exp(800) alone overflows."""
    reference = np.array([1e-300, 0.5, 0.5])
    rewards = np.array([800.0, 0.0, 0.0])
    costs = np.array([1.0, 0.0, 0.0])
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 1.0, 0.5)
    np.testing.assert_allclose(policy, [0.5, 0.25, 0.25], rtol=1e-13)
    np.testing.assert_allclose(lam, 800.0 + np.log(1e-300), rtol=1e-13)
    # and the free optimum (no binding budget) puts all but e^-109 on it
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 1.0, 1.0)
    assert lam == 0.0
    np.testing.assert_allclose(
        policy[1], 0.5 / (np.exp(800.0 + np.log(1e-300)) + 1.0), rtol=1e-12)


# the kernel and its twin -----------------------------------------------------

def layouts(a):
    """The same values as C, Fortran, strided and read-only arrays."""
    fortran = np.asfortranarray(a)
    padded = np.zeros((a.shape[0], 2 * a.shape[1]))
    padded[:, ::2] = a
    readonly = a.copy()
    readonly.setflags(write=False)
    return [a, fortran, padded[:, ::2], readonly]


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (4, 3), (40, 17),
                                   (3, 300)])
@pytest.mark.parametrize("beta", [1e-3, 0.2, 1.0, 50.0])
def test_kernel_equals_twin(shape, beta):
    rng = np.random.default_rng(shape[1] * 7 + int(beta * 10))
    reference = rng.dirichlet(np.ones(shape[1]), size=shape[0])
    reference[:, 0] = np.where(rng.random(shape[0]) < 0.3, 0.0,
                               reference[:, 0]) if shape[1] > 1 else 1.0
    reference /= reference.sum(axis=1, keepdims=True)
    rewards = rng.normal(size=shape)
    costs = rng.normal(size=shape)
    least = np.where(reference > 0, costs, np.inf).min(axis=1)
    budget = least + rng.uniform(0.0, 1.0, size=shape[0])
    budget[0] = least[0]
    expected = ref.constrained_policy(reference, rewards, costs, budget, beta)
    for a, b, c in zip(layouts(reference), layouts(rewards), layouts(costs)):
        before = [x.copy() for x in (a, b, c, budget)]
        policy, lam = _core.constrained_policy(a, b, c, budget, beta)
        for x, y in zip((a, b, c, budget), before):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(policy, expected[0], rtol=1e-9,
                                   atol=1e-15)
        np.testing.assert_allclose(lam, expected[1], rtol=1e-9, atol=0)
    # float32 input is accepted and computed in float64
    policy32, _ = rlhf.constrained_policy(reference,
                                          rewards.astype(np.float32),
                                          costs.astype(np.float32), beta,
                                          budget + 1e-6)
    assert policy32.dtype == np.float64


def test_no_reference_leaks():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(4), size=3)
    rewards, costs = rng.normal(size=(2, 3, 4))
    budget = costs.min(axis=1) + 0.1
    counts = [sys.getrefcount(x) for x in (reference, rewards, costs, budget)]
    for _ in range(200):
        _core.constrained_policy(reference, rewards, costs, budget, 1.0)
    assert counts == [sys.getrefcount(x)
                      for x in (reference, rewards, costs, budget)]
    with pytest.raises(ValueError):
        _core.constrained_policy(reference, rewards, costs[:, :3], budget, 1.0)
    assert counts == [sys.getrefcount(x)
                      for x in (reference, rewards, costs, budget)]


def test_kernel_rejects_what_it_cannot_solve():
    ok = (np.full((1, 2), 0.5), np.zeros((1, 2)), np.array([[0.0, 1.0]]),
          np.array([0.5]))
    with pytest.raises(ValueError, match="row 0"):
        _core.constrained_policy(*ok[:3], np.array([-1.0]), 1.0)
    with pytest.raises(ValueError, match="row 0"):
        _core.constrained_policy(np.array([[np.nan, 0.5]]), *ok[1:], 1.0)
    with pytest.raises(ValueError):
        _core.constrained_policy(*ok, 0.0)
    with pytest.raises(ValueError, match="budget must have length 1"):
        _core.constrained_policy(*ok[:3], np.array([0.5, 0.5]), 1.0)
    # the first failing row is named, also when rows are shared by threads
    rng = np.random.default_rng(1)
    reference = rng.dirichlet(np.ones(100), size=300)
    costs = rng.normal(size=(300, 100))
    budget = costs.min(axis=1) + 0.5
    budget[[150, 260]] = -1e9
    with pytest.raises(ValueError, match="row 150 "):
        _core.constrained_policy(reference, costs, costs, budget, 1.0)


# bad input -------------------------------------------------------------------

GOOD = dict(reference_policy=[0.5, 0.25, 0.25], rewards=[1.0, 0.0, 0.5],
            costs=[1.0, 0.0, 0.2], beta=1.0, budget=0.3)


@pytest.mark.parametrize("change, error, match", [
    (dict(costs=[1.0, 0.0]), ValueError, "costs of shape"),
    (dict(costs=[[1.0, 0.0]] * 2), ValueError, "costs of shape"),
    (dict(costs=[[[1.0, 0.0, 0.2]]]), ValueError, "must broadcast to shape"),
    (dict(rewards=[1.0, 2.0]), ValueError, "rewards of shape"),
    (dict(costs=[1.0, np.nan, 0.2]), ValueError, "costs contains NaN"),
    (dict(rewards=[np.inf, 0.0, 0.0]), ValueError,
     "rewards contains infinity"),
    (dict(costs=["a", "b", "c"]), ValueError, "costs must be numeric"),
    (dict(beta=-1.0), ValueError,
     r"The 'beta' parameter of constrained_policy must be a float in "
     r"\(0, inf\)\. Got -1\.0 instead\."),
    (dict(beta=0.0), ValueError, "'beta' parameter"),
    (dict(beta=np.inf), ValueError, "'beta' parameter"),
    (dict(beta=np.nan), ValueError, "'beta' parameter"),
    (dict(beta="1"), ValueError, "'beta' parameter"),
    (dict(reference_policy=[0.5, -0.25, 0.75]), ValueError,
     "reference_policy must be non-negative"),
    (dict(reference_policy=[0.5, 0.25, 0.25 + 1e-8]), ValueError,
     "reference_policy must sum to 1"),
    (dict(reference_policy=[0.5, np.nan, 0.5]), ValueError,
     "reference_policy contains NaN"),
    (dict(reference_policy=[[[1.0]]]), ValueError,
     "reference_policy must have shape"),
    (dict(budget=np.nan), ValueError, "budget contains NaN"),
    (dict(budget=[0.3, 0.3]), ValueError, "budget must be a scalar"),
])
def test_bad_input(change, error, match):
    with pytest.raises(error, match=match):
        rlhf.constrained_policy(**{**GOOD, **change})


def test_reference_sum_tolerance_is_relative_1e9():
    policy, _ = rlhf.constrained_policy(
        **{**GOOD, "reference_policy": [0.5, 0.25, 0.25 + 5e-10]})
    assert abs(policy.sum() - 1.0) < 1e-15


# shape_rewards -----------------------------------------------------------------

def test_shape_rewards_broadcasting():
    rewards = np.arange(6.0).reshape(2, 3)
    costs = np.array([1.0, 0.0, 2.0])
    np.testing.assert_array_equal(rlhf.shape_rewards(rewards, costs, 0.5),
                                  rewards - 0.5 * costs[None, :])
    np.testing.assert_array_equal(
        rlhf.shape_rewards(rewards, costs, [0.0, 2.0]),
        [[0.0, 1.0, 2.0], [1.0, 4.0, 1.0]])
    np.testing.assert_array_equal(rlhf.shape_rewards([1.0, 2.0], [3.0, 4.0],
                                                     1.0), [-2.0, -2.0])
    with pytest.raises(ValueError, match=r"lam must be a scalar or have "
                       r"shape \(n_prompts,\)"):
        rlhf.shape_rewards(rewards, costs, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="lam must be >= 0"):
        rlhf.shape_rewards(rewards, costs, -1.0)
    with pytest.raises(ValueError, match="costs of shape"):
        rlhf.shape_rewards(rewards, [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="lam contains NaN"):
        rlhf.shape_rewards(rewards, costs, np.nan)


# mask_policy -------------------------------------------------------------------

def test_mask_policy():
    policy = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.0, 0.5, 0.5]])
    allowed = np.array([[True, False, True], [True, True, False],
                        [True, False, False]])
    before = policy.copy()
    with pytest.raises(ValueError, match=r"prompt row\(s\) \[2\]"):
        rlhf.mask_policy(policy, allowed)
    out = rlhf.mask_policy(policy, allowed, fallback=[0, 0, 1])
    np.testing.assert_allclose(out, [[5 / 7, 0, 2 / 7], [0.5, 0.5, 0],
                                     [0, 1, 0]], rtol=1e-15)
    np.testing.assert_array_equal(policy, before)
    # a mask shared by every prompt; a scalar fallback
    out = rlhf.mask_policy(policy, [False, True, True], fallback=2)
    np.testing.assert_allclose(out[0], [0, 0.6, 0.4], rtol=1e-15)
    # nothing allowed at all
    with pytest.raises(ValueError, match=r"\[0, 1, 2\]"):
        rlhf.mask_policy(policy, np.zeros(3, dtype=bool))


@pytest.mark.parametrize("allowed, fallback, error, match", [
    (np.ones((2, 3), dtype=bool), None, ValueError, "allowed of shape"),
    (np.ones(4, dtype=bool), None, ValueError, "allowed of shape"),
    (np.ones(3), None, TypeError, "allowed must be an array of booleans"),
    (np.zeros(3, dtype=bool), 1.5, TypeError, "fallback must be an integer"),
    (np.zeros(3, dtype=bool), 3, ValueError, r"fallback must index"),
    (np.zeros(3, dtype=bool), [0, 1], ValueError, "fallback must be an int"),
])
def test_mask_policy_bad_input(allowed, fallback, error, match):
    policy = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.0, 0.5, 0.5]])
    with pytest.raises(error, match=match):
        rlhf.mask_policy(policy, allowed, fallback=fallback)


def test_mask_policy_bad_policy():
    with pytest.raises(ValueError, match="policy must be non-negative"):
        rlhf.mask_policy([0.5, -0.1], [True, True])
    with pytest.raises(ValueError, match="policy contains NaN"):
        rlhf.mask_policy([0.5, np.nan], [True, True])


# properties over wide ranges --------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def problems(draw):
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(k))
    if k > 1 and draw(st.booleans()):
        reference[rng.integers(k)] = 0.0
        reference /= reference.sum()
    reward_scale = 10.0 ** draw(st.integers(-3, 8))
    cost_scale = 10.0 ** draw(st.integers(-3, 3))
    rewards = rng.normal(size=k) * reward_scale
    costs = rng.normal(size=k) * cost_scale
    beta = 10.0 ** draw(st.floats(-12, 12))
    least = costs[reference > 0].min()
    budget = least + draw(st.floats(0, 1)) * (costs.max() - least)
    return reference, rewards, costs, beta, budget


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(problems())
def test_kkt_and_twin_on_wide_ranges(problem):
    reference, rewards, costs, beta, budget = problem
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, beta,
                                          budget)
    spread = np.ptp(costs[reference > 0]) or 1.0
    assert np.all(np.isfinite(policy)) and np.all(policy >= 0)
    assert abs(policy.sum() - 1.0) < 1e-14
    assert np.all(policy[reference == 0] == 0)
    assert lam >= 0
    excess = policy @ costs - budget
    assert excess <= 1e-13 * spread
    if lam == 0:
        free = rlhf.reweight(reference, rewards, eta=1 / beta, eps=0.0)
        # the two compute the exponent differently: a few ulps of an
        # argument near -700 are a relative error of a few 1e-13 in exp
        np.testing.assert_allclose(policy, free, rtol=1e-11, atol=1e-300)
    elif np.isfinite(lam):
        assert abs(excess) <= 1e-13 * spread  # the budget binds
    twin, twin_lam = twin_row(reference, rewards, costs, beta, budget)
    np.testing.assert_allclose(policy, twin, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lam, twin_lam, rtol=1e-9)


def test_docstring_examples():
    import doctest

    from rlhf import safety

    result = doctest.testmod(safety, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
