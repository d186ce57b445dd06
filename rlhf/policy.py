"""Policy updates towards higher reward, staying near a reference."""
from typing import Union

import numpy as np

from . import _core
from ._typing import ArrayLike, FloatArray
from ._validation import (_as_float_array, _check_finite, check_scalar,
                          format_value)

_FLOAT64 = np.dtype(np.float64)
_INF = float("inf")

__all__ = ["best_of_n_policy", "kl_divergence", "kl_regularized_policy",
           "reweight"]


def reweight(policy: ArrayLike, rewards: ArrayLike, eta: float = 0.5,
             eps: float = 1e-6) -> FloatArray:
    """The lecture's policy update along the last axis.

    ``softmax(log(policy + eps) + eta * (rewards - mean(rewards)))``, i.e.
    ``policy * exp(eta * advantage)`` renormalised.  Applied to a reference
    policy it gives, up to ``eps``, the optimum of the KL-regularised
    objective ``E_pi[r] - beta KL(pi || pi_ref)`` (Ziegler et al. 2019,
    "Fine-tuning language models from human preferences") with
    ``beta = 1 / eta``: ``pi*(y) ∝ pi_ref(y) exp(r(y) / beta)`` (Rafailov et
    al. 2023, "Direct preference optimization", eq. 4).  Applied k times
    it gives the optimum for ``beta = 1 / (k eta)``, moving towards the
    greedy policy.  Nothing overflows: the largest exponent is subtracted
    first, so the result stays finite where
    ``np.exp(...) / np.exp(...).sum()`` does not.

    Parameters
    ----------
    policy : array-like of shape (..., n_responses)
        Probabilities (non-negative) over responses, one distribution per
        row; rows need not be normalised.
    rewards : array-like broadcastable to policy's shape
        Rewards of the responses; the mean is taken along the last axis.
    eta : float, default=0.5
        Step size, the inverse temperature of the update.
    eps : float >= 0, default=1e-6
        Added to the policy before the logarithm, as the lecture does, so a
        zero-probability response can come back.

    Returns
    -------
    ndarray of the broadcast shape, float64
        Each row sums to 1.

    Examples
    --------
    >>> import rlhf
    >>> rlhf.reweight([0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 1.0, 0.0],
    ...               eta=0.5).round(4)
    array([0.3112, 0.1888, 0.3112, 0.1888])
    """
    if (type(policy) is np.ndarray and type(rewards) is np.ndarray
            and policy.dtype == _FLOAT64 and rewards.dtype == _FLOAT64
            and 1 <= policy.ndim <= 2 and policy.shape == rewards.shape
            and policy.size > 0
            and type(eta) is float and type(eps) is float
            and -_INF < eta < _INF and 0.0 <= eps < _INF):
        # the lecture's call: float64 tables of one shape and plain float
        # parameters; the general path's conversions and broadcasting cost
        # several times the kernel itself on a 4 x 4 table.  The kernel
        # checks every value as it reads it, as on the general path.
        try:
            if policy.ndim == 2:
                return _core.reweight(policy, rewards, eta, eps)
            return _core.reweight(policy[None], rewards[None], eta, eps)[0]
        except ValueError:
            pass  # the general path says what was wrong
    # finite floats, by the rule of every scalar parameter
    eta = check_scalar(eta, "eta", "reweight", high=np.inf, high_open=True)
    eps = check_scalar(eps, "eps", "reweight", high=np.inf, high_open=True)
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {format_value(eps)}.")
    policy = _as_float_array(policy, "policy")
    rewards = _as_float_array(rewards, "rewards")
    if policy.ndim == 0 or policy.shape[-1] == 0:
        raise ValueError(
            "policy must have at least one response along its last axis; "
            f"got shape {policy.shape}."
        )
    try:
        shape = np.broadcast_shapes(policy.shape, rewards.shape)
    except ValueError:
        raise ValueError(
            f"rewards of shape {rewards.shape} do not broadcast to policy's "
            f"shape {policy.shape}."
        ) from None
    if np.prod(shape) == 0:
        raise ValueError(f"policy and rewards are empty (shape {shape}).")
    n_responses = shape[-1]
    flat_policy = np.broadcast_to(policy, shape).reshape(-1, n_responses)
    flat_rewards = np.broadcast_to(rewards, shape).reshape(-1, n_responses)
    try:
        # the kernel checks values in the pass that reads them
        out = _core.reweight(flat_policy, flat_rewards, eta, eps)
    except ValueError:
        _explain_bad_values(policy, rewards, shape, eps)
        raise
    return out.reshape(shape)


def _explain_bad_values(policy, rewards, shape, eps):
    """Raise the precise error for values the kernel rejected."""
    _check_finite(policy, "policy")
    _check_finite(rewards, "rewards")
    if (policy < 0).any():
        raise ValueError(
            "policy must be non-negative; got a minimum of "
            f"{format_value(policy.min())}."
        )
    if eps == 0 and (np.broadcast_to(policy, shape).max(axis=-1) == 0).any():
        raise ValueError("policy has a row of zeros and eps is 0: that row "
                         "has no distribution to update.")


