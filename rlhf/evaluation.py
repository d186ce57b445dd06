"""How good is a reward model?  A report on held-out comparisons.

:func:`evaluate_reward_model` scores a fitted :class:`rlhf.RewardModel`
(or any array of scores, one per item) on comparisons it was not fitted
on and gathers, in one :class:`RewardReport`:

- pairwise accuracy over the strict comparisons (equal rewards count one
  half) and the distribution of the margins ``r(preferred) - r(other)``;
  how the ties are treated (their mean ``|margin|`` against the strict
  ones; with a tie model, their log-likelihood);
- accuracy per group (prompt, subset or annotator), totalled per
  comparison and per group;
- the quality of the preference probability ``sigmoid(margin / T)``:
  log-loss, Brier score, expected calibration error (Guo et al. 2017) and
  the reliability diagram's numbers, before and after temperature scaling
  (:func:`fit_temperature`);
- cluster-bootstrap confidence intervals, resampling whole prompts;
- the null baselines every such number needs: longer wins, shorter wins,
  the first shown wins, and chance.
"""
import math
import numbers
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from ._progress import Progress, check_progress
from ._typing import ArrayLike, FloatArray, NDArray, RandomState
from ._validation import (_as_float_array, _check_finite, check_is_fitted,
                          check_scalar, format_value)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._summary import Summary

__all__ = ["Baseline", "Calibration", "RewardReport", "evaluate_reward_model",
           "fit_temperature"]

_OWNER = "evaluate_reward_model"
_MARGIN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# the bootstrap resamples this many (replicate x unit) counts at a time
_CHUNK_ENTRIES = 2_000_000
# per-group accuracies are drawn as labelled bars up to this many groups,
# as a histogram beyond
_MAX_GROUP_BARS = 12
# ... and only for groups of at least this many strict comparisons on
# average; smaller ones give the model and the baselines instead
_MIN_GROUP_SIZE = 3


# --------------------------------------------------------------------------
# inputs


def _is_reward_model(model):
    return hasattr(model, "predict") and hasattr(model, "predict_proba") \
        and hasattr(model, "ties")


def _scores(model, features, owner):
    """(scores per item, has a probability scale, the model or None)."""
    if _is_reward_model(model):
        check_is_fitted(model, "coef_")
        return np.asarray(model.predict(features), dtype=np.float64), True, \
            model
    if isinstance(model, type) or callable(getattr(model, "fit", None)):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a fitted "
            "rlhf.RewardModel or a 1-d array of scores (one per item). Got "
            f"{type(model).__name__} instead.")
    if features is not None:
        raise TypeError(
            f"The 'features' parameter of {owner} must be None when 'model' "
            "is an array of scores (the scores are already one per item).")
    scores = _as_float_array(model, "model")
    if scores.ndim != 1 or scores.shape[0] < 2:
        raise ValueError(
            f"The 'model' parameter of {owner}, given as scores, must be a "
            f"1-d array with one score per item (at least 2); got shape "
            f"{scores.shape}.")
    _check_finite(scores, "model (the scores)")
    return scores.copy(), False, None


def _pairs(values, n_items, owner):
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) \
            and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"The 'comparisons' parameter of {owner} must hold integer item "
            f"indices; got an array of dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"The 'comparisons' parameter of {owner} must have shape "
            f"(n_comparisons, 2), the preferred item first; got "
            f"{arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"The 'comparisons' parameter of {owner} is empty; "
                         "at least one comparison is needed.")
    if arr.min() < 0 or arr.max() >= n_items:
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(
            f"The 'comparisons' parameter of {owner} refers to item {bad}, "
            f"but there are {n_items} items (scores 0 to {n_items - 1}).")
    return np.array(arr, dtype=np.int64)


def _mask(values, name, n, owner):
    arr = np.asarray(values)
    if arr.dtype.kind != "b":
        if arr.dtype.kind in "iu" and np.isin(arr, [0, 1]).all():
            arr = arr.astype(bool)
        else:
            raise TypeError(f"The '{name}' parameter of {owner} must be a "
                            f"boolean array; got dtype {arr.dtype}.")
    if arr.shape != (n,):
        raise ValueError(f"The '{name}' parameter of {owner} must have shape "
                         f"({n},), one per comparison; got {arr.shape}.")
    return arr.copy()


def _unpack(comparisons, owner):
    """(pairs, ties, groups, lengths, shown_first) of an array, an
    rlhf.Comparisons or an rlhf.datasets.PreferenceDataset (None where
    the source does not say)."""
    if hasattr(comparisons, "comparisons") and hasattr(comparisons, "ties"):
        pairs = np.asarray(comparisons.comparisons)
        ties = np.asarray(comparisons.ties, dtype=bool)
        groups = getattr(comparisons, "groups", None)
        lengths = shown = None
        texts = getattr(comparisons, "texts", None)
        if texts is not None:
            lengths = np.array([len(t) for t in texts], dtype=np.float64)
        # the order shown is known only where annotators labelled the
        # pairs as shown; chosen/rejected records have pairs = comparisons
        if getattr(comparisons, "pairs", None) is not None and \
                getattr(comparisons, "labels", None) is not None:
            shown = np.asarray(comparisons.pairs)[:, 0] == pairs[:, 0]
        return pairs, ties, groups, lengths, shown
    if isinstance(comparisons, (numbers.Number, str)) or comparisons is None:
        raise TypeError(
            f"The 'comparisons' parameter of {owner} must be an int array of "
            "shape (n_comparisons, 2), an rlhf.Comparisons or an "
            f"rlhf.datasets.PreferenceDataset. Got "
            f"{format_value(comparisons)} instead.")
    return comparisons, None, None, None, None


def _group_ids(groups, n, owner):
    """The distinct ids of ``groups`` (one per comparison) and each
    comparison's index into them, shape (n,), intp."""
    group_arr = np.asarray(groups)
    if group_arr.ndim != 1 or group_arr.shape[0] != n:
        raise ValueError(
            f"The 'groups' parameter of {owner} must have shape ({n},), "
            f"one id per comparison; got {group_arr.shape}.")
    try:
        group_ids, unit = np.unique(group_arr, return_inverse=True)
    except TypeError as error:
        raise TypeError(
            f"The 'groups' parameter of {owner} must hold ids of one "
            f"comparable kind (ints or strings, no None); {error}.") \
            from None
    return group_ids, unit.ravel().astype(np.intp)


