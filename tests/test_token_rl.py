"""Token-level RLHF: PPO, REINFORCE and DPO with a SequencePolicy reference,
checked against the exact answers of small sequence worlds."""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize

import rlhf
from rlhf import _core
from rlhf import _reference as twin
from rlhf._token_rl import _Space


def total_variation(p, q):
    return 0.5 * float(np.abs(p - q).sum())


@pytest.fixture(scope="module")
def world():
    return rlhf.make_sequence_world()


@pytest.fixture(scope="module")
def prefix_reference(world):
    return world.reference.to_prefix_policy()


def soft_optimum(reference, rewards, beta):
    return rlhf.soft_optimal_policy(reference, rewards, beta).enumerate()[1]


# --------------------------------------------------------------------------
# PPO reaches the soft optimum


@pytest.mark.slow
@pytest.mark.no_sanitizer
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_exact_ppo_with_defaults_reaches_the_soft_optimum(
        world, prefix_reference, beta):
    ppo = rlhf.PPO(beta=beta, exact=True).fit(prefix_reference,
                                              world.gold_reward)
    assert isinstance(ppo.policy_, rlhf.SequencePolicy)
    tv = total_variation(ppo.policy_.enumerate()[1],
                         soft_optimum(prefix_reference, world.gold_reward,
                                      beta))
    assert tv < 1e-3
    # the history's exact figures are those of the final policy
    _, probabilities = ppo.policy_.enumerate()
    sequences, _ = prefix_reference.enumerate()
    assert ppo.history_["reward"][-1] == pytest.approx(
        probabilities @ world.gold_reward(sequences), abs=1e-12)
    assert ppo.history_["kl"][-1] == pytest.approx(
        rlhf.sequences.kl_divergence(ppo.policy_, prefix_reference),
        abs=1e-10)
    assert ppo.history_["entropy"][-1] == pytest.approx(
        ppo.policy_.entropy(), abs=1e-10)


@pytest.mark.slow
def test_exact_ppo_on_random_worlds():
    for seed in range(3):
        w = rlhf.make_sequence_world(n_words=3, max_length=4,
                                     random_state=seed)
        reference = w.reference.to_prefix_policy()
        ppo = rlhf.PPO(beta=0.3, exact=True).fit(reference, w.gold_reward)
        tv = total_variation(ppo.policy_.enumerate()[1],
                             soft_optimum(reference, w.gold_reward, 0.3))
        assert tv < 1e-3, seed


@pytest.mark.slow
def test_exact_ppo_takes_an_array_and_a_reward_model(world,
                                                     prefix_reference):
    sequences, _ = prefix_reference.enumerate()
    rewards = world.gold_reward(sequences)
    by_array = rlhf.PPO(exact=True, n_iterations=50).fit(prefix_reference,
                                                          rewards)
    by_callable = rlhf.PPO(exact=True, n_iterations=50).fit(
        prefix_reference, world.gold_reward)
    np.testing.assert_array_equal(by_array.theta_, by_callable.theta_)

    coef = world.token_features @ world.weights  # a reward per token

    class Linear:
        """A fitted linear reward model's interface."""

        def predict(self, features):
            return features @ coef

    by_model = rlhf.PPO(exact=True, n_iterations=50).fit(
        prefix_reference, Linear(), features=world.features)
    expected = rlhf.PPO(exact=True, n_iterations=50).fit(
        prefix_reference, world.features(sequences) @ coef)
    np.testing.assert_array_equal(by_model.theta_, expected.theta_)
    with pytest.raises(ValueError, match="features"):
        rlhf.PPO(exact=True).fit(prefix_reference, Linear())


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_sampled_ppo_reaches_the_soft_optimum(world, prefix_reference):
    beta = 0.5
    # TV 0.024 for random_state 0, 1 and 2 (0.10 with 512 samples: the
    # deep prefixes, rarely visited, are what sampling leaves behind)
    ppo = rlhf.PPO(beta=beta, n_samples=4096, n_iterations=300,
                   random_state=0).fit(prefix_reference, world.gold_reward)
    tv = total_variation(ppo.policy_.enumerate()[1],
                         soft_optimum(prefix_reference, world.gold_reward,
                                      beta))
    assert tv < 0.05
    history = ppo.history_
    assert set(history) >= {"reward", "kl", "entropy", "value_loss",
                            "clip_fraction", "explained_variance", "beta",
                            "loss", "length"}
    assert all(v.shape == (300,) for v in history.values())
    # the value table has learnt something: most of the return's variance
    assert np.nanmean(history["explained_variance"][-50:]) > 0.5
    assert ppo.values_.shape == (prefix_reference.n_states,)


