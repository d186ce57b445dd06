"""rlhf.reweight: the C kernel against its twin, the lecture's expression
and the closed form it steps towards."""
import sys

import numpy as np
import pytest

import rlhf
from rlhf import _core
from rlhf import _reference as ref


def lecture(policy, rewards, eta=0.5, eps=1e-6):
    """The lecture's update, verbatim, along the last axis."""
    advantage = rewards - rewards.mean(axis=-1, keepdims=True)
    policy = np.exp(np.log(policy + eps) + eta * advantage)
    return policy / policy.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1,), (4,), (3, 1), (7, 5), (50, 1000),
                                   (2, 3, 17)])
@pytest.mark.parametrize("eta", [0.0, 0.5, 3.0, -2.0])
def test_equals_lecture_and_twin(shape, eta):
    rng = np.random.default_rng(sum(shape))
    policy = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    rewards = rng.normal(scale=2.0, size=shape)
    out = rlhf.reweight(policy, rewards, eta=eta)
    np.testing.assert_allclose(out, lecture(policy, rewards, eta), rtol=1e-12,
                               atol=0)
    flat = (policy.reshape(-1, shape[-1]), rewards.reshape(-1, shape[-1]))
    np.testing.assert_allclose(out.reshape(-1, shape[-1]),
                               ref.reweight(*flat, eta, 1e-6), rtol=1e-12,
                               atol=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-14)


def test_exp_polynomial_over_its_whole_range():
    """Rewards chosen so that every step before exp is exact (multiples of
    1/64, 4096 = 2^12 of them, so the mean is exact too): the fast path's
    exp over [-700, 0] must then agree with libm to a few ulps."""
    gaps = -np.round(np.linspace(0.0, 700.0, 4096) * 64) / 64
    policy = np.full((1, gaps.size), 1.0 / gaps.size)
    out = _core.reweight(policy, gaps[None, :], 1.0, 0.0)[0]
    # gaps[0] = 0 is the maximum, so out / out[0] = exp(gaps)
    np.testing.assert_allclose(out / out[0], np.exp(gaps), rtol=2e-15, atol=0)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-15)


def test_fixed_point_is_the_kl_regularised_optimum():
    """Repeating the update with the reference fixed in the logarithm is
    not needed: one step from pi_ref with eta = 1/beta is already
    pi* ∝ pi_ref exp(r/beta), the exact KL-regularised optimum (the mean
    of r only shifts the logits)."""
    rng = np.random.default_rng(3)
    reference = rng.dirichlet(np.ones(6), size=4)
    rewards = rng.normal(size=(4, 6))
    beta = 0.25
    optimum = reference * np.exp(rewards / beta)
    optimum /= optimum.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(rlhf.reweight(reference, rewards, eta=1 / beta,
                                             eps=0.0), optimum, rtol=1e-13)


def test_extremes_stay_finite_where_the_lecture_overflows():
    rewards = np.array([[1e300, 0.0, -1e300]])
    with np.errstate(all="ignore"):
        assert not np.isfinite(lecture(np.full((1, 3), 1 / 3), rewards)).all()
    out = rlhf.reweight(np.full((1, 3), 1 / 3), rewards, eta=1.0)
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0]])
    tiny = np.array([[1e-300, 1.0]])
    out = rlhf.reweight(tiny, np.array([[700.0, 0.0]]), eta=1.0, eps=0.0)
    # exact: 1e-300 e^700 / (1e-300 e^700 + 1) with e^700 = 1.014e304
    expected = 1e-300 * np.exp(700.0)
    np.testing.assert_allclose(out[0], [expected / (expected + 1),
                                        1 / (expected + 1)], rtol=1e-13)


def test_broadcast_rewards_and_batch_shapes():
    policy = np.full((3, 4), 0.25)
    rewards = np.array([1.0, 0.0, 2.0, 0.5])
    out = rlhf.reweight(policy, rewards)
    np.testing.assert_allclose(out, np.broadcast_to(
        lecture(policy[0], rewards), (3, 4)), rtol=1e-13)


