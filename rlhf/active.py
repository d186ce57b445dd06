"""Which comparisons to ask for next: active selection of preference pairs.

Labels are the expensive part of RLHF: every comparison costs an
annotator's time.  A reward model that knows how unsure it is can ask for
the comparisons that teach it most:

- :func:`select_comparisons`: pick the next pairs to label from a pool of
  candidates, at random, where the model is least sure of the answer
  ("uncertainty"), or where the answer says most about the reward weights
  ("information", MacKay 1992), a batch at a time;
- :func:`bootstrap_rewards`: a bootstrap ensemble of refitted models, to
  set beside the Laplace standard errors of ``RewardModel.reward_std``;
- :func:`active_learning_curves`: each strategy against simulated
  annotators who know the true reward, accuracy and weight error against
  the number of comparisons labelled.

The uncertainty is the Laplace posterior of ``rlhf.RewardModel``: the
coefficients are Gaussian with mean ``coef_`` and covariance ``Sigma``, the
inverse Hessian of the penalised objective, so the margin of a pair
``x . w`` (``x = f_a - f_b``, or ``e_a - e_b`` for free strengths) is
Gaussian with variance ``x^T Sigma x``.
"""
import dataclasses
import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ._typing import ArrayLike, FloatArray, IntArray, RandomState
from ._validation import (_is_sparse, check_array, check_option,
                          check_scalar, format_value)
from .preferences import _check_random_state
from .reward import RewardModel

__all__ = ["BootstrapRewards", "LearningCurves", "active_learning_curves",
           "bootstrap_rewards", "select_comparisons"]

STRATEGIES = ("random", "uncertainty", "information")


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


# --------------------------------------------------------------------------
# checks