@pytest.mark.slow
def test_sampled_ppo_values_approach_the_exact_values(world,
                                                      prefix_reference):
    """V(empty prefix) of the learnt value table against the exact value of
    the final policy for the shaped reward (E[r] - beta KL)."""
    beta = 0.5
    ppo = rlhf.PPO(beta=beta, n_samples=1024, n_iterations=100,
                   random_state=1).fit(prefix_reference, world.gold_reward)
    exact = ppo.history_["reward"][-1] - beta * ppo.history_["kl"][-1]
    assert ppo.values_[0] == pytest.approx(exact, abs=0.02)


def test_ppo_on_an_ngram_reference_samples_without_enumerating():
    w = rlhf.make_sequence_world(n_words=31, max_length=16, random_state=0)
    assert w.reference.n_sequences > 10**6
    ppo = rlhf.PPO(beta=0.1, n_samples=256, n_iterations=5,
                   random_state=0).fit(w.reference, w.gold_reward)
    assert ppo.policy_.context_length == 1
    assert np.isfinite(ppo.history_["reward"]).all()
    with pytest.raises(ValueError, match="exact=True"):
        rlhf.PPO(exact=True).fit(w.reference, w.gold_reward)
    with pytest.raises(ValueError, match="function of Sequences"):
        rlhf.PPO().fit(w.reference, np.zeros(3))


@pytest.mark.slow
def test_adaptive_kl_controller_moves_beta_toward_the_target(
        world, prefix_reference):
    low = rlhf.PPO(beta=0.05, target_kl=0.05, exact=True,
                   n_iterations=100).fit(prefix_reference, world.gold_reward)
    assert low.beta_ > 0.05  # KL far above the target: beta grows
    assert low.history_["beta"][-1] > low.history_["beta"][0]


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_kl_in_the_loss_has_another_fixed_point(world, prefix_reference):
    """The per-token KL in the loss (GRPO's way) is the gradient of each
    state's own KL, holding the visits of later states fixed: its fixed
    point is pi(a|s) ∝ pi_ref(a|s) exp(Q_r(s, a) / beta) with Q_r the
    reward-only action value, not the soft optimum."""
    beta = 0.5
    ppo = rlhf.PPO(beta=beta, exact=True, kl_in_reward=False).fit(
        prefix_reference, world.gold_reward)
    tv = total_variation(ppo.policy_.enumerate()[1],
                         soft_optimum(prefix_reference, world.gold_reward,
                                      beta))
    assert tv > 0.05
    space = _Space(prefix_reference, "test")
    sequences, _ = prefix_reference.enumerate()
    logp = ppo.policy_.log_probs
    q, _ = space.evaluate(logp, world.gold_reward(sequences),
                          np.zeros_like(logp))
    gap = logp - space.ref_table - q / beta
    gap -= gap.mean(axis=1, keepdims=True)
    reach = space.reach(logp)[:logp.shape[0]]
    # where the policy goes (states reached with probability > 1e-4)
    assert np.abs(gap[reach > 1e-4]).max() < 1e-2


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_reinforce_on_sequences(world, prefix_reference):
    exact = rlhf.REINFORCE(beta=0.5, exact=True, n_iterations=500).fit(
        prefix_reference, world.gold_reward)
    target = soft_optimum(prefix_reference, world.gold_reward, 0.5)
    assert total_variation(exact.policy_.enumerate()[1], target) < 1e-2
    for baseline in ("rloo", "grpo"):
        sampled = rlhf.REINFORCE(beta=0.5, baseline=baseline,
                                 n_samples=256, n_iterations=200,
                                 random_state=0).fit(prefix_reference,
                                                     world.gold_reward)
        assert sampled.history_["reward"][-1] > \
            exact.history_["reward"][0] - 0.2
        assert total_variation(sampled.policy_.enumerate()[1],
                               target) < 0.15, baseline