def _check_confidence(confidence, owner):
    return check_scalar(confidence, "confidence", owner, low=0.0, high=1.0,
                        low_open=True, high_open=True)


def _check_temperature(temperature, owner):
    return check_scalar(temperature, "temperature", owner, low=0.0,
                        low_open=True, high=math.inf, high_open=True)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _sigmoid(x):
    return np.exp(_log_sigmoid(x))


# --------------------------------------------------------------------------
# temperature scaling


def _temperature_margins(model, features, comparisons, ties, owner):
    scores, _, _ = _scores(model, features, owner)
    pairs, source_ties, _, _, _ = _unpack(comparisons, owner)
    pairs = _pairs(pairs, len(scores), owner)
    if ties is None:
        ties = source_ties
    if ties is not None:
        pairs = pairs[~_mask(ties, "ties", len(pairs), owner)]
    if not len(pairs):
        raise ValueError(f"Every comparison given to {owner} is a tie; "
                         "strict comparisons are needed.")
    return scores[pairs[:, 0]] - scores[pairs[:, 1]]


def _temperature_derivatives(s, margins):
    """Mean log-loss of sigmoid(s m) and its first two derivatives in s."""
    z = s * margins
    loss = float(np.mean(np.logaddexp(0.0, -z)))
    lose = _sigmoid(-z)  # P(the other item), the loss's slope in -z
    grad = float(-np.mean(margins * lose))
    hess = float(np.mean(margins * margins * lose * (1.0 - lose)))
    return loss, grad, hess


def _inverse_temperature(margins):
    """The minimiser s > 0 of mean log(1 + exp(-s m)), convex in s: a
    bracket [0, s_hi] with a positive slope at s_hi, then Newton steps
    kept inside the bracket (bisection when a step leaves it)."""
    if not np.any(margins < 0):
        raise ValueError(
            "fit_temperature: the scores order every strict comparison "
            "correctly (or equally), so the log-loss falls as T -> 0 and no "
            "temperature minimises it; fit on more held-out comparisons.")
    if not np.mean(margins) > 0:
        raise ValueError(
            "fit_temperature: the mean margin r(preferred) - r(other) is "
            f"{format_value(float(np.mean(margins)))} <= 0, so the log-loss "
            "falls as T -> inf (or with a negative T): the scores order the "
            "comparisons no better than chance.")
    lo, hi = 0.0, 1.0 / max(float(np.std(margins)), 1e-300)
    while _temperature_derivatives(hi, margins)[1] < 0:
        lo, hi = hi, 2.0 * hi
    s = 0.5 * (lo + hi)
    for _ in range(200):
        _, grad, hess = _temperature_derivatives(s, margins)
        if grad == 0.0:
            break
        if grad < 0:
            lo = s
        else:
            hi = s
        step = s - grad / hess if hess > 0 else math.nan
        new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(new - s) <= 1e-15 * s or hi - lo <= 1e-15 * hi:
            s = new
            break
        s = new
    return s


def fit_temperature(model: Any, features: Any, comparisons: Any, *,
                    ties: Optional[ArrayLike] = None) -> float:
    """The temperature T that minimises the log-loss of ``sigmoid(margin
    / T)`` on held-out comparisons.

    Temperature scaling (Guo et al. 2017, "On calibration of modern neural
    networks"): one number rescales every margin ``r(preferred) -
    r(other)``, which changes the probabilities but not their order, so
    accuracy stays exactly the same.  The mean log-loss ``mean log(1 +
    exp(-m / T))`` over the strict comparisons is convex in ``1 / T``; it
    is minimised by Newton's method inside a bracket to rounding level
    (its derivative in ``1/T`` is zero at the result to about 1e-15).
    Fit it on comparisons the model was not fitted on: on its training
    data a penalised model looks overconfident less than it is.

    Parameters
    ----------
    model : rlhf.RewardModel (fitted) or array-like of shape (n_items,)
        The scorer; an array gives the scores of the items directly.
    features : array-like of shape (n_items, n_features), or None
        The items' features for ``model.predict``; None for a model fitted
        without features or when ``model`` is an array of scores.
    comparisons : array-like of int of shape (n_comparisons, 2), \
rlhf.Comparisons or rlhf.datasets.PreferenceDataset
        Held-out comparisons, preferred item first; ties (those of the
        Comparisons or dataset, or ``ties``) are left out.
    ties : array-like of bool of shape (n_comparisons,), default=None

    Returns
    -------
    float
        T > 0; T > 1 means the model was overconfident.

    Raises
    ------
    ValueError
        When no finite positive T minimises the log-loss: the margins order
        every comparison correctly (T -> 0), or their mean is not positive
        (T -> infinity).

    Examples
    --------
    Margins from a logistic world, then scaled by 3: the fitted T undoes
    the scaling.

    >>> import numpy as np
    >>> from rlhf.evaluation import fit_temperature
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.normal(size=20000)
    >>> pairs = rng.integers(0, 20000, size=(20000, 2))
    >>> pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    >>> first_wins = rng.random(len(pairs)) < 1 / (
    ...     1 + np.exp(scores[pairs[:, 1]] - scores[pairs[:, 0]]))
    >>> pairs = np.where(first_wins[:, None], pairs, pairs[:, ::-1])
    >>> round(fit_temperature(3 * scores, None, pairs), 1)
    3.0
    """
    margins = _temperature_margins(model, features, comparisons, ties,
                                   "fit_temperature")
    return 1.0 / _inverse_temperature(margins)


# --------------------------------------------------------------------------
# the report's pieces


