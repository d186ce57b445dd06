"""Closed forms of the KL-regularised problem: the optimum, the divergence
and the best-of-n distribution, against theory and Monte Carlo."""
import numpy as np
import pytest

import rlhf


def random_problem(seed, n_prompts=4, k=6, ties=False):
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(k), size=n_prompts)
    rewards = rng.normal(size=(n_prompts, k))
    if ties:
        rewards = np.round(rewards)
    return reference, rewards


@pytest.mark.parametrize("beta", [0.05, 0.3, 2.0])
def test_kl_regularized_policy_is_the_optimum(beta):
    reference, rewards = random_problem(0)
    optimum = rlhf.kl_regularized_policy(reference, rewards, beta)
    expected = reference * np.exp(rewards / beta)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(optimum, expected, rtol=1e-12)

    # the objective E_pi[r] - beta KL(pi || ref) is larger there than at
    # any perturbed distribution (strict concavity)
    def objective(pi):
        return (pi * rewards).sum(1) - beta * rlhf.kl_divergence(pi, reference)

    rng = np.random.default_rng(1)
    best = objective(optimum)
    for _ in range(20):
        other = rng.dirichlet(np.ones(6), size=4) * 0.1 + optimum * 0.9
        assert (objective(other) < best).all()
    # and its value is beta log Z
    log_z = beta * np.log((reference * np.exp(rewards / beta)).sum(1))
    np.testing.assert_allclose(best, log_z, rtol=1e-10)


def test_kl_regularized_policy_keeps_zeros_and_limits():
    reference = np.array([0.5, 0.0, 0.5])
    rewards = np.array([0.0, 10.0, 1.0])
    out = rlhf.kl_regularized_policy(reference, rewards, 1e-3)
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(
        rlhf.kl_regularized_policy(reference, rewards, 1e6), reference,
        atol=1e-6)


def test_kl_regularized_policy_where_r_over_beta_overflows():
    """Finite rewards and beta whose quotient is beyond float range: the
    limit, the best response the reference can give, with its ties
    weighted by the reference."""
    reference = np.array([[0.2, 0.3, 0.1, 0.4], [0.0, 0.5, 0.25, 0.25]])
    rewards = np.array([[1e308, -1e308, 1e308, 0.0],
                        [1e308, 1.0, 1.0, -1e308]])
    out = rlhf.kl_regularized_policy(reference, rewards, 1e-10)
    np.testing.assert_allclose(out, [[2 / 3, 0.0, 1 / 3, 0.0],
                                     [0.0, 2 / 3, 1 / 3, 0.0]], rtol=1e-14)


def test_kl_divergence_values():
    p = np.array([[0.2, 0.8], [1.0, 0.0]])
    q = np.array([[0.5, 0.5], [0.5, 0.5]])
    expected = [0.2 * np.log(0.4) + 0.8 * np.log(1.6), np.log(2.0)]
    np.testing.assert_allclose(rlhf.kl_divergence(p, q), expected, rtol=1e-14)
    assert rlhf.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert rlhf.kl_divergence([0.3, 0.7], [0.3, 0.7]) == 0.0
    scipy_stats = pytest.importorskip("scipy.stats")
    reference, _ = random_problem(2)
    other, _ = random_problem(3)
    np.testing.assert_allclose(
        rlhf.kl_divergence(other, reference),
        scipy_stats.entropy(other, reference, axis=1), rtol=1e-12)


def bon_monte_carlo(reference, rewards, n, draws, rng):
    """Frequencies of the first best of n samples from the reference."""
    k = reference.size
    samples = rng.choice(k, size=(draws, n), p=reference)
    best = np.argmax(rewards[samples], axis=1)
    chosen = samples[np.arange(draws), best]
    return np.bincount(chosen, minlength=k) / draws


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_best_of_n_matches_monte_carlo(n, ties):
    reference, rewards = random_problem(4, n_prompts=3, k=5, ties=ties)
    if ties:
        rewards[:, 1] = rewards[:, 3]  # a sure tie in every row
    exact = rlhf.best_of_n_policy(reference, rewards, n)
    rng = np.random.default_rng(5)
    draws = 200_000
    for row in range(3):
        freq = bon_monte_carlo(reference[row], rewards[row], n, draws, rng)
        # 5 standard deviations of a binomial proportion
        sigma = np.sqrt(exact[row] * (1 - exact[row]) / draws)
        assert (np.abs(freq - exact[row]) <= 5 * sigma + 1e-12).all()
    if n == 1:
        np.testing.assert_allclose(exact, reference, rtol=1e-14)


def test_best_of_n_kl_bound_and_its_tightness():
    reference, rewards = random_problem(6, n_prompts=5, k=8)
    for n in [1, 2, 4, 16, 100]:
        kl = rlhf.kl_divergence(rlhf.best_of_n_policy(reference, rewards, n),
                                reference)
        assert (kl <= np.log(n) - (n - 1) / n + 1e-12).all()
    # many equally likely responses without ties: the bound is nearly met
    k, n = 4000, 4
    uniform = np.full(k, 1.0 / k)
    kl = rlhf.kl_divergence(
        rlhf.best_of_n_policy(uniform, np.arange(k, dtype=float), n), uniform)
    assert np.log(n) - (n - 1) / n - kl < 1e-3


def test_best_of_n_all_tied_is_the_reference():
    reference, _ = random_problem(7)
    out = rlhf.best_of_n_policy(reference, np.zeros_like(reference), 7)
    np.testing.assert_allclose(out, reference, rtol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: rlhf.kl_regularized_policy([0.5, 0.5], [0, 0], 0.0), "'beta'"),
    (lambda: rlhf.kl_regularized_policy([0.5, 0.5], [0, 0], -1), "'beta'"),
    (lambda: rlhf.kl_regularized_policy([0.5, 0.5], [0, 0], np.inf),
     "'beta'"),
    (lambda: rlhf.kl_regularized_policy([1.5, -0.5], [0, 0], 1),
     "reference_policy .*non-negative"),
    (lambda: rlhf.kl_regularized_policy([0.5, 0.6], [0, 0], 1),
     "reference_policy .*sum to 1"),
    (lambda: rlhf.kl_regularized_policy([0.5, 0.5], [0, np.nan], 1),
     "rewards contains NaN"),
    (lambda: rlhf.kl_regularized_policy([0.5, 0.5], [0, 0, 0], 1),
     "rewards .*shape"),
    (lambda: rlhf.kl_regularized_policy([[[0.5, 0.5]]], [[[0, 0]]], 1),
     "reference_policy .*2-dimensional"),
    (lambda: rlhf.best_of_n_policy([0.5, 0.5], [0, 0], 0), "'n'"),
    (lambda: rlhf.best_of_n_policy([0.5, 0.5], [0, 0], 2.0), "'n'"),
    (lambda: rlhf.kl_divergence([0.5, 0.5], [0.5, 0.2, 0.3]), "same shape"),
    (lambda: rlhf.kl_divergence([0.5, 0.5], [-0.5, 1.5]), "q .*non-negative"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inputs_unchanged():
    reference, rewards = random_problem(8)
    copies = reference.copy(), rewards.copy()
    rlhf.kl_regularized_policy(reference, rewards, 0.5)
    rlhf.best_of_n_policy(reference, rewards, 3)
    rlhf.kl_divergence(reference, reference[::-1])
    np.testing.assert_array_equal(reference, copies[0])
    np.testing.assert_array_equal(rewards, copies[1])