@pytest.mark.parametrize("kernels", [_core, twin])
def test_rloo_and_grpo_advantages_match_their_formulas(kernels):
    rng = np.random.default_rng(0)
    r = rng.normal(size=9)
    n = r.size
    rloo = kernels.advantages(r[None, :], 1, 1e-4)[0]
    expected = np.array([r[i] - np.delete(r, i).mean() for i in range(n)])
    np.testing.assert_allclose(rloo, expected, rtol=0, atol=1e-14)
    grpo = kernels.advantages(r[None, :], 2, 1e-4)[0]
    np.testing.assert_allclose(
        grpo, (r - r.mean()) / (np.std(r, ddof=1) + 1e-4), rtol=1e-13)


# --------------------------------------------------------------------------
# DPO on sequences


def bradley_terry_mle(chosen, rejected, n_items):
    """Maximum-likelihood item rewards, by SciPy (an independent fit)."""
    def loss(r):
        d = r[chosen] - r[rejected]
        return np.logaddexp(0.0, -d).sum() + 0.5e-9 * r @ r

    def grad(r):
        s = -1.0 / (1.0 + np.exp(r[chosen] - r[rejected]))
        g = np.bincount(chosen, s, n_items) - np.bincount(rejected, s,
                                                          n_items)
        return g + 1e-9 * r

    return minimize(loss, np.zeros(n_items), jac=grad, method="BFGS",
                    options={"gtol": 1e-10}).x


@pytest.mark.parametrize("beta", [0.5,
                                  pytest.param(2.0, marks=pytest.mark.slow)])
def test_dpo_reaches_the_bradley_terry_tempered_reference(beta):
    w = rlhf.make_sequence_world(n_words=2, max_length=3, random_state=1)
    reference = w.reference.to_prefix_policy()
    sequences, reference_probs = reference.enumerate()
    n = len(sequences)
    rng = np.random.default_rng(0)
    truth = w.gold_reward(sequences)
    i, j = np.triu_indices(n, 1)
    i, j = np.repeat(i, 20), np.repeat(j, 20)
    wins = rng.random(i.size) < 1.0 / (1.0 + np.exp(truth[j] - truth[i]))
    chosen, rejected = np.where(wins, i, j), np.where(wins, j, i)
    r_hat = bradley_terry_mle(chosen, rejected, n)
    target = reference_probs * np.exp((r_hat - r_hat.max()) / beta)
    target /= target.sum()
    dpo = rlhf.DPO(beta=beta).fit(reference,
                                  (sequences[chosen], sequences[rejected]))
    assert total_variation(dpo.policy_.enumerate()[1], target) < 1e-4
    assert dpo.history_["loss"].shape == (1000,)
    # the history's accuracy is that of the implicit reward
    implicit = np.log(dpo.policy_.enumerate()[1] / reference_probs)
    assert dpo.history_["accuracy"][-1] == pytest.approx(
        np.mean(implicit[chosen] > implicit[rejected]))


def test_dpo_refuses_sequences_the_reference_never_writes():
    reference = rlhf.SequencePolicy([[0.0, 0.0, -np.inf]],
                                    vocab_size=3, max_length=2)
    with pytest.raises(ValueError, match="probability 0"):
        rlhf.DPO().fit(reference, ([[1, 0]], [[2, 0]]))
    with pytest.raises(ValueError, match="pair"):
        rlhf.DPO().fit(reference, [[1, 0], [0, 0], [1, 0]])


# --------------------------------------------------------------------------
# GAE


