"""Simulated preference data: annotators, rankings and a synthetic world.

The lecture's preference data is four hand-written comparisons of four
responses described by two features (relevance, safety).  This module makes
data of that kind at any size and under a stated model of the annotator, so
that what a reward model recovers can be checked against the truth:

- :func:`simulate_preferences`: pairwise choices of a Boltzmann-rational
  annotator (Bradley-Terry) with a lapse rate, optional ties (Rao-Kupper)
  and several annotators;
- :func:`simulate_rankings`: rankings of K candidates under Plackett-Luce;
- :func:`rankings_to_comparisons`: a ranking of K items as its K(K-1)/2
  pairwise comparisons (InstructGPT's reward-model data);
- :func:`annotator_agreement`: how often annotators agree (percent
  agreement, Cohen's and Fleiss' kappa);
- :func:`make_world`: responses with named features, true reward weights
  and prompts with K candidates each.

Comparisons are int64 arrays of shape (m, 2), preferred item first, with a
boolean tie mask of shape (m,): the inputs of ``rlhf.RewardModel.fit``.
"""
import dataclasses
import math
import numbers
from typing import Optional, Sequence, Union

import numpy as np

from ._typing import ArrayLike, IntArray, RandomState
from ._validation import _as_float_array, _check_finite, format_value

__all__ = [
    "Agreement",
    "Comparisons",
    "World",
    "annotator_agreement",
    "make_world",
    "rankings_to_comparisons",
    "simulate_preferences",
    "simulate_rankings",
]


# --------------------------------------------------------------------------
# argument checks