class Calibration:
    """The preference probabilities ``sigmoid(margin / T)`` at one
    temperature, scored on the strict comparisons.

    Attributes
    ----------
    temperature : float
    log_loss : float
        ``mean -log sigmoid(m / T)``, in nats: the cross-entropy of the
        preferred item.
    brier : float
        ``mean (1 - sigmoid(m / T))^2``, the Brier score of the binary
        outcome (orientation does not change it).
    ece : float
        Expected calibration error (Guo et al. 2017): the confidence in
        the predicted winner, ``c = sigmoid(|m| / T)`` in [1/2, 1], is cut
        into ``n_bins`` equal-width bins of [1/2, 1] (right-open, the last
        one closed, as :func:`rlhf.plot.calibration` cuts [0, 1]); ECE is
        ``sum_b (n_b / n) |accuracy_b - confidence_b|`` with accuracy_b
        the share of the bin's comparisons whose predicted winner was
        preferred (equal rewards: one half) and confidence_b its mean c.
    bin_edges : ndarray of shape (n_bins + 1,)
    mean_confidence, observed : ndarray of shape (n_bins,)
        NaN for an empty bin.
    counts : ndarray of shape (n_bins,), int64
    log_loss_ci, ece_ci : (float, float) or None
        Bootstrap intervals (None without a bootstrap).

    Examples
    --------
    >>> import numpy as np
    >>> from rlhf.evaluation import Calibration
    >>> cal = Calibration(1.0, np.array([2.0, 1.0, -0.5, 0.0]), n_bins=2)
    >>> cal.counts.tolist(), round(cal.log_loss, 4)
    ([3, 1], 0.5269)
    """

    def __init__(self, temperature: float, margins: FloatArray,
                 n_bins: int) -> None:
        self.temperature = float(temperature)
        z = margins / self.temperature
        self.log_loss = float(np.mean(np.logaddexp(0.0, -z)))
        self.brier = float(np.mean(_sigmoid(-z) ** 2))
        confidence = _sigmoid(np.abs(z))
        correct = (z > 0) + 0.5 * (z == 0)
        index = _bin_index(confidence, n_bins)
        counts = np.bincount(index, minlength=n_bins)
        sum_conf = np.bincount(index, weights=confidence, minlength=n_bins)
        sum_correct = np.bincount(index, weights=correct, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean_confidence = np.where(counts > 0, sum_conf / counts,
                                            np.nan)
            self.observed = np.where(counts > 0, sum_correct / counts,
                                     np.nan)
        self.counts = counts.astype(np.int64)
        self.bin_edges = np.linspace(0.5, 1.0, n_bins + 1)
        self.ece = float(np.sum(np.abs(sum_correct - sum_conf)) / len(z))
        self.log_loss_ci: Optional[Tuple[float, float]] = None
        self.ece_ci: Optional[Tuple[float, float]] = None
        # per comparison, for the bootstrap
        self._nll = np.logaddexp(0.0, -z)
        self._index = index
        self._gap = correct - confidence

    def to_dict(self) -> Dict[str, Any]:
        """The numbers, as plain Python values and lists."""
        return {"temperature": self.temperature, "log_loss": self.log_loss,
                "brier": self.brier, "ece": self.ece,
                "log_loss_ci": self.log_loss_ci, "ece_ci": self.ece_ci,
                "bin_edges": self.bin_edges.tolist(),
                "mean_confidence": self.mean_confidence.tolist(),
                "observed": self.observed.tolist(),
                "counts": self.counts.tolist()}

    def __repr__(self) -> str:
        return (f"Calibration(temperature={self.temperature:.4g}, "
                f"log_loss={self.log_loss:.4f}, brier={self.brier:.4f}, "
                f"ece={self.ece:.4f})")


def _pandas(method):
    """pandas (an optional dependency), typed as Any: it ships no types."""
    import importlib
    try:
        return importlib.import_module("pandas")
    except ImportError as error:
        raise ImportError(f"RewardReport.{method} needs pandas "
                          "(pip install pandas).") from error


def _bin_index(confidence, n_bins):
    """Bin of each confidence in [1/2, 1]: n_bins equal widths, 1 in the
    last."""
    return np.minimum(((confidence - 0.5) * (2 * n_bins)).astype(np.intp),
                      n_bins - 1)


class Baseline:
    """A null scorer's accuracy on the same strict comparisons.

    Attributes
    ----------
    name : str
    accuracy : float
    ci : (float, float) or None
    note : str
        How the interval was found.

    Examples
    --------
    >>> from rlhf.evaluation import Baseline
    >>> Baseline("chance", 0.5, (0.45, 0.55))
    Baseline('chance', accuracy=0.5000, ci=(0.450, 0.550))
    """

    def __init__(self, name: str, accuracy: float,
                 ci: Optional[Tuple[float, float]] = None,
                 note: str = "") -> None:
        self.name = name
        self.accuracy = float(accuracy)
        self.ci = ci
        self.note = note

    def __repr__(self) -> str:
        ci = "" if self.ci is None else \
            f", ci=({self.ci[0]:.3f}, {self.ci[1]:.3f})"
        return f"Baseline({self.name!r}, accuracy={self.accuracy:.4f}{ci})"


def _binomial_interval(n, confidence):
    """Central interval of Binomial(n, 1/2) / n: the accuracies a fair
    coin scores on n comparisons, each tail at most (1 - confidence)/2."""
    k = np.arange(n + 1, dtype=np.float64)
    # log C(n, k) by its ratio recursion, then the pmf with 2^-n
    log_choose = np.concatenate(
        [[0.0], np.cumsum(np.log(n - k[1:] + 1) - np.log(k[1:]))])
    log_pmf = log_choose - n * math.log(2.0)
    cdf = np.cumsum(np.exp(log_pmf - log_pmf.max())) * math.exp(
        log_pmf.max())
    tail = (1.0 - confidence) / 2.0
    low = int(np.searchsorted(cdf, tail * (1 + 1e-12), side="left"))
    # by symmetry
    return low / n, (n - low) / n


def _quantile_interval(values, confidence):
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (math.nan, math.nan)
    q = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(q[0]), float(q[1]))