@pytest.mark.parametrize("kernels", [_core, twin])
def test_gae_limits(kernels):
    rng = np.random.default_rng(0)
    n, T = 50, 7
    rewards = rng.normal(size=(n, T))
    values = rng.normal(size=(n, T))
    n_steps = rng.integers(0, T + 1, size=n)
    steps = np.arange(T) < n_steps[:, None]
    r = np.where(steps, rewards, 0.0)
    # lambda = gamma = 1 and zero values: the return to go
    adv, ret = kernels.gae(rewards, np.zeros((n, T)), n_steps, 1.0, 1.0)
    to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(adv, to_go, atol=1e-12)
    np.testing.assert_allclose(ret, to_go, atol=1e-12)
    # lambda = 0: one-step TD errors, V = 0 after the last step
    gamma = 0.9
    adv, ret = kernels.gae(rewards, values, n_steps, gamma, 0.0)
    v = np.where(steps, values, 0.0)
    following = np.concatenate([v[:, 1:], np.zeros((n, 1))], axis=1)
    td = np.where(steps, r + gamma * following - v, 0.0)
    np.testing.assert_allclose(adv, td, atol=1e-12)
    np.testing.assert_allclose(ret, np.where(steps, td + v, 0.0),
                               atol=1e-12)
    # general lambda: the discounted sum of TD errors
    lam = 0.7
    adv, _ = kernels.gae(rewards, values, n_steps, gamma, lam)
    expected = np.zeros((n, T))
    for i in range(n):
        for t in range(n_steps[i]):
            expected[i, t] = sum((gamma * lam) ** (u - t) * td[i, u]
                                 for u in range(t, n_steps[i]))
    np.testing.assert_allclose(adv, expected, atol=1e-12)


# --------------------------------------------------------------------------
# the exact policy gradient against finite differences


def test_exact_policy_gradient_matches_finite_differences():
    w = rlhf.make_sequence_world(n_words=2, max_length=4, random_state=3)
    reference = w.reference.to_prefix_policy()
    sequences, _ = reference.enumerate()
    rewards = w.gold_reward(sequences)
    beta = 0.7
    space = _Space(reference, "test")
    rng = np.random.default_rng(0)
    theta = rng.normal(scale=0.5, size=(reference.n_states,
                                        reference.vocab_size))

    def objective(theta):
        policy = space.policy(theta)
        probabilities = policy.enumerate()[1]
        return probabilities @ rewards - beta * rlhf.sequences.kl_divergence(
            policy, reference)

    # the surrogate's gradient at rho = 1 with the exact advantages of the
    # shaped reward is minus the gradient of E[r] - beta KL
    logp = space.policy(theta).log_probs
    d = logp - space.ref_prefix
    q, values = space.evaluate(logp, rewards, -beta * d)
    P = logp.shape[0]
    weights = space.reach(logp)[:P, None] * np.exp(logp)
    states = np.repeat(np.arange(P), reference.vocab_size).reshape(logp.shape)
    actions = np.broadcast_to(np.arange(reference.vocab_size), logp.shape)
    _, grad, _ = twin.token_ppo_loss_grad(
        space.ref_table + theta, space.ref_table, states, actions, weights,
        logp, q - values[:P, None], 0.2, 0.0, 1, 1.0)
    numeric = np.zeros_like(theta)
    h = 1e-6
    for index in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[index] = h
        numeric[index] = (objective(theta + step)
                          - objective(theta - step)) / (2 * h)
    np.testing.assert_allclose(-grad, numeric, atol=1e-7)
    # and the value of the empty prefix is the objective itself
    assert values[0] == pytest.approx(objective(theta), abs=1e-12)


# --------------------------------------------------------------------------
# reproducibility


@pytest.mark.slow
def test_fits_are_reproducible_and_thread_independent(world,
                                                      prefix_reference):
    script = (
        "import numpy as np, rlhf\n"
        "w = rlhf.make_sequence_world()\n"
        "ref = w.reference.to_prefix_policy()\n"
        "a = rlhf.PPO(n_samples=2048, n_iterations=3, batch_size=512, "
        "random_state=5).fit(ref, w.gold_reward)\n"
        "b = rlhf.REINFORCE(n_samples=2048, n_iterations=3, "
        "random_state=5).fit(w.reference, w.gold_reward)\n"
        "import sys; sys.stdout.write(a.theta_.tobytes().hex()[:20000] + "
        "a.values_.tobytes().hex() + b.theta_.tobytes().hex())\n")
    outputs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        outputs.append(subprocess.run(
            [sys.executable, "-c", script], env=env, check=True,
            capture_output=True, text=True).stdout)
    assert outputs[0] == outputs[1]
    a = rlhf.PPO(n_samples=64, n_iterations=3, random_state=5).fit(
        prefix_reference, world.gold_reward)
    b = rlhf.PPO(n_samples=64, n_iterations=3, random_state=5).fit(
        prefix_reference, world.gold_reward)
    np.testing.assert_array_equal(a.theta_, b.theta_)


