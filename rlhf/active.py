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
from .evaluation import _group_ids
from .preferences import _check_random_state
from .reward import RewardModel

__all__ = ["BootstrapRewards", "LearningCurves", "active_learning_curves",
           "bootstrap_rewards", "information_gain", "select_comparisons"]

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
    if int(high.max()) < 2**31:
        return (low << 32) | high
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


# --------------------------------------------------------------------------
# a bootstrap ensemble


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class BootstrapRewards:
    """Rewards of models refitted on resampled comparisons.

    Attributes
    ----------
    rewards : ndarray of shape (n_models, n_items)
        Each refit's rewards of the items.
    mean, std : ndarray of shape (n_items,)
        Their mean and standard deviation (``ddof=1``) over the refits.
    proba : ndarray of shape (n_models, n_pairs) or None
        Each refit's probability that the first item of each of the
        ``pairs`` given is preferred.
    proba_mean, proba_std : ndarray of shape (n_pairs,) or None

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> from rlhf.active import bootstrap_rewards
    >>> features = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]])
    >>> pairs = np.tile([[0, 1], [0, 2], [1, 2], [2, 3], [0, 3], [1, 3]],
    ...                 (30, 1))
    >>> prefs = rlhf.simulate_preferences(features @ [1.0, -1.0], pairs,
    ...                                   random_state=0)
    >>> boot = bootstrap_rewards(rlhf.RewardModel(), features, prefs, 10,
    ...                          pairs=[[0, 1]], random_state=0)
    >>> boot
    BootstrapRewards(n_models=10, n_items=4, n_pairs=1)
    >>> boot.rewards.shape, bool(boot.proba_mean[0] > 0.5)
    ((10, 4), True)
    """

    rewards: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    proba: Optional[np.ndarray]
    proba_mean: Optional[np.ndarray]
    proba_std: Optional[np.ndarray]

    def __repr__(self):
        n_models, n_items = self.rewards.shape
        pairs = "" if self.proba is None else \
            f", n_pairs={self.proba.shape[1]}"
        return (f"BootstrapRewards(n_models={n_models}, "
                f"n_items={n_items}{pairs})")


def bootstrap_rewards(model: RewardModel, features: Any,
                      comparisons: ArrayLike, n_models: int = 20, *,
                      groups: Optional[ArrayLike] = None,
                      pairs: Optional[ArrayLike] = None,
                      random_state: RandomState = None,
                      progress: Optional[bool] = None) -> BootstrapRewards:
    """A bootstrap ensemble: refit the model on resampled comparisons.

    Each of ``n_models`` clones of ``model`` (same parameters, its own fit)
    is fitted on ``n_comparisons`` comparisons drawn with replacement
    (Efron 1979), or, with ``groups``, on whole groups drawn with
    replacement (all the labels of one prompt, or of one annotator, stay
    together: a cluster bootstrap).  A resampled comparison enters the fit
    as a weight (its count times its own weight), the same objective as
    repeating its row.  The spread of the refits is the frequentist
    counterpart of the Laplace ``reward_std``; for a well-specified model
    with enough comparisons the two agree (the penalty aside, which the
    bootstrap does not see as uncertainty).

    Parameters
    ----------
    model : rlhf.RewardModel
        Its parameters are used; it is neither fitted nor changed.
    features : array-like of shape (n_items, n_features), or None
    comparisons : array-like of int of shape (n_comparisons, 2) or an
        ``rlhf.Comparisons``
        Preferred item first; an ``rlhf.Comparisons`` brings its ties and
        weights.
    n_models : int >= 2, default=20
    groups : array-like of shape (n_comparisons,), default=None
        Resample these groups instead of single comparisons.
    pairs : array-like of int of shape (n_pairs, 2), default=None
        Pairs whose preference probability each refit predicts.
    random_state : None, int or numpy.random.Generator, default=None
    progress : bool or None, default=None
        A progress bar over the refits (see :mod:`rlhf._progress`).

    Returns
    -------
    BootstrapRewards

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> from rlhf.active import bootstrap_rewards
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(40, 2))
    >>> prefs = rlhf.simulate_preferences(features @ [1.0, -1.0], 400,
    ...                                   random_state=0)
    >>> model = rlhf.RewardModel(C=10.0)
    >>> boot = bootstrap_rewards(model, features, prefs, 50, random_state=0)
    >>> laplace = model.fit(features, prefs).reward_std(features)
    >>> bool(0.8 < np.median(boot.std / laplace) < 1.25)
    True
    """
    from ._progress import Progress
    from .reward import _unwrap
    owner = "bootstrap_rewards"
    if not isinstance(model, RewardModel):
        raise TypeError(f"The 'model' parameter of {owner} must be an "
                        f"rlhf.RewardModel; got {type(model).__name__}.")
    n_models = check_scalar(n_models, "n_models", owner, kind="int", low=2)
    rng = _check_random_state(random_state, owner)
    data, ties, weight, n_items = _unwrap(comparisons)
    data = np.array(data)
    n_rows = len(data)
    if data.ndim != 2 or n_rows == 0:
        raise ValueError(f"The 'comparisons' parameter of {owner} must have "
                         "shape (n_comparisons, 2) with at least one row; "
                         f"got shape {data.shape}.")
    base = np.ones(n_rows) if weight is None else np.array(
        weight, dtype=np.float64)
    if ties is not None:
        ties = np.array(ties, dtype=bool)
        if not ties.any():
            ties = None
    if groups is None:
        labels = np.arange(n_rows)
    else:
        labels = _group_ids(groups, n_rows, owner)[1]
    n_groups = int(labels.max()) + 1
    if features is None and n_items is None:
        n_items = int(np.max(data)) + 1
    fit_items = None if features is not None else n_items
    rewards, probas = [], []
    with Progress(progress, n_models, owner, unit="fit") as bar:
        for _ in range(n_models):
            counts = np.bincount(rng.integers(0, n_groups, n_groups),
                                 minlength=n_groups)
            clone = type(model)(**model.get_params())
            clone.fit(features, data, sample_weight=base * counts[labels],
                      ties=ties, n_items=fit_items)
            rewards.append(clone.predict(features))
            if pairs is not None:
                probas.append(clone.predict_proba(features, pairs))
            bar.update()
    table = np.array(rewards)
    proba = np.array(probas) if pairs is not None else None
    return BootstrapRewards(
        table, table.mean(axis=0), table.std(axis=0, ddof=1), proba,
        None if proba is None else proba.mean(axis=0),
        None if proba is None else proba.std(axis=0, ddof=1))


