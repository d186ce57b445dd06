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
import warnings
from typing import Any, Optional, Tuple, Union

import numpy as np

from . import _core
from ._base import ParamsMixin
from ._typing import ArrayLike, FloatArray, NDArray
from ._progress import Progress, check_progress
from ._validation import (_as_float_array, _check_finite, check_array,
                          check_is_fitted, check_sample_weight, check_scalar,
                          kernel_max_iter)
from .exceptions import ConvergenceWarning, sklearn_twin

__all__ = ["shape_rewards", "constrained_policy", "mask_policy", "CostModel"]

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


def shape_rewards(rewards: ArrayLike, costs: ArrayLike,
                  lam: Union[float, ArrayLike]) -> FloatArray:
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


def constrained_policy(
        reference_policy: ArrayLike,
        rewards: ArrayLike,
        costs: ArrayLike,
        beta: float,
        budget: Union[float, ArrayLike],
) -> Tuple[FloatArray, Union[float, FloatArray]]:
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

    Where ``beta`` is small against the rewards, ``r - lam * c`` cancels
    to far below ``beta``; the last digits of ``lam`` are found with those
    differences computed exactly (double-double arithmetic), so the policy
    is right to rounding there too.  Only when ``beta`` is so small that
    even that cannot resolve ``lam`` (the limit ``beta -> 0``, a linear
    programme) is the policy the mixture of the policies at the two
    neighbouring multipliers that meets the budget, optimal to within
    ``O(beta)``.

    Parameters
    ----------
    reference_policy : array-like of shape (n_responses,) or \
(n_prompts, n_responses)
        ``pi_ref``: non-negative, each row summing to 1 (within a relative
        1e-9; rows are renormalised exactly before solving).  A 1-D input
        is one prompt.
    rewards : array-like of shape (n_responses,) or (n_prompts, n_responses)
    costs : array-like of shape (n_responses,) or (n_prompts, n_responses)
        Lower is safer.  Any sign.  The three arrays broadcast together
        (one reference or one set of costs may serve every prompt).
    beta : float in (0, inf)
        Strength of the KL penalty.
    budget : float or array-like of shape (n_prompts,)
        The largest expected cost allowed, for all prompts or per prompt.

    Returns
    -------
    policy : ndarray of the broadcast shape of the three arrays
        Each row sums to 1; zero wherever ``pi_ref`` is zero.
    lagrange_multiplier : float (1-D shape) or ndarray of shape (n_prompts,)
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
    # one reference (n_responses,) may serve many prompts' rewards and
    # costs, and the other way round
    shape = reference_policy.shape
    for array, name in ((rewards, "rewards"), (costs, "costs")):
        try:
            shape = np.broadcast_shapes(shape, array.shape)
        except ValueError:
            raise ValueError(
                f"{name} of shape {array.shape} does not broadcast with "
                f"reference_policy of shape {reference_policy.shape}"
                + (f" and the other inputs (shape {shape})"
                   if shape != reference_policy.shape else "") + "."
            ) from None
    if len(shape) not in (1, 2) or shape[-1] < 1:
        raise ValueError(
            "reference_policy, rewards and costs must broadcast to shape "
            "(n_responses,) or (n_prompts, n_responses) with n_responses "
            f">= 1; got {shape}."
        )
    reference_policy, rewards, costs = (
        np.broadcast_to(a, shape) for a in (reference_policy, rewards, costs))
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


def mask_policy(policy: ArrayLike, allowed: ArrayLike,
                fallback: Optional[ArrayLike] = None) -> FloatArray:
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
    # each row over its largest entry first: the sum of weights near the
    # float maximum would overflow, and subnormal weights lose digits
    peak = masked.max(axis=1, initial=0.0)
    masked = masked / np.where(peak > 0, peak, 1.0)[:, None]
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


# the cost model ---------------------------------------------------------------

