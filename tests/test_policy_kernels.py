"""The policy-optimisation kernels of rlhf._core against their NumPy twins,
their formulas and finite differences."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlhf import _core
from rlhf import _reference as ref


def problem(seed, n=7, k=5, s=4):
    rng = np.random.default_rng(seed)
    ref_logp = np.log(rng.dirichlet(np.ones(k), size=n))
    logits = ref_logp + rng.normal(size=(n, k))
    rewards = rng.normal(size=(n, k))
    return rng, ref_logp, logits, rewards


@pytest.mark.parametrize("layout", ["C", "F", "strided", "readonly", "f32"])
def test_log_softmax_matches_twin(layout):
    _, _, logits, _ = problem(0, n=9, k=6)
    logits[2, 3] = -np.inf  # a response of probability 0
    logits[4] += 800.0  # would overflow a naive exp
    arg = {"C": logits, "F": np.asfortranarray(logits),
           "strided": np.repeat(logits, 2, axis=0)[::2],
           "readonly": logits.copy(), "f32": logits.astype(np.float32)}[
               layout]
    if layout == "readonly":
        arg.setflags(write=False)
    before = np.array(arg, copy=True)
    logp, p = _core.log_softmax(arg)
    logp_ref, p_ref = ref.log_softmax(np.asarray(arg, dtype=np.float64))
    np.testing.assert_array_equal(arg, before)
    np.testing.assert_allclose(p, p_ref, rtol=1e-14, atol=1e-300)
    finite = np.isfinite(logp_ref)
    np.testing.assert_allclose(logp[finite], logp_ref[finite], rtol=1e-14,
                               atol=1e-14)
    assert logp[2, 3] == -np.inf and p[2, 3] == 0.0
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-14)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_log_softmax_rejects_nan_and_inf(bad):
    logits = np.zeros((2, 3))
    logits[1, 1] = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        _core.log_softmax(logits)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        _core.log_softmax(np.full((1, 3), -np.inf))


def test_sampler_equals_twin_exactly_and_follows_the_policy():
    rng = np.random.default_rng(1)
    policy = rng.dirichlet(np.ones(6) * 0.5, size=40)
    policy[3] = [0.0, 0.5, 0.0, 0.5, 0.0, 0.0]
    for seed, counter in [(0, 0), (12345, 7), (2 ** 64 - 1, 2 ** 63)]:
        out = _core.sample_categorical(policy, 50, seed, counter)
        np.testing.assert_array_equal(
            out, ref.sample_categorical(policy, 50, seed, counter))
        assert set(np.unique(out[3])) <= {1, 3}
    # frequencies of one row with 200,000 draws, within 5 sigma
    draws = 200_000
    row = policy[:1]
    out = _core.sample_categorical(row, draws, 99, 0)
    freq = np.bincount(out[0], minlength=6) / draws
    sigma = np.sqrt(row[0] * (1 - row[0]) / draws)
    assert (np.abs(freq - row[0]) <= 5 * sigma + 1e-12).all()


def test_sampler_is_counter_based():
    """Row i, sample s uses output counter + i * n_samples + s: splitting
    rows or shifting the counter gives the same draws."""
    rng = np.random.default_rng(2)
    policy = rng.dirichlet(np.ones(5), size=10)
    whole = _core.sample_categorical(policy, 3, 42, 100)
    tail = _core.sample_categorical(policy[4:], 3, 42, 100 + 4 * 3)
    np.testing.assert_array_equal(whole[4:], tail)
    assert not np.array_equal(whole, _core.sample_categorical(policy, 3, 43,
                                                              100))


def test_splitmix_reference_values():
    """SplitMix64 from seed 0: the first outputs of the published
    generator (Vigna's splitmix64.c), 0xe220a8397b1dcdaf, ..."""
    expected = np.array([0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
                         0x06C45D188009454F], dtype=np.uint64)
    u = ref._splitmix_uniform(0, np.arange(3, dtype=np.uint64))
    np.testing.assert_array_equal(
        u, (expected >> np.uint64(11)).astype(np.float64) * 2.0 ** -53)


def test_sampler_rejects_rows_without_mass():
    with pytest.raises(ValueError, match="positive entry"):
        _core.sample_categorical(np.array([[0.5, 0.5], [0.0, 0.0]]), 2, 0, 0)
    with pytest.raises(ValueError, match="positive entry"):
        _core.sample_categorical(np.array([[0.5, -0.5]]), 2, 0, 0)


@pytest.mark.parametrize("kl_kind", [1, 3])
def test_shape_rewards_matches_formula(kl_kind):
    rng, ref_logp, logits, rewards = problem(3)
    logp, p = _core.log_softmax(logits)
    actions = _core.sample_categorical(p, 4, 5, 0)
    shaped, lp = _core.shape_rewards(rewards, logp, ref_logp, actions, 0.3,
                                     kl_kind)
    for i in range(actions.shape[0]):
        for s in range(actions.shape[1]):
            y = actions[i, s]
            d = logp[i, y] - ref_logp[i, y]
            k = d if kl_kind == 1 else np.exp(-d) - 1 + d
            assert lp[i, s] == logp[i, y]
            np.testing.assert_allclose(shaped[i, s], rewards[i, y] - 0.3 * k,
                                       rtol=1e-13)
    twin = ref.shape_rewards(rewards, logp, ref_logp, actions, 0.3, kl_kind)
    np.testing.assert_allclose(shaped, twin[0], rtol=1e-14)


def test_advantages_match_their_formulas():
    rng = np.random.default_rng(4)
    rewards = rng.normal(size=(6, 5))
    rewards[2] = 0.1  # a group of equal rewards
    rewards[4, :2] = 3.0
    mean = _core.advantages(rewards, 0, 1e-4)
    rloo = _core.advantages(rewards, 1, 1e-4)
    grpo = _core.advantages(rewards, 2, 1e-4)
    for i in range(6):
        r = rewards[i]
        np.testing.assert_allclose(mean[i], r - r.mean(), atol=1e-15)
        others = [np.delete(r, s).mean() for s in range(5)]
        np.testing.assert_allclose(rloo[i], r - others, atol=1e-15)
        if i == 2:
            # zero variance: zero advantage, not NaN and not rounding noise
            np.testing.assert_array_equal(grpo[i], 0.0)
        else:
            np.testing.assert_allclose(
                grpo[i], (r - r.mean()) / (r.std(ddof=1) + 1e-4), rtol=1e-13)
    for baseline, out in enumerate([mean, rloo, grpo]):
        np.testing.assert_allclose(out, ref.advantages(rewards, baseline,
                                                       1e-4), atol=1e-15)
    # RLOO is the mean baseline scaled by n / (n - 1)
    np.testing.assert_allclose(rloo, mean * 5 / 4, atol=1e-14)
    with pytest.raises(ValueError, match="at least 2"):
        _core.advantages(rewards[:, :1], 2, 1e-4)
    np.testing.assert_array_equal(_core.advantages(rewards[:, :1], 0, 1e-4),
                                  0.0)


def ppo_case(seed, kl_kind, kl_coef, exact=False):
    rng, ref_logp, logits, rewards = problem(seed)
    n, k = logits.shape
    logp, p = _core.log_softmax(logits)
    if exact:
        actions = np.tile(np.arange(k), (n, 1))
        weights = p
    else:
        actions = _core.sample_categorical(p, 4, seed, 0)
        weights = np.full(actions.shape, 0.25)
    old = np.take_along_axis(logp, actions, 1) + rng.normal(
        scale=0.3, size=actions.shape)
    adv = rng.normal(size=actions.shape)
    rows = np.array([5, 0, 2, 6], dtype=np.int64)
    return (ref_logp, rows, actions, weights, old, adv, 0.2, kl_coef,
            kl_kind), logits


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("kl_kind, kl_coef", [(1, 0.0), (1, 0.3), (3, 0.3)])
def test_ppo_loss_grad_twin_and_finite_differences(kl_kind, kl_coef, exact):
    args, logits = ppo_case(5, kl_kind, kl_coef, exact)
    loss, grad, clip_fraction = _core.ppo_loss_grad(logits, *args)
    loss_r, grad_r, clip_r = ref.ppo_loss_grad(logits, *args)
    np.testing.assert_allclose(loss, loss_r, rtol=1e-13)
    np.testing.assert_allclose(grad, grad_r, rtol=1e-12, atol=1e-15)
    assert clip_fraction == pytest.approx(clip_r, rel=1e-14)
    assert 0 < clip_fraction < 1
    # rows outside the batch get no gradient
    assert not grad[[1, 3, 4]].any()
    # central differences (the clip kinks are away from these points)
    h = 1e-6
    numeric = np.zeros_like(logits)
    for i in args[1]:
        for j in range(logits.shape[1]):
            up, down = logits.copy(), logits.copy()
            up[i, j] += h
            down[i, j] -= h
            numeric[i, j] = (_core.ppo_loss_grad(up, *args)[0]
                             - _core.ppo_loss_grad(down, *args)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_ppo_surrogate_is_the_policy_gradient_at_the_old_policy():
    """At pi = pi_old with exact weights and no KL, the gradient is
    -E_pi[A grad log pi] / n_batch: for logits, -pi (A - E_pi A)."""
    _, ref_logp, logits, _ = problem(6)
    n, k = logits.shape
    logp, p = _core.log_softmax(logits)
    actions = np.tile(np.arange(k), (n, 1))
    adv = np.random.default_rng(0).normal(size=(n, k))
    rows = np.arange(n, dtype=np.int64)
    loss, grad, clip_fraction = _core.ppo_loss_grad(
        logits, ref_logp, rows, actions, p, logp, adv, 0.2, 0.0, 1)
    expected = -p * (adv - (p * adv).sum(1, keepdims=True)) / n
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-16)
    assert clip_fraction == 0.0
    assert loss == pytest.approx(-(p * adv).sum() / n, rel=1e-13)


@pytest.mark.parametrize("loss_kind", [0, 1, 2, 3])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_loss_grad_twin_and_finite_differences(loss_kind, smoothing):
    rng, ref_logp, logits, _ = problem(7)
    comparisons = np.array([[0, 1, 3], [2, 0, 4], [2, 4, 0], [6, 1, 2],
                            [0, 1, 2]], dtype=np.int64)
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    args = (ref_logp, comparisons, weights, 0.7, loss_kind, smoothing)
    loss, grad, stats = _core.dpo_loss_grad(logits, *args)
    loss_r, grad_r, stats_r = ref.dpo_loss_grad(logits, *args)
    np.testing.assert_allclose(loss, loss_r, rtol=1e-13)
    np.testing.assert_allclose(grad, grad_r, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats, stats_r, rtol=1e-12, atol=1e-15)
    h = 1e-6
    numeric = np.zeros_like(logits)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            up, down = logits.copy(), logits.copy()
            up[i, j] += h
            down[i, j] -= h
            numeric[i, j] = (_core.dpo_loss_grad(up, *args)[0]
                             - _core.dpo_loss_grad(down, *args)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_dpo_sigmoid_loss_value():
    """One comparison, logits relative to the reference (a, b):
    -log sigmoid(beta (a - b))."""
    ref_logp = np.log(np.array([[0.2, 0.3, 0.5]]))
    logits = ref_logp + np.array([[0.4, -0.1, 0.0]])
    loss, _, (chosen, rejected, accuracy) = _core.dpo_loss_grad(
        logits, ref_logp, np.array([[0, 0, 1]]), np.ones(1), 2.0, 0, 0.0)
    assert loss == pytest.approx(np.log1p(np.exp(-2.0 * 0.5)), rel=1e-14)
    lse = np.log(np.exp(logits).sum())
    assert chosen == pytest.approx(0.4 - lse, rel=1e-13)
    assert rejected == pytest.approx(-0.1 - lse, rel=1e-13)
    assert accuracy == 1.0


def test_policy_stats_and_adam_match_twins():
    _, ref_logp, logits, rewards = problem(8)
    logits[1, 2] = -np.inf
    logp, _ = _core.log_softmax(logits)
    np.testing.assert_allclose(_core.policy_stats(logp, ref_logp, rewards),
                               ref.policy_stats(logp, ref_logp, rewards),
                               rtol=1e-13)
    rng = np.random.default_rng(9)
    theta, grad, m = rng.normal(size=(3, 4, 5))
    v = rng.random((4, 5))
    copies = theta.copy(), m.copy(), v.copy()
    for t in (1, 10):
        out = _core.adam_step(theta, grad, m, v, 0.1, 0.9, 0.999, 1e-8, t)
        for a, b in zip(out, ref.adam_step(theta, grad, m, v, 0.1, 0.9,
                                           0.999, 1e-8, t)):
            np.testing.assert_allclose(a, b, rtol=1e-14)
    # the first step moves every coordinate by the step size
    out = _core.adam_step(theta, grad, np.zeros_like(m), np.zeros_like(v),
                          0.1, 0.9, 0.999, 0.0, 1)
    np.testing.assert_allclose(out[0], theta - 0.1 * np.sign(grad),
                               rtol=1e-14)
    for a, b in zip((theta, m, v), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, match", [
    (lambda a: _core.ppo_loss_grad(a["logits"], a["ref"], np.array([0, 9]),
                                   *a["rest"]), "rows holds the index 9"),
    (lambda a: _core.ppo_loss_grad(a["logits"], a["ref"], np.array([1, 1]),
                                   *a["rest"]), "rows must be distinct"),
    (lambda a: _core.ppo_loss_grad(a["logits"], a["ref"][:2], np.array([0]),
                                   *a["rest"]), "ref_logp must have shape"),
    (lambda a: _core.shape_rewards(a["logits"], a["logits"], a["ref"],
                                   np.full((7, 2), 5), 0.1, 1),
     "actions holds the index 5"),
    (lambda a: _core.shape_rewards(a["logits"], a["logits"], a["ref"],
                                   np.zeros((7, 2), dtype=int), 0.1, 2),
     "kl_kind"),
    (lambda a: _core.dpo_loss_grad(a["logits"], a["ref"],
                                   np.array([[7, 0, 1]]), np.ones(1), 0.1, 0,
                                   0.0), "out of range"),
    (lambda a: _core.dpo_loss_grad(a["logits"], a["ref"],
                                   np.array([[0, 0, 5]]), np.ones(1), 0.1, 0,
                                   0.0), "out of range"),
    (lambda a: _core.adam_step(np.zeros(3), np.zeros(2), np.zeros(3),
                               np.zeros(3), 0.1, 0.9, 0.999, 1e-8, 1),
     "grad must have"),
    (lambda a: _core.advantages(np.zeros((2, 2)), 5, 0.0), "baseline"),
])
def test_wrappers_check_what_the_kernels_trust(call, match):
    _, ref_logp, logits, _ = problem(10)
    actions = np.zeros((7, 2), dtype=np.int64)
    rest = (actions, np.ones((7, 2)), np.zeros((7, 2)), np.zeros((7, 2)),
            0.2, 0.0, 1)
    with pytest.raises(ValueError, match=match):
        call({"logits": logits, "ref": ref_logp, "rest": rest})


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="CPython only")
def test_no_reference_leaks():
    args, logits = ppo_case(11, 1, 0.1)
    counts = [sys.getrefcount(a) for a in (logits,) + args[:6]]
    for _ in range(300):
        _core.ppo_loss_grad(logits, *args)
        _core.log_softmax(logits)
        with pytest.raises(ValueError):
            _core.ppo_loss_grad(logits, args[0][:2], *args[1:])
    assert [sys.getrefcount(a) for a in (logits,) + args[:6]] == counts


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="CPython only")
def test_no_reference_leaks_in_the_other_wrappers():
    args, logits = ppo_case(14, 3, 0.1)
    ref_logp = args[0]
    state = [np.zeros_like(logits) for _ in range(3)]
    out = (np.empty_like(logits), np.empty_like(logits))
    comparisons = np.array([[0, 1, 2], [3, 0, 4]])
    weights = np.ones(2)
    watched = (logits, ref_logp, comparisons, weights, *state, *out)
    counts = [sys.getrefcount(a) for a in watched]
    for _ in range(200):
        _core.ppo_adam_step(*state, *args, 0.1, 0.9, 0.999, 1e-8, 1)
        _core.log_softmax(logits, out)
        _core.dpo_loss_grad(logits, ref_logp, comparisons, weights, 0.1, 0,
                            0.0)
        _core.sample_categorical(out[1], 2, 0, 0)
        _core.policy_stats(out[0], ref_logp, logits)
        with pytest.raises(ValueError):
            _core.dpo_loss_grad(logits, ref_logp, comparisons + 10, weights,
                                0.1, 0, 0.0)
        with pytest.raises(ValueError):
            _core.log_softmax(logits, (logits, out[1]))
        with pytest.raises(TypeError):
            _core.ppo_adam_step(state[0], state[1], [0.0], *args, 0.1, 0.9,
                                0.999, 1e-8, 1)
    assert [sys.getrefcount(a) for a in watched] == counts