# --------------------------------------------------------------------------
# learning curves


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LearningCurves:
    """Accuracy and weight error of each selection strategy against the
    number of comparisons labelled, per seed.

    Attributes
    ----------
    strategies : tuple of str
    budgets : ndarray of shape (n_budgets,)
        Numbers of comparisons labelled at which the model was scored.
    accuracy : ndarray of shape (n_strategies, n_seeds, n_budgets)
        Pairwise accuracy of the fitted rewards' order against the true
        rewards' order on the evaluation pairs (pairs of equal true reward
        left out; equal fitted rewards count one half).
    coef_error : ndarray of shape (n_strategies, n_seeds, n_budgets)
        ``||w - w_true||`` (meaningful at annotator temperature 1, where
        the fitted weights estimate ``w_true`` itself).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf.active import active_learning_curves
    >>> features = np.random.default_rng(0).normal(size=(20, 2))
    >>> curves = active_learning_curves(
    ...     features, [1.0, -1.0], strategies=("random", "information"),
    ...     budgets=[4, 12], n_initial=4, n_seeds=2, random_state=0)
    >>> curves.strategies, curves.budgets.tolist(), curves.mean().shape
    (('random', 'information'), [4, 12], (2, 2))
    """

    strategies: Tuple[str, ...]
    budgets: np.ndarray
    accuracy: np.ndarray
    coef_error: np.ndarray

    def _metric(self, metric):
        check_option(metric, "metric", "LearningCurves",
                     ["accuracy", "coef_error"])
        return self.accuracy if metric == "accuracy" else self.coef_error

    def mean(self, metric: str = "accuracy") -> FloatArray:
        """The mean over seeds, shape (n_strategies, n_budgets)."""
        return self._metric(metric).mean(axis=1)

    def comparisons_to_reach(self, accuracy: float, *,
                             per_seed: bool = False) -> Dict[str, Any]:
        """How many comparisons each strategy needs to reach an accuracy.

        Linear interpolation between the two budgets around the first
        crossing; NaN when the curve never reaches it; the first budget
        when the curve starts above it (the curves say nothing about
        fewer comparisons).

        Parameters
        ----------
        accuracy : float in (0, 1]
        per_seed : bool, default=False
            False: on the mean curve over seeds (a float per strategy);
            True: on each seed's curve (an array per strategy).

        Returns
        -------
        dict
            strategy -> float, or ndarray of shape (n_seeds,).
        """
        target = check_scalar(accuracy, "accuracy",
                              "LearningCurves.comparisons_to_reach",
                              low=0.0, high=1.0, low_open=True)
        out: Dict[str, Any] = {}
        mean = self.mean()
        for k, name in enumerate(self.strategies):
            if per_seed:
                out[name] = np.array([_reach(self.budgets, curve, target)
                                      for curve in self.accuracy[k]])
            else:
                out[name] = _reach(self.budgets, mean[k], target)
        return out

    def summary(self, accuracy: Optional[float] = None) -> str:
        """A few lines: for each strategy, its final accuracy (mean and
        standard deviation over seeds) and the comparisons it needs to
        reach ``accuracy`` (default: what random selection reaches with the
        largest budget, or the first strategy's when there is no
        'random'), with the saving against that reference."""
        reference = "random" if "random" in self.strategies else \
            self.strategies[0]
        ref = self.strategies.index(reference)
        if accuracy is None:
            # the last point of the mean curve, summed as _reach sees it
            accuracy = float(self.mean()[ref, -1])
        reach = self.comparisons_to_reach(accuracy)
        lines = [f"Comparisons needed for accuracy {accuracy:.3f} "
                 f"({self.accuracy.shape[1]} seeds; budgets "
                 f"{int(self.budgets[0])}-{int(self.budgets[-1])}):"]
        width = max(len(s) for s in self.strategies)
        for k, name in enumerate(self.strategies):
            final = self.accuracy[k, :, -1]
            needed = reach[name]
            text = "not reached" if math.isnan(needed) else f"{needed:7.1f}"
            if name != reference and not math.isnan(needed) and not \
                    math.isnan(reach[reference]):
                saving = 1.0 - needed / reach[reference]
                text += (f" ({100 * saving:.0f}% fewer than {reference})"
                         if saving >= 0 else
                         f" ({-100 * saving:.0f}% more than {reference})")
            lines.append(f"  {name:<{width}}  final accuracy "
                         f"{final.mean():.3f} +- {final.std():.3f}; "
                         f"needs {text}")
        return "\n".join(lines)

    def plot(self, metric: str = "accuracy", *, ax: Any = None,
             band: float = 0.95) -> Any:
        """Each strategy's mean curve over seeds with a confidence band
        for the mean (normal approximation, ``mean +- z sd / sqrt(n)``).

        Parameters
        ----------
        metric : {'accuracy', 'coef_error'}, default='accuracy'
        ax : matplotlib Axes, optional
            Draw here; by default on a new 16:9 figure (rlhf.plot's size
            and fonts).
        band : float in (0, 1), default=0.95

        Returns
        -------
        matplotlib Axes
            One line per strategy (``ax.lines``), one band each.
        """
        from . import plot as _plot
        from ._summary import normal_quantile
        values = self._metric(metric)
        check_scalar(band, "band", "LearningCurves.plot", low=0.0, high=1.0,
                     low_open=True, high_open=True)
        z = normal_quantile(0.5 + band / 2.0)
        ax = _plot._axes(ax)
        n_seeds = values.shape[1]
        for k, name in enumerate(self.strategies):
            mean = values[k].mean(axis=0)
            half = (z * values[k].std(axis=0, ddof=1) / math.sqrt(n_seeds)
                    if n_seeds > 1 else np.zeros_like(mean))
            line, = ax.plot(self.budgets, mean, marker="o", label=name)
            ax.fill_between(self.budgets, mean - half, mean + half,
                            color=line.get_color(), alpha=0.2, linewidth=0)
        _plot._label_axes(
            ax, "comparisons labelled",
            "pairwise accuracy vs true order" if metric == "accuracy"
            else r"$\|w - w_\mathrm{true}\|$")
        ax.set_title(f"Active selection: mean of {n_seeds} seeds, "
                     f"{100 * band:.0f}% band")
        _plot._legend(ax)
        return ax

    def __repr__(self):
        return (f"LearningCurves(strategies={self.strategies}, "
                f"budgets={self.budgets.tolist()}, "
                f"n_seeds={self.accuracy.shape[1]})")