# -- closed forms of the KL-regularised problem --------------------------

def _check_policy_table(policy, name, owner, *, ndim=2, atol=1e-6):
    """A float64 array of probabilities along the last axis: finite,
    non-negative, each row summing to 1 (within atol); renormalised."""
    policy = _as_float_array(policy, name)
    if policy.ndim != ndim:
        raise ValueError(
            f"{name} of {owner} must be a {ndim}-dimensional array of shape "
            f"{'(n_prompts, n_responses)' if ndim == 2 else '(n_responses,)'}"
            f"; got shape {policy.shape}.")
    if policy.size == 0:
        raise ValueError(f"{name} of {owner} is empty (shape "
                         f"{policy.shape}).")
    _check_finite(policy, name)
    if (policy < 0).any():
        raise ValueError(
            f"{name} of {owner} must be non-negative; got a minimum of "
            f"{format_value(policy.min())}.")
    totals = policy.sum(axis=-1, keepdims=True)
    worst = np.abs(totals - 1.0).max()
    if worst > atol:
        raise ValueError(
            f"The rows of {name} of {owner} must sum to 1; one sums to "
            f"{float(totals.ravel()[np.abs(totals - 1).argmax()])!r}.")
    return np.ascontiguousarray(policy / totals)


def _check_rewards(rewards, shape, owner, name="rewards"):
    rewards = _as_float_array(rewards, name)
    if rewards.shape != shape:
        raise ValueError(
            f"{name} of {owner} must have the shape of the reference policy "
            f"{shape}; got {rewards.shape}.")
    _check_finite(rewards, name)
    return np.ascontiguousarray(rewards)


def _check_beta(beta, owner, name="beta"):
    """beta as a float in (0, inf)."""
    return check_scalar(beta, name, owner, low=0.0, low_open=True,
                        high=np.inf, high_open=True)


def _one_or_two_d(reference_policy, owner):
    """(table of shape (n, K), whether the input was one distribution)."""
    arr = np.asarray(reference_policy)
    single = arr.ndim == 1
    table = _check_policy_table(arr[None, :] if single else arr,
                                "reference_policy", owner)
    return table, single


def kl_regularized_policy(reference_policy: ArrayLike, rewards: ArrayLike,
                          beta: float) -> FloatArray:
    """The optimum of ``E_pi[r] - beta KL(pi || pi_ref)``, row by row.

    ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)`` (Ziegler et al.
    2019, "Fine-tuning language models from human preferences"; Rafailov
    et al. 2023, "Direct preference optimization", eq. 4).  Computed by
    the kernel of :func:`reweight` with ``eta = 1 / beta`` and no ``eps``,
    so responses the reference never gives stay at probability 0, and
    nothing overflows for small ``beta``.

    Parameters
    ----------
    reference_policy : array-like of shape (n_prompts, n_responses) or \
(n_responses,)
        The reference distribution over responses of each prompt:
        non-negative, each row summing to 1.
    rewards : array-like of the same shape
        Rewards ``r(x, y)``, finite.
    beta : float > 0
        Strength of the KL penalty; small beta approaches the greedy policy,
        large beta the reference.

    Returns
    -------
    ndarray of the shape of reference_policy
        Each row sums to 1.

    Examples
    --------
    >>> import rlhf
    >>> rlhf.kl_regularized_policy([0.5, 0.5], [1.0, 0.0], beta=1.0).round(4)
    array([0.7311, 0.2689])
    """
    owner = "kl_regularized_policy"
    beta = _check_beta(beta, owner)
    table, single = _one_or_two_d(reference_policy, owner)
    rewards = np.asarray(rewards)
    rewards = _check_rewards(rewards[None, :] if single and rewards.ndim == 1
                             else rewards, table.shape, owner)
    try:
        out = _core.reweight(table, rewards, 1.0 / beta, 0.0)
    except ValueError:
        # the inputs are checked, so (r - mean r) / beta overflowed: take
        # the logits relative to the best reward the reference can give
        out = _tempered_in_log_space(table, rewards, beta)
    return out[0] if single else out


