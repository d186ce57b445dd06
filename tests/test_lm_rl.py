"""PPO, REINFORCE and DPO with a TinyLM as the policy (rlhf._lm_rl).

The oracles: finite differences of the surrogate and value losses for the
coefficients handed to the backward pass; GAE's closed forms at lambda = 0
and 1; and on a tiny corpus whose SFT model answers "yes ..." a third of
the time, the reward and KL the estimators must reach, each checked with
the model's own log-probabilities computed on another path
(TinyLM.log_prob).
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import rlhf
from rlhf import _lm_rl

ROOT = pathlib.Path(__file__).resolve().parent.parent

ANSWERS = ["yes please", "no thanks", "maybe so", "yes indeed", "no way",
           "perhaps not"]


def yes_reward(prompts, responses):
    return np.array([1.0 if r.startswith("yes") else 0.0 for r in responses])


def no_cost(prompts, responses):
    return np.array([1.0 if r.startswith("no") else 0.0 for r in responses])


@pytest.fixture(scope="module")
def sft():
    lm = rlhf.TinyLM(n_layer=2, n_embd=32, block_size=24, random_state=0)
    return lm.fit(ANSWERS, prompts=["q?"] * len(ANSWERS), max_steps=200,
                  batch_size=16, lr=1e-2, random_state=0)


def share_yes(lm, n=256, seed=1):
    texts = lm.generate(["q?"], max_new_tokens=16, n=n, random_state=seed)
    return np.mean([t.startswith("yes") for t in texts])


# -- the pieces, against finite differences and closed forms ---------------

@pytest.mark.parametrize("kl_kind", ["k1", "k3"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_surrogate_coefficients_are_minus_its_derivative(kl_kind, kl_coef):
    rng = np.random.default_rng(0)
    shape = (5, 7)
    live = rng.random(shape) < 0.8
    old = rng.normal(-1.0, 0.5, shape)
    new = old + rng.normal(0.0, 0.3, shape)   # ratios inside and outside
    ref = old + rng.normal(0.0, 0.3, shape)
    adv = rng.normal(size=shape)
    clip = 0.2
    _, coef, _ = _lm_rl.surrogate(new, old, ref, adv, live, clip, kl_coef,
                                  kl_kind)
    h = 1e-6
    for i, j in zip(*np.nonzero(live)):
        ratio = np.exp(new[i, j] - old[i, j])
        if min(abs(ratio - (1 - clip)), abs(ratio - (1 + clip))) < 1e-4:
            continue  # a kink of the clip
        up, down = new.copy(), new.copy()
        up[i, j] += h
        down[i, j] -= h
        f_up = _lm_rl.surrogate(up, old, ref, adv, live, clip, kl_coef,
                                kl_kind)[0]
        f_down = _lm_rl.surrogate(down, old, ref, adv, live, clip, kl_coef,
                                  kl_kind)[0]
        assert coef[i, j] == pytest.approx(-(f_up - f_down) / (2 * h),
                                           rel=1e-6, abs=1e-8)
    assert np.all(coef[~live] == 0)


def test_surrogate_clip_fraction_counts_live_tokens_outside_the_band():
    live = np.array([[True, True, True, False]])
    old = np.zeros((1, 4))
    new = np.log(np.array([[1.0, 1.3, 0.7, 5.0]]))
    _, _, fraction = _lm_rl.surrogate(new, old, old, np.ones((1, 4)), live,
                                      0.2, 0.0, "k1")
    assert fraction == pytest.approx(2 / 3)


def test_gae_closed_forms():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(3, 6))
    values = rng.normal(size=(3, 6))
    live = np.ones((3, 6), dtype=bool)
    live[1, 4:] = False
    live[2, :2] = False
    last = np.array([5, 3, 5])
    rewards = np.where(live, rewards, 0.0)
    values = np.where(live, values, 0.0)
    # lambda = 1, gamma = 1: the return to go minus the value
    adv, ret = _lm_rl._gae(rewards, values, live, last, 1.0, 1.0)
    for i in range(3):
        pos = np.flatnonzero(live[i])
        to_go = np.cumsum(rewards[i, pos][::-1])[::-1]
        np.testing.assert_allclose(ret[i, pos], to_go, rtol=1e-12)
        np.testing.assert_allclose(adv[i, pos], to_go - values[i, pos],
                                   rtol=1e-12, atol=1e-12)
    # lambda = 0: the one-step TD error
    adv, _ = _lm_rl._gae(rewards, values, live, last, 0.9, 0.0)
    for i in range(3):
        pos = np.flatnonzero(live[i])
        nxt = np.append(values[i, pos][1:], 0.0)
        np.testing.assert_allclose(
            adv[i, pos], rewards[i, pos] + 0.9 * nxt - values[i, pos],
            rtol=1e-12, atol=1e-12)


def test_value_step_follows_the_gradient_of_the_clipped_value_loss():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(4, 5, 3))
    live = rng.random((4, 5)) < 0.8
    head = rng.normal(size=3)
    returns = rng.normal(size=(4, 5))
    old = features @ head + rng.normal(0, 0.5, (4, 5))

    def loss(h):
        values = features @ h
        clipped = old + np.clip(values - old, -0.2, 0.2)
        terms = np.maximum((values - returns) ** 2, (clipped - returns) ** 2)
        return 0.5 * np.where(live, terms, 0.0).sum() / live.sum()

    eps = 1e-6
    numeric = np.array([(loss(head + eps * e) - loss(head - eps * e))
                        / (2 * eps) for e in np.eye(3)])
    # Adam's first step moves each weight by -lr * sign(gradient)
    moved = head.copy()
    m, v = np.zeros(3), np.zeros(3)
    reported = _lm_rl._value_step(moved, m, v, features, live, returns, old,
                                  0.2, 1e-3, 1)
    assert reported == pytest.approx(loss(head), rel=1e-12)
    np.testing.assert_allclose(moved - head, -1e-3 * np.sign(numeric),
                               rtol=1e-6)
    np.testing.assert_allclose(m / (1 - 0.9), numeric, rtol=1e-5)


# -- the estimators on a tiny corpus ----------------------------------------

@pytest.mark.slow
def test_sft_model_is_mixed(sft):
    assert 0.15 < share_yes(sft) < 0.55


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_ppo_raises_reward_at_bounded_kl(sft):
    before = share_yes(sft)
    ppo = rlhf.PPO(learning_rate=3e-4, n_iterations=30, n_samples=8,
                   beta=0.05, random_state=0)
    ppo.fit(sft, yes_reward, prompts=["q?"], prompts_per_iteration=4)
    h = ppo.history_
    assert set(h) >= {"reward", "kl", "entropy", "length", "clip_fraction",
                      "beta", "loss", "value_loss", "explained_variance"}
    assert all(len(v) == 30 for v in h.values())
    assert h["reward"][-5:].mean() > 0.9
    after = share_yes(ppo.policy_)
    assert after > 0.9 > before + 0.3
    # KL(pi || sft) of the trained policy, from log_prob's own path: the
    # mean of log pi(y) - log sft(y) over pi's samples
    texts = ppo.policy_.generate(["q?"], max_new_tokens=16, n=256,
                                 random_state=3)
    prompts = ["q?"] * len(texts)
    kl = np.mean(ppo.policy_.log_prob(prompts, texts)[0]
                 - sft.log_prob(prompts, texts)[0])
    # the fraction of mass moved: at most log(1 / share) nats are needed
    assert 0.0 < kl < 2.5 * np.log(1 / before)
    assert ppo.history_["kl"][-1] == pytest.approx(kl, abs=0.5)
    # the reference is untouched and the policy is a separate model
    assert ppo.policy_ is not sft
    assert share_yes(sft) == before
    assert len(ppo.samples_) == 30


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_ppo_kl_controller_holds_the_target(sft):
    # unpenalised, the policy collapses on "yes" (about log 3 nats from the
    # SFT model); the controller (Ziegler et al. 2019) raises and lowers
    # beta until the KL hovers at the target
    kw = dict(learning_rate=3e-4, n_iterations=60, n_samples=8,
              lr_schedule="constant", random_state=0)
    free = rlhf.PPO(beta=0.001, **kw).fit(sft, yes_reward, prompts=["q?"],
                                          prompts_per_iteration=4)
    target = 0.3
    held = rlhf.PPO(beta=0.3, target_kl=target, horizon=32, **kw).fit(
        sft, yes_reward, prompts=["q?"], prompts_per_iteration=4)
    assert free.history_["kl"][-20:].mean() > 3 * target
    assert target / 2 < held.history_["kl"][-20:].mean() < 2 * target
    assert held.history_["beta"].max() > 0.3  # it had to push
    assert held.history_["reward"][-20:].mean() > share_yes(sft)


@pytest.mark.slow
@pytest.mark.no_sanitizer
@pytest.mark.parametrize("baseline", ["rloo", "grpo", "mean"])
def test_reinforce_raises_reward(sft, baseline):
    est = rlhf.REINFORCE(baseline=baseline, learning_rate=5e-4,
                         n_iterations=30, n_samples=8, beta=0.02,
                         random_state=0)
    est.fit(sft, yes_reward, prompts=["q?"], prompts_per_iteration=4)
    assert share_yes(est.policy_) > share_yes(sft) + 0.25


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_cost_budget_lowers_the_cost(sft):
    kw = dict(learning_rate=3e-4, n_iterations=30, n_samples=8, beta=0.05,
              random_state=0)
    free = rlhf.PPO(**kw).fit(sft, lambda p, r: np.zeros(len(r)),
                              prompts=["q?"], prompts_per_iteration=4)
    held = rlhf.PPO(cost_budget=0.05, lambda_init=0.1,
                    lambda_learning_rate=2.0, **kw).fit(
        sft, lambda p, r: np.zeros(len(r)), costs=no_cost, prompts=["q?"],
        prompts_per_iteration=4)
    free_cost = np.mean([no_cost(None, responses).mean()
                         for _, responses, _ in free.samples_[-5:]])
    assert held.lambda_ > 0
    assert held.history_["cost"][-5:].mean() < min(0.15, free_cost - 0.1)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_dpo_raises_the_chosen_over_rejected_log_ratio(sft):
    prompts = ["q?"] * 4
    chosen = ["yes please", "yes indeed", "yes please", "yes indeed"]
    rejected = ["no thanks", "no way", "maybe so", "perhaps not"]
    dpo = rlhf.DPO(learning_rate=1e-3, n_iterations=20, beta=0.1,
                   random_state=0).fit(sft, (prompts, chosen, rejected))
    h = dpo.history_
    assert h["margin"][-1] > h["margin"][0] > 0
    # on log_prob's path, not the fit's
    gap = ((dpo.policy_.log_prob(prompts, chosen)[0]
            - sft.log_prob(prompts, chosen)[0])
           - (dpo.policy_.log_prob(prompts, rejected)[0]
              - sft.log_prob(prompts, rejected)[0]))
    assert np.all(gap > 1.0)
    np.testing.assert_allclose(
        h["chosen_log_ratio"][-1] - h["rejected_log_ratio"][-1], gap.mean(),
        rtol=1e-3)
    assert share_yes(dpo.policy_) > share_yes(sft)


@pytest.mark.slow
@pytest.mark.no_sanitizer
@pytest.mark.parametrize("loss", ["ipo", "hinge", "robust"])
def test_dpo_variants_run_and_separate(sft, loss):
    dpo = rlhf.DPO(loss=loss, label_smoothing=0.1 if loss == "robust" else
                   0.0, learning_rate=1e-3, n_iterations=10, beta=0.1,
                   random_state=0)
    dpo.fit(sft, (["q?"] * 2, ["yes please", "yes indeed"],
                  ["no thanks", "no way"]))
    assert dpo.history_["margin"][-1] > 0


def test_same_seed_same_bits(sft):
    runs = [rlhf.PPO(learning_rate=3e-4, n_iterations=3, n_samples=4,
                     random_state=7).fit(sft, yes_reward, prompts=["q?"],
                                         prompts_per_iteration=2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].theta_, runs[1].theta_)
    for key in runs[0].history_:
        np.testing.assert_array_equal(runs[0].history_[key],
                                      runs[1].history_[key])


THREADS_SCRIPT = """
import hashlib, numpy as np, rlhf
lm = rlhf.TinyLM(n_layer=1, n_embd=32, block_size=24, random_state=0)
lm.fit(["yes please", "no thanks"], prompts=["q?"] * 2, max_steps=20,
       batch_size=8, lr=1e-2, random_state=0)
