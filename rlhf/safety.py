"""Safety guardrails: reward shaping, cost constraints and hard masks.

The lecture's fourth idea -- *combine reward shaping with constraints* --
in three tools of increasing strength, for policies over a finite set of
responses per prompt:

- :func:`shape_rewards` folds a cost into the reward, ``r - lam c``, with a
  price ``lam`` chosen by hand;
- :func:`constrained_policy` finds the price itself: the KL-regularised
  optimum whose expected cost stays within a budget, and the Lagrange
  multiplier that enforces it (the scheme of Safe RLHF, Dai et al. 2023,
  "Safe RLHF: Safe reinforcement learning from human feedback", solved
  exactly for one prompt at a time);
- :func:`mask_policy` forbids responses outright.

The costs themselves can be learned from "which is more harmful"
comparisons with :class:`rlhf.CostModel`.
"""
import numpy as np

from . import _core
from ._validation import _as_float_array, _check_finite, check_scalar

__all__ = ["shape_rewards", "constrained_policy", "mask_policy"]

#: rows of reference_policy must sum to 1 within this relative tolerance
_SUM_RTOL = 1e-9


def _broadcast(arrays, names, shape, what):
    """Broadcast each array to shape; the error names the argument."""
    out = []
    for array, name in zip(arrays, names):
        try:
            out.append(np.broadcast_to(array, shape))
        except ValueError:
            raise ValueError(
                f"{name} of shape {array.shape} does not broadcast to {what} "
                f"{shape}."
            ) from None
    return out


def _rows_text(rows):
    rows = [int(i) for i in rows]
    shown = ", ".join(str(i) for i in rows[:10])
    more = f", ... ({len(rows)} in all)" if len(rows) > 10 else ""
    return f"[{shown}{more}]"


def shape_rewards(rewards, costs, lam):
    """Shaped rewards ``rewards - lam * costs``.

    Reward shaping turns a safety cost into a penalty with a fixed price
    ``lam`` (the Lagrangian of Safe RLHF at a given multiplier; Dai et al.
    2023).  Maximising the shaped reward under a KL penalty gives
    ``pi ∝ pi_ref exp((r - lam c) / beta)``; :func:`constrained_policy`
    chooses ``lam`` so that a cost budget is met.

    Broadcasting: ``rewards`` and ``costs`` broadcast together by NumPy's
    rules (for example costs of shape ``(n_responses,)`` shared by every
    prompt).  ``lam`` is a scalar, or one price per prompt: an array of
    shape ``(n_prompts,)`` that multiplies the rows of a
    ``(n_prompts, n_responses)`` result (it is applied as ``lam[:, None]``).

    Parameters
    ----------
    rewards : array-like of shape (n_responses,) or (n_prompts, n_responses)
    costs : array-like broadcastable with rewards
    lam : float >= 0 or array-like of shape (n_prompts,)
        The price of one unit of cost in units of reward.

    Returns
    -------
    ndarray of float64, the broadcast shape of rewards and costs

    Examples
    --------
    >>> import rlhf
    >>> rlhf.shape_rewards([1.0, 2.0], [0.0, 3.0], 0.5)
    array([1. , 0.5])
    >>> rlhf.shape_rewards([[1.0, 2.0], [1.0, 2.0]], [0.0, 3.0], [0.0, 1.0])
    array([[ 1.,  2.],
           [ 1., -1.]])
    """
    rewards = _as_float_array(rewards, "rewards")
    costs = _as_float_array(costs, "costs")
    _check_finite(rewards, "rewards")
    _check_finite(costs, "costs")
    try:
        shape = np.broadcast_shapes(rewards.shape, costs.shape)
    except ValueError:
        raise ValueError(
            f"costs of shape {costs.shape} do not broadcast with rewards of "
            f"shape {rewards.shape}."
        ) from None
    lam = _as_float_array(lam, "lam")
    _check_finite(lam, "lam")
    if (lam < 0).any():
        raise ValueError(
            f"lam must be >= 0 (a price of cost); got a minimum of "
            f"{float(lam.min())!r}."
        )
    if lam.ndim == 0:
        return rewards - lam * costs
    if lam.ndim != 1 or len(shape) != 2 or lam.shape[0] != shape[0]:
        raise ValueError(
            "lam must be a scalar or have shape (n_prompts,) for "
            f"(n_prompts, n_responses) rewards and costs; got lam of shape "
            f"{lam.shape} for rewards and costs of shape {shape}."
        )
    return rewards - lam[:, None] * costs