def _bootstrap(unit_stats, unit_bins, n_bootstrap, rng, progress):
    """Replicates of the per-unit sums: resample n_units units with
    replacement, n_bootstrap times; unit_stats (n_units, k) -> (B, k),
    each unit_bins entry (n_units, n_bins) -> (B, n_bins)."""
    n_units = unit_stats.shape[0]
    chunk = max(1, _CHUNK_ENTRIES // n_units)
    sums = np.empty((n_bootstrap, unit_stats.shape[1]))
    bins = [np.empty((n_bootstrap, b.shape[1])) for b in unit_bins]
    n_chunks = -(-n_bootstrap // chunk)
    with Progress(progress, n_chunks, f"{_OWNER} (bootstrap)",
                  unit="chunk") as bar:
        for start in range(0, n_bootstrap, chunk):
            size = min(chunk, n_bootstrap - start)
            draws = rng.integers(0, n_units, size=(size, n_units))
            offsets = draws + n_units * np.arange(size)[:, None]
            counts = np.bincount(offsets.ravel(),
                                 minlength=size * n_units).reshape(
                                     size, n_units).astype(np.float64)
            sums[start:start + size] = counts @ unit_stats
            for out, b in zip(bins, unit_bins):
                out[start:start + size] = counts @ b
            bar.update()
    return sums, bins


def _per_unit(unit, values, n_units):
    return np.bincount(unit, weights=values, minlength=n_units)


def _per_unit_bins(unit, index, values, n_units, n_bins):
    flat = np.bincount(unit * n_bins + index, weights=values,
                       minlength=n_units * n_bins)
    return flat.reshape(n_units, n_bins)


# --------------------------------------------------------------------------
# the report


class RewardReport:
    """A reward model's evaluation on held-out comparisons; made by
    :func:`evaluate_reward_model`.

    ``print(report)`` (or ``report.summary()``) shows the tables; Jupyter
    shows the same as HTML; ``report.plot()`` draws the reliability
    diagram and the per-group accuracies; ``to_dict()`` and ``to_frame()``
    give the numbers.

    Attributes
    ----------
    n_comparisons, n_strict, n_ties : int
    accuracy : float
        Share of the strict comparisons whose preferred item gets the
        higher score (equal scores count one half): the per-comparison
        total, ``sum_g n_g acc_g / sum_g n_g``.
    accuracy_ci : (float, float) or None
    accuracy_per_group : float
        The unweighted mean of the groups' accuracies (each group with at
        least one strict comparison counts once).  RewardBench (Lambert et
        al. 2024) averages subsets weighted by their number of prompts;
        with one comparison per prompt that is ``accuracy`` over the
        subsets' comparisons, and ``accuracy_per_group`` is the plain mean
        of the subsets.
    margins : ndarray of shape (n_strict,)
        ``r(preferred) - r(other)`` of each strict comparison, in order.
    margin_mean : float
    margin_quantiles : dict of float to float
        At 0.05, 0.25, 0.5, 0.75 and 0.95.
    tie_abs_margin, strict_abs_margin : float
        Mean ``|r(a) - r(b)|`` over the ties (NaN without ties) and over the
        strict comparisons: a model that sees ties as close calls gives
        them the smaller margins.
    tie_log_likelihood : float or None
        Mean log-probability of a tie on the tied comparisons under the
        model's tie model (Rao-Kupper or Davidson); None without one.
    group_ids : ndarray of shape (n_groups,)
    group_n : ndarray of shape (n_groups,), int64
        Strict comparisons per group.
    group_accuracy : ndarray of shape (n_groups,)
        NaN for a group with only ties.
    grouped : bool
        Whether groups were given (otherwise every comparison is its own
        group).
    calibration : Calibration or None
        The probabilities ``sigmoid(margin / T)`` at the temperature given
        (T = 1 for a RewardModel without one); None for scores without a
        probability scale.
    calibration_before : Calibration or None
        At T = 1, when a temperature was given for a RewardModel.
    baselines : dict of str to Baseline
        "longer wins", "shorter wins" (with lengths), "first shown wins"
        (with shown_first) and "chance".
    best_baseline : str
        The baseline with the highest accuracy.
    beats_best_baseline : bool
        ``accuracy > baselines[best_baseline].accuracy``.
    difference_ci : (float, float) or None
        Bootstrap interval of ``accuracy`` minus the best baseline's, from
        the same resamples (paired).
    bootstrap_unit : str
        "groups" (a cluster bootstrap) or "comparisons"; "none" without a
        bootstrap (``n_bootstrap=0``, or every strict comparison in one
        group, which a bootstrap over groups cannot resample: a warning
        says so).
    n_groups_resampled : int
        The groups (or comparisons, without groups) that hold strict
        comparisons: what the bootstrap resamples.  Under 20 the summary
        cautions that the intervals are too narrow.
    n_bootstrap : int
    confidence : float

    Examples
    --------
    Scores that order three of four comparisons right, in two prompts;
    the longer item is preferred in two:

    >>> from rlhf.evaluation import evaluate_reward_model
    >>> report = evaluate_reward_model(
    ...     [0.3, 0.1, 0.9, 0.5], None, [[2, 0], [3, 1], [0, 1], [1, 2]],
    ...     groups=["p", "p", "q", "q"], lengths=[3, 1, 2, 4],
    ...     random_state=0)
    >>> report.accuracy, report.group_accuracy.tolist()
    (0.75, [1.0, 0.5])
    >>> report.baselines["longer wins"].accuracy
    0.5
    >>> report.to_frame().round(2).loc["chance"].tolist()
    [0.5, 0.0, 1.0]
    """

    # filled in by evaluate_reward_model
    n_comparisons: int
    n_strict: int
    n_ties: int
    accuracy: float
    accuracy_ci: Optional[Tuple[float, float]]
    accuracy_per_group: float
    margins: FloatArray
    margin_mean: float
    margin_quantiles: Dict[float, float]
    tie_abs_margin: float
    strict_abs_margin: float
    tie_log_likelihood: Optional[float]
    group_ids: NDArray[Any]
    group_n: NDArray[np.int64]
    group_accuracy: FloatArray
    grouped: bool
    calibration: Optional[Calibration]
    calibration_before: Optional[Calibration]
    baselines: Dict[str, Baseline]
    best_baseline: str
    beats_best_baseline: bool
    difference_ci: Optional[Tuple[float, float]]
    bootstrap_unit: str
    n_groups_resampled: int
    n_bootstrap: int
    confidence: float
    source: str

    def __repr__(self) -> str:
        ci = "" if self.accuracy_ci is None else \
            f" [{self.accuracy_ci[0]:.3f}, {self.accuracy_ci[1]:.3f}]"
        parts = [f"accuracy={self.accuracy:.3f}{ci}",
                 f"n_strict={self.n_strict}"]
        if self.n_ties:
            parts.append(f"n_ties={self.n_ties}")
        if self.calibration is not None:
            parts.append(f"ece={self.calibration.ece:.3f}")
            parts.append(f"log_loss={self.calibration.log_loss:.3f}")
        best = self.baselines[self.best_baseline]
        parts.append(f"best baseline {self.best_baseline!r} "
                     f"{best.accuracy:.3f}"
                     + ("" if self.beats_best_baseline else " (NOT beaten)"))
        return f"RewardReport({', '.join(parts)})"

    # -- text --------------------------------------------------------------

    def summary(self) -> "Summary":
        """A table of the accuracies (model and baselines) with their
        intervals, the calibration above it and notes below, in the style
        of :meth:`rlhf.RewardModel.summary`.

        Returns
        -------
        Summary
            ``print`` it, or leave it at the end of a notebook cell.
        """
        from ._summary import Summary, format_number
        level = f"{100 * self.confidence:g}%"
        left: List[Tuple[str, Any]] = [
            ("Comparisons", self.n_comparisons), ("Strict", self.n_strict),
            ("Ties", self.n_ties),
            ("Groups", len(self.group_ids) if self.grouped else "none"),
            ("Accuracy", f"{self.accuracy:.3f}")]
        if self.grouped:
            left.append(("Accuracy per group",
                         f"{self.accuracy_per_group:.3f}"))
        left.append(("Mean margin", format_number(self.margin_mean)))
        right: List[Tuple[str, Any]] = []
        cal, before = self.calibration, self.calibration_before
        if cal is not None:
            if before is not None:
                right.append(("Temperature", f"1 -> {cal.temperature:.4g}"))
                for label, a, b in (("Log-loss", before.log_loss,
                                     cal.log_loss),
                                    ("Brier", before.brier, cal.brier),
                                    ("ECE", before.ece, cal.ece)):
                    right.append((label, f"{a:.4f} -> {b:.4f}"))
            else:
                right += [("Temperature", format_number(cal.temperature)),
                          ("Log-loss", f"{cal.log_loss:.4f}"),
                          ("Brier", f"{cal.brier:.4f}"),
                          ("ECE", f"{cal.ece:.4f}")]
        else:
            right.append(("Calibration", "no probability scale"))
        if self.n_ties:
            right += [("Mean |margin|, ties",
                       format_number(self.tie_abs_margin)),
                      ("Mean |margin|, strict",
                       format_number(self.strict_abs_margin))]
        if self.tie_log_likelihood is not None:
            right.append(("Tie log-lik. (mean)",
                          format_number(self.tie_log_likelihood)))
        columns = ["accuracy", f"{level} low", f"{level} high"]

        def row(name, accuracy, ci):
            low, high = ("-", "-") if ci is None else (f"{ci[0]:.3f}",
                                                       f"{ci[1]:.3f}")
            return (name, [f"{accuracy:.3f}", low, high])

        rows = [row("model", self.accuracy, self.accuracy_ci)]
        rows += [row(name + (" (best)" if name == self.best_baseline
                             else ""), b.accuracy, b.ci)
                 for name, b in self.baselines.items()]
        notes = []
        best = self.baselines[self.best_baseline]
        if not self.beats_best_baseline:
            notes.append(f"WARNING: the model does NOT beat the best "
                         f"baseline ({self.best_baseline}, "
                         f"{best.accuracy:.3f}).")
        elif self.difference_ci is not None and self.difference_ci[0] <= 0:
            notes.append(
                f"The model beats the best baseline ({self.best_baseline}) "
                f"by {self.accuracy - best.accuracy:.3f}, but the {level} "
                f"interval of the difference, [{self.difference_ci[0]:.3f}, "
                f"{self.difference_ci[1]:.3f}], includes 0.")
        notes.append("Accuracy: the share of the strict comparisons whose "
                     "preferred item gets the higher score (equal scores "
                     "count 1/2); ties are left out.")
        if self.grouped:
            notes.append("Accuracy per group: the unweighted mean of the "
                         f"{int(np.sum(self.group_n > 0))} groups' "
                         "accuracies; 'Accuracy' weights each comparison "
                         "equally.")
        if self.bootstrap_unit == "groups":
            notes.append(f"Intervals: {level} percentile intervals of a "
                         f"cluster bootstrap ({self.n_bootstrap} resamples "
                         "of whole groups).")
            if self.n_groups_resampled < 20:
                notes.append(
                    f"CAUTION: only {self.n_groups_resampled} groups: a "
                    "percentile bootstrap over so few is too narrow; read "
                    "the intervals as rough.")
        elif self.bootstrap_unit == "comparisons":
            notes.append(f"Intervals: {level} percentile intervals of a "
                         f"bootstrap over comparisons ({self.n_bootstrap} "
                         "resamples; no groups were given, so comparisons "
                         "of one prompt are treated as independent).")
        notes.append("Chance: a fair coin scores 1/2; its interval is the "
                     f"central {level} of Binomial(n, 1/2) / n.")
        if cal is not None:
            notes.append("Probabilities: sigmoid(margin / T). ECE: "
                         f"{len(cal.counts)} equal-width bins of the "
                         "confidence in the predicted winner, over [1/2, 1].")
        title = f"Reward model evaluation on {self.n_comparisons} comparisons"
        numbers = self.to_dict()
        return Summary(title, left, right, columns, rows, notes,
                       numbers=numbers)

    def __str__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    # -- numbers -----------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """The report's numbers as plain Python values (lists for
        arrays), e.g. for ``json.dump``."""
        out: Dict[str, Any] = {
            "n_comparisons": self.n_comparisons, "n_strict": self.n_strict,
            "n_ties": self.n_ties, "accuracy": self.accuracy,
            "accuracy_ci": self.accuracy_ci,
            "accuracy_per_group": self.accuracy_per_group,
            "margin_mean": self.margin_mean,
            "margin_quantiles": dict(self.margin_quantiles),
            "tie_abs_margin": self.tie_abs_margin,
            "strict_abs_margin": self.strict_abs_margin,
            "tie_log_likelihood": self.tie_log_likelihood,
            "baselines": {name: {"accuracy": b.accuracy, "ci": b.ci}
                          for name, b in self.baselines.items()},
            "best_baseline": self.best_baseline,
            "beats_best_baseline": self.beats_best_baseline,
            "difference_ci": self.difference_ci,
            "bootstrap_unit": self.bootstrap_unit,
            "n_bootstrap": self.n_bootstrap, "confidence": self.confidence,
            "groups": {"ids": self.group_ids.tolist(),
                       "n": self.group_n.tolist(),
                       "accuracy": self.group_accuracy.tolist()},
        }
        out["calibration"] = None if self.calibration is None else \
            self.calibration.to_dict()
        out["calibration_before"] = None if self.calibration_before is None \
            else self.calibration_before.to_dict()
        return out

    def to_frame(self) -> Any:
        """One row per scorer (the model, then the baselines) with its
        accuracy and interval, as a pandas DataFrame (pandas needed)."""
        pd = _pandas("to_frame")
        rows = [("model", self.accuracy, self.accuracy_ci)]
        rows += [(name, b.accuracy, b.ci) for name, b in
                 self.baselines.items()]
        return pd.DataFrame(
            {"accuracy": [r[1] for r in rows],
             "ci_low": [math.nan if r[2] is None else r[2][0] for r in rows],
             "ci_high": [math.nan if r[2] is None else r[2][1]
                         for r in rows]},
            index=pd.Index([r[0] for r in rows], name="scorer"))

    def group_frame(self) -> Any:
        """One row per group: n (strict comparisons) and accuracy, as a
        pandas DataFrame."""
        pd = _pandas("group_frame")
        return pd.DataFrame({"n": self.group_n,
                             "accuracy": self.group_accuracy},
                            index=pd.Index(self.group_ids, name="group"))

    # -- picture -----------------------------------------------------------

    def plot(self, axes: Optional[Any] = None) -> Any:
        """Reliability diagram (left) and per-group accuracy (right).

        Left: each non-empty bin at its mean confidence in the predicted
        winner and the share it got right, before and after temperature
        scaling when a temperature was given; the diagonal is perfect
        calibration.  Right: with at most 12 groups, a bar per group;
        with more, a histogram of the groups' accuracies; without groups
        (or with fewer than 3 strict comparisons per group on average),
        the model's and the baselines' accuracies with their intervals.
        The overall accuracy and the best baseline are drawn as vertical
        lines.  Sizes and fonts are rlhf.plot's (readable on a projector;
        :func:`rlhf.plot.lecture_style` makes them larger).

        Parameters
        ----------
        axes : sequence of two matplotlib Axes, optional
            Draw here; by default on a new 16:9 figure.

        Returns
        -------
        ndarray of two matplotlib Axes
        """
        from . import plot as rplot
        plt = rplot._pyplot()
        if axes is None:
            fig = plt.figure(figsize=rplot.SLIDE_SIZE, layout="constrained")
            axes = np.array(fig.subplots(1, 2))
        else:
            axes = np.asarray(axes, dtype=object).ravel()
            if axes.shape != (2,):
                raise ValueError("axes must be two matplotlib Axes; got "
                                 f"{axes.shape[0]}.")
        self._plot_reliability(axes[0], rplot)
        self._plot_groups(axes[1], rplot)
        return axes

    def _plot_reliability(self, ax, rplot):
        ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey",
                label="calibrated")
        lowest = 0.5
        shown = [c for c in (self.calibration_before, self.calibration)
                 if c is not None]
        for cal, marker in zip(shown, "os"):
            used = cal.counts > 0
            ax.plot(cal.mean_confidence[used], cal.observed[used],
                    marker=marker, label=f"T = {cal.temperature:.3g}")
            if used.any():
                lowest = min(lowest, float(np.min(cal.observed[used])))
        if not shown:
            ax.text(0.75, 0.75, "no probability\nscale", ha="center",
                    va="center", fontsize=rplot._points("annotation"))
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(math.floor(lowest * 10) / 10, 1.0)
        rplot._label_axes(ax, "confidence", "accuracy")
        ax.set_title("reliability", fontsize=rplot._points("title"))
        if shown:
            rplot._legend(ax)

    def _plot_groups(self, ax, rplot):
        best = self.baselines[self.best_baseline]
        size = rplot._points("tick")
        has = self.group_n > 0
        if not self.grouped or self.group_n[has].mean() < _MIN_GROUP_SIZE:
            # no groups, or too small to have an accuracy of their own
            names = ["model"] + list(self.baselines)
            values = [self.accuracy] + [b.accuracy for b in
                                        self.baselines.values()]
            cis = [self.accuracy_ci] + [b.ci for b in
                                        self.baselines.values()]
            y = np.arange(len(names))[::-1]
            err = np.array([[v - c[0], c[1] - v] if c is not None else
                            [0.0, 0.0] for v, c in zip(values, cis)]).T
            ax.barh(y, values, xerr=err, color=["C0"] + ["C7"] * (
                len(names) - 1), capsize=4)
            ax.set_yticks(y, names, fontsize=size)
            ax.set_xlim(0.0, 1.0)
            rplot._label_axes(ax, "accuracy", "")
            ax.set_title("model and baselines",
                         fontsize=rplot._points("title"))
            return
        if len(self.group_ids) <= _MAX_GROUP_BARS:
            y = np.arange(len(self.group_ids))[::-1]
            ax.barh(y[has], self.group_accuracy[has], color="C0")
            labels = [rplot._fit_one_line(str(g), 120.0, size)
                      for g in self.group_ids]
            ax.set_yticks(y, labels, fontsize=size)
            ax.set_xlim(0.0, 1.0)
            rplot._label_axes(ax, "accuracy", "")
        else:
            ax.hist(self.group_accuracy[has], bins=np.linspace(0, 1, 11),
                    color="C0", edgecolor="white")
            ax.set_xlim(0.0, 1.0)
            rplot._label_axes(ax, "accuracy of a group", "groups")
        ax.axvline(self.accuracy, color="black", linestyle="-",
                   label=f"all: {self.accuracy:.3f}")
        ax.axvline(best.accuracy, color="C3", linestyle=":",
                   label=f"{self.best_baseline}: {best.accuracy:.3f}")
        ax.set_title(f"{int(has.sum())} groups",
                     fontsize=rplot._points("title"))
        # under the axes, where it covers no bar
        rplot._legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                      ncol=2, frameon=False)


# --------------------------------------------------------------------------
# the evaluation


def _tie_log_likelihood(model, margins):
    """Mean log P(tie) of the tied comparisons (margins d = r_a - r_b)
    under the model's tie model."""
    theta = float(model.tie_param_)
    if model.ties == "rao-kupper":
        # P(tie) = (theta^2 - 1) / ((e^d + theta)(theta + e^-d))
        kappa = math.log(theta)
        log_tie = (math.log(theta * theta - 1.0)
                   - np.logaddexp(margins, kappa)
                   - np.logaddexp(kappa, -margins))
    else:
        # Davidson: P(tie) = nu / (e^(d/2) + e^(-d/2) + nu)
        log_nu = math.log(theta)
        log_tie = log_nu - np.logaddexp.reduce(
            np.stack([0.5 * margins, -0.5 * margins,
                      np.full_like(margins, log_nu)]), axis=0)
    return float(np.mean(log_tie))