def _softplus(z):
    """log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for either sign of z."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _costs(features, coef, intercept):
    """features @ coef + intercept, summed in a fixed order (einsum never
    calls BLAS): the same bits for any number of threads."""
    return np.einsum("ij,j->i", features, coef) + intercept


def _cost_loss_grad(params, features, comparisons, comparison_weight,
                    labelled, signs, label_weight, alpha, fit_intercept):
    """The Safe RLHF cost-model objective and its gradient.

    params = (w, b) (b only when fit_intercept); costs c = features @ w + b;
    ``sum_p s_p softplus(-(c[a_p] - c[b_p]))
    + label_weight sum_i softplus(-sign_i c[i]) + alpha / 2 ||w||^2``
    over comparisons p = (a_p more harmful, b_p less harmful) and labelled
    items i (sign +1 unsafe, -1 safe).  -log sigmoid(z) = softplus(-z).

    Every product is an einsum, which sums in one fixed order in this
    thread: a BLAS product (``@``, ``np.dot``) splits its sums between
    OpenBLAS's threads, so its last bits, and the fit they steer, would
    depend on the number of threads.
    """
    n_features = features.shape[1]
    w = params[:n_features]
    b = params[n_features] if fit_intercept else 0.0
    costs = _costs(features, w, b)
    more, less = comparisons[:, 0], comparisons[:, 1]
    z = costs[more] - costs[less]
    loss = np.einsum("i,i->", comparison_weight, _softplus(-z))
    # d/dz softplus(-z) = -sigmoid(-z)
    dz = -comparison_weight * _sigmoid(-z)
    # dL/dc; np.bincount of no weights is an int array, hence the zeros
    dcost = np.zeros(costs.size)
    dcost += np.bincount(more, weights=dz, minlength=costs.size)
    dcost -= np.bincount(less, weights=dz, minlength=costs.size)
    if labelled.size:
        zl = signs * costs[labelled]
        loss += label_weight * np.sum(_softplus(-zl))
        dcost += np.bincount(labelled,
                             weights=-label_weight * signs * _sigmoid(-zl),
                             minlength=costs.size)
    loss += 0.5 * alpha * np.einsum("i,i->", w, w)
    grad = np.empty_like(params)
    # features.T @ dcost
    grad[:n_features] = np.einsum("ij,i->j", features, dcost) + alpha * w
    if fit_intercept:
        grad[n_features] = dcost.sum()
    return float(loss), grad


class CostModel(ParamsMixin):
    """A linear cost (harmfulness) model, Safe RLHF's cost-model loss.

    Costs are ``c(x) = features @ coef_ + intercept_``; higher is more
    harmful.  The model is fitted, as the cost model of Safe RLHF (Dai et
    al. 2023, "Safe RLHF: Safe reinforcement learning from human feedback",
    eq. 6), to two kinds of judgement:

    - pairwise comparisons "which of two responses is more harmful", through
      the Bradley--Terry likelihood ``P(a more harmful than b) =
      sigmoid(c(a) - c(b))``;
    - optional absolute labels safe / unsafe, through sign terms
      ``-log sigmoid(s c(x))`` with ``s = +1`` for unsafe and ``s = -1`` for
      safe responses, which push unsafe responses to ``c > 0`` and safe ones
      to ``c < 0``: the cost 0 separates safe from unsafe, so a budget of 0
      on the expected cost means "safe on average".

    The minimised objective is ::

        sum_p s_p * -log sigmoid(c(a_p) - c(b_p))
          + label_weight * sum_{i labelled} -log sigmoid(sign_i c(x_i))
          + ||coef_||^2 / (2 C)

    with the intercept unpenalised, by L-BFGS (rlhf's C minimiser, with the
    objective in NumPy, summed in a fixed order: the fit is bitwise the
    same for any number of threads).  The paper puts a sign term on each
    response of each labelled pair; here each labelled item counts once.  Comparisons
    alone do not see a shift of all costs, so without ``safe`` labels
    ``intercept_`` is 0 and costs are meaningful only as differences.

    Parameters
    ----------
    C : float in (0, inf], default=1.0
        Inverse L2 strength on ``coef_``; ``inf`` for none.
    label_weight : float >= 0, default=1.0
        Weight of each absolute safe/unsafe label against a comparison of
        weight 1.
    tol : float > 0, default=1e-6
        L-BFGS stops when the largest gradient component is below tol.
    max_iter : int >= 1, default=1000
    progress : bool or None, default=None
        A progress bar counting L-BFGS's evaluations, with the objective:
        True always, False never, None once the fit has run 3 seconds
        (never under pytest; see :mod:`rlhf._progress`).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
        0.0 when fitted without safe labels.
    n_features_in_ : int
    n_iter_ : int
    loss_ : float
        The objective at the solution.

    Examples
    --------
    >>> import numpy as np
    >>> import rlhf
    >>> features = np.array([[0.0], [1.0], [2.0], [3.0]])  # "toxicity"
    >>> comparisons = [(1, 0), (2, 1), (3, 2), (3, 0)]  # (more, less) harmful
    >>> model = rlhf.CostModel().fit(features, comparisons,
    ...                              safe=[True, True, False, False])
    >>> bool(model.coef_[0] > 0)
    True
    >>> model.predict_safe(features).tolist()
    [True, True, False, False]
    """

    def __init__(self, *, C: float = 1.0, label_weight: float = 1.0,
                 tol: float = 1e-6, max_iter: int = 1000,
                 progress: Optional[bool] = None) -> None:
        self.C = C
        self.label_weight = label_weight
        self.tol = tol
        self.max_iter = max_iter
        self.progress = progress

    def _validate_params(self):
        owner = type(self).__name__
        check_scalar(self.C, "C", owner, low=0, low_open=True)
        check_scalar(self.label_weight, "label_weight", owner, low=0,
                     high=np.inf, high_open=True)
        check_scalar(self.tol, "tol", owner, low=0, low_open=True,
                     high=np.inf, high_open=True)
        check_scalar(self.max_iter, "max_iter", owner, kind="int", low=1)
        check_progress(self.progress, owner)

    @staticmethod
    def _check_comparisons(comparisons, n_items):
        comparisons = np.asarray(comparisons)
        if comparisons.size == 0 and comparisons.ndim <= 2:
            comparisons = comparisons.reshape(0, 2).astype(np.intp)
        integral = comparisons.dtype.kind in "iu" or (
            comparisons.dtype.kind == "f" and np.isfinite(comparisons).all()
            and (comparisons == np.round(comparisons)).all())
        if not integral:
            raise TypeError(
                "comparisons must hold integer item indices; got dtype "
                f"{comparisons.dtype}."
            )
        if comparisons.ndim != 2 or comparisons.shape[1] != 2:
            raise ValueError(
                "comparisons must have shape (n_comparisons, 2), rows (more "
                "harmful item, less harmful item); got shape "
                f"{comparisons.shape}."
            )
        comparisons = comparisons.astype(np.intp)
        bad = (comparisons < 0) | (comparisons >= n_items)
        if bad.any():
            raise ValueError(
                f"comparisons must index items in [0, {n_items}) (rows of "
                f"features); got {int(comparisons[bad][0])}."
            )
        return comparisons

    @staticmethod
    def _check_safe(safe, n_items):
        """(labelled item indices, signs: +1 unsafe, -1 safe)."""
        if safe is None:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        safe = np.asarray(safe)
        if safe.shape != (n_items,):
            raise ValueError(
                f"safe must have shape ({n_items},), one label per item (row "
                f"of features); got shape {safe.shape}."
            )
        if safe.dtype == np.bool_:
            return np.arange(n_items), np.where(safe, -1.0, 1.0)
        if safe.dtype.kind in "iuf":
            values = safe.astype(np.float64)
            known = ~np.isnan(values)
            if np.isin(values[known], (0.0, 1.0)).all():
                labelled = np.flatnonzero(known)
                return labelled, np.where(values[labelled] == 1.0, -1.0, 1.0)
        raise ValueError(
            "safe must hold booleans (True = safe), or 1.0 / 0.0 with NaN "
            f"for unlabelled items; got {safe.dtype} values outside those."
        )

    def fit(self, features: Any, comparisons: ArrayLike,
            safe: Optional[ArrayLike] = None,
            sample_weight: Optional[ArrayLike] = None) -> "CostModel":
        """Fit the cost model.

        Parameters
        ----------
        features : array-like of shape (n_items, n_features)
            One row per response.
        comparisons : array-like of int of shape (n_comparisons, 2)
            Row ``(i, j)`` says item ``i`` is **more harmful** (less safe)
            than item ``j``: the first column is the worse response.  (This
            is the opposite order to a reward model's (better, worse)
            pairs: here the first item should get the higher cost.)
        safe : array-like of shape (n_items,), default=None
            Absolute labels: ``True`` for safe, ``False`` for unsafe; or
            1.0 / 0.0 with NaN marking unlabelled items.
        sample_weight : array-like of shape (n_comparisons,), default=None
            Weights of the comparisons.

        Returns
        -------
        self
        """
        self._validate_params()
        features = check_array(features, "features", accept_sparse=False)
        n_items, n_features = features.shape
        comparisons = self._check_comparisons(comparisons, n_items)
        weight = check_sample_weight(sample_weight, comparisons.shape[0])
        labelled, signs = self._check_safe(safe, n_items)
        if not (weight.sum() > 0 or labelled.size):
            raise ValueError(
                "Nothing to fit: give at least one comparison with positive "
                "weight or some safe labels."
            )
        fit_intercept = labelled.size > 0
        alpha = 0.0 if self.C == np.inf else 1.0 / self.C
        label_weight = float(self.label_weight)

        def objective(params):
            value = _cost_loss_grad(params, features, comparisons, weight,
                                    labelled, signs, label_weight, alpha,
                                    fit_intercept)
            bar.update()
            last[0] = value[0]
            return value

        x0 = np.zeros(n_features + (1 if fit_intercept else 0))
        last = [np.nan]
        with Progress(self.progress, None, f"{type(self).__name__}.fit",
                      unit="eval") as bar:
            bar.set_postfix(objective=lambda: last[0])
            params, loss, grad, n_iter, _, status = _core.lbfgs_minimize(
                objective, x0, gtol=float(self.tol),
                ftol=64 * np.finfo(np.float64).eps,
                max_iter=kernel_max_iter(self.max_iter), maxls=50)
        if status == 1 and not params.any() and np.abs(grad).max() > self.tol:
            # the relative-decrease test passed without a single step taken:
            # features near the float range make every trial step overshoot
            status = 3
        self.coef_ = params[:n_features].copy()
        self.intercept_ = float(params[n_features]) if fit_intercept else 0.0
        self.n_features_in_ = n_features
        self.n_iter_ = int(n_iter)
        self.loss_ = float(loss)
        if status >= 2:
            why = ("the iteration limit" if status == 2
                   else "a failed line search")
            warnings.warn(
                f"L-BFGS stopped before the gradient test after {n_iter} "
                f"iterations, at {why}. Increase max_iter or scale the "
                "features.",
                sklearn_twin(ConvergenceWarning),
                stacklevel=2,
            )
        return self

    def _check_features(self, features):
        check_is_fitted(self, "coef_")
        features = check_array(features, "features", accept_sparse=False)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features has {features.shape[1]} features, but "
                f"{type(self).__name__} is expecting {self.n_features_in_} "
                "features as input."
            )
        return features

    def predict(self, features: Any) -> FloatArray:
        """Costs ``features @ coef_ + intercept_``, shape (n_items,)."""
        return _costs(self._check_features(features), self.coef_,
                      self.intercept_)

    def predict_safe(self, features: Any) -> NDArray[np.bool_]:
        """True where the predicted cost is <= 0 (meaningful only when
        fitted with safe labels), shape (n_items,)."""
        return self.predict(features) <= 0.0

    def score(self, features: Any, comparisons: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Pairwise accuracy: the (weighted) fraction of comparisons
        ``(more harmful, less harmful)`` whose first item gets the higher
        cost; a tie counts one half."""
        costs = self.predict(features)
        comparisons = self._check_comparisons(comparisons, costs.size)
        weight = check_sample_weight(sample_weight, comparisons.shape[0])
        if comparisons.shape[0] == 0:
            raise ValueError("score needs at least one comparison.")
        gap = costs[comparisons[:, 0]] - costs[comparisons[:, 1]]
        right = (gap > 0) + 0.5 * (gap == 0)
        return float(np.average(right, weights=weight))