def _check_reference(reference_policy):
    reference_policy = _as_float_array(reference_policy, "reference_policy")
    if reference_policy.ndim not in (1, 2) or reference_policy.shape[-1] < 1:
        raise ValueError(
            "reference_policy must have shape (n_responses,) or (n_prompts, "
            f"n_responses) with n_responses >= 1; got shape "
            f"{reference_policy.shape}."
        )
    _check_finite(reference_policy, "reference_policy")
    if (reference_policy < 0).any():
        raise ValueError(
            "reference_policy must be non-negative; got a minimum of "
            f"{float(reference_policy.min())!r}."
        )
    sums = reference_policy.sum(axis=-1)
    bad = np.flatnonzero(np.abs(np.atleast_1d(sums) - 1.0) > _SUM_RTOL)
    if bad.size:
        raise ValueError(
            f"each row of reference_policy must sum to 1 (within a relative "
            f"{_SUM_RTOL:g}); rows {_rows_text(bad)} sum to "
            f"{float(np.atleast_1d(sums)[bad[0]])!r}, ..."
        )
    return reference_policy


def constrained_policy(reference_policy, rewards, costs, beta, budget):
    """The best policy near a reference whose expected cost stays in budget.

    For each prompt (row), the exact solution of ::

        maximise   E_pi[r] - beta * KL(pi || pi_ref)
        subject to E_pi[c] <= budget

    over distributions ``pi`` on the responses.  By Lagrange duality the
    solution is ``pi ∝ pi_ref * exp((r - lam * c) / beta)``: the
    KL-regularised optimum of the shaped reward ``r - lam * c``
    (:func:`shape_rewards`), with the multiplier ``lam >= 0`` that
    minimises the convex dual ``beta log E_pi_ref[exp((r - lam c)/beta)]
    + lam * budget`` (Boyd & Vandenberghe 2004, ch. 5; the constrained
    objective of Safe RLHF, Dai et al. 2023).  ``lam`` is found by
    Newton's method on the dual, safeguarded by bisection, in log space
    throughout: rewards of +-1e300, ``beta`` of 1e-300 and reference
    probabilities of 1e-300 give finite results where the answer is
    finite.  The solution satisfies complementary slackness,
    ``lam * (E_pi[c] - budget) == 0``:

    - when the unconstrained optimum ``pi_ref exp(r / beta)`` already meets
      the budget, it is returned with ``lam = 0.0`` exactly;
    - otherwise the budget binds, ``E_pi[c] == budget`` to rounding;
    - a budget equal to the least achievable cost ``c_min`` (the least cost
      among responses with ``pi_ref > 0``) is the limit ``lam -> inf``:
      only the responses of cost ``c_min`` are feasible, and the policy is
      the KL-regularised optimum on them, ``pi_ref * exp(r / beta)``
      renormalised over them (the reference renormalised over them when
      their rewards are equal), with ``lam = inf``;
    - a budget below ``c_min`` cannot be met: ``ValueError``.

    When ``beta`` is so small against the spread of the rewards that the
    multiplier is pinned down to two adjacent floats before the budget is
    met (the linear-programme limit ``beta -> 0``), the policy returned is
    the mixture of the policies at those two multipliers that meets the
    budget, and ``lam`` the nearer of the two.

    Parameters
    ----------
    reference_policy : array-like of shape (n_responses,) or \
(n_prompts, n_responses)
        ``pi_ref``: non-negative, each row summing to 1 (within a relative
        1e-9; rows are renormalised exactly before solving).  A 1-D input
        is one prompt.
    rewards : array-like broadcastable to reference_policy's shape
    costs : array-like broadcastable to reference_policy's shape
        Lower is safer.  Any sign.
    beta : float in (0, inf)
        Strength of the KL penalty.
    budget : float or array-like of shape (n_prompts,)
        The largest expected cost allowed, for all prompts or per prompt.

    Returns
    -------
    policy : ndarray of reference_policy's shape (after broadcasting)
        Each row sums to 1; zero wherever ``pi_ref`` is zero.
    lagrange_multiplier : float (1-D input) or ndarray of shape (n_prompts,)
        ``lam`` per prompt: 0, positive, or ``inf`` (budget == c_min).

    Examples
    --------
    >>> import rlhf
    >>> policy, lam = rlhf.constrained_policy([0.5, 0.5], [1.0, 0.0],
    ...                                       [1.0, 0.0], beta=1.0,
    ...                                       budget=0.25)
    >>> policy.round(6), round(lam, 6)
    (array([0.25, 0.75]), 2.098612)
    """
    owner = "constrained_policy"
    check_scalar(beta, "beta", owner, low=0, high=np.inf, low_open=True,
                 high_open=True)
    reference_policy = _check_reference(reference_policy)
    rewards = _as_float_array(rewards, "rewards")
    costs = _as_float_array(costs, "costs")
    _check_finite(rewards, "rewards")
    _check_finite(costs, "costs")
    shape = reference_policy.shape
    rewards, costs = _broadcast((rewards, costs), ("rewards", "costs"),
                                shape, "reference_policy's shape")
    single = len(shape) == 1
    flat = [np.ascontiguousarray(np.atleast_2d(a))
            for a in (reference_policy, rewards, costs)]
    n_prompts = flat[0].shape[0]
    budget = _as_float_array(budget, "budget")
    _check_finite(budget, "budget")
    if budget.ndim == 0:
        budget = np.full(n_prompts, float(budget))
    elif single or budget.shape != (n_prompts,):
        raise ValueError(
            f"budget must be a scalar or have shape ({n_prompts},) (one per "
            f"prompt) for reference_policy of shape {shape}; got shape "
            f"{budget.shape}."
        )
    # rows renormalised exactly: the solver assumes distributions
    flat[0] = flat[0] / flat[0].sum(axis=1, keepdims=True)
    least = np.where(flat[0] > 0, flat[2], np.inf).min(axis=1)
    bad = np.flatnonzero(budget < least)
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"budget {float(budget[i])!r} is below the least achievable cost "
            f"{float(least[i])!r} (the least cost among responses with "
            f"reference_policy > 0) in prompt row(s) {_rows_text(bad)}; no "
            "policy near the reference can meet it."
        )
    policy, multiplier = _core.constrained_policy(flat[0], flat[1], flat[2],
                                                  budget, float(beta))
    if single:
        return policy[0], float(multiplier[0])
    return policy, multiplier