def _reach(budgets, curve, target):
    above = np.flatnonzero(curve >= target)
    if not above.size:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(budgets[0])
    x0, x1, y0, y1 = budgets[i - 1], budgets[i], curve[i - 1], curve[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def _order_accuracy(fitted, true, pairs):
    d_true = true[pairs[:, 0]] - true[pairs[:, 1]]
    d_fit = fitted[pairs[:, 0]] - fitted[pairs[:, 1]]
    keep = d_true != 0
    agree = np.sign(d_true[keep]) * np.sign(d_fit[keep])
    return float(np.mean((agree > 0) + 0.5 * (agree == 0)))


def _all_pairs(n_items, limit, rng):
    """Every pair of items, or ``limit`` distinct ones at random."""
    if n_items * (n_items - 1) // 2 <= limit:
        a, b = np.triu_indices(n_items, 1)
        return np.stack([a, b], axis=1).astype(np.int64)
    found = dict()
    while len(found) < limit:
        a = rng.integers(0, n_items, 2 * limit)
        b = rng.integers(0, n_items, 2 * limit)
        for i, j in zip(a.tolist(), b.tolist()):
            if i != j:
                found.setdefault((min(i, j), max(i, j)))
                if len(found) == limit:
                    break
    return np.array(list(found), dtype=np.int64)


def active_learning_curves(
        world_or_features: Any,
        true_coef: Optional[ArrayLike] = None,
        *,
        strategies: Sequence[str] = STRATEGIES,
        budgets: Optional[ArrayLike] = None,
        n_seeds: int = 5,
        candidates: Optional[ArrayLike] = None,
        eval_pairs: Optional[ArrayLike] = None,
        n_initial: int = 10,
        batch_size: int = 10,
        temperature: float = 1.0,
        model: Optional[RewardModel] = None,
        random_state: RandomState = None,
        progress: Optional[bool] = None) -> LearningCurves:
    """Learning curves of comparison-selection strategies against simulated
    annotators who know the true reward.

    For each seed, every strategy starts from the same ``n_initial``
    random candidate pairs labelled by the same simulated annotator
    (:func:`rlhf.simulate_preferences` on the true rewards ``features @
    true_coef``, Bradley-Terry at ``temperature``), then repeatedly: fit
    the model on everything labelled so far, choose a batch of
    ``batch_size`` unlabelled candidates with :func:`select_comparisons`,
    have the annotator label it; at each budget the fitted model is scored
    (its reward order against the true order on ``eval_pairs``, and
    ``||coef_ - true_coef||``).  The refits start from zero each time
    (``RewardModel`` has no warm start; Newton's method on a few features
    takes milliseconds).

    Parameters
    ----------
    world_or_features : rlhf.World or array-like of shape (n_items, \
n_features)
        A world brings its features and true weights.
    true_coef : array-like of shape (n_features,), default=None
        The true reward weights (required with a features array).
    strategies : sequence of str, default=('random', 'uncertainty', \
'information')
    budgets : array-like of int, default=None
        Increasing numbers of labelled comparisons at which to score, each
        at least ``n_initial`` and at most the number of candidates;
        default ``n_initial + batch_size * k``, k = 0..10.
    n_seeds : int, default=5
    candidates : array-like of int of shape (n_candidates, 2), default=None
        The pool to select from; default every pair of items (or 20,000
        distinct random pairs, with more items than 200).
    eval_pairs : array-like of int of shape (n_eval, 2), default=None
        Pairs on which accuracy is measured; default the candidates.
    n_initial : int >= 1, default=10
    batch_size : int >= 1, default=10
    temperature : float > 0, default=1.0
        The annotator's noise scale (see :func:`rlhf.simulate_preferences`).
    model : rlhf.RewardModel, default=None
        The model refitted (its parameters); default ``RewardModel()``.
    random_state : None, int or numpy.random.Generator, default=None
    progress : bool or None, default=None
        A bar over the fits (see :mod:`rlhf._progress`).

    Returns
    -------
    LearningCurves

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf.active import active_learning_curves
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(30, 2)) * rng.lognormal(0, 1, (30, 1))
    >>> curves = active_learning_curves(
    ...     features, [2.0, -1.0], strategies=("random", "information"),
    ...     budgets=[5, 15, 25], n_initial=5, n_seeds=3, random_state=0)
    >>> curves.accuracy.shape
    (2, 3, 3)
    >>> bool(np.all(curves.accuracy > 0.5))
    True
    """
    from ._progress import Progress
    from .preferences import World, simulate_preferences
    owner = "active_learning_curves"
    if isinstance(world_or_features, World):
        F = np.array(world_or_features.features, dtype=np.float64)
        if true_coef is None:
            true_coef = world_or_features.weights
    else:
        F = np.array(check_array(world_or_features, "features",
                                 accept_sparse=False), dtype=np.float64)
    if true_coef is None:
        raise ValueError(f"The 'true_coef' parameter of {owner} must be "
                         "given with a features array (one weight per "
                         "feature).")
    w_true = np.array(true_coef, dtype=np.float64)
    if w_true.shape != (F.shape[1],) or not np.all(np.isfinite(w_true)):
        raise ValueError(f"The 'true_coef' parameter of {owner} must be a "
                         f"finite array of shape ({F.shape[1]},); got "
                         f"shape {w_true.shape}.")
    if isinstance(strategies, str) or not len(strategies):
        raise ValueError(f"The 'strategies' parameter of {owner} must be a "
                         "non-empty sequence of strategy names. Got "
                         f"{format_value(strategies)} instead.")
    for name in strategies:
        check_option(name, "strategies", owner, list(STRATEGIES))
    n_seeds = check_scalar(n_seeds, "n_seeds", owner, kind="int", low=1)
    n_initial = check_scalar(n_initial, "n_initial", owner, kind="int",
                             low=1)
    batch_size = check_scalar(batch_size, "batch_size", owner, kind="int",
                              low=1)
    temperature = check_scalar(temperature, "temperature", owner, low=0.0,
                               low_open=True, high=np.inf, high_open=True)
    if model is None:
        model = RewardModel()
    elif not isinstance(model, RewardModel):
        raise TypeError(f"The 'model' parameter of {owner} must be an "
                        f"rlhf.RewardModel; got {type(model).__name__}.")
    rng = _check_random_state(random_state, owner)
    n_items = F.shape[0]
    rewards = np.einsum("ij,j->i", F, w_true)
    if candidates is None:
        pool = _all_pairs(n_items, 20_000, rng)
    else:
        pool = _check_candidates(candidates, n_items, owner)
    evaluation = pool if eval_pairs is None else _check_candidates(
        eval_pairs, n_items, owner)
    if budgets is None:
        if n_initial > len(pool):
            raise ValueError(
                f"The 'n_initial' parameter of {owner} must be at most the "
                f"number of candidate pairs ({len(pool)}). Got {n_initial} "
                "instead.")
        budgets = n_initial + batch_size * np.arange(11)
        # a small pool: up to all of it
        budgets = np.append(budgets[budgets < len(pool)], len(pool)) \
            if budgets[-1] > len(pool) else budgets
    steps = np.array(budgets)
    if steps.ndim != 1 or not steps.size or steps.dtype.kind not in "iu" \
            or steps[0] < n_initial or np.any(np.diff(steps) <= 0) \
            or steps[-1] > len(pool):
        raise ValueError(
            f"The 'budgets' parameter of {owner} must be increasing ints "
            f"from n_initial ({n_initial}) to the number of candidates "
            f"({len(pool)}). Got {format_value(budgets)} instead.")
    strategies = tuple(strategies)
    accuracy = np.empty((len(strategies), n_seeds, len(steps)))
    error = np.empty_like(accuracy)
    n_fits = n_seeds * len(strategies) * (1 + sum(
        math.ceil((int(b) - int(a)) / batch_size)
        for a, b in zip(np.r_[n_initial, steps[:-1]], steps)))
    seeds = rng.integers(0, 2**63 - 1, size=(n_seeds, 1 + len(strategies)))
    with Progress(progress, n_fits, owner, unit="fit") as bar:
        for seed in range(n_seeds):
            start_rng = np.random.default_rng(seeds[seed, 0])
            first = start_rng.choice(len(pool), n_initial, replace=False)
            first_labels = simulate_preferences(
                rewards, pool[first], temperature,
                random_state=start_rng).comparisons
            for k, strategy in enumerate(strategies):
                strategy_rng = np.random.default_rng(seeds[seed, 1 + k])
                labelled = np.zeros(len(pool), bool)
                labelled[first] = True
                data = [first_labels]
                fitted = type(model)(**model.get_params()).fit(F,
                                                               first_labels)
                bar.update()
                for j, budget in enumerate(steps):
                    while (have := int(labelled.sum())) < budget:
                        open_ = np.flatnonzero(~labelled)
                        pick = open_[select_comparisons(
                            fitted, pool[open_],
                            min(batch_size, int(budget) - have),
                            features=F, strategy=strategy,
                            random_state=strategy_rng)]
                        labelled[pick] = True
                        data.append(simulate_preferences(
                            rewards, pool[pick], temperature,
                            random_state=strategy_rng).comparisons)
                        fitted = type(model)(**model.get_params()).fit(
                            F, np.concatenate(data))
                        bar.update()
                    accuracy[k, seed, j] = _order_accuracy(
                        fitted.predict(F), rewards, evaluation)
                    error[k, seed, j] = float(np.linalg.norm(
                        fitted.coef_ - w_true))
    return LearningCurves(strategies, steps.astype(np.int64), accuracy,
                          error)