@pytest.mark.slow
@pytest.mark.skipif(not _core.has_openmp(), reason="built without OpenMP")
def test_kernels_give_the_same_bits_for_any_thread_count():
    """Large enough to take the threaded paths (> 32768 entries)."""
    script = textwrap.dedent("""
        import hashlib, numpy as np
        from rlhf import _core
        rng = np.random.default_rng(0)
        ref_logp = np.log(rng.dirichlet(np.ones(16), size=5000))
        logits = ref_logp + rng.normal(size=ref_logp.shape)
        logp, p = _core.log_softmax(logits)
        actions = _core.sample_categorical(p, 8, 7, 0)
        rewards = rng.normal(size=logits.shape)
        shaped, old = _core.shape_rewards(rewards, logp, ref_logp, actions,
                                          0.1, 3)
        adv = _core.advantages(shaped, 2, 1e-4)
        rows = np.arange(5000, dtype=np.int64)
        loss, grad, cf = _core.ppo_loss_grad(
            logits, ref_logp, rows, actions, np.full(actions.shape, 1 / 8),
            old - 0.1, adv, 0.2, 0.1, 3)
        stats = _core.policy_stats(logp, ref_logp, rewards)
        digest = hashlib.sha256()
        for a in (logp, p, actions, shaped, adv, grad,
                  np.array([loss, cf, *stats])):
            digest.update(np.ascontiguousarray(a).tobytes())
        print(digest.hexdigest())
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join(
                       [root] + [os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", script], env=env,
                             capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert len(set(digests)) == 1 and len(digests[0]) == 64


@pytest.mark.parametrize("kl_kind, kl_coef", [(1, 0.0), (3, 0.2)])
def test_fused_ppo_adam_step_equals_the_two_kernels(kl_kind, kl_coef):
    """Gradient then Adam on logits ref_logp + theta, in place, and rows
    outside the batch still take their (momentum-only) Adam step."""
    args, logits = ppo_case(12, kl_kind, kl_coef)
    ref_logp, rows = args[0], args[1]
    rng = np.random.default_rng(12)
    theta = logits - ref_logp
    m, v = rng.normal(size=theta.shape), rng.random(theta.shape)
    state = [theta.copy(), m.copy(), v.copy()]
    loss, clip_fraction = _core.ppo_adam_step(*state, *args, 0.05, 0.9,
                                              0.999, 1e-8, 4)
    loss_2, grad, clip_2 = _core.ppo_loss_grad(ref_logp + theta, *args)
    expected = _core.adam_step(theta, grad, m, v, 0.05, 0.9, 0.999, 1e-8, 4)
    assert loss == pytest.approx(loss_2, rel=1e-13)
    assert clip_fraction == clip_2
    for got, want in zip(state, expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    twin = [theta.copy(), m.copy(), v.copy()]
    ref.ppo_adam_step(*twin, *args, 0.05, 0.9, 0.999, 1e-8, 4)
    for got, want in zip(state, twin):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert not np.array_equal(state[0][3], theta[3])  # not in rows
    # the state must be the optimiser's own arrays, updated in place
    with pytest.raises(TypeError, match="theta must be a writeable"):
        _core.ppo_adam_step(theta.tolist(), m, v, *args, 0.05, 0.9, 0.999,
                            1e-8, 4)
    with pytest.raises(TypeError, match="m must be a writeable"):
        _core.ppo_adam_step(theta, np.asfortranarray(m), v, *args, 0.05,
                            0.9, 0.999, 1e-8, 4)
    with pytest.raises(ValueError, match="three different arrays"):
        _core.ppo_adam_step(theta, theta, v, *args, 0.05, 0.9, 0.999, 1e-8,
                            4)


def test_log_softmax_into_out_buffers():
    _, _, logits, _ = problem(13)
    out = (np.empty_like(logits), np.empty_like(logits))
    result = _core.log_softmax(logits, out)
    assert result[0] is out[0] and result[1] is out[1]
    fresh = _core.log_softmax(logits)
    np.testing.assert_array_equal(out[0], fresh[0])
    np.testing.assert_array_equal(out[1], fresh[1])
    twin_out = (np.empty_like(logits), np.empty_like(logits))
    ref.log_softmax(logits, twin_out)
    np.testing.assert_allclose(twin_out[1], out[1], rtol=1e-14)
    with pytest.raises(ValueError, match="must not overlap"):
        _core.log_softmax(logits, (logits, out[1]))
    with pytest.raises(ValueError, match="must not overlap"):
        _core.log_softmax(logits, (out[0], out[0]))
    with pytest.raises(TypeError, match="out\\[1\\] must be a writeable"):
        _core.log_softmax(logits, (out[0], out[1].astype(np.float32)))
    with pytest.raises(ValueError, match="out\\[0\\] must have shape"):
        _core.log_softmax(logits, (out[0][:2], out[1]))