def _tempered_in_log_space(reference, rewards, beta):
    """pi_ref exp(r / beta), normalised, for r / beta beyond float range."""
    live = reference > 0
    best = np.where(live, rewards, -np.inf).max(axis=1, keepdims=True)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        gap = np.where(live, rewards - best, -np.inf) / beta
        logits = np.log(reference) + gap
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def kl_divergence(p: ArrayLike, q: ArrayLike) -> Union[float, FloatArray]:
    """``KL(p || q) = sum_y p(y) log(p(y) / q(y))`` along the last axis.

    Terms with ``p(y) = 0`` are 0; a response with ``p(y) > 0`` and
    ``q(y) = 0`` makes the divergence infinite.

    Parameters
    ----------
    p, q : array-like of the same shape (..., n_responses), or \
SequencePolicy
        Probabilities (non-negative, each row summing to 1).  Two
        :class:`rlhf.SequencePolicy` give the exact divergence between their
        distributions over whole sequences
        (:func:`rlhf.sequences.kl_divergence`).

    Returns
    -------
    ndarray of shape (...) or float
        Non-negative.

    Examples
    --------
    >>> import rlhf
    >>> round(float(rlhf.kl_divergence([0.5, 0.5], [0.9, 0.1])), 6)
    0.510826
    """
    from .sequences import SequencePolicy, kl_divergence as sequence_kl
    if isinstance(p, SequencePolicy) or isinstance(q, SequencePolicy):
        return sequence_kl(p, q)
    arrays = []
    for name, values in (("p", p), ("q", q)):
        arr = _as_float_array(values, name)
        if arr.ndim == 0 or arr.shape[-1] == 0:
            raise ValueError(f"{name} of kl_divergence must have at least one "
                             f"response along its last axis; got shape "
                             f"{arr.shape}.")
        flat = arr.reshape(-1, arr.shape[-1])
        arrays.append(_check_policy_table(flat, name, "kl_divergence")
                      .reshape(arr.shape))
    p, q = arrays
    if p.shape != q.shape:
        raise ValueError(f"p and q of kl_divergence must have the same shape; "
                         f"got {p.shape} and {q.shape}.")
    positive = p > 0
    with np.errstate(divide="ignore"):
        terms = np.where(positive, p * (np.log(np.where(positive, p, 1.0))
                                        - np.log(q)), 0.0)
    out = terms.sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def best_of_n_policy(reference_policy: ArrayLike, rewards: ArrayLike,
                     n: int) -> FloatArray:
    """The exact distribution of the best of n samples from the reference.

    Draw n responses independently from ``pi_ref(.|x)`` and keep one with
    the highest reward (among tied best samples, any one chosen without
    looking at its identity, e.g. the first).  With
    ``F(t) = pi_ref(r <= t)`` and ``F(t-) = pi_ref(r < t)``, the kept
    response has reward ``t`` with probability ``F(t)^n - F(t-)^n``, and
    within a group of responses tied at reward ``t`` it is distributed as
    ``pi_ref`` restricted to that group:

        pi_bon(y) = pi_ref(y) (F(r_y)^n - F(r_y-)^n) / (F(r_y) - F(r_y-)).

    Its divergence from the reference is at most ``log n - (n - 1) / n``
    (Beirami et al. 2024, "Theoretical guarantees on the best-of-n
    alignment policy"), with equality when no two responses tie and
    every response is unlikely.

    Parameters
    ----------
    reference_policy : array-like of shape (n_prompts, n_responses) or \
(n_responses,)
    rewards : array-like of the same shape
    n : int >= 1
        Number of samples, any int; n = 1 gives the reference back.

    Returns
    -------
    ndarray of the shape of reference_policy

    Examples
    --------
    >>> import rlhf
    >>> rlhf.best_of_n_policy([0.5, 0.5], [1.0, 0.0], n=2)
    array([0.75, 0.25])
    """
    owner = "best_of_n_policy"
    n = check_scalar(n, "n", owner, kind="int", low=1)
    # F^n in float64: n itself is exact up to 2**53, and beyond float range
    # F^n is 0 for F < 1 and 1 for F = 1 either way
    exponent = float(min(n, 2**1023))
    table, single = _one_or_two_d(reference_policy, owner)
    rewards = np.asarray(rewards)
    rewards = _check_rewards(rewards[None, :] if single and rewards.ndim == 1
                             else rewards, table.shape, owner)
    order = np.argsort(rewards, axis=1, kind="stable")
    r_sorted = np.take_along_axis(rewards, order, axis=1)
    p_sorted = np.take_along_axis(table, order, axis=1)
    cdf = np.cumsum(p_sorted, axis=1)
    # F(t) is the cumulative mass at the last member of t's tie group and
    # F(t-) the mass before its first member
    n_rows, k = table.shape
    last = np.empty((n_rows, k), dtype=np.intp)
    first = np.empty((n_rows, k), dtype=np.intp)
    for i in range(n_rows):
        changes = r_sorted[i, 1:] != r_sorted[i, :-1]
        starts = np.flatnonzero(np.r_[True, changes])
        sizes = np.diff(np.r_[starts, k])
        first[i] = np.repeat(starts, sizes)
        last[i] = np.repeat(starts + sizes - 1, sizes)
    upper = np.minimum(np.take_along_axis(cdf, last, axis=1), 1.0)
    below = np.take_along_axis(np.c_[np.zeros(n_rows), cdf], first, axis=1)
    below = np.minimum(below, upper)
    group_mass = upper - below
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(group_mass > 0, p_sorted / group_mass, 0.0)
    out_sorted = share * (upper ** exponent - below ** exponent)
    out = np.empty_like(out_sorted)
    np.put_along_axis(out, order, out_sorted, axis=1)
    out /= out.sum(axis=1, keepdims=True)
    return out[0] if single else out