def mask_policy(policy, allowed, fallback=None):
    """Forbid responses: zero the disallowed ones and renormalise.

    A hard guardrail (a filter in front of the policy).  For a prompt where
    nothing allowed has probability mass, the masked row is undefined: a
    ``ValueError`` names those rows, unless ``fallback`` gives the response
    to use instead (a refusal, say), which then gets probability 1.

    Parameters
    ----------
    policy : array-like of shape (n_responses,) or (n_prompts, n_responses)
        Non-negative weights per row; rows need not be normalised.
    allowed : array-like of bool, broadcastable to policy's shape
        True where a response may be given.
    fallback : None, int, or array-like of int of shape (n_prompts,)
        Response index per prompt (or one for all) that gets probability 1
        in rows with no allowed mass.  Other rows ignore it.

    Returns
    -------
    ndarray of policy's shape, float64, each row summing to 1

    Examples
    --------
    >>> import rlhf
    >>> rlhf.mask_policy([0.5, 0.25, 0.25], [True, False, True])
    array([0.66666667, 0.        , 0.33333333])
    >>> rlhf.mask_policy([[0.5, 0.5], [0.5, 0.5]],
    ...                  [[True, False], [False, False]], fallback=1)
    array([[1., 0.],
           [0., 1.]])
    """
    policy = _as_float_array(policy, "policy")
    if policy.ndim not in (1, 2) or policy.shape[-1] < 1:
        raise ValueError(
            "policy must have shape (n_responses,) or (n_prompts, "
            f"n_responses) with n_responses >= 1; got shape {policy.shape}."
        )
    _check_finite(policy, "policy")
    if (policy < 0).any():
        raise ValueError(
            f"policy must be non-negative; got a minimum of "
            f"{float(policy.min())!r}."
        )
    allowed = np.asarray(allowed)
    if allowed.dtype != np.bool_:
        raise TypeError(
            f"allowed must be an array of booleans; got dtype {allowed.dtype}."
        )
    (allowed,) = _broadcast((allowed,), ("allowed",), policy.shape,
                            "policy's shape")
    masked = np.atleast_2d(np.where(allowed, policy, 0.0))
    totals = masked.sum(axis=1)
    empty = np.flatnonzero(totals == 0)
    n_prompts, n_responses = masked.shape
    if empty.size:
        if fallback is None:
            raise ValueError(
                f"no allowed response has probability mass in prompt row(s) "
                f"{_rows_text(empty)}; allow one or pass fallback= (the "
                "response index to give those prompts)."
            )
        fallback = np.asarray(fallback)
        if fallback.dtype.kind not in "iu":
            raise TypeError(
                "fallback must be an integer response index (or one per "
                f"prompt); got dtype {fallback.dtype}."
            )
        if fallback.ndim == 0:
            fallback = np.full(n_prompts, int(fallback))
        elif fallback.shape != (n_prompts,) or policy.ndim == 1:
            raise ValueError(
                f"fallback must be an int or have shape ({n_prompts},); got "
                f"shape {fallback.shape}."
            )
        chosen = fallback[empty]
        if ((chosen < 0) | (chosen >= n_responses)).any():
            raise ValueError(
                f"fallback must index a response in [0, {n_responses}); got "
                f"{int(chosen[(chosen < 0) | (chosen >= n_responses)][0])}."
            )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = masked / totals[:, None]
    if empty.size:
        out[empty] = 0.0
        out[empty, chosen] = 1.0
    return out[0] if policy.ndim == 1 else out
