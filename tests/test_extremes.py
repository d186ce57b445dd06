"""Extreme magnitudes give finite, correct results.

Rewards of +-1e300, a KL coefficient beta of 1e-300 (eta = 1 / beta =
1e300) and probabilities of 1e-300 or subnormal: every quantity is formed
in log space (or with the largest exponent subtracted), so nothing
overflows to inf or underflows to a wrong 0.  The expected values are the
closed-form limits, exact in floating point.
"""
import math

import numpy as np
import pytest

import rlhf
from rlhf import _core, _reference


def test_reweight_rewards_of_1e300():
    """Rewards 1e300 apart: all the mass goes to the best responses, split
    in proportion to the policy."""
    policy = np.array([0.1, 0.2, 0.3, 0.4])
    rewards = np.array([1e300, -1e300, 0.0, 1e300])
    out = rlhf.reweight(policy, rewards, eta=0.5, eps=0.0)
    np.testing.assert_allclose(out, [0.2, 0.0, 0.0, 0.8], rtol=1e-15,
                               atol=0)


def test_reweight_rewards_near_the_largest_double():
    """The mean of 1e308 and 1e308 overflows a plain sum; the kernel's
    scaled mean does not."""
    out = rlhf.reweight([0.5, 0.5], [1e308, 1e308], eta=1.0, eps=0.0)
    np.testing.assert_array_equal(out, [0.5, 0.5])
    out = rlhf.reweight([0.5, 0.5], [1.7e308, -1.7e308], eta=1.0, eps=0.0)
    np.testing.assert_array_equal(out, [1.0, 0.0])


def test_reweight_beta_of_1e_300():
    """beta = 1e-300 (eta = 1e300) is the greedy policy: the maximisers
    of the reward, weighted by the reference policy."""
    policy = np.array([0.1, 0.4, 0.3, 0.2])
    rewards = np.array([1.0, 0.5, 1.0, 0.0])
    out = rlhf.reweight(policy, rewards, eta=1 / 1e-300, eps=0.0)
    np.testing.assert_allclose(out, [0.25, 0.0, 0.75, 0.0], rtol=1e-15,
                               atol=0)


@pytest.mark.parametrize("scale", [1e-300, 5e-324, 1e-320])
def test_reweight_probabilities_of_1e_300(scale):
    """Probabilities at the bottom of the double range (down to the
    smallest subnormal) renormalise exactly: softmax is shift-invariant in
    log space."""
    policy = np.array([1.0, 1.0, 2.0]) * scale
    out = rlhf.reweight(policy, np.zeros(3), eta=1.0, eps=0.0)
    np.testing.assert_allclose(out, [0.25, 0.25, 0.5], rtol=1e-15)
    rewards = np.array([0.0, 0.0, -1.0])
    out = rlhf.reweight(policy, rewards, eta=1.0, eps=0.0)
    # exact: p_i e^{a_i} / sum, with a = r - mean(r)
    weights = np.array([math.exp(1 / 3), math.exp(1 / 3),
                        2 * math.exp(-2 / 3)])
    np.testing.assert_allclose(out, weights / weights.sum(), rtol=1e-14)
    assert np.all(np.isfinite(out))


def test_logistic_objective_at_decision_values_of_1e300():
    """l(z, y) = log(1 + e^z) - y z at z = +-1e300: exactly 0 when the
    label agrees, |z| when it does not; the gradient s (sigmoid(z) - y) x
    is exactly 0 or +-x."""
    X = np.array([[1e300], [-1e300], [1e300], [-1e300]])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss, grad = _core.logistic_loss_grad(X, y, np.array([1.0, 1.0, 0.0,
                                                          0.0]),
                                          np.array([1.0]), False, 1.0, 0.0)
    assert loss == 0.0 and grad[0] == 0.0
    loss, grad = _core.logistic_loss_grad(X[2:], y[2:], np.array([1.0, 0.5]),
                                          np.array([1.0]), False, 1.0, 0.0)
    assert loss == 1.5e300
    assert grad[0] == 1e300 + 0.5 * 1e300


