"""Policy updates towards higher reward, staying near a reference."""
import numbers

import numpy as np

from . import _core
from ._validation import _as_float_array, _check_finite

__all__ = ["reweight"]


def reweight(policy, rewards, eta=0.5, eps=1e-6):
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
    for name, value in (("eta", eta), ("eps", eps)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) \
                or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite real number; got "
                             f"{value!r}.")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps!r}.")
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
        out = _core.reweight(flat_policy, flat_rewards, float(eta),
                             float(eps))
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
            f"policy must be non-negative; got a minimum of {policy.min()!r}."
        )
    if eps == 0 and (np.broadcast_to(policy, shape).max(axis=-1) == 0).any():
        raise ValueError("policy has a row of zeros and eps is 0: that row "
                         "has no distribution to update.")