def _check_random_state(random_state, owner):
    """A np.random.Generator from None, a non-negative int or a Generator."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(
            random_state, bool) and random_state >= 0:
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"The 'random_state' parameter of {owner} must be None, a "
        "non-negative int or a numpy.random.Generator. Got "
        f"{format_value(random_state)} instead."
    )


def _check_rewards(rewards, owner, min_items=2):
    if rewards is None:
        raise ValueError(f"The 'rewards' parameter of {owner} must be given; "
                         "got None.")
    rewards = _as_float_array(rewards, "rewards")
    if rewards.ndim != 1:
        raise ValueError(
            f"The 'rewards' parameter of {owner} must be 1-dimensional (one "
            f"reward per item); got an array of shape {rewards.shape}."
        )
    if rewards.shape[0] < min_items:
        raise ValueError(
            f"The 'rewards' parameter of {owner} must hold at least "
            f"{min_items} items; got {rewards.shape[0]}."
        )
    _check_finite(rewards, "rewards")
    return rewards


def _check_real(value, name, owner, low, high=None, allow_array=False):
    """A float (or, with allow_array, a 1-d float array) in [low, high]."""
    interval = f"[{format_value(low)}, {'inf' if high is None else repr(high)}"
    interval += ")" if high is None else "]"
    if allow_array and not isinstance(value, numbers.Number) and \
            np.ndim(value) > 0:
        arr = _as_float_array(value, name)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(
                f"The '{name}' parameter of {owner} must be a float or a "
                "1-dimensional array with one value per annotator; got shape "
                f"{arr.shape}."
            )
        bad = ~np.isfinite(arr) | (arr < low)
        if high is not None:
            bad |= arr > high
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"The '{name}' parameter of {owner} must hold floats in "
                f"{interval}. Got {float(arr[i])!r} at index {i} instead."
            )
        return arr
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        try:
            value = float(value)  # Fraction, NumPy scalars: one rule
        except OverflowError:
            ok = False
    ok = ok and math.isfinite(value) and value >= low
    ok = ok and (high is None or value <= high)
    if not ok:
        what = "a float or an array of floats" if allow_array else "a float"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be {what} in "
            f"{interval}. Got {format_value(value)} instead."
        )
    return float(value)


def _check_index_array(values, name, owner, n_items):
    """Integer item indices in [0, n_items) (n_items=None: only >= 0)."""
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)
        else:
            raise TypeError(
                f"The '{name}' parameter of {owner} must hold integer item "
                f"indices; got an array of dtype {arr.dtype}."
            )
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        low = int(arr.min())
        high = int(arr.max())
        if low < 0 or (n_items is not None and high >= n_items):
            flat = np.flatnonzero((arr < 0) | (
                arr >= (n_items if n_items is not None else np.inf)))
            where = np.unravel_index(flat[0], arr.shape)
            bound = "" if n_items is None else f" and < {n_items}"
            raise ValueError(
                f"The '{name}' parameter of {owner} must hold item indices "
                f">= 0{bound} (the number of items); got {int(arr[where])} at "
                f"{name}[{', '.join(str(int(w)) for w in where)}]."
            )
    return arr


def _check_pairs(pairs, n_items, owner):
    pairs = _check_index_array(pairs, "pairs", owner, n_items)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(
            f"The 'pairs' parameter of {owner} must be an int or an array of "
            f"shape (n_pairs, 2) with n_pairs >= 1; got shape {pairs.shape}."
        )
    same = pairs[:, 0] == pairs[:, 1]
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise ValueError(
            f"The 'pairs' parameter of {owner} pairs item {int(pairs[i, 0])} "
            f"with itself at pairs[{i}]; each pair needs two different items."
        )
    return np.ascontiguousarray(pairs)


def _sigmoid(x):
    """1 / (1 + exp(-x)) for any real x; exp(-log(1 + exp(-x))) does not
    overflow where the direct formula does."""
    return np.exp(-np.logaddexp(0.0, -x))


def _choice_probability(diff, temperature):
    """sigmoid(diff / temperature), with temperature 0 its limit: 1 for a
    positive diff, 0 for a negative one and 1/2 at 0."""
    temperature = np.broadcast_to(temperature, diff.shape)
    out = np.empty_like(diff)
    hot = temperature > 0
    # a quotient past the largest double is +-inf, whose sigmoid (1 or 0)
    # is the right limit
    with np.errstate(over="ignore"):
        out[hot] = _sigmoid(diff[hot] / temperature[hot])
    out[~hot] = 0.5 * (1.0 + np.sign(diff[~hot]))
    return out


def _random_pairs(n_pairs, n_items, rng, owner):
    """n_pairs distinct unordered pairs of items, each shown in a random
    order."""
    total = n_items * (n_items - 1) // 2
    if n_pairs < 1 or n_pairs > total:
        raise ValueError(
            f"The 'pairs' parameter of {owner}, as a number of pairs, must be "
            f"an int in [1, {total}] ({n_items} items have {total} distinct "
            f"pairs). Got {format_value(n_pairs)} instead."
        )
    # pair number k <-> (j, i) with i < j and k = j (j - 1) / 2 + i
    k = rng.choice(total, size=n_pairs, replace=False).astype(np.int64)
    j = ((1.0 + np.sqrt(1.0 + 8.0 * k)) / 2.0).astype(np.int64)
    # the square root may round either way for large k; fix j exactly
    j -= j * (j - 1) // 2 > k
    j += (j + 1) * j // 2 <= k
    i = k - j * (j - 1) // 2
    pairs = np.column_stack([i, j])
    flip = rng.random(n_pairs) < 0.5
    pairs[flip] = pairs[flip, ::-1]
    return pairs


# --------------------------------------------------------------------------
# results


def _short(arr, n=6):
    arr = np.asarray(arr)
    if arr.size <= n:
        return np.array2string(arr, separator=", ")
    head = np.array2string(arr[: n // 2], separator=", ")[:-1]
    tail = np.array2string(arr[-(n // 2):], separator=", ")[1:]
    return f"{head}, ..., {tail}"


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Agreement:
    """How often annotators who labelled the same items agree.

    Attributes
    ----------
    unanimous : float
        Fraction of items on which every annotator gave the same label.
    pairwise : float
        Percent agreement averaged over all pairs of annotators.
    cohen_kappa : ndarray of shape (n_annotators, n_annotators)
        Cohen's kappa of every pair of annotators (1 on the diagonal).
    fleiss_kappa : float
        Fleiss' kappa of all annotators together.
    majority : ndarray of shape (n_items,)
        The most frequent label of each item, -1 where two or more labels
        are equally frequent.
    with_majority : ndarray of shape (n_annotators,)
        Fraction of the items with a majority label on which each annotator
        gave it.

    Examples
    --------
    Three annotators label the same four items; the third disagrees with
    the other two on one item:

    >>> import rlhf
    >>> a = rlhf.annotator_agreement([[0, 0, 0], [1, 1, 1], [1, 1, 0],
    ...                               [0, 0, 0]])
    >>> a.unanimous
    0.75
    >>> a.majority.tolist()
    [0, 1, 1, 0]
    """

    unanimous: float
    pairwise: float
    cohen_kappa: np.ndarray
    fleiss_kappa: float
    majority: np.ndarray
    with_majority: np.ndarray

    def __repr__(self):
        return (
            f"Agreement(unanimous={self.unanimous:.3f}, "
            f"pairwise={self.pairwise:.3f}, "
            f"fleiss_kappa={self.fleiss_kappa:.3f}, "
            f"with_majority={np.round(self.with_majority, 3).tolist()})"
        )


def annotator_agreement(labels: ArrayLike) -> "Agreement":
    """Agreement statistics of several annotators labelling the same items.

    Parameters
    ----------
    labels : array-like of shape (n_items, n_annotators)
        Integer labels, column j from annotator j; any coding works (the
        datasets use 1 = first response better, 2 = second, 0 = tie).

    Returns
    -------
    Agreement
        Unanimity, mean pairwise percent agreement, Cohen's kappa of each
        pair (Cohen 1960), Fleiss' kappa (Fleiss 1971, "Measuring nominal
        scale agreement among many raters"), the majority label of each
        item and how often each annotator gives it.

    Notes
    -----
    Kappa is ``(p_o - p_e) / (1 - p_e)``: observed agreement corrected by
    the agreement expected from the label frequencies alone (for Cohen each
    annotator's own frequencies, for Fleiss the pooled ones).  It is not
    defined when ``p_e = 1`` (every annotator always gives one same label)
    and is then reported as NaN.  Kappa depends on how items are oriented:
    swapping which response is "first" on some items changes the label
    frequencies, so compare kappas computed with the presented order.

    Examples
    --------
    >>> import rlhf
    >>> agreement = rlhf.annotator_agreement([[1, 1], [1, 2], [2, 2], [0, 0]])
    >>> agreement.pairwise, round(agreement.fleiss_kappa, 4)
    (0.75, 0.619)
    """
    labels = np.asarray(labels)
    if labels.dtype == object or labels.dtype.kind not in "iub":
        raise TypeError(
            "The 'labels' parameter of annotator_agreement must hold integer "
            f"labels; got an array of dtype {labels.dtype}."
        )
    if labels.ndim != 2 or labels.shape[0] < 1 or labels.shape[1] < 2:
        raise ValueError(
            "The 'labels' parameter of annotator_agreement must have shape "
            "(n_items, n_annotators) with n_items >= 1 and n_annotators >= 2;"
            f" got shape {labels.shape}."
        )
    n_items, n_annotators = labels.shape
    categories, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    n_categories = categories.shape[0]
    # counts[i, c]: annotators giving item i the label c
    counts = np.zeros((n_items, n_categories), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n_items), n_annotators),
                       codes.ravel()), 1)
    unanimous = float(np.mean(counts.max(axis=1) == n_annotators))

    kappa = np.ones((n_annotators, n_annotators))
    observed = []
    for a in range(n_annotators):
        for b in range(a + 1, n_annotators):
            p_o = np.mean(codes[:, a] == codes[:, b])
            freq_a = np.bincount(codes[:, a], minlength=n_categories) / n_items
            freq_b = np.bincount(codes[:, b], minlength=n_categories) / n_items
            p_e = float(freq_a @ freq_b)
            kappa[a, b] = kappa[b, a] = _kappa(p_o, p_e)
            observed.append(p_o)
    pairwise = float(np.mean(observed))

    # Fleiss: mean over items of the agreeing share of annotator pairs
    per_item = (np.sum(counts * (counts - 1), axis=1)
                / (n_annotators * (n_annotators - 1)))
    pooled = counts.sum(axis=0) / (n_items * n_annotators)
    fleiss = _kappa(per_item.mean(), float(pooled @ pooled))

    top = counts.max(axis=1, keepdims=True)
    unique_top = np.sum(counts == top, axis=1) == 1
    majority = np.full(n_items, -1, dtype=np.int64)
    majority[unique_top] = categories[np.argmax(counts[unique_top], axis=1)]
    if unique_top.any():
        with_majority = np.mean(
            labels[unique_top] == majority[unique_top, None], axis=0)
    else:
        with_majority = np.full(n_annotators, np.nan)
    return Agreement(unanimous, pairwise, kappa, fleiss, majority,
                     with_majority)


def _kappa(p_o, p_e):
    if p_e >= 1.0:
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Comparisons:
    """Pairwise comparisons of items, preferred item first.

    The fields are the arguments of a pairwise reward model's ``fit``:
    ``RewardModel().fit(features, c.comparisons, sample_weight=
    c.sample_weight, ties=c.ties)``.  ``np.asarray(c)`` is
    ``c.comparisons``.

    Attributes
    ----------
    comparisons : ndarray of shape (n_comparisons, 2), int64
        Item indices ``(preferred, other)``; for a tie, the two items in
        the order they were shown.
    ties : ndarray of shape (n_comparisons,), bool
        True where the annotator declared no preference.
    sample_weight : ndarray of shape (n_comparisons,), float64
        Weight of each comparison (ones unless a ranking's pairs share a
        total weight of 1).
    groups : ndarray of shape (n_comparisons,), int64
        The unit each comparison comes from -- the simulated pair (shared by
        the annotators who labelled it) or the ranking -- for grouped
        cross-validation.
    annotators : ndarray of shape (n_comparisons,), int64
        Who made each comparison (all 0 for a single annotator).
    n_items : int
        Number of items the indices refer to.
    agreement : Agreement or None
        Inter-annotator agreement when several annotators labelled every
        pair, else None.

    Examples
    --------
    An annotator who knows the rewards compares three items; an error-free
    one (temperature 0) always puts the better item first:

    >>> import rlhf
    >>> votes = rlhf.simulate_preferences([0.0, 1.0, 3.0],
    ...                                   [[0, 1], [1, 2], [0, 2]],
    ...                                   temperature=0.0)
    >>> votes.comparisons.tolist()
    [[1, 0], [2, 1], [2, 0]]
    >>> len(votes), votes.n_ties
    (3, 0)
    >>> votes.accuracy([0.0, 1.0, 3.0])  # scores that rank the items right
    1.0
    """

    comparisons: np.ndarray
    ties: np.ndarray
    sample_weight: np.ndarray
    groups: np.ndarray
    annotators: np.ndarray
    n_items: int
    agreement: Optional[Agreement] = None

    def __len__(self):
        return self.comparisons.shape[0]

    def __array__(self, dtype=None, copy=None):
        if copy is False and dtype is not None and \
                np.dtype(dtype) != self.comparisons.dtype:
            raise ValueError("A copy is needed to convert the comparisons "
                             f"to {np.dtype(dtype)}.")
        out = self.comparisons if dtype is None else \
            self.comparisons.astype(dtype, copy=False)
        return out.copy() if copy else out

    @property
    def n_ties(self) -> int:
        """Number of ties."""
        return int(np.count_nonzero(self.ties))

    def subset(self, index: ArrayLike) -> "Comparisons":
        """The comparisons selected by a boolean mask or integer index
        array (rows in that order), as a new Comparisons."""
        index = np.asarray(index)
        if index.dtype == bool and index.shape != self.ties.shape:
            raise ValueError(
                f"A boolean index must have shape {self.ties.shape}; got "
                f"{index.shape}.")
        if index.dtype != bool and index.dtype.kind not in "iu":
            raise TypeError("index must be a boolean mask or integer "
                            f"indices; got dtype {index.dtype}.")
        return Comparisons(
            self.comparisons[index], self.ties[index],
            self.sample_weight[index], self.groups[index],
            self.annotators[index], self.n_items, None)

    def strict(self) -> "Comparisons":
        """The comparisons that are not ties."""
        return self.subset(~self.ties)

    def accuracy(self, scores: ArrayLike) -> float:
        """Fraction of strict comparisons that ``scores`` order the same
        way (equal scores count 1/2), e.g. the accuracy of a reward model's
        rewards.

        Parameters
        ----------
        scores : array-like of shape (n_items,)

        Returns
        -------
        float
        """
        return _pairwise_accuracy(scores, self.comparisons, self.ties,
                                  self.n_items)

    def __repr__(self):
        parts = [f"n_items={self.n_items}", f"n_comparisons={len(self)}"]
        if self.n_ties:
            parts.append(f"n_ties={self.n_ties}")
        n_annotators = int(self.annotators.max()) + 1 if len(self) else 0
        if n_annotators > 1:
            parts.append(f"n_annotators={n_annotators}")
        if not np.all(self.sample_weight == 1.0):
            parts.append("weighted")
        rows = _short(self.comparisons, 3).replace("\n", "")
        return f"Comparisons({', '.join(parts)}, comparisons={rows})"


def _pairwise_accuracy(scores, comparisons, ties, n_items):
    scores = _as_float_array(scores, "scores")
    if scores.ndim != 1 or scores.shape[0] != n_items:
        raise ValueError(
            f"scores must have shape ({n_items},), one per item; got "
            f"{scores.shape}.")
    _check_finite(scores, "scores")
    strict = comparisons[~ties]
    if strict.shape[0] == 0:
        raise ValueError("There are no strict (non-tie) comparisons to "
                         "score.")
    better = scores[strict[:, 0]]
    worse = scores[strict[:, 1]]
    return float(np.mean((better > worse) + 0.5 * (better == worse)))


# --------------------------------------------------------------------------
# simulation


def simulate_preferences(rewards: ArrayLike, pairs: ArrayLike,
                         temperature: Union[float, ArrayLike] = 1.0,
                         noise: Union[float, ArrayLike] = 0.0, *,
                         tie_margin: float = 0.0,
                         annotators: Union[str, ArrayLike] = "all",
                         random_state: RandomState = None) -> "Comparisons":
    """Pairwise preferences of simulated annotators who know the rewards.

    Shown items ``a`` and ``b``, an annotator prefers ``a`` with probability

        ``P(a) = noise / 2 + (1 - noise) * sigmoid((r_a - r_b) / temperature)``

    -- the Boltzmann-rational annotator of Bradley-Terry (Bradley & Terry
    1952; Christiano et al. 2017) who, with probability ``noise``, lapses and
    answers at random (as the synthetic annotator of the ``imitation``
    library does).  ``temperature = 0`` always prefers the higher reward
    (a coin decides equal rewards).

    With ``tie_margin = m > 0`` the annotator may also declare a tie, as in
    Rao & Kupper (1967, "Ties in paired-comparison experiments: a
    generalization of the Bradley-Terry model"): ``a`` is preferred with
    probability ``sigmoid((r_a - r_b - m) / temperature)``, ``b`` with
    ``sigmoid((r_b - r_a - m) / temperature)``, and a tie is the rest; a
    lapse still picks ``a`` or ``b`` at random.  It is the latent-utility
    model "prefer a when the perceived difference, with logistic noise of
    scale ``temperature``, exceeds m" (Rao-Kupper's ``log theta = m /
    temperature``); at ``temperature = 0`` it declares a tie when
    ``|r_a - r_b| < m`` (half the time at ``|r_a - r_b| = m``, the limit
    of small temperatures).

    Parameters
    ----------
    rewards : array-like of shape (n_items,)
        True rewards of the items.
    pairs : int or array-like of shape (n_pairs, 2)
        The pairs shown, as item indices; or a number of pairs, drawn at
        random without repeating a pair, each shown in a random order.
    temperature : float >= 0 or array-like of shape (n_annotators,), \
default=1.0
        Scale of the annotator's noise in reward units; 0 is a perfectly
        rational annotator.  An array gives one value per annotator.
    noise : float in [0, 1] or array-like of shape (n_annotators,), \
default=0.0
        Lapse rate: probability of answering uniformly at random.
    tie_margin : float >= 0, default=0.0
        Rao-Kupper margin in reward units; 0 gives no ties.
    annotators : {"all", "random"} or array-like of shape (n_pairs,), \
default="all"
        With several annotators: ``"all"`` has every annotator label every
        pair (rows pair by pair, annotators in order, so row ``k`` is pair
        ``k // n_annotators``) and reports their agreement; ``"random"``
        gives each pair to one annotator drawn uniformly; an integer array
        says who labels each pair.
    random_state : None, int or numpy.random.Generator, default=None
        Source of randomness; the same seed gives the same comparisons.

    Returns
    -------
    Comparisons
        ``comparisons`` (preferred first; a tie keeps the shown order),
        ``ties``, ``annotators``, ``groups`` (index of the pair), and
        ``agreement`` when every annotator labelled every pair.

    Examples
    --------
    >>> import rlhf
    >>> prefs = rlhf.simulate_preferences([1.0, 0.2, 0.9, 0.1], 6,
    ...                                   temperature=0, random_state=0)
    >>> prefs.accuracy([1.0, 0.2, 0.9, 0.1])
    1.0
    """
    owner = "simulate_preferences"
    rewards = _check_rewards(rewards, owner)
    n_items = rewards.shape[0]
    temperature = _check_real(temperature, "temperature", owner, 0.0,
                              allow_array=True)
    noise = _check_real(noise, "noise", owner, 0.0, 1.0, allow_array=True)
    tie_margin = _check_real(tie_margin, "tie_margin", owner, 0.0)
    sizes = {np.shape(v)[0] for v in (temperature, noise) if np.ndim(v)}
    if len(sizes) > 1:
        raise ValueError(
            f"The 'temperature' and 'noise' parameters of {owner} give "
            f"different numbers of annotators ({np.size(temperature)} and "
            f"{np.size(noise)}); use arrays of one length or a float.")
    n_annotators = sizes.pop() if sizes else 1
    rng = _check_random_state(random_state, owner)

    if isinstance(pairs, numbers.Integral) and not isinstance(pairs, bool):
        pairs = _random_pairs(int(pairs), n_items, rng, owner)
    elif isinstance(pairs, (bool, numbers.Number)) or pairs is None:
        raise TypeError(
            f"The 'pairs' parameter of {owner} must be an int or an array of "
            f"shape (n_pairs, 2); got {pairs!r}.")
    else:
        pairs = _check_pairs(pairs, n_items, owner)
    n_pairs = pairs.shape[0]

    all_label = False
    if isinstance(annotators, str):
        if annotators not in ("all", "random"):
            raise ValueError(
                f"The 'annotators' parameter of {owner} must be 'all', "
                "'random' or an array of annotator ids. Got "
                f"{format_value(annotators)} instead.")
        if annotators == "all":
            all_label = True
            who = np.tile(np.arange(n_annotators, dtype=np.int64), n_pairs)
            groups = np.repeat(np.arange(n_pairs, dtype=np.int64),
                               n_annotators)
        else:
            who = rng.integers(0, n_annotators, size=n_pairs)
            groups = np.arange(n_pairs, dtype=np.int64)
    else:
        who = _check_index_array(annotators, "annotators", owner,
                                 n_annotators)
        if who.shape != (n_pairs,):
            raise ValueError(
                f"The 'annotators' parameter of {owner} must have shape "
                f"({n_pairs},), one annotator per pair; got {who.shape}.")
        groups = np.arange(n_pairs, dtype=np.int64)
    shown = pairs[groups]
    temperature = np.broadcast_to(temperature, (n_annotators,))[who]
    noise = np.broadcast_to(noise, (n_annotators,))[who]

    with np.errstate(over="ignore"):  # +-inf: a certain choice, as it is
        diff = rewards[shown[:, 0]] - rewards[shown[:, 1]]
    u = rng.random(diff.shape[0])
    first = noise / 2 + (1 - noise) * _choice_probability(
        diff - tie_margin, temperature)
    if tie_margin > 0:
        second = noise / 2 + (1 - noise) * _choice_probability(
            -diff - tie_margin, temperature)
        ties = u >= first + second
    else:
        ties = np.zeros(diff.shape[0], dtype=bool)
    flip = (u >= first) & ~ties
    comparisons = shown.copy()
    comparisons[flip] = comparisons[flip, ::-1]

    agreement = None
    if all_label and n_annotators > 1:
        labels = np.where(ties, 0, np.where(flip, 2, 1))
        agreement = annotator_agreement(labels.reshape(n_pairs, n_annotators))
    return Comparisons(comparisons, ties, np.ones(len(ties)), groups,
                       who.astype(np.int64, copy=False), n_items, agreement)


def simulate_rankings(rewards: ArrayLike, groups: ArrayLike,
                      temperature: float = 1.0,
                      random_state: RandomState = None) -> IntArray:
    """Rank each group of items, best first, under Plackett-Luce.

    The item ranked first is drawn with probability
    ``softmax(rewards / temperature)`` over the group, the second the same
    way from the rest, and so on (Plackett 1975; Luce 1959).  Sampled
    exactly by sorting ``rewards / temperature + Gumbel noise`` (the
    Gumbel-max trick; Yellott 1977).  For two items this is Bradley-Terry:
    ``P(a above b) = sigmoid((r_a - r_b) / temperature)``.

    Parameters
    ----------
    rewards : array-like of shape (n_items,)
        True rewards of the items.
    groups : array-like of shape (n_groups, K) or (K,)
        Item indices, one row per group (e.g. the K candidate responses of
        each prompt); items in a row must be distinct.
    temperature : float >= 0, default=1.0
        0 ranks by reward (equal rewards in random order).
    random_state : None, int or numpy.random.Generator, default=None

    Returns
    -------
    ndarray of the shape of groups, int64
        Each row's items from best to worst.

    Examples
    --------
    >>> import rlhf
    >>> rlhf.simulate_rankings([0.0, 2.0, 1.0], [[0, 1, 2]], temperature=0)
    array([[1, 2, 0]])
    """
    owner = "simulate_rankings"
    rewards = _check_rewards(rewards, owner, min_items=1)
    groups = _check_index_array(groups, "groups", owner, rewards.shape[0])
    one = groups.ndim == 1
    if one:
        groups = groups[None, :]
    if groups.ndim != 2 or groups.shape[0] == 0 or groups.shape[1] == 0:
        raise ValueError(
            f"The 'groups' parameter of {owner} must have shape (n_groups, K)"
            f" or (K,) with n_groups, K >= 1; got {groups.shape}.")
    _check_distinct_rows(groups, "groups", owner)
    temperature = _check_real(temperature, "temperature", owner, 0.0)
    rng = _check_random_state(random_state, owner)
    gumbel = rng.gumbel(size=groups.shape)
    values = rewards[groups]
    if temperature > 0:
        with np.errstate(over="ignore"):
            key = values / temperature + gumbel
        # where rewards / temperature overflows to +-inf, the noise cannot
        # reorder items of different rewards: those ties go by reward, and
        # equal rewards by the noise alone
        order = np.lexsort((-gumbel, -values, -key), axis=1)
    else:
        # the limit temperature -> 0: by reward, equal rewards at random
        order = np.lexsort((-gumbel, -values), axis=1)
    ranked = np.take_along_axis(groups, order, axis=1)
    return ranked[0] if one else ranked


def _check_distinct_rows(rows, name, owner, row_ids=None):
    if rows.shape[1] < 2:
        return
    ordered = np.sort(rows, axis=1)
    repeat = ordered[:, 1:] == ordered[:, :-1]
    if repeat.any():
        g, k = np.argwhere(repeat)[0]
        row = int(g if row_ids is None else row_ids[g])
        raise ValueError(
            f"The '{name}' parameter of {owner} repeats item "
            f"{int(ordered[g, k])} in row {row}; the items of a row must "
            "be distinct.")


def rankings_to_comparisons(rankings: ArrayLike,
                            ties: Optional[ArrayLike] = None, *,
                            normalize: bool = False,
                            n_items: Optional[int] = None) -> "Comparisons":
    """All pairwise comparisons implied by rankings.

    A ranking of K items, best first, gives its K(K-1)/2 pairs
    ``(ranked higher, ranked lower)`` -- how InstructGPT turns a labeller's
    ranking into reward-model data (Ouyang et al. 2022, "Training language
    models to follow instructions with human feedback", eq. 1), where each
    pair's loss is scaled by ``1 / C(K, 2)`` so that every ranking counts
    once (``normalize=True``).

    Parameters
    ----------
    rankings : array-like of shape (n_rankings, K), or a list of sequences
        Item indices, best first; lists may differ in length (K >= 2).
    ties : array-like of shape (n_rankings, K - 1) of bool, or a list of \
sequences, default=None
        ``ties[i][k]`` True means the k-th and (k+1)-th items of ranking i
        are tied (tied runs form one tier; pairs within a tier become tie
        comparisons).  None: no ties.
    normalize : bool, default=False
        Weight each pair ``1 / C(K, 2)`` (else 1).
    n_items : int, default=None
        Number of items; by default one more than the largest index.

    Returns
    -------
    Comparisons
        Pairs of each ranking in order (positions (0, 1), (0, 2), ...,
        (K-2, K-1)); ``groups`` is the index of the ranking.

    Examples
    --------
    >>> import rlhf
    >>> rlhf.rankings_to_comparisons([[2, 0, 1]]).comparisons
    array([[2, 0],
           [2, 1],
           [0, 1]])
    """
    owner = "rankings_to_comparisons"
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"The 'normalize' parameter of {owner} must be a "
                        f"bool. Got {format_value(normalize)} instead.")
    if n_items is not None:
        if not isinstance(n_items, numbers.Integral) or isinstance(
                n_items, bool) or n_items < 1:
            raise ValueError(f"The 'n_items' parameter of {owner} must be an "
                             f"int >= 1. Got {format_value(n_items)} instead.")
        n_items = int(n_items)
    blocks = _blocks_by_length(rankings, "rankings", owner)
    n_rankings = sum(ids.shape[0] for ids, _ in blocks)
    if n_rankings == 0:
        raise ValueError(f"The 'rankings' parameter of {owner} must hold at "
                         "least one ranking.")
    tie_blocks = None
    if ties is not None:
        tie_blocks = dict(_tie_rows(ties, blocks, n_rankings, owner))

    out = []
    for ids, block in blocks:
        k = block.shape[1]
        if k < 2:
            raise ValueError(
                f"The 'rankings' parameter of {owner} needs at least 2 items "
                f"per ranking; ranking {int(ids[0])} has {k}.")
        if block.dtype == object or block.dtype.kind not in "iu":
            raise TypeError(
                f"The 'rankings' parameter of {owner} must hold integer item "
                f"indices; got an array of dtype {block.dtype}.")
        block = block.astype(np.int64, copy=False)
        bad = (block < 0) | (block >= (np.inf if n_items is None
                                       else n_items))
        if bad.any():
            g, j = np.argwhere(bad)[0]
            bound = "" if n_items is None else f" and < {n_items} (n_items)"
            raise ValueError(
                f"The 'rankings' parameter of {owner} must hold item indices "
                f">= 0{bound}; got {int(block[g, j])} at "
                f"rankings[{int(ids[g])}][{int(j)}].")
        _check_distinct_rows(block, "rankings", owner, ids)
        hi, lo = np.triu_indices(k, 1)
        pairs = np.stack([block[:, hi], block[:, lo]], axis=-1)
        if tie_blocks is not None:
            # tied runs form tiers; two items are tied when in one tier
            tier = np.concatenate(
                [np.zeros((block.shape[0], 1), dtype=np.int64),
                 np.cumsum(~tie_blocks[k], axis=1)], axis=1)
            tied = tier[:, hi] == tier[:, lo]
        else:
            tied = np.zeros(pairs.shape[:2], dtype=bool)
        weight = 2.0 / (k * (k - 1)) if normalize else 1.0
        out.append((pairs.reshape(-1, 2), tied.ravel(),
                    np.full(tied.size, weight),
                    np.repeat(ids, hi.shape[0])))
    comparisons, tied, weights, groups = (np.concatenate(part)
                                          for part in zip(*out))
    if len(out) > 1:
        # back to the order of the rankings, pairs of one ranking in order
        order = np.argsort(groups, kind="stable")
        comparisons, tied, weights, groups = (
            comparisons[order], tied[order], weights[order], groups[order])
    if n_items is None:
        n_items = int(comparisons.max()) + 1
    return Comparisons(
        np.ascontiguousarray(comparisons, dtype=np.int64), tied, weights,
        groups, np.zeros(comparisons.shape[0], np.int64), n_items, None)


def _blocks_by_length(values, name, owner):
    """[(ranking ids, 2-d array of those rankings)] with one block per
    ranking length, from a 2-d array or a list of sequences."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim != 2:
            raise ValueError(
                f"The '{name}' parameter of {owner} must be 2-dimensional "
                f"(one row per ranking); got shape {values.shape}.")
        return [(np.arange(values.shape[0]), values)]
    rows = _as_rows(values, name, owner)
    lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)
    blocks = []
    for k in np.unique(lengths):
        ids = np.flatnonzero(lengths == k)
        block = np.array([rows[i] for i in ids])
        if block.ndim != 2:
            block = block.reshape(len(ids), 0)
        blocks.append((ids, block))
    return blocks


def _tie_rows(ties, blocks, n_rankings, owner):
    """(K, tie block aligned with the rankings block of length K)."""
    if isinstance(ties, np.ndarray) and ties.dtype != object:
        if ties.ndim != 2:
            raise ValueError(
                f"The 'ties' parameter of {owner} must be 2-dimensional "
                f"(one row per ranking); got shape {ties.shape}.")
        rows = list(ties)
    else:
        rows = _as_rows(ties, "ties", owner)
    if len(rows) != n_rankings:
        raise ValueError(
            f"The 'ties' parameter of {owner} must have one row per "
            f"ranking ({n_rankings}); got {len(rows)}.")
    for ids, block in blocks:
        k = block.shape[1]
        for i in ids:
            row = np.asarray(rows[i])
            if row.dtype != bool and not (row.size == 0
                                          and row.dtype.kind == "f"):
                raise TypeError(
                    f"The 'ties' parameter of {owner} must hold booleans; "
                    f"row {int(i)} has dtype {row.dtype}.")
            if row.shape != (max(k - 1, 0),):
                raise ValueError(
                    f"The 'ties' parameter of {owner} must have K - 1 = "
                    f"{k - 1} entries for ranking {int(i)}; got shape "
                    f"{row.shape}.")
        yield k, np.array([np.asarray(rows[i], dtype=bool) for i in ids]
                          ).reshape(len(ids), max(k - 1, 0))


def _as_rows(values, name, owner):
    """A list of 1-d arrays from a list of sequences."""
    try:
        rows = [np.asarray(r) for r in values]
    except TypeError:
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a 2-d array or a "
            f"list of sequences; got {type(values).__name__}.") from None
    for i, r in enumerate(rows):
        if r.ndim != 1:
            raise ValueError(
                f"The '{name}' parameter of {owner} must be a list of 1-d "
                f"sequences; row {i} has shape {r.shape}.")
    return rows


# --------------------------------------------------------------------------
# a synthetic world of prompts and responses

# four levels (from worst to best) of each named feature, to describe a
# response in words the way the lecture's four responses are described
_FEATURE_WORDS = {
    "relevance": ("off-topic", "vague", "relevant", "on-point"),
    "safety": ("harmful", "risky", "careful", "safe"),
    "helpfulness": ("unhelpful", "thin", "helpful", "thorough"),
    "honesty": ("misleading", "speculative", "honest", "well-sourced"),
    "conciseness": ("rambling", "wordy", "concise", "crisp"),
    "clarity": ("confusing", "muddled", "clear", "lucid"),
    "politeness": ("rude", "curt", "polite", "warm"),
    "accuracy": ("wrong", "shaky", "accurate", "exact"),
}
_DEFAULT_FEATURES = tuple(_FEATURE_WORDS)


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class World:
    """Prompts, their candidate responses, features and true rewards.

    Attributes
    ----------
    prompts : ndarray of shape (n_prompts,), object
        Prompt texts.
    responses : ndarray of shape (n_responses,), object
        A short description of each response in words, e.g.
        "Relevant, safe answer." (n_responses = n_prompts * n_candidates).
        Given as None (as :func:`make_world` does), it is made from
        ``features`` and ``feature_names`` when first read: a million
        descriptions take seconds, and most uses of a world need none.
    features : ndarray of shape (n_responses, n_features)
        Feature values in [0, 1], higher is better.
    feature_names : tuple of str
    weights : ndarray of shape (n_features,)
        True reward weights.
    rewards : ndarray of shape (n_responses,)
        True rewards, ``features @ weights`` plus any reward noise.
    candidates : ndarray of shape (n_prompts, n_candidates), int64
        Response indices of each prompt (prompt p has responses
        ``p * n_candidates`` to ``(p + 1) * n_candidates - 1``).
    prompt_of_response : ndarray of shape (n_responses,), int64
    pairs : ndarray of shape (n_prompts * C(n_candidates, 2), 2), int64
        Every pair of candidates of the same prompt.

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> world = rlhf.make_world(n_prompts=2, n_candidates=3, random_state=0)
    >>> world.candidates.tolist()
    [[0, 1, 2], [3, 4, 5]]
    >>> world.pairs.tolist()
    [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]]
    >>> bool(np.allclose(world.rewards, world.features @ world.weights))
    True
    """

    prompts: np.ndarray
    responses: Optional[np.ndarray]
    features: np.ndarray
    feature_names: tuple
    weights: np.ndarray
    rewards: np.ndarray
    candidates: np.ndarray

    def __post_init__(self):
        if self.responses is None:
            # no attribute, so that reading it calls __getattr__
            object.__delattr__(self, "responses")

    def __getattr__(self, name):
        # called only when the attribute is missing: the responses not yet
        # described (and any name, while unpickling fills __dict__)
        if name != "responses" or "features" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}")
        responses = _describe(self.features, self.feature_names)
        object.__setattr__(self, "responses", responses)
        return responses

    @property
    def prompt_of_response(self) -> IntArray:
        return np.repeat(np.arange(self.candidates.shape[0]),
                         self.candidates.shape[1])

    @property
    def pairs(self) -> IntArray:
        hi, lo = np.triu_indices(self.candidates.shape[1], 1)
        return np.stack([self.candidates[:, hi], self.candidates[:, lo]],
                        axis=-1).reshape(-1, 2)

    def __repr__(self):
        n_prompts, n_candidates = self.candidates.shape
        weights = np.array2string(self.weights, precision=3, separator=", ")
        return (f"World(n_prompts={n_prompts}, n_candidates={n_candidates}, "
                f"feature_names={self.feature_names}, weights={weights})")