def test_inputs_unchanged_and_layouts():
    rng = np.random.default_rng(0)
    big = rng.dirichlet(np.ones(6), size=10)
    rewards = rng.normal(size=(6, 10)).T  # a transposed (Fortran) view
    view = big[::2]
    copies = (view.copy(), rewards.copy())
    readonly = view.copy()
    readonly.setflags(write=False)
    out = rlhf.reweight(view, rewards[::2])
    np.testing.assert_array_equal(view, copies[0])
    np.testing.assert_array_equal(rewards, copies[1])
    np.testing.assert_array_equal(
        out, rlhf.reweight(np.ascontiguousarray(view), rewards[::2].copy()))
    np.testing.assert_array_equal(
        rlhf.reweight(readonly, rewards[::2]), out)
    np.testing.assert_allclose(
        rlhf.reweight(view.astype(np.float32), rewards[::2]),
        rlhf.reweight(view.astype(np.float32).astype(np.float64),
                      rewards[::2]), rtol=0)
    assert rlhf.reweight([[1, 1]], [[0, 0]]).tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize("policy, rewards, kwargs, error, match", [
    ([0.5, -0.5], [0.0, 0.0], {}, ValueError, "policy must be non-negative"),
    ([0.5, np.nan], [0.0, 0.0], {}, ValueError, "policy contains NaN"),
    ([0.5, 0.5], [0.0, np.inf], {}, ValueError, "rewards contains infinity"),
    ([0.5, 0.5], [0.0, 0.0, 1.0], {}, ValueError, "do not broadcast"),
    ([], [], {}, ValueError, "at least one response"),
    (np.zeros((0, 3)), np.zeros((0, 3)), {}, ValueError, "empty"),
    (["a", "b"], [0.0, 0.0], {}, ValueError, "policy must be numeric"),
    ([0.5, 0.5], [1j, 0.0], {}, ValueError, "rewards must be real"),
    ([0.5, 0.5], [0.0, 0.0], {"eta": np.nan}, ValueError, "eta"),
    ([0.5, 0.5], [0.0, 0.0], {"eps": -1.0}, ValueError, "eps must be >= 0"),
    ([0.5, 0.5], [0.0, 0.0], {"eta": "big"}, ValueError, "eta"),
    ([0.0, 0.0], [0.0, 0.0], {"eps": 0.0}, ValueError, "row of zeros"),
])
def test_bad_input(policy, rewards, kwargs, error, match):
    with pytest.raises(error, match=match):
        rlhf.reweight(policy, rewards, **kwargs)


def test_threads_and_repeats_give_the_same_bits():
    rng = np.random.default_rng(1)
    policy = rng.dirichlet(np.ones(300), size=1000)
    rewards = rng.normal(size=(1000, 300))
    first = rlhf.reweight(policy, rewards)
    rows = np.vstack([rlhf.reweight(policy[i:i + 1], rewards[i:i + 1])
                      for i in range(0, 1000, 97)])
    assert first[::97].tobytes() == rows.tobytes()
    assert rlhf.reweight(policy, rewards).tobytes() == first.tobytes()


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="CPython only")
def test_no_reference_leaks():
    policy = np.full((3, 4), 0.25)
    rewards = np.ones((3, 4))
    counts = (sys.getrefcount(policy), sys.getrefcount(rewards))
    for _ in range(500):
        _core.reweight(policy, rewards, 0.5, 1e-6)
        with pytest.raises(ValueError):
            _core.reweight(policy, rewards[:2], 0.5, 1e-6)
    assert (sys.getrefcount(policy), sys.getrefcount(rewards)) == counts


@pytest.mark.parametrize("shape", [(4,), (4, 4), (1, 3), (3, 1), (2, 5)])
def test_fast_path_equals_the_general_path(shape):
    """float64 arrays of one shape (one or two axes) with float eta and eps
    skip the general conversions: the same bits as the general path (lists
    and a NumPy scalar eta), a fresh output, the inputs unchanged."""
    rng = np.random.default_rng(1)
    policy = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1] or None)
    rewards = rng.normal(size=shape)
    before = policy.copy(), rewards.copy()
    fast = rlhf.reweight(policy, rewards, eta=0.7, eps=1e-9)
    general = rlhf.reweight(policy.tolist(), rewards.tolist(),
                            eta=np.float64(0.7), eps=np.float64(1e-9))
    assert fast.shape == shape
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_allclose(fast, ref.reweight(
        policy.reshape(-1, shape[-1]), rewards.reshape(-1, shape[-1]),
        0.7, 1e-9).reshape(shape), rtol=1e-12, atol=0)
    assert not np.shares_memory(fast, policy)
    np.testing.assert_array_equal(policy, before[0])
    np.testing.assert_array_equal(rewards, before[1])


@pytest.mark.parametrize("policy, rewards, eps, match", [
    ([0.5, -0.5], [0.0, 0.0], 1e-6, "policy must be non-negative"),
    ([0.5, np.nan], [0.0, 0.0], 1e-6, "policy contains NaN"),
    ([0.5, 0.5], [0.0, np.inf], 1e-6, "rewards contains infinity"),
    ([[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]], 0.0,
     "row of zeros"),
])
def test_fast_path_errors_name_the_argument(policy, rewards, eps, match):
    with pytest.raises(ValueError, match=match):
        rlhf.reweight(np.array(policy), np.array(rewards), eta=0.5, eps=eps)