def test_pairwise_loss_at_reward_gaps_of_1e300():
    """-log sigmoid(d) at d = +-1e300: 0 and 1e300."""
    problem = (None, 2, 0, np.array([[0, 1]]), None, None, None, 0, 0.0)
    loss, grad = _core.bt_loss_grad(problem, np.array([5e299, -5e299]))
    assert loss == 0.0 and np.all(grad == 0.0)
    loss, grad = _core.bt_loss_grad(problem, np.array([-5e299, 5e299]))
    assert loss == 1e300
    np.testing.assert_array_equal(grad, [-1.0, 1.0])


def test_reward_model_probabilities_at_rewards_of_1e300():
    features = np.array([[1.0], [0.0], [-1.0]])
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    model = rlhf.RewardModel(C=1.0).fit(features, pairs)
    big = np.array([[1e300], [-1e300]]) / model.coef_[0]
    proba = model.predict_proba(big, np.array([[0, 1], [1, 0]]))
    np.testing.assert_array_equal(proba, [1.0, 0.0])
    for ties in ("rao-kupper", "davidson"):
        model = rlhf.RewardModel(ties=ties).fit(features, pairs,
                                                ties=[False, True, False])
        big = np.array([[1e300], [-1e300]]) / abs(model.coef_[0])
        proba = model.predict_proba(big, np.array([[0, 1], [1, 0]]))
        assert np.all(np.isfinite(proba))
        np.testing.assert_array_equal(np.sort(proba), [0.0, 1.0])


def test_simulated_annotators_at_extreme_rewards_and_temperatures():
    """Rewards +-1e300 at temperature 1e-300: (r_a - r_b) / T overflows a
    plain division, the choice is still the certain one."""
    rewards = np.array([1e300, -1e300, 0.0])
    prefs = rlhf.simulate_preferences(rewards,
                                      np.array([[0, 1], [1, 2], [2, 0]]),
                                      temperature=1e-300, random_state=0)
    winners = rewards[prefs.comparisons[:, 0]]
    losers = rewards[prefs.comparisons[:, 1]]
    assert np.all(winners > losers)
    ranks = rlhf.simulate_rankings(rewards, np.array([[1, 2, 0]]),
                                   temperature=1e-300, random_state=0)
    np.testing.assert_array_equal(ranks, [[0, 2, 1]])


def test_twin_agrees_at_probabilities_of_1e_300():
    """The kernel and its NumPy twin agree where the twin's log is
    finite: probabilities of 1e-300 with eps = 0."""
    rng = np.random.default_rng(0)
    policy = rng.uniform(size=(5, 7)) * 1e-300
    rewards = rng.normal(size=(5, 7)) * 100
    np.testing.assert_allclose(_core.reweight(policy, rewards, 2.0, 0.0),
                               _reference.reweight(policy, rewards, 2.0, 0.0),
                               rtol=1e-12, atol=1e-300)


def test_rankings_when_rewards_over_temperature_overflow():
    """Regression: rewards / temperature of +inf for several items left
    their order to their position in the group.  The limit is by reward,
    and equal rewards at random."""
    rewards = np.array([1e300, 2e300, 1e300, -1e300])
    groups = np.array([[0, 2, 1, 3]] * 200)
    ranks = rlhf.simulate_rankings(rewards, groups, temperature=1e-300,
                                   random_state=0)
    assert np.all(ranks[:, 0] == 1) and np.all(ranks[:, 3] == 3)
    # items 0 and 2 tie: each comes second about half the time (binomial
    # 200, 1/2: 100 +- 7; the bounds are 5 sigma)
    assert 65 <= np.sum(ranks[:, 1] == 0) <= 135


def test_no_penalty_means_none_at_huge_weights():
    """Regression: alpha = 0 with ||w||^2 overflowing gave 0 * inf = NaN."""
    problem = (None, 2, 0, np.array([[0, 1]]), None, None, None, 0, 0.0)
    loss, _ = _core.bt_loss_grad(problem, np.array([1e300, -1e300]))
    assert loss == 0.0
    X = np.array([[1.0]])
    loss, _ = _core.logistic_loss_grad(X, np.array([1.0]), np.array([1.0]),
                                       np.array([1e300]), False, 1.0, 0.0)
    assert loss == 0.0