def make_world(n_prompts: int = 1, n_candidates: int = 4, n_features: int = 2,
               *, feature_names: Optional[Sequence[str]] = None,
               weights: Optional[ArrayLike] = None, reward_noise: float = 0.0,
               random_state: RandomState = None) -> "World":
    """A synthetic world like the lecture's, at any size.

    The lecture has one prompt with four responses, each described by two
    features, relevance and safety, in [0, 1] ("Concise answer with
    sources." is ``[1.0, 0.8]``).  This draws ``n_prompts`` prompts with
    ``n_candidates`` responses each, features uniform in [0, 1] and true
    rewards ``features @ weights``: data for which the reward a model
    should recover is known.

    Parameters
    ----------
    n_prompts : int >= 1, default=1
    n_candidates : int >= 2, default=4
        Responses per prompt (the K of a ranking).
    n_features : int >= 1, default=2
        Used when ``feature_names`` is None; the first names are relevance,
        safety, helpfulness, honesty, conciseness, clarity, politeness,
        accuracy, then feature_8, feature_9, ...
    feature_names : sequence of str, default=None
    weights : array-like of shape (n_features,), default=None
        True reward weights; by default drawn uniform in [0.5, 2].
    reward_noise : float >= 0, default=0.0
        Standard deviation of a normal term added to the rewards that the
        features do not explain.
    random_state : None, int or numpy.random.Generator, default=None

    Returns
    -------
    World

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_world(n_prompts=1000, random_state=0)
    >>> world.features.shape, world.candidates.shape
    ((4000, 2), (1000, 4))
    """
    owner = "make_world"
    for name, value, low in (("n_prompts", n_prompts, 1),
                             ("n_candidates", n_candidates, 2),
                             ("n_features", n_features, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(
                value, bool) or value < low:
            raise ValueError(
                f"The '{name}' parameter of {owner} must be an int >= "
                f"{low}. Got {format_value(value)} instead.")
    if feature_names is None:
        feature_names = tuple(
            _DEFAULT_FEATURES[j] if j < len(_DEFAULT_FEATURES)
            else f"feature_{j}" for j in range(n_features))
    else:
        if isinstance(feature_names, str) or not all(
                isinstance(n, str) for n in feature_names):
            raise TypeError(f"The 'feature_names' parameter of {owner} must "
                            "be a sequence of str. Got "
                            f"{format_value(feature_names)} instead.")
        feature_names = tuple(feature_names)
        if len(feature_names) == 0 or len(set(feature_names)) != len(
                feature_names):
            raise ValueError(f"The 'feature_names' parameter of {owner} must "
                             "hold distinct names, at least one. Got "
                             f"{format_value(feature_names)} instead.")
    n_features = len(feature_names)
    reward_noise = _check_real(reward_noise, "reward_noise", owner, 0.0)
    rng = _check_random_state(random_state, owner)
    if weights is None:
        weights = rng.uniform(0.5, 2.0, size=n_features)
    else:
        weights = _as_float_array(weights, "weights")
        if weights.shape != (n_features,):
            raise ValueError(
                f"The 'weights' parameter of {owner} must have shape "
                f"({n_features},), one per feature; got {weights.shape}.")
        _check_finite(weights, "weights")
        weights = weights.copy()
    n_responses = n_prompts * n_candidates
    features = rng.random((n_responses, n_features))
    rewards = np.einsum("ij,j->i", features, weights)  # not BLAS: same bits
    if reward_noise > 0:
        rewards = rewards + reward_noise * rng.standard_normal(n_responses)
    candidates = np.arange(n_responses, dtype=np.int64).reshape(
        n_prompts, n_candidates)
    prompts = np.array([f"Prompt {p}" for p in range(n_prompts)],
                       dtype=object)
    # responses=None: described when first read
    return World(prompts, None, features, feature_names, weights, rewards,
                 candidates)


def _describe(features, names):
    """"Relevant, safe answer." for each row of features: a word for each
    named feature's quarter of [0, 1], or the name and value."""
    n_rows, n_features = features.shape
    words = np.empty(features.shape, dtype=object)
    unnamed = []
    for j, name in enumerate(names):
        levels = _FEATURE_WORDS.get(name)
        if levels is None:
            unnamed.append(j)
            continue
        if j == 0:
            levels = tuple(w[:1].upper() + w[1:] for w in levels)
        quarter = np.minimum((features[:, j] * 4).astype(np.int64), 3)
        words[:, j] = np.array(levels, dtype=object)[quarter]
    if unnamed:
        # the name and the value to one decimal ("%.1f"), taken from a table
        # of the eleven in [0, 1]: formatting each value costs seconds for a
        # million
        labels = [names[j][:1].upper() + names[j][1:] if j == 0 else names[j]
                  for j in unnamed]
        table = np.array([[f"{label} {k / 10:.1f}" for k in range(11)]
                          for label in labels], dtype=object)
        values = features[:, unnamed]
        scaled = values * 10
        tenths = np.rint(scaled)
        # "%.1f" rounds the exact 10 * value to an integer, ties to even;
        # the rounded product gives the same integer unless it lies within
        # rounding error of a half.  Those, and values outside [0, 1]
        # (-0.0, inf and NaN too), are formatted one by one.
        with np.errstate(invalid="ignore"):
            in_table = ((np.abs(np.abs(scaled - tenths) - 0.5) > 1e-9)
                        & ~np.signbit(values) & (values <= 1.0))
        column = np.arange(len(unnamed))
        block = table[column, np.where(in_table, tenths, 0).astype(np.int64)]
        for i, c in zip(*np.nonzero(~in_table)):
            block[i, c] = f"{labels[c]} {float(values[i, c]):.1f}"
        words[:, unnamed] = block
    # one join per row: adding the words column by column copies each
    # description once per feature, quadratic in the number of features
    columns = [words[:, j].tolist() for j in range(n_features)]
    responses = np.empty(n_rows, dtype=object)
    responses[:] = [", ".join(row) + " answer." for row in zip(*columns)]
    return responses