def evaluate_reward_model(
        model: Any, features: Any, comparisons: Any, *,
        groups: Optional[ArrayLike] = None,
        ties: Optional[ArrayLike] = None,
        lengths: Optional[ArrayLike] = None,
        shown_first: Optional[ArrayLike] = None,
        temperature: Optional[float] = None, n_bootstrap: int = 1000,
        confidence: float = 0.95, n_bins: int = 10,
        random_state: RandomState = None,
        progress: Optional[bool] = None) -> RewardReport:
    """Evaluate a reward model (or any scores) on held-out comparisons.

    Every number is over the strict comparisons (ties have no preferred
    item) unless it says otherwise; see :class:`RewardReport` for each.
    Intervals come from a cluster bootstrap over ``groups`` (whole prompts:
    the comparisons of one prompt share its texts and are not independent;
    Field & Welsh 2007), or over comparisons when there are no groups; they
    are percentile intervals at ``confidence``.  The same resamples serve
    the model and the baselines, so their difference has an interval too.

    The probabilities scored (log-loss, Brier, calibration) are the
    Bradley-Terry ``sigmoid(margin / T)`` for every model.  For a model
    with a Rao-Kupper tie threshold that is not quite its own probability
    of a strict win given that there was one, ``sigmoid(d - kappa) /
    (sigmoid(d - kappa) + sigmoid(-d - kappa))``, which is steeper when
    ``theta > 1``; Davidson's is ``sigmoid(d)`` exactly.

    Parameters
    ----------
    model : rlhf.RewardModel (fitted) or array-like of shape (n_items,)
        The scorer.  An array gives one score per item, so that any scorer
        (and the baselines) goes through the same code; it has no
        probability scale, so only the ranking metrics are reported unless
        ``temperature`` is given.
    features : array-like of shape (n_items, n_features), or None
        The items' features for ``model.predict``; None for a model fitted
        without features, and for scores.
    comparisons : array-like of int of shape (n_comparisons, 2), \
rlhf.Comparisons or rlhf.datasets.PreferenceDataset
        Preferred item first (for a tie, either order).  A Comparisons
        brings its ties and groups; a PreferenceDataset its ties, its
        prompts as groups, the lengths of its texts (characters) and, when
        it has annotator labels, the order they saw each pair (``pairs``;
        chosen/rejected records do not say it).  Arguments given
        explicitly take precedence.
    groups : array-like of shape (n_comparisons,), default=None
        The prompt, subset or annotator of each comparison (any ids).
    ties : array-like of bool of shape (n_comparisons,), default=None
    lengths : array-like of shape (n_items,), default=None
        A length per item, for the "longer wins" and "shorter wins"
        baselines.
    shown_first : array-like of bool of shape (n_comparisons,), \
default=None
        Whether the preferred item was shown first, for the "first shown
        wins" baseline.
    temperature : float > 0, default=None
        Probabilities ``sigmoid(margin / T)``: for a RewardModel the
        report then shows the calibration at T = 1 and at this T (from
        :func:`fit_temperature` on other comparisons); for scores, at
        this T only.
    n_bootstrap : int >= 0, default=1000
        Bootstrap resamples; 0 for no intervals.
    confidence : float in (0, 1), default=0.95
    n_bins : int >= 1, default=10
        Bins of the expected calibration error, over [1/2, 1].
    random_state : None, int or numpy.random.Generator, default=None
        For the bootstrap.
    progress : bool or None, default=None
        A progress bar for a long bootstrap (see :mod:`rlhf._progress`).

    Returns
    -------
    RewardReport

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> from rlhf.evaluation import evaluate_reward_model
    >>> world = rlhf.make_world(n_prompts=300, random_state=0)
    >>> train = rlhf.simulate_preferences(world.rewards, world.pairs,
    ...                                   random_state=1)
    >>> test = rlhf.simulate_preferences(world.rewards, world.pairs,
    ...                                  random_state=2)
    >>> model = rlhf.RewardModel().fit(world.features, train)
    >>> report = evaluate_reward_model(
    ...     model, world.features, test.comparisons,
    ...     groups=world.prompt_of_response[test.comparisons[:, 0]],
    ...     random_state=0)
    >>> round(report.accuracy, 3) == round(model.score(world.features,
    ...                                                test), 3)
    True
    >>> report.bootstrap_unit
    'groups'
    >>> bool(report.beats_best_baseline)
    True
    """
    owner = _OWNER
    scores, has_scale, reward_model = _scores(model, features, owner)
    n_items = len(scores)
    pairs, source_ties, source_groups, source_lengths, source_shown = \
        _unpack(comparisons, owner)
    pairs = _pairs(pairs, n_items, owner)
    n = len(pairs)
    if ties is None:
        ties = source_ties
    tie = np.zeros(n, bool) if ties is None else _mask(ties, "ties", n,
                                                       owner)
    if groups is None:
        groups = source_groups
    grouped = groups is not None
    if grouped:
        group_ids, unit = _group_ids(groups, n, owner)
    else:
        group_ids = np.arange(n)
        unit = np.arange(n, dtype=np.intp)
    n_units = len(group_ids)
    if lengths is None and source_lengths is not None and \
            len(source_lengths) == n_items:
        lengths = source_lengths
    if lengths is not None:
        lengths = _as_float_array(lengths, "lengths")
        if lengths.shape != (n_items,):
            raise ValueError(
                f"The 'lengths' parameter of {owner} must have shape "
                f"({n_items},), one per item; got {lengths.shape}.")
        _check_finite(lengths, "lengths")
    if shown_first is None:
        shown_first = source_shown
    if shown_first is not None:
        shown_first = _mask(shown_first, "shown_first", n, owner)
    if temperature is not None:
        temperature = _check_temperature(temperature, owner)
    n_bootstrap = check_scalar(n_bootstrap, "n_bootstrap", owner, kind="int",
                               low=0)
    confidence = _check_confidence(confidence, owner)
    n_bins = check_scalar(n_bins, "n_bins", owner, kind="int", low=1)
    check_progress(progress, owner)
    from .preferences import _check_random_state
    rng = _check_random_state(random_state, owner)

    strict = ~tie
    n_strict = int(strict.sum())
    if n_strict == 0:
        raise ValueError(f"Every comparison given to {owner} is a tie; "
                         "accuracy needs strict ones.")
    all_margins = scores[pairs[:, 0]] - scores[pairs[:, 1]]
    margins = all_margins[strict]
    s_unit = unit[strict]

    def correct_of(values):
        d = values[pairs[strict, 0]] - values[pairs[strict, 1]]
        return (d > 0) + 0.5 * (d == 0)

    report = RewardReport()
    report.source = type(comparisons).__name__
    report.n_comparisons, report.n_strict = n, n_strict
    report.n_ties = n - n_strict
    correct = correct_of(scores)
    report.accuracy = float(np.mean(correct))
    report.margins = margins.copy()
    report.margin_mean = float(np.mean(margins))
    report.margin_quantiles = dict(zip(
        _MARGIN_QUANTILES, np.quantile(margins, _MARGIN_QUANTILES).tolist()))
    report.strict_abs_margin = float(np.mean(np.abs(margins)))
    report.tie_abs_margin = float(np.mean(np.abs(all_margins[tie]))) \
        if tie.any() else math.nan
    report.tie_log_likelihood = None
    if reward_model is not None and getattr(reward_model, "ties", None) \
            and tie.any():
        report.tie_log_likelihood = _tie_log_likelihood(
            reward_model, all_margins[tie])

    group_n = np.bincount(s_unit, minlength=n_units)
    group_hits = _per_unit(s_unit, correct, n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        report.group_accuracy = np.where(group_n > 0, group_hits / np.maximum(
            group_n, 1), np.nan)
    report.group_ids = group_ids.copy()
    report.group_n = group_n.astype(np.int64)
    report.grouped = grouped
    report.accuracy_per_group = float(np.mean(
        report.group_accuracy[group_n > 0]))

    # calibration
    report.calibration = report.calibration_before = None
    if has_scale or temperature is not None:
        report.calibration = Calibration(
            1.0 if temperature is None else temperature, margins, n_bins)
        if has_scale and temperature is not None:
            report.calibration_before = Calibration(1.0, margins, n_bins)
    calibrations = [c for c in (report.calibration,
                                report.calibration_before) if c is not None]

    # baselines, as per-comparison correctness
    baseline_correct: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
    if lengths is not None:
        baseline_correct["longer wins"] = correct_of(lengths)
        baseline_correct["shorter wins"] = correct_of(-lengths)
    if shown_first is not None:
        baseline_correct["first shown wins"] = shown_first[strict].astype(
            np.float64)

    # the bootstrap: per-unit sums, resampled
    columns = [group_n.astype(np.float64), group_hits]
    columns += [_per_unit(s_unit, c, n_units)
                for c in baseline_correct.values()]
    columns += [_per_unit(s_unit, c._nll, n_units) for c in calibrations]
    unit_bins = [_per_unit_bins(s_unit, c._index, c._gap, n_units, n_bins)
                 for c in calibrations]
    report.confidence = confidence
    report.accuracy_ci = report.difference_ci = None
    replicate_acc: Dict[str, Any] = {}
    # resampling one group gives it back every time: no interval at all
    units_with_strict = int(np.count_nonzero(group_n))
    if n_bootstrap > 0 and units_with_strict < 2:
        warnings.warn(
            f"{owner}: the strict comparisons are all in one group, so a "
            "bootstrap over groups has nothing to resample and no "
            "intervals are given; pass groups=None to resample comparisons "
            "(treating them as independent)." if grouped else
            f"{owner}: there is one strict comparison, so a bootstrap has "
            "nothing to resample and no intervals are given.",
            UserWarning, stacklevel=2)
        n_bootstrap = 0
    report.n_groups_resampled = units_with_strict
    report.n_bootstrap = n_bootstrap
    if n_bootstrap > 0:
        report.bootstrap_unit = "groups" if grouped else "comparisons"
        sums, bins = _bootstrap(np.column_stack(columns), unit_bins,
                                n_bootstrap, rng, progress)
        with np.errstate(invalid="ignore", divide="ignore"):
            count = sums[:, 0]
            acc = sums[:, 1] / count
            report.accuracy_ci = _quantile_interval(acc, confidence)
            for k, name in enumerate(baseline_correct):
                replicate_acc[name] = sums[:, 2 + k] / count
            first = 2 + len(baseline_correct)
            for k, cal in enumerate(calibrations):
                cal.log_loss_ci = _quantile_interval(
                    sums[:, first + k] / count, confidence)
                cal.ece_ci = _quantile_interval(
                    np.abs(bins[k]).sum(axis=1) / count, confidence)
    else:
        report.bootstrap_unit = "none"

    baselines = {}
    for name, c in baseline_correct.items():
        ci = _quantile_interval(replicate_acc[name], confidence) \
            if name in replicate_acc else None
        baselines[name] = Baseline(name, float(np.mean(c)), ci,
                                   notes.get(name, "bootstrap"))
    baselines["chance"] = Baseline(
        "chance", 0.5, _binomial_interval(n_strict, confidence),
        "central interval of Binomial(n, 1/2) / n")
    report.baselines = baselines
    best = max(baselines, key=lambda k: baselines[k].accuracy)
    report.best_baseline = best
    report.beats_best_baseline = bool(report.accuracy >
                                      baselines[best].accuracy)
    if n_bootstrap > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = sums[:, 1] / sums[:, 0]
            other = replicate_acc.get(best)
            difference = acc - (0.5 if other is None else other)
        report.difference_ci = _quantile_interval(difference, confidence)
    return report
