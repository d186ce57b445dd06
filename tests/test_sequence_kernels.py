"""The sequence kernels of rlhf._core (csrc/sequences.c) against their NumPy
twins in rlhf._reference, finite differences, thread counts and bad input.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlhf import _core
from rlhf import _reference as ref

ADAM = (0.9, 0.999, 1e-8)


def n_states(V, depth):
    return int(ref._offsets(V - 1, depth + 1)[-1])


def probabilities(rng, S, V, zeros=0.2, scale=True):
    """Rows of non-negative weights with some zeros (never a whole row),
    not normalised when scale."""
    p = rng.dirichlet(np.ones(V) * 0.7, size=S)
    p[rng.random((S, V)) < zeros] = 0.0
    empty = p.sum(axis=1) == 0
    p[empty, rng.integers(0, V, size=empty.sum())] = 1.0
    if scale:
        p *= rng.uniform(0.5, 3.0, size=(S, 1))
    return p


def log_table(rng, S, V, zeros=0.2):
    """Normalised log-probabilities with -inf entries."""
    p = probabilities(rng, S, V, zeros, scale=False)
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum(axis=1, keepdims=True))


def unchanged(arrays):
    """A checker that the arrays still hold what they hold now."""
    copies = [np.array(a, copy=True) for a in arrays]

    def check():
        for a, c in zip(arrays, copies):
            np.testing.assert_array_equal(a, c)
    return check


# (V, max_length, depth, end_token): depth 0, 1, the whole prefix
# (max_length - 2) and deeper than any sequence reaches
CASES = [(2, 1, 0, 0), (2, 5, 3, 1), (3, 4, 0, 0), (4, 6, 1, 3),
         (4, 6, 4, 0), (5, 5, 3, 2), (6, 7, 1, 0), (3, 3, 2, 1),
         (32, 16, 1, 31)]


# -- sampling and scoring ----------------------------------------------------

@pytest.mark.parametrize("V, T, depth, end", CASES)
@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_sample_sequences_equals_twin_exactly(V, T, depth, end, seed):
    rng = np.random.default_rng([V, T, depth, end])
    probs = probabilities(rng, n_states(V, depth), V)
    check = unchanged([probs])
    n = 300 if V < 32 else 2000
    tokens, lengths = _core.sample_sequences(probs, n, T, seed, end, depth)
    tokens_ref, lengths_ref = ref.sample_sequences(probs, n, T, seed, end,
                                                   depth)
    check()
    assert tokens.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(tokens, tokens_ref)
    np.testing.assert_array_equal(lengths, lengths_ref)
    # the end token ends every sequence, and nothing else is drawn after it
    assert (tokens[np.arange(n), lengths - 1] == end).all()
    after = np.arange(T) >= lengths[:, None]
    assert (tokens[after] == end).all()
    # sequence i does not depend on n
    head = _core.sample_sequences(probs, 7, T, seed, end, depth)
    np.testing.assert_array_equal(head[0], tokens[:7])


def test_sample_sequences_follows_the_table():
    """Token frequencies at the root match its row; a token of probability
    0 is never drawn."""
    rng = np.random.default_rng(3)
    V = 4
    probs = probabilities(rng, n_states(V, 1), V)
    probs[0] = [0.5, 0.0, 0.2, 0.3]
    tokens, _ = _core.sample_sequences(probs, 20000, 4, 11, 2, 1)
    freq = np.bincount(tokens[:, 0], minlength=V) / 20000
    np.testing.assert_allclose(freq, probs[0] / probs[0].sum(), atol=0.015)
    assert freq[1] == 0


@pytest.mark.parametrize("layout", ["F", "strided", "readonly", "f32"])
def test_sample_sequences_any_layout(layout):
    rng = np.random.default_rng(4)
    probs = probabilities(rng, n_states(5, 2), 5)
    arg = {"F": np.asfortranarray(probs),
           "strided": np.repeat(probs, 2, axis=0)[::2],
           "readonly": probs.copy(), "f32": probs.astype(np.float32)}[layout]
    if layout == "readonly":
        arg.setflags(write=False)
    got = _core.sample_sequences(arg, 100, 5, 9, 4, 2)
    want = ref.sample_sequences(np.asarray(arg, dtype=np.float64), 100, 5, 9,
                                4, 2)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("V, T, depth, end", CASES)
def test_sequence_log_probs_equals_twin_exactly(V, T, depth, end):
    rng = np.random.default_rng([V, T, depth, end, 1])
    log_probs = log_table(rng, n_states(V, depth), V)
    probs = np.exp(log_probs)
    sampled = _core.sample_sequences(probs, 200, T, 5, end, depth)
    # and arbitrary ones: end tokens anywhere, lengths anywhere in [1, T]
    tokens = rng.integers(0, V, size=(100, T))
    lengths = rng.integers(1, T + 1, size=100)
    for tok, length in [sampled, (tokens, lengths)]:
        check = unchanged([log_probs, tok, length])
        states, logp = _core.sequence_log_probs(log_probs, tok, length, end,
                                                depth)
        states_ref, logp_ref = ref.sequence_log_probs(log_probs, tok, length,
                                                      end, depth)
        check()
        assert states.dtype == np.int64
        np.testing.assert_array_equal(states, states_ref)
        np.testing.assert_array_equal(logp, logp_ref)
        choice = np.arange(T) < np.minimum(length, T - 1)[:, None]
        assert (states[~choice] == -1).all() and (logp[~choice] == 0).all()
        assert (states[choice] >= 0).all()
    # the sampled sequences' log-probabilities are those of their tokens
    states, logp = _core.sequence_log_probs(log_probs, *sampled, end, depth)
    assert np.isfinite(logp).all()


# -- the soft Bellman optimum ------------------------------------------------

@pytest.mark.parametrize("V, T, end", [(2, 1, 0), (2, 4, 1), (3, 2, 0),
                                       (3, 5, 2), (4, 4, 0), (5, 4, 3),
                                       (6, 3, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_backup_matches_twin(V, T, end, seed):
    rng = np.random.default_rng([V, T, end, seed])
    W = V - 1
    P, N = int(ref._offsets(W, T)[-2]), int(ref._offsets(W, T)[-1])
    ref_log_probs = log_table(rng, P, V, zeros=0.25)
    rewards = rng.normal(size=N) * 3.0
    rewards[:: 7] += 400.0  # would overflow a backup without the max
    check = unchanged([ref_log_probs, rewards])
    optimum, values = _core.soft_backup(ref_log_probs, rewards, T, end)
    optimum_ref, values_ref = ref.soft_backup(ref_log_probs, rewards, T, end)
    check()
    assert optimum.shape == (P, V) and values.shape == (N,)
    np.testing.assert_allclose(values, values_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isinf(optimum), np.isinf(optimum_ref))
    finite = np.isfinite(optimum_ref)
    np.testing.assert_allclose(optimum[finite], optimum_ref[finite],
                               rtol=1e-12, atol=1e-12)
    # the optimum is a policy: rows sum to 1, zero where pi_ref is
    np.testing.assert_allclose(np.exp(optimum).sum(axis=1), 1.0, rtol=1e-12)
    assert (np.isinf(optimum) == np.isinf(ref_log_probs)).all()
    if T == 1:
        np.testing.assert_array_equal(values, rewards)


# -- advantages --------------------------------------------------------------

@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95),
                                        (0.0, 0.5), (0.9, 0.0)])
@pytest.mark.parametrize("n, T", [(1, 1), (5, 7), (60, 16)])
def test_gae_matches_twin(gamma, lam, n, T):
    rng = np.random.default_rng([n, T])
    rewards = rng.normal(size=(n, T))
    values = rng.normal(size=(n, T))
    n_steps = rng.integers(0, T + 1, size=n)
    n_steps[0] = T
    # what lies beyond the last step is never read
    beyond = np.arange(T) >= n_steps[:, None]
    rewards[beyond] = np.nan
    values[beyond] = np.inf
    check = unchanged([rewards, values, n_steps])
    adv, returns = _core.gae(rewards, values, n_steps, gamma, lam)
    adv_ref, returns_ref = ref.gae(rewards, values, n_steps, gamma, lam)
    check()
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(returns, returns_ref, rtol=1e-13, atol=1e-14)
    assert (adv[beyond] == 0).all() and (returns[beyond] == 0).all()
    if lam == 1.0 and gamma == 1.0:
        # returns are the rewards to go
        to_go = np.where(beyond, 0.0, rewards)[:, ::-1].cumsum(axis=1)
        np.testing.assert_allclose(returns, np.where(beyond, 0.0,
                                                     to_go[:, ::-1]),
                                   rtol=1e-12, atol=1e-12)


# -- the token kernels -------------------------------------------------------

def token_batch(rng, log_probs, shape, skip=0.2, zero=0.2):
    """(states, actions, weights): states with -1 at skipped positions,
    actions of positive probability where the state is live (anything
    where it is not), weights with zeros."""
    S, V = log_probs.shape
    states = rng.integers(0, S, size=shape)
    states[rng.random(shape) < skip] = -1
    # a uniform pick among the finite entries of the row: the largest of
    # random keys, -1 at the others
    keys = np.where(np.isfinite(log_probs[np.maximum(states, 0)]),
                    rng.random(shape + (V,)), -1.0)
    actions = np.where(states >= 0, keys.argmax(axis=-1),
                       rng.integers(-5, V + 5, size=shape))
    weights = rng.uniform(0.2, 2.0, size=shape)
    weights[rng.random(shape) < zero] = 0.0
    return states, actions, weights


@pytest.mark.parametrize("S, V, shape", [(1, 2, (1,)), (7, 5, (40,)),
                                         (30, 6, (25, 9)), (33, 32, (4096,))])
@pytest.mark.parametrize("seed", [0, 1])
def test_token_grad_matches_twin(S, V, shape, seed):
    rng = np.random.default_rng([S, V, seed])
    log_probs = log_table(rng, S, V)
    states, actions, coefs = token_batch(rng, log_probs, shape)
    coefs = coefs * rng.choice([-1.0, 1.0], size=shape)
    check = unchanged([log_probs, states, actions, coefs])
    grad = _core.token_grad(log_probs, states, actions, coefs)
    grad_ref = ref.token_grad(log_probs, states, actions, coefs)
    check()
    assert grad.shape == (S, V)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-14)
    # views and other dtypes are read raveled
    grad_2 = _core.token_grad(np.asfortranarray(log_probs),
                              states.astype(np.int32), actions,
                              np.asfortranarray(coefs.astype(np.float32)))
    np.testing.assert_allclose(grad_2, ref.token_grad(
        log_probs, states, actions, coefs.astype(np.float32)), rtol=1e-12,
        atol=1e-14)


def test_token_grad_finite_differences():
    """token_grad(log_softmax(z)) is the gradient in z of
    sum_i c_i log_softmax(z)[s_i, a_i]."""
    rng = np.random.default_rng(5)
    S, V = 4, 5
    z = rng.normal(size=(S, V))
    states = rng.integers(-1, S, size=30)
    actions = rng.integers(0, V, size=30)
    coefs = rng.normal(size=30)
    live = states >= 0

    def f(z):
        logp = ref.log_softmax(z)[0]
        return float((coefs[live] * logp[states[live], actions[live]]).sum())

    grad = _core.token_grad(ref.log_softmax(z)[0], states, actions, coefs)
    h = 1e-6
    numeric = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        numeric[idx] = (f(z + e) - f(z - e)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def ppo_problem(rng, S, V, shape):
    ref_log_probs = log_table(rng, S, V)
    theta = rng.normal(size=(S, V)) * 0.5
    logp = ref.log_softmax(ref_log_probs + theta)[0]
    states, actions, weights = token_batch(rng, ref_log_probs, shape)
    live = states >= 0
    old = np.zeros(shape)
    old[live] = logp[states[live], actions[live]] + rng.normal(
        size=live.sum()) * 0.3
    # a skipped token of probability 0, as the exact path passes them
    dead = live & (weights == 0)
    if dead.any():
        idx = tuple(np.argwhere(dead)[0])
        row = ref_log_probs[states[idx]]
        if np.isinf(row).any():
            actions[idx] = np.flatnonzero(np.isinf(row))[0]
            old[idx] = -np.inf
    advantages = rng.normal(size=shape)
    return theta, ref_log_probs, states, actions, weights, old, advantages


@pytest.mark.parametrize("kl_coef, kl_kind", [(0.0, 1), (0.1, 1), (0.2, 3)])
@pytest.mark.parametrize("clip", [0.2, 50.0])
@pytest.mark.parametrize("S, V, shape", [(1, 2, (3,)), (9, 5, (12, 7)),
                                         (40, 8, (600,))])
def test_token_ppo_adam_step_matches_twin(kl_coef, kl_kind, clip, S, V,
                                          shape):
    rng = np.random.default_rng([S, V, int(clip), kl_kind])
    theta, ref_log_probs, *tokens = ppo_problem(rng, S, V, shape)
    m, v = rng.normal(size=(S, V)) * 0.01, rng.random((S, V)) * 1e-4
    args = (ref_log_probs, *tokens, clip, kl_coef, kl_kind, 0.05)
    check = unchanged([ref_log_probs, *tokens])
    for t, (m0, v0) in [(1, (0 * m, 0 * v)), (7, (m, v))]:
        state = [theta.copy(), m0.copy(), v0.copy()]
        twin = [theta.copy(), m0.copy(), v0.copy()]
        loss, cf = _core.token_ppo_adam_step(*state, *args, 0.1, *ADAM, t)
        loss_ref, cf_ref = ref.token_ppo_adam_step(*twin, *args, 0.1, *ADAM,
                                                   t)
        check()
        assert loss == pytest.approx(loss_ref, rel=1e-12, abs=1e-15)
        assert cf == pytest.approx(cf_ref, rel=1e-12, abs=1e-15)
        for got, want in zip(state, twin):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # the clip binds on some token at 0.2 and never at 50
    if np.prod(shape) > 10:
        assert (cf > 0) == (clip < 1)


def test_token_ppo_adam_step_gradient_by_finite_differences():
    """With t = 1 and m = 0 the step leaves m = (1 - beta1) grad: the
    gradient of the loss it returns."""
    rng = np.random.default_rng(8)
    S, V = 3, 4
    theta, ref_log_probs, *tokens = ppo_problem(rng, S, V, (30,))

    def loss_grad(theta, kl_kind):
        state = [theta.copy(), np.zeros((S, V)), np.zeros((S, V))]
        loss, _ = _core.token_ppo_adam_step(
            *state, ref_log_probs, *tokens, 0.2, 0.3, kl_kind, 0.1, 1e-3,
            *ADAM, 1)
        return loss, state[1] / (1 - ADAM[0])

    for kl_kind in (1, 3):
        _, grad = loss_grad(theta, kl_kind)
        h = 1e-6
        numeric = np.zeros_like(theta)
        for idx in np.ndindex(*theta.shape):
            e = np.zeros_like(theta)
            e[idx] = h
            numeric[idx] = (loss_grad(theta + e, kl_kind)[0]
                            - loss_grad(theta - e, kl_kind)[0]) / (2 * h)
        finite = np.isfinite(ref_log_probs)
        np.testing.assert_allclose(grad[finite], numeric[finite], rtol=1e-5,
                                   atol=1e-8)


def value_problem(rng, S, shape, value_clip):
    """values, and tokens none of which sits within 1e-3 of a kink of the
    clipped loss (so that finite differences see one branch)."""
    values = rng.normal(size=S)
    states = rng.integers(-1, S, size=shape)
    weights = rng.uniform(0.2, 2.0, size=shape)
    weights[rng.random(shape) < 0.2] = 0.0
    returns = rng.normal(size=shape)
    old = np.where(states >= 0, values[states], 0.0) + rng.normal(
        size=shape) * 0.1
    if np.isfinite(value_clip):
        value = np.where(states >= 0, values[states], 0.0)
        for _ in range(100):
            change = value - old
            moved = np.clip(change, -value_clip, value_clip)
            # inside the clip range the two terms are one
            near = ((np.abs(np.abs(change) - value_clip) < 1e-3)
                    | ((np.abs(change) > value_clip)
                       & (np.abs((value - returns) ** 2
                                 - (old + moved - returns) ** 2) < 1e-3)))
            if not near.any():
                break
            old[near] += rng.normal(size=near.sum()) * 0.1
    return values, states, weights, returns, old


@pytest.mark.parametrize("value_clip", [0.1, np.inf])
@pytest.mark.parametrize("S, shape", [(1, (4,)), (6, (5, 8)), (50, (700,))])
@pytest.mark.parametrize("seed", [0, 1])
def test_value_adam_step_matches_twin(value_clip, S, shape, seed):
    rng = np.random.default_rng([S, seed])
    values, *tokens = value_problem(rng, S, shape, value_clip)
    m, v = rng.normal(size=S) * 0.01, rng.random(S) * 1e-4
    check = unchanged(tokens)
    for t, (m0, v0) in [(1, (0 * m, 0 * v)), (4, (m, v))]:
        state = [values.copy(), m0.copy(), v0.copy()]
        twin = [values.copy(), m0.copy(), v0.copy()]
        loss = _core.value_adam_step(*state, *tokens, value_clip, 0.3, 0.05,
                                     *ADAM, t)
        loss_ref = ref.value_adam_step(*twin, *tokens, value_clip, 0.3, 0.05,
                                       *ADAM, t)
        check()
        assert isinstance(loss, float)
        assert loss == pytest.approx(loss_ref, rel=1e-12, abs=1e-15)
        for got, want in zip(state, twin):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("value_clip", [0.1, np.inf])
def test_value_adam_step_gradient_by_finite_differences(value_clip):
    rng = np.random.default_rng(9)
    S = 5
    values, *tokens = value_problem(rng, S, (60,), value_clip)
    if np.isfinite(value_clip):  # both branches of the clip are taken
        change = values[tokens[0]] - tokens[3]
        live = tokens[0] >= 0
        assert (np.abs(change[live]) > value_clip).any()
        assert (np.abs(change[live]) < value_clip).any()

    def loss_grad(values):
        state = [values.copy(), np.zeros(S), np.zeros(S)]
        loss = _core.value_adam_step(*state, *tokens, value_clip, 0.7, 1e-3,
                                     *ADAM, 1)
        return loss, state[1] / (1 - ADAM[0])

    _, grad = loss_grad(values)
    h = 1e-6
    numeric = np.array([(loss_grad(values + h * e)[0]
                         - loss_grad(values - h * e)[0]) / (2 * h)
                        for e in np.eye(S)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


# -- streaming and grouping --------------------------------------------------

# The token kernels add their tokens up by state in one of two ways, chosen
# by the sizes alone (csrc/sequences.c, use_streaming): streaming them in
# blocks of 8192 tokens, each into a table of its own, when n_blocks *
# width <= max(per_token * n_tokens, at_least) (width = S V, or S for the
# value step), else grouping them by state.
TOKEN_BLOCK = 8192
STREAMING_RULES = {"token_grad": (4, 2**14), "token_ppo_adam_step": (8, 2**14),
                   "value_adam_step": (16, 2**18)}


def streams(kernel, n_tokens, width):
    """Whether the kernel streams its tokens (use_streaming's rule)."""
    per_token, at_least = STREAMING_RULES[kernel]
    n_blocks = max(1, -(-n_tokens // TOKEN_BLOCK))
    return n_blocks * width <= max(per_token * n_tokens, at_least)


# (S, V, shape, streaming): several blocks, the last one partial, and one
# block, on either side of the rule
TABLE_PATHS = [(32, 32, (20000,), True), (40, 8, (100, 90), True),
               (600, 32, (50,), False), (2100, 32, (10000,), False)]


@pytest.mark.parametrize("S, V, shape, streaming", TABLE_PATHS)
def test_token_grad_both_paths_match_twin(S, V, shape, streaming):
    assert streams("token_grad", int(np.prod(shape)), S * V) == streaming
    rng = np.random.default_rng([S, V, 21])
    log_probs = log_table(rng, S, V)
    states, actions, coefs = token_batch(rng, log_probs, shape)
    coefs = coefs * rng.choice([-1.0, 1.0], size=shape)
    np.testing.assert_allclose(
        _core.token_grad(log_probs, states, actions, coefs),
        ref.token_grad(log_probs, states, actions, coefs), rtol=1e-12,
        atol=1e-14)


@pytest.mark.parametrize("kl_coef, kl_kind", [(0.0, 1), (0.1, 1), (0.2, 3)])
@pytest.mark.parametrize("S, V, shape, streaming", TABLE_PATHS)
def test_token_ppo_adam_step_both_paths_match_twin(kl_coef, kl_kind, S, V,
                                                   shape, streaming):
    n = int(np.prod(shape))
    assert streams("token_ppo_adam_step", n, S * V) == streaming
    rng = np.random.default_rng([S, V, kl_kind, 22])
    theta, ref_log_probs, *tokens = ppo_problem(rng, S, V, shape)
    m, v = rng.normal(size=(S, V)) * 0.01, rng.random((S, V)) * 1e-4
    args = (ref_log_probs, *tokens, 0.2, kl_coef, kl_kind, 1.0 / n, 0.05,
            *ADAM, 3)
    state = [theta.copy(), m.copy(), v.copy()]
    twin = [theta.copy(), m.copy(), v.copy()]
    out = _core.token_ppo_adam_step(*state, *args)
    out_ref = ref.token_ppo_adam_step(*twin, *args)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-15)
    for got, want in zip(state, twin):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


# (S, shape, streaming) for the value step
VALUE_PATHS = [(32, (20000,), True), (600, (50,), True),
               (300000, (50,), False), (140000, (10000,), False)]


@pytest.mark.parametrize("S, shape, streaming", VALUE_PATHS)
def test_value_adam_step_both_paths_match_twin(S, shape, streaming):
    n = int(np.prod(shape))
    assert streams("value_adam_step", n, S) == streaming
    rng = np.random.default_rng([S, 23])
    values, *tokens = value_problem(rng, S, shape, 0.2)
    m, v = rng.normal(size=S) * 0.01, rng.random(S) * 1e-4
    state = [values.copy(), m.copy(), v.copy()]
    twin = [values.copy(), m.copy(), v.copy()]
    args = (*tokens, 0.2, 1.0 / n, 0.05, *ADAM, 2)
    loss = _core.value_adam_step(*state, *args)
    loss_ref = ref.value_adam_step(*twin, *args)
    assert loss == pytest.approx(loss_ref, rel=1e-12, abs=1e-15)
    for got, want in zip(state, twin):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def padded_rows(table, rows, fill):
    """table with rows - len(table) more rows of fill: states no token
    visits, so that the same tokens take the other path."""
    extra = np.full((rows - len(table),) + table.shape[1:], fill)
    return np.concatenate([table, extra])


@pytest.mark.parametrize("n_tokens, S_padded", [(20000, 1700), (3000, 800)])
def test_token_kernels_paths_agree(n_tokens, S_padded):
    """The same tokens streamed (a 32 x 32 table) and grouped (the table
    with rows no token visits): the same numbers to rounding of the sums,
    and rows without tokens unchanged."""
    S, V = 32, 32
    width = S_padded * V
    assert streams("token_grad", n_tokens, S * V)
    assert streams("token_ppo_adam_step", n_tokens, S * V)
    assert not streams("token_grad", n_tokens, width)
    assert not streams("token_ppo_adam_step", n_tokens, width)
    rng = np.random.default_rng([n_tokens, 24])
    theta, ref_log_probs, *tokens = ppo_problem(rng, S, V, (n_tokens,))
    states, actions, weights = tokens[:3]
    coefs = weights * rng.normal(size=n_tokens)
    big_ref = padded_rows(ref_log_probs, S_padded, -np.log(V))
    grad = _core.token_grad(ref_log_probs, states, actions, coefs)
    grad_grouped = _core.token_grad(big_ref, states, actions, coefs)
    np.testing.assert_allclose(grad_grouped[:S], grad, rtol=1e-12,
                               atol=1e-14)
    assert (grad_grouped[S:] == 0).all()
    m, v = rng.normal(size=(S, V)) * 0.01, rng.random((S, V)) * 1e-4
    for kl_coef, kl_kind in [(0.0, 1), (0.1, 1), (0.2, 3)]:
        args = (*tokens, 0.2, kl_coef, kl_kind, 1e-4, 0.05, *ADAM, 2)
        streamed = [theta.copy(), m.copy(), v.copy()]
        grouped = [padded_rows(a, S_padded, 0.0) for a in (theta, m, v)]
        out = _core.token_ppo_adam_step(*streamed, ref_log_probs, *args)
        out_grouped = _core.token_ppo_adam_step(*grouped, big_ref, *args)
        np.testing.assert_allclose(out_grouped, out, rtol=1e-12, atol=1e-15)
        for a, b in zip(grouped, streamed):
            np.testing.assert_allclose(a[:S], b, rtol=1e-12, atol=1e-15)
            assert (a[S:] == 0).all()


def test_value_adam_step_paths_agree():
    S, S_padded, n_tokens = 32, 110000, 20000
    assert streams("value_adam_step", n_tokens, S)
    assert not streams("value_adam_step", n_tokens, S_padded)
    rng = np.random.default_rng(25)
    values, *tokens = value_problem(rng, S, (n_tokens,), 0.2)
    m, v = rng.normal(size=S) * 0.01, rng.random(S) * 1e-4
    args = (*tokens, 0.2, 1e-4, 0.05, *ADAM, 2)
    streamed = [values.copy(), m.copy(), v.copy()]
    grouped = [padded_rows(a, S_padded, 0.0) for a in (values, m, v)]
    loss = _core.value_adam_step(*streamed, *args)
    loss_grouped = _core.value_adam_step(*grouped, *args)
    assert loss_grouped == pytest.approx(loss, rel=1e-12, abs=1e-15)
    for a, b in zip(grouped, streamed):
        np.testing.assert_allclose(a[:S], b, rtol=1e-12, atol=1e-15)
        assert (a[S:] == 0).all()


@pytest.mark.parametrize("S", [32, 1700])
def test_token_ppo_adam_step_bad_row_changes_nothing(S):
    """A row of logits with a NaN, found before any row is stepped, on
    either path: an error, and theta, m and v as they were."""
    V, n_tokens = 32, 20000
    assert streams("token_ppo_adam_step", n_tokens, S * V) == (S == 32)
    rng = np.random.default_rng([S, 26])
    theta, ref_log_probs, *tokens = ppo_problem(rng, S, V, (n_tokens,))
    theta[S - 1, 3] = np.nan
    state = [theta, rng.normal(size=(S, V)), rng.random((S, V))]
    check = unchanged(state)
    with pytest.raises(ValueError, match="ref_log_probs"):
        _core.token_ppo_adam_step(*state, ref_log_probs, *tokens, 0.2, 0.1,
                                  3, 1e-4, 0.05, *ADAM, 2)
    check()


@pytest.mark.parametrize("V, depth, n", [(5, 2, 1), (5, 2, 400), (100, 1, 1),
                                         (100, 1, 400)])
def test_sample_sequences_scan_and_cumulative_draws(V, depth, n):
    """Fewer draws than rows scan each row at each draw; more use the rows'
    cumulative sums, counted (V <= 64) or searched: the twin's tokens."""
    T, end = 6, 1
    S = n_states(V, depth)
    assert (n * (T - 1) >= S) == (n == 400)
    rng = np.random.default_rng([V, n, 27])
    probs = probabilities(rng, S, V)
    for seed in (0, 5):
        got = _core.sample_sequences(probs, n, T, seed, end, depth)
        want = ref.sample_sequences(probs, n, T, seed, end, depth)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


# -- threads -----------------------------------------------------------------

THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from rlhf import _core
    rng = np.random.default_rng(0)
    digest = hashlib.sha256()

    def add(*arrays):
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())

    # sampling and scoring: 4096 x 16 tokens, V = 32, depth 1
    probs = rng.dirichlet(np.ones(32), size=32)
    tokens, lengths = _core.sample_sequences(probs, 4096, 16, 7, 5, 1)
    states, logp = _core.sequence_log_probs(np.log(probs), tokens, lengths,
                                            5, 1)
    add(tokens, lengths, states, logp)
    # a backup of 7381 prefixes of 10 tokens
    ref_log_probs = np.log(rng.dirichlet(np.ones(10), size=7381))
    add(*_core.soft_backup(ref_log_probs, rng.normal(size=66430), 6, 3))
    add(*_core.gae(rng.normal(size=(4096, 16)), rng.normal(size=(4096, 16)),
                   np.minimum(lengths, 15), 0.99, 0.95))
    # token kernels on a 4096 x 16 table, a state drawing most tokens (the
    # grouping path, the value step's streaming one)
    S, V = 4096, 16
    table = np.log(rng.dirichlet(np.ones(V), size=S))
    states = rng.integers(-1, S, size=70000)
    states[::3] = 17
    actions = rng.integers(0, V, size=70000)
    coefs = rng.normal(size=70000)
    add(_core.token_grad(table, states, actions, coefs))
    theta, m, v = rng.normal(size=(S, V)), np.zeros((S, V)), np.zeros((S, V))
    old = rng.normal(size=70000) - 2.7
    out = _core.token_ppo_adam_step(theta, m, v, table, states, actions,
                                    np.abs(coefs), old, coefs, 0.2, 0.1, 3,
                                    1e-3, 0.01, 0.9, 0.999, 1e-8, 1)
    add(theta, m, v, np.array(out))
    values, vm, vv = rng.normal(size=S), np.zeros(S), np.zeros(S)
    loss = _core.value_adam_step(values, vm, vv, states, np.abs(coefs),
                                 coefs, coefs + 0.3, 0.2, 1e-3, 0.01, 0.9,
                                 0.999, 1e-8, 1)
    add(values, vm, vv, np.array([loss]))
    # the streaming path: 70000 tokens (9 blocks, the last one partial) on a
    # 32 x 32 table, and the value step's grouping path on 130000 states
    S, V = 32, 32
    table = np.log(rng.dirichlet(np.ones(V), size=S))
    states = rng.integers(-1, S, size=70000)
    actions = rng.integers(0, V, size=70000)
    coefs = rng.normal(size=70000)
    add(_core.token_grad(table, states, actions, coefs))
    old = table[np.maximum(states, 0), actions] + rng.normal(size=70000) * 0.1
    for kl_coef, kl_kind in [(0.0, 1), (0.1, 1), (0.1, 3)]:
        theta = rng.normal(size=(S, V))
        m, v = np.zeros((S, V)), np.zeros((S, V))
        out = _core.token_ppo_adam_step(theta, m, v, table, states, actions,
                                        np.abs(coefs), old, coefs, 0.2,
                                        kl_coef, kl_kind, 1e-3, 0.01, 0.9,
                                        0.999, 1e-8, 1)
        add(theta, m, v, np.array(out))
    for S in (32, 130000):
        states = rng.integers(-1, S, size=70000)
        values, vm, vv = rng.normal(size=S), np.zeros(S), np.zeros(S)
        loss = _core.value_adam_step(values, vm, vv, states, np.abs(coefs),
                                     coefs, coefs + 0.3, 0.2, 1e-3, 0.01,
                                     0.9, 0.999, 1e-8, 1)
        add(values, vm, vv, np.array([loss]))
    print(digest.hexdigest())
""")


@pytest.mark.slow
def test_same_bits_for_any_thread_count():
    """Large enough to take the threaded paths (> 32768 entries), the token
    kernels' streaming and grouping paths both."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join(
                       [root] + [os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", THREAD_SCRIPT], env=env,
                             capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert len(set(digests)) == 1 and len(digests[0]) == 64


def test_threaded_paths_match_twin():
    """Problems above the kernels' threshold for threads (32768 entries)
    against the twins, a state drawing a third of the tokens."""
    rng = np.random.default_rng(12)
    S, V = 4096, 16
    theta, table, states, actions, weights, old, adv = ppo_problem(
        rng, S, V, (200, 300))
    states[::7] = 17
    actions[::7] = np.flatnonzero(np.isfinite(table[17]))[0]
    tokens = (states, actions, weights, old, adv)
    m, v = rng.normal(size=(S, V)) * 0.01, rng.random((S, V)) * 1e-4
    state = [theta.copy(), m.copy(), v.copy()]
    twin = [theta.copy(), m.copy(), v.copy()]
    args = (table, *tokens, 0.2, 0.1, 3, 1e-4)
    out = _core.token_ppo_adam_step(*state, *args, 0.01, *ADAM, 3)
    out_ref = ref.token_ppo_adam_step(*twin, *args, 0.01, *ADAM, 3)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12)
    for got, want in zip(state, twin):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        _core.token_grad(table, states, actions, weights),
        ref.token_grad(table, states, actions, weights), rtol=1e-12,
        atol=1e-14)
    values = rng.normal(size=S)
    live = states >= 0
    old_values = np.where(live, values[np.maximum(states, 0)], 0.0) + adv
    value_tokens = (states, weights, rng.normal(size=states.shape),
                    old_values)
    state = [values.copy(), np.zeros(S), np.zeros(S)]
    twin = [values.copy(), np.zeros(S), np.zeros(S)]
    loss = _core.value_adam_step(*state, *value_tokens, 0.2, 1e-4, 0.01,
                                 *ADAM, 1)
    loss_ref = ref.value_adam_step(*twin, *value_tokens, 0.2, 1e-4, 0.01,
                                   *ADAM, 1)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for got, want in zip(state, twin):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    P, N = 7381, 66430  # prefixes of up to 4 and 5 words of 9
    backup = log_table(rng, P, 10)
    rewards = rng.normal(size=N)
    got = _core.soft_backup(backup, rewards, 6, 3)
    want = ref.soft_backup(backup, rewards, 6, 3)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-12)
    finite = np.isfinite(want[0])
    np.testing.assert_allclose(got[0][finite], want[0][finite], rtol=1e-12,
                               atol=1e-12)
    probs = probabilities(rng, 32, 32)
    for a, b in zip(_core.sample_sequences(probs, 4096, 16, 3, 0, 1),
                    ref.sample_sequences(probs, 4096, 16, 3, 0, 1)):
        np.testing.assert_array_equal(a, b)
    tokens, lengths = _core.sample_sequences(probs, 4096, 16, 3, 0, 1)
    with np.errstate(divide="ignore"):
        logp = np.log(probs / probs.sum(axis=1, keepdims=True))
    for a, b in zip(_core.sequence_log_probs(logp, tokens, lengths, 0, 1),
                    ref.sequence_log_probs(logp, tokens, lengths, 0, 1)):
        np.testing.assert_array_equal(a, b)
    rewards = rng.normal(size=(4096, 16))
    values = rng.normal(size=(4096, 16))
    for a, b in zip(_core.gae(rewards, values, lengths - 1, 0.99, 0.9),
                    ref.gae(rewards, values, lengths - 1, 0.99, 0.9)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


# -- bad input ---------------------------------------------------------------

def bad_cases():
    """(kernel, args, error, words the message must hold)."""
    rng = np.random.default_rng(0)
    V, T, depth, end = 4, 5, 1, 2
    probs = probabilities(rng, n_states(V, depth), V, zeros=0.0)
    logp = np.log(probs / probs.sum(axis=1, keepdims=True))
    tokens, lengths = ref.sample_sequences(probs, 6, T, 1, end, depth)
    W = V - 1
    P, N = int(ref._offsets(W, T)[-2]), int(ref._offsets(W, T)[-1])
    backup_ref = np.log(np.full((P, V), 1.0 / V))
    S = len(probs)
    st = np.array([0, 1, -1, 3])
    ac = np.array([1, 0, 99, 7])  # 7 is out of range, 99 skipped
    fl = np.ones(4)
    theta, m, v = np.zeros((S, V)), np.zeros((S, V)), np.zeros((S, V))
    values, vm, vv = np.zeros(S), np.zeros(S), np.zeros(S)
    ro = theta.copy()
    ro.setflags(write=False)
    nan_row = logp.copy()
    nan_row[2, 1] = np.nan
    neg, zero, inf = probs.copy(), probs.copy(), probs.copy()
    neg[1, 0] = -0.1
    zero[3] = 0.0
    inf[0, 2] = np.inf

    def ppo(**change):
        args = dict(theta=theta, m=m, v=v, ref_log_probs=logp, states=st,
                    actions=ac, weights=fl, old_logp=-fl, advantages=fl,
                    clip=0.2, kl_coef=0.1, kl_kind=1, scale=1.0, lr=0.1,
                    beta1=0.9, beta2=0.999, eps=1e-8, t=1)
        args.update(change)
        return tuple(args.values())

    def value(**change):
        args = dict(values=values, m=vm, v=vv, states=st, weights=fl,
                    returns=fl, old_values=fl, value_clip=0.2, scale=1.0,
                    lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, t=1)
        args.update(change)
        return tuple(args.values())

    sample = _core.sample_sequences
    slp = _core.sequence_log_probs
    return [
        (sample, (probs[:-1], 5, T, 0, end, depth), ValueError, "probs"),
        (sample, (probs, 5, T, 0, end, 2), ValueError, "probs"),
        (sample, (probs, 5, T, 0, end, -1), ValueError, "depth"),
        (sample, (probs, 5, T, 0, V, depth), ValueError, "end_token"),
        (sample, (probs, 5, T, 0, -1, depth), ValueError, "end_token"),
        (sample, (probs[:1, :1], 5, T, 0, 0, 0), ValueError, "probs"),
        (sample, (probs, -1, T, 0, end, depth), ValueError, "'n'"),
        (sample, (probs, 5, 0, 0, end, depth), ValueError, "max_length"),
        (sample, (probs[0], 5, T, 0, end, depth), ValueError, "probs"),
        (sample, (neg, 5, T, 0, end, depth), ValueError, "probs"),
        (sample, (zero, 5, T, 0, end, depth), ValueError, "probs"),
        (sample, (inf, 5, T, 0, end, depth), ValueError, "probs"),
        (sample, ("x", 5, T, 0, end, depth), ValueError, "probs"),
        (sample, (probs, 5, T, 0, end, 2**62), ValueError, "depth"),
        (slp, (logp, tokens + V, lengths, end, depth), ValueError, "tokens"),
        (slp, (logp, tokens - V, lengths, end, depth), ValueError, "tokens"),
        (slp, (logp, tokens, lengths * 0, end, depth), ValueError,
         "lengths"),
        (slp, (logp, tokens, lengths + T, end, depth), ValueError,
         "lengths"),
        (slp, (logp, tokens, lengths[:-1], end, depth), ValueError,
         "lengths"),
        (slp, (logp, tokens * 1.0, lengths, end, depth), TypeError,
         "tokens"),
        (slp, (logp, tokens[0], lengths, end, depth), ValueError, "tokens"),
        (slp, (logp[:-1], tokens, lengths, end, depth), ValueError,
         "log_probs"),
        (slp, (logp, tokens, lengths, 9, depth), ValueError, "end_token"),
        (slp, (logp, tokens, lengths, end, -1), ValueError, "depth"),
        (_core.soft_backup, (backup_ref[:-1], np.zeros(N), T, end),
         ValueError, "ref_log_probs"),
        (_core.soft_backup, (backup_ref, np.zeros(N + 1), T, end),
         ValueError, "scaled_rewards"),
        (_core.soft_backup, (backup_ref, np.zeros(N), 0, end), ValueError,
         "max_length"),
        (_core.soft_backup, (backup_ref, np.zeros(N), T, V), ValueError,
         "end_token"),
        (_core.soft_backup, (backup_ref, np.zeros(N), 60, end), ValueError,
         "max_length"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 5)), [1, 2, 3], 1.0,
                     1.0), ValueError, "values"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 4)), [1, 2, 5], 1.0,
                     1.0), ValueError, "n_steps"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 4)), [1, -1, 2], 1.0,
                     1.0), ValueError, "n_steps"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 4)), [1, 2], 1.0,
                     1.0), ValueError, "n_steps"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 4)), [1, 2, 3], 1.5,
                     1.0), ValueError, "gamma"),
        (_core.gae, (np.zeros((3, 4)), np.zeros((3, 4)), [1, 2, 3], 1.0,
                     np.nan), ValueError, "lam"),
        (_core.token_grad, (logp, st + S, ac * 0, fl), ValueError, "states"),
        (_core.token_grad, (logp, st, ac, fl), ValueError, "actions"),
        (_core.token_grad, (logp, st, ac[:3] * 0, fl), ValueError,
         "actions"),
        (_core.token_grad, (logp, st, ac * 0, fl[:3]), ValueError, "coefs"),
        (_core.token_grad, (logp, st * 1.5, ac * 0, fl), TypeError,
         "states"),
        (_core.token_grad, (logp[0], st, ac * 0, fl), ValueError,
         "log_probs"),
        (_core.token_ppo_adam_step, ppo(), ValueError, "actions"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, states=st + S),
         ValueError, "states"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, weights=fl[:3]),
         ValueError, "weights"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, old_logp=fl[:2]),
         ValueError, "old_logp"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V,
                                        advantages=np.ones(5)),
         ValueError, "advantages"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, theta=ro),
         TypeError, "theta"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V,
                                        m=np.asfortranarray(m)),
         TypeError, "'m'"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, v=v.tolist()),
         TypeError, "'v'"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, v=v[:-1]),
         ValueError, "'v'"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, m=theta),
         ValueError, "theta, m and v"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, ref_log_probs=theta),
         ValueError, "ref_log_probs"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V,
                                        advantages=theta.ravel()[:4]),
         ValueError, "advantages"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, kl_kind=2),
         ValueError, "kl_kind"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, t=0), ValueError,
         "'t'"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V, clip=-0.1),
         ValueError, "clip"),
        (_core.token_ppo_adam_step, ppo(actions=ac % V,
                                        ref_log_probs=nan_row),
         ValueError, "ref_log_probs + theta"),
        (_core.value_adam_step, value(states=st + S), ValueError, "states"),
        (_core.value_adam_step, value(weights=fl[:3]), ValueError,
         "weights"),
        (_core.value_adam_step, value(returns=fl[:3]), ValueError,
         "returns"),
        (_core.value_adam_step, value(old_values=np.ones(7)), ValueError,
         "old_values"),
        (_core.value_adam_step, value(values=values.tolist()), TypeError,
         "values"),
        (_core.value_adam_step, value(m=vm[::2]), TypeError, "'m'"),
        (_core.value_adam_step, value(v=np.zeros(S + 1)), ValueError,
         "'v'"),
        (_core.value_adam_step, value(v=values), ValueError,
         "values, m and v"),
        (_core.value_adam_step, value(returns=vm[:4]), ValueError,
         "returns"),
        (_core.value_adam_step, value(value_clip=np.nan), ValueError,
         "value_clip"),
        (_core.value_adam_step, value(t=0), ValueError, "'t'"),
    ]