def test_the_twin_kernels_run_the_same_loop(world, prefix_reference):
    class TwinPPO(rlhf.PPO):
        _kernels = twin

    kwargs = dict(beta=0.5, n_samples=128, n_iterations=4, batch_size=32,
                  random_state=2)
    c = rlhf.PPO(**kwargs).fit(prefix_reference, world.gold_reward)
    t = TwinPPO(**kwargs).fit(prefix_reference, world.gold_reward)
    np.testing.assert_allclose(c.theta_, t.theta_, atol=1e-9)
    np.testing.assert_allclose(c.values_, t.values_, atol=1e-9)


# --------------------------------------------------------------------------
# bad input


def test_bad_input_is_named(world, prefix_reference):
    with pytest.raises(ValueError, match="gae_lambda"):
        rlhf.PPO(gae_lambda=1.5).fit(prefix_reference, world.gold_reward)
    with pytest.raises(ValueError, match="value_clip"):
        rlhf.PPO(value_clip=0.0).fit(prefix_reference, world.gold_reward)
    with pytest.raises(ValueError, match="policy"):
        rlhf.PPO(policy="linear").fit(prefix_reference, world.gold_reward)
    with pytest.raises(ValueError, match="cost"):
        rlhf.PPO(cost_budget=0.1).fit(prefix_reference, world.gold_reward,
                                      costs=np.zeros(3))
    with pytest.raises(ValueError, match="rewards"):
        rlhf.PPO(exact=True).fit(prefix_reference, np.zeros(5))
    with pytest.raises(ValueError, match="rewards"):
        rlhf.PPO(exact=True).fit(prefix_reference,
                                 lambda s: np.full(len(s), np.nan))
    short = rlhf.SequencePolicy(np.zeros((0, 3)), vocab_size=3,
                                max_length=1)
    with pytest.raises(ValueError, match="max_length"):
        rlhf.PPO().fit(short, lambda s: np.zeros(len(s)))
    with pytest.raises(ValueError, match="vocab_size|token"):
        rlhf.DPO().fit(prefix_reference, ([[9, 0]], [[1, 0]]))


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_docstring_examples():
    import doctest

    from rlhf import _token_rl, optimize
    result = doctest.testmod(optimize,
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
    assert doctest.testmod(_token_rl).failed == 0


@pytest.mark.slow
def test_whitening_keeps_the_kl_in_the_loss_at_beta(world, prefix_reference):
    """Whitened advantages with the KL in the loss: the KL term is scaled
    as the advantages, so the fit lands where the unwhitened one does
    (and not at a KL several times larger)."""
    kwargs = dict(beta=0.5, kl_in_reward=False, n_samples=512,
                  n_iterations=150, random_state=0)
    plain = rlhf.PPO(whiten_advantages=False, **kwargs).fit(
        prefix_reference, world.gold_reward)
    whitened = rlhf.PPO(**kwargs).fit(prefix_reference, world.gold_reward)
    assert whitened.history_["kl"][-1] == pytest.approx(
        plain.history_["kl"][-1], rel=0.25)


def test_refits_and_rewards_are_what_they_say(world, prefix_reference):
    calls = []

    def reward(sequences):
        calls.append(len(sequences))
        return world.gold_reward(sequences)

    ppo = rlhf.PPO(n_samples=16, n_iterations=3, random_state=0)
    ppo.fit(prefix_reference, reward)
    # once over the enumeration (the exact history), then the samples
    assert calls == [prefix_reference.n_sequences, 16, 16, 16]
    assert ppo.values_ is not None
    ppo.fit(np.full((2, 3), 1 / 3), np.zeros((2, 3)))
    assert ppo.values_ is None
    with pytest.raises(TypeError, match="function of Sequences"):
        rlhf.PPO().fit(prefix_reference, object())
    with pytest.raises(ValueError, match="features"):
        rlhf.PPO().fit(prefix_reference, world.gold_reward,
                       features=world.features)
    with pytest.raises(ValueError, match="gamma"):
        rlhf.PPO(exact=True, gamma=0.9).fit(prefix_reference,
                                            world.gold_reward)
    with pytest.raises(ValueError, match="chosen"):
        rlhf.DPO().fit(prefix_reference, ([1, 0], [2, 0]))