def _check_candidates(candidates, n_items, owner):
    """An (n_candidates, 2) int64 array of distinct item indices in range
    (n_items None: only non-negative)."""
    if _is_sparse(candidates):
        raise TypeError(f"The 'candidates' parameter of {owner} must be a "
                        "dense integer array of shape (n_candidates, 2); got "
                        "a sparse matrix.")
    arr = np.asarray(candidates)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(
                np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(
                f"The 'candidates' parameter of {owner} must hold integer "
                f"item indices; got an array of dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"The 'candidates' parameter of {owner} must have shape "
            f"(n_candidates, 2) with n_candidates >= 1, one pair of items "
            f"per row; got shape {arr.shape}.")
    arr = np.array(arr, dtype=np.int64)  # a copy: never the caller's
    bad = arr < 0
    if n_items is not None:
        bad |= arr >= n_items
    if bad.any():
        i, j = np.argwhere(bad)[0]
        bound = "" if n_items is None else f" and < {n_items}"
        raise ValueError(
            f"The 'candidates' parameter of {owner} must hold item indices "
            f">= 0{bound} (the number of items); got {arr[i, j]} at "
            f"candidates[{i}, {j}].")
    same = np.flatnonzero(arr[:, 0] == arr[:, 1])
    if same.size:
        raise ValueError(
            f"The 'candidates' parameter of {owner} must pair two different "
            f"items; row {same[0]} pairs item {arr[same[0], 0]} with "
            "itself.")
    return arr


def _prior_variance(model, owner):
    """C of an unfitted model's Gaussian prior N(0, C I) (1.0 for None)."""
    if model is None:
        return 1.0
    model._validate_params()
    alpha = model._alpha()
    if alpha == 0.0:
        raise ValueError(
            f"{owner}: the model is not fitted and has no penalty, so its "
            "prior on the coefficients is flat (infinite variance) and "
            "every pair is infinitely informative. Fit it first, give it "
            "a penalty (its prior is N(0, C I)), or use strategy='random'.")
    return 1.0 / alpha


class _Posterior:
    """A Gaussian belief about the reward coefficients and what it says
    about each candidate pair: the margin's mean and variance, and the
    Fisher information ``p (1 - p)`` of a label at the mean.  ``update``
    conditions on one more (unseen) label of a pair, the Laplace way: the
    precision grows by ``p (1 - p) x x^T``, so Sigma shrinks by
    Sherman-Morrison; the mean stays where it is (no label is known)."""

    def __init__(self, model, candidates, features, owner):
        fitted = isinstance(model, RewardModel) and "coef_" in model.__dict__
        if model is not None and not isinstance(model, RewardModel):
            raise TypeError(
                f"The 'model' parameter of {owner} must be an "
                f"rlhf.RewardModel or None; got {type(model).__name__}.")
        F = None
        if fitted:
            if model._fitted_with_features:
                if features is None:
                    raise ValueError(
                        f"The 'features' parameter of {owner} must be given: "
                        "the model was fitted with features (one row per "
                        "item).")
                F = check_array(features, "features")
                if F.shape[1] != model.n_features_in_:
                    raise ValueError(
                        f"The 'features' parameter of {owner} has "
                        f"{F.shape[1]} columns, but the model was fitted "
                        f"with {model.n_features_in_}.")
                n_items = F.shape[0]
            else:
                if features is not None:
                    raise ValueError(
                        f"The 'features' parameter of {owner} must be None: "
                        "the model has one strength per item (fitted "
                        "without features).")
                n_items = model.n_items_
        else:
            if features is not None:
                F = check_array(features, "features")
                n_items = F.shape[0]
            else:
                n_items = None
        self.pairs = _check_candidates(candidates, n_items, owner)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        if fitted:
            r = model.predict(features)
            self.mean = r[a] - r[b]
            cov = model._coef_covariance(owner)
        else:
            variance = _prior_variance(model, owner)
            self.mean = np.zeros(len(a))
            dim = F.shape[1] if F is not None else int(self.pairs.max()) + 1
            cov = np.eye(dim) * variance
        self.cov = np.array(cov, dtype=np.float64)
        self.free = F is None
        if self.free:
            self.X = None
            cov = self.cov
            self.var = cov[a, a] + cov[b, b] - 2.0 * cov[a, b]
        else:
            X = F[a] - F[b]
            self.X = X.tocsr() if _is_sparse(X) else np.asarray(X)
            XS = np.asarray(self.X @ self.cov)
            self.var = (np.asarray(self.X.multiply(XS).sum(axis=1)).ravel()
                        if _is_sparse(self.X)
                        else np.einsum("ij,ij->i", XS, self.X))
        self.var = np.maximum(self.var, 0.0)
        p = _sigmoid(self.mean)
        self.fisher = p * (1.0 - p)

    def difference(self, i):
        """x of candidate i as a dense vector."""
        if self.free:
            x = np.zeros(len(self.cov))
            x[self.pairs[i, 0]] = 1.0
            x[self.pairs[i, 1]] = -1.0
            return x
        row = self.X[i]
        return np.asarray(row.toarray()).ravel() if _is_sparse(row) else \
            np.array(row, dtype=np.float64)

    def update(self, i):
        """Condition on a label of candidate i (see the class)."""
        v = self.cov @ self.difference(i)  # Sigma x
        lam = self.fisher[i]
        c = lam / (1.0 + lam * self.var[i])
        if self.free:
            xv = v[self.pairs[:, 0]] - v[self.pairs[:, 1]]
        else:
            xv = np.asarray(self.X @ v).ravel()
        # x_j^T Sigma' x_j = x_j^T Sigma x_j - c (x_j^T Sigma x)^2
        self.var = np.maximum(self.var - c * xv * xv, 0.0)
        self.cov = self.cov - c * np.outer(v, v)

    def scores(self, strategy):
        """Higher is better: the expected information gain, or (for
        'uncertainty') minus the distance of the moderated probability's
        logit from 0."""
        if strategy == "information":
            return 0.5 * np.log1p(self.fisher * self.var)
        return -np.abs(self.mean) / np.sqrt(1.0 + math.pi * self.var / 8.0)


def information_gain(model: Optional[RewardModel], candidates: ArrayLike, *,
                     features: Any = None) -> FloatArray:
    """Expected information gain about the reward coefficients of one
    label of each candidate pair, in nats.

    In the Laplace approximation a label of pair ``x`` adds its Fisher
    information ``p (1 - p) x x^T`` to the posterior precision, so the
    entropy of the Gaussian posterior falls by ``0.5 * log(1 + p (1 - p)
    x^T Sigma x)`` (MacKay 1992, "Information-based objective functions
    for active data selection", Neural Computation 4, 590-604), with ``p``
    the model's probability ``sigmoid(m)`` at the posterior mean.

    Parameters
    ----------
    model : rlhf.RewardModel or None
        Fitted: its Laplace posterior.  Unfitted (or None): the prior
        ``N(0, C I)`` of its penalty (C = 1 for None), mean 0.
    candidates : array-like of int of shape (n_candidates, 2)
    features : array-like of shape (n_items, n_features), default=None

    Returns
    -------
    ndarray of shape (n_candidates,)

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf.active import information_gain
    >>> features = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0]])
    >>> information_gain(None, [[0, 1], [0, 2]], features=features).round(4)
    array([0.1116, 0.0012])
    """
    return _Posterior(model, candidates, features,
                      "information_gain").scores("information")


def select_comparisons(model: Optional[RewardModel], candidates: ArrayLike,
                       n: int = 1, *, features: Any = None,
                       strategy: str = "information",
                       random_state: RandomState = None) -> IntArray:
    """Choose the next comparisons to label from a pool of candidate pairs.

    Strategies:

    - ``'random'``: n distinct candidates uniformly at random (distinct
      pairs first, when the pool repeats a pair);
    - ``'uncertainty'``: the pairs whose answer the model is least sure of,
      the moderated probability ``sigmoid(m / sqrt(1 + pi s^2 / 8))``
      closest to 1/2 (largest predictive entropy of the label; ``m`` and
      ``s^2`` the posterior mean and variance of the margin; among equally
      close ones, the largest ``s^2``);
    - ``'information'``: the largest expected information gain about the
      coefficients, ``0.5 * log(1 + p (1 - p) x^T Sigma x)`` with ``x =
      f_a - f_b`` (``e_a - e_b`` for free strengths) and ``p =
      sigmoid(m)`` (MacKay 1992, "Information-based objective functions
      for active data selection"; see :func:`information_gain`).  It
      prefers pairs that are both uncertain in direction (``x^T Sigma x``
      large) and not already decided (``p`` not near 0 or 1).

    A batch (``n > 1``) is chosen greedily: after each pick the posterior
    covariance is updated as if the pick had been labelled (the rank-one
    update ``Sigma - Sigma x x^T Sigma * q / (1 + q x^T Sigma x)``, ``q =
    p (1 - p)``, Sherman-Morrison), so the next pick accounts for what the
    first will teach and the batch does not spend n labels on near-copies
    of one pair.  No candidate is chosen twice, and no pair twice (in
    either order) while the pool has other pairs left.

    Parameters
    ----------
    model : rlhf.RewardModel or None
        A fitted model gives the posterior (mean ``coef_``, covariance
        the Laplace one of ``reward_std``; a tie model's threshold is left
        out).  An unfitted model or None: the prior of its penalty, ``N(0,
        C I)`` (C = 1 for None), which the first labels will be added to;
        every ``p`` is then 1/2, so 'information' picks the pairs whose
        items differ most (a D-optimal design) and 'uncertainty' does the
        same.  A model without a penalty has no proper prior: only
        'random' works then.
    candidates : array-like of int of shape (n_candidates, 2)
        Item pairs that could be shown to an annotator.
    n : int, default=1
        How many to choose, at most ``n_candidates``.
    features : array-like or sparse matrix of shape (n_items, \
n_features), default=None
        The items' features, for a model fitted with features (or for the
        prior in feature space); None for free strengths.
    strategy : {'random', 'uncertainty', 'information'}, \
default='information'
    random_state : None, int or numpy.random.Generator, default=None
        Used by 'random' only; the others are deterministic (a tie goes to
        the first candidate).

    Returns
    -------
    ndarray of int64 of shape (n,)
        Indices into ``candidates``, in the order chosen.

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> from rlhf.active import select_comparisons
    >>> features = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1],
    ...                      [0.0, 1.0]])
    >>> candidates = np.array([[0, 1], [0, 2], [1, 2], [0, 3]])
    >>> select_comparisons(None, candidates, 2, features=features).tolist()
    [1, 3]

    The second pick is not the near-copy [0, 1] of the first, but the pair
    that measures the other feature.
    """
    owner = "select_comparisons"
    check_option(strategy, "strategy", owner, list(STRATEGIES))
    n = check_scalar(n, "n", owner, kind="int", low=1)
    rng = _check_random_state(random_state, owner)
    if strategy == "random":
        if model is not None and not isinstance(model, RewardModel):
            raise TypeError(
                f"The 'model' parameter of {owner} must be an "
                f"rlhf.RewardModel or None; got {type(model).__name__}.")
        n_items = None
        if features is not None:
            n_items = check_array(features, "features").shape[0]
        elif model is not None and "coef_" in model.__dict__ and \
                not model._fitted_with_features:
            n_items = model.n_items_
        pairs = _check_candidates(candidates, n_items, owner)
        _check_n(n, len(pairs), owner)
        return _random_distinct(pairs, n, rng)
    posterior = _Posterior(model, candidates, features, owner)
    _check_n(n, len(posterior.pairs), owner)
    return _greedy(posterior, n, strategy)


def _check_n(n, n_candidates, owner):
    if n > n_candidates:
        raise ValueError(
            f"The 'n' parameter of {owner} must be an int in [1, "
            f"{n_candidates}] (the number of candidates). Got {n} instead.")


def _pair_keys(pairs):
    """The same number for (a, b) and (b, a)."""
    low = np.minimum(pairs[:, 0], pairs[:, 1])
    high = np.maximum(pairs[:, 0], pairs[:, 1])
    return np.unique(np.stack([low, high], axis=1), axis=0,
                     return_inverse=True)[1].ravel()


def _random_distinct(pairs, n, rng):
    order = rng.permutation(len(pairs))
    keys = _pair_keys(pairs)[order]
    first = np.zeros(len(order), bool)
    first[np.unique(keys, return_index=True)[1]] = True
    # distinct pairs first (in random order), then the repeats
    ranked = np.concatenate([order[first], order[~first]])
    return ranked[:n].astype(np.int64)


def _greedy(posterior, n, strategy):
    keys = _pair_keys(posterior.pairs)
    taken = np.zeros(len(keys), bool)      # chosen
    repeats = np.zeros(len(keys), bool)    # the same pair as one chosen
    chosen = []
    for step in range(n):
        score = posterior.scores(strategy)
        eligible = ~taken & ~repeats
        if not eligible.any():
            eligible = ~taken
        if strategy == "uncertainty":
            # closest to 1/2, then the largest variance, then the first
            idx = np.flatnonzero(eligible)
            best = idx[np.lexsort((idx, -posterior.var[idx], -score[idx]))[0]]
        else:
            best = int(np.flatnonzero(eligible)[
                np.argmax(score[eligible])])
        chosen.append(int(best))
        taken[best] = True
        repeats |= keys == keys[best]
        if step + 1 < n:
            posterior.update(best)
    return np.asarray(chosen, dtype=np.int64)