def _message_names(error, word):
    text = str(error.value)
    word = word.strip("'")
    assert word in text, text


@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_bad_input_raises_naming_the_argument(case):
    kernel, args, error, word = bad_cases()[case]
    state = [a for a in args if isinstance(a, np.ndarray)]
    check = unchanged(state)
    with pytest.raises(error) as info:
        kernel(*args)
    _message_names(info, word)
    check()  # a failed call changes nothing, in-place state included


def test_skipped_positions_may_hold_anything():
    """Actions where the state is negative are never read."""
    rng = np.random.default_rng(2)
    logp = log_table(rng, 3, 4, zeros=0.0)
    states = np.array([0, -1, 2, -7])
    actions = np.array([1, 2**40, 3, -5])
    coefs = np.array([0.5, 1.0, -1.0, 2.0])
    np.testing.assert_allclose(
        _core.token_grad(logp, states, actions, coefs),
        ref.token_grad(logp, states, actions, coefs), rtol=1e-13)


def test_calls_keep_no_references():
    """Successful and failing calls leave the refcounts of their arguments
    as they were."""
    rng = np.random.default_rng(6)
    probs = probabilities(rng, n_states(4, 1), 4, zeros=0.0)
    logp = np.log(probs / probs.sum(axis=1, keepdims=True))
    tokens, lengths = _core.sample_sequences(probs, 50, 5, 3, 0, 1)
    states = rng.integers(-1, len(probs), size=40)
    actions = rng.integers(0, 4, size=40)
    coefs = rng.normal(size=40)
    theta, m, v = (np.zeros_like(logp) for _ in range(3))
    values, vm, vv = (np.zeros(len(probs)) for _ in range(3))
    arrays = [probs, logp, tokens, lengths, states, actions, coefs, theta, m,
              v, values, vm, vv]
    before = [sys.getrefcount(a) for a in arrays]
    for _ in range(50):
        _core.sample_sequences(probs, 50, 5, 3, 0, 1)
        _core.sequence_log_probs(logp, tokens, lengths, 0, 1)
        _core.token_grad(logp, states, actions, coefs)
        _core.token_ppo_adam_step(theta, m, v, logp, states, actions, coefs,
                                  coefs, coefs, 0.2, 0.1, 3, 1.0, 1e-3,
                                  *ADAM, 1)
        _core.value_adam_step(values, vm, vv, states, coefs, coefs, coefs,
                              0.2, 1.0, 1e-3, *ADAM, 1)
        for call in (lambda: _core.sequence_log_probs(logp, tokens, lengths
                                                      * 0, 0, 1),
                     lambda: _core.token_ppo_adam_step(
                         theta, m, theta, logp, states, actions, coefs,
                         coefs, coefs, 0.2, 0.1, 3, 1.0, 1e-3, *ADAM, 1),
                     lambda: _core.value_adam_step(
                         values, vm, vv, states + 100, coefs, coefs, coefs,
                         0.2, 1.0, 1e-3, *ADAM, 1)):
            with pytest.raises(ValueError):
                call()
    assert [sys.getrefcount(a) for a in arrays] == before