reward = lambda p, r: np.array([float(x.startswith("yes")) for x in r])
ppo = rlhf.PPO(learning_rate=3e-4, n_iterations=3, n_samples=8,
               random_state=0).fit(lm, reward, prompts=["q?"],
                                   prompts_per_iteration=4)
dpo = rlhf.DPO(learning_rate=1e-3, n_iterations=3, random_state=0).fit(
    lm, (["q?"], ["yes please"], ["no thanks"]))
h = hashlib.sha256(ppo.theta_.tobytes() + dpo.theta_.tobytes()
                   + ppo.history_["loss"].tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_same_bits_for_any_thread_count():
    digests = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], env=env,
                             cwd=ROOT, capture_output=True, text=True,
                             check=True)
        digests.append(out.stdout.strip())
    assert len(set(digests)) == 1, digests


# -- bad input ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fit_kwargs, error, match", [
    (dict(), dict(prompts=["q?"]), ValueError, "learning_rate"),
    (dict(learning_rate=1e-3), dict(), ValueError, "prompts="),
    (dict(learning_rate=1e-3, exact=True), dict(prompts=["q?"]), ValueError,
     "exact"),
    (dict(learning_rate=1e-3), dict(prompts="q?"), TypeError, "prompts"),
    (dict(learning_rate=1e-3), dict(prompts=[]), ValueError, "prompts"),
    (dict(learning_rate=1e-3), dict(prompts=["q?", 3]), TypeError,
     "entry 1"),
    (dict(learning_rate=1e-3), dict(prompts=["x" * 40]), ValueError,
     "block_size"),
    (dict(learning_rate=1e-3), dict(prompts=["q?"], costs=no_cost),
     ValueError, "cost_budget"),
    (dict(learning_rate=1e-3), dict(prompts=["q?"],
                                    prompts_per_iteration=0),
     ValueError, "prompts_per_iteration"),
    (dict(learning_rate=1e-3), dict(prompts=["q?"], features=np.ones(3)),
     ValueError, "features"),
])
def test_ppo_bad_input(sft, kwargs, fit_kwargs, error, match):
    est = rlhf.PPO(n_iterations=1, **kwargs)
    with pytest.raises(error, match=match):
        est.fit(sft, yes_reward, **fit_kwargs)


@pytest.mark.parametrize("rewards, match", [
    (lambda p, r: np.zeros(len(r) + 1), "one number per response"),
    (lambda p, r: np.full(len(r), np.nan), "NaN"),
    (np.zeros(3), "function of"),
])
def test_ppo_bad_rewards(sft, rewards, match):
    est = rlhf.PPO(n_iterations=1, learning_rate=1e-3)
    with pytest.raises((ValueError, TypeError), match=match):
        est.fit(sft, rewards, prompts=["q?"])


def test_table_prompts_are_refused():
    with pytest.raises(ValueError, match="TinyLM"):
        rlhf.PPO(n_iterations=1).fit(np.full((1, 2), 0.5), np.zeros((1, 2)),
                                      prompts=["q?"])


@pytest.mark.parametrize("comparisons, match", [
    ((["q?"], ["yes"]), "triple"),
    ((["q?"], ["yes"], ["no", "no"]), "equal"),
    ((["q?"], ["yes"], [3]), "entry 0"),
    ((["q?"], ["y" * 40], ["no"]), "block_size"),
])
def test_dpo_bad_input(sft, comparisons, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rlhf.DPO(learning_rate=1e-3, n_iterations=1).fit(sft, comparisons)
