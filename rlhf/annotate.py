"""You are the annotator: compare two responses, watch the reward model learn.

:class:`AnnotationSession` holds everything an annotation round decides:
the texts, the answers so far, the Bradley-Terry reward model refitted
after each answer (with Laplace error bars), and the next pair to show,
chosen actively (:func:`rlhf.active.select_comparisons`) or at random.
It needs no browser and is what the tests drive.

:func:`annotation_panel` is a thin ipywidgets view over a session: the
prompt, the two responses side by side, four buttons ("A is better",
"Tie", "B is better", "Undo"), the current rewards as bars with error
bars, the count of answers, and an export of the answers to JSON Lines.
ipywidgets is optional (``pip install 'rlhf-lab[notebooks]'``).
"""
import html
import importlib
import numbers
import time
import warnings
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, \
    Tuple, Union

import numpy as np

from ._typing import ArrayLike, FloatArray, IntArray, RandomState
from ._validation import (_is_sparse, check_array, check_option,
                          check_scalar, format_value)
from .active import STRATEGIES, select_comparisons
from .datasets import PreferenceDataset
from .preferences import _check_random_state
from .reward import RewardModel, _check_indices

__all__ = ["AnnotationSession", "RewardRow", "annotation_panel"]

_OWNER = "AnnotationSession"
# what record() accepts, and the answer each means
_CHOICES = {"first": 0, "second": 1, "tie": 2, 0: 0, 1: 1, 2: 2}
# PreferenceDataset.labels' codes of the pair as shown
_LABELS = {0: 1, 1: 2, 2: 0}


class RewardRow(NamedTuple):
    """One row of :meth:`AnnotationSession.reward_table`.

    Examples
    --------
    >>> from rlhf.annotate import RewardRow
    >>> RewardRow(3, "Paris.", 0.5, 0.25, "A").side
    'A'
    """

    item: int
    """Index of the text."""
    text: str
    """The text."""
    reward: float
    """Its current reward (0 before any answer: the prior's mean)."""
    std: float
    """Its Laplace standard error."""
    side: str
    """'A' or 'B' when the text is on screen, '' otherwise."""


def _check_texts(values: Any, name: str, owner: str) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"The '{name}' parameter of {owner} must be a "
                        "sequence of str, not a single string.")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"The '{name}' parameter of {owner} must be a "
                        f"sequence of str. Got {format_value(values)} "
                        "instead.") from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"The '{name}' parameter of {owner} must hold "
                            f"str; element {i} is a "
                            f"{type(text).__name__}.")
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


class AnnotationSession:
    """An annotation round: pairs of texts, a person's answers, and the
    reward model refitted after each answer.

    The model is the pairwise Bradley-Terry reward model, ``P(a preferred
    to b) = sigmoid(r(a) - r(b))`` (Bradley & Terry 1952), fitted by
    :class:`rlhf.RewardModel` to every answer so far; a tie counts as half
    a win each way (or follows the model's ``ties`` setting).  The error
    bars are its Laplace standard errors (MacKay 1992,
    :meth:`rlhf.RewardModel.reward_std`).  Before the first answer the
    rewards are 0 with the prior's standard error, ``sqrt(C) * ||f||``
    (``sqrt(C)`` for free strengths).  The next pair is the candidate that
    :func:`rlhf.active.select_comparisons` picks for the fitted model
    (before the first answer: for the prior), among the candidates not
    answered yet; only once every candidate has an answer are pairs shown
    again.  Which text of the pair is shown first (as "A")
    is random, so that a habit of preferring one side does not become a
    preference for one text.

    Parameters
    ----------
    texts : sequence of str of length n_texts
        What the person reads: responses.  Within one prompt they must be
        distinct.
    features : array-like or scipy.sparse matrix of shape \
(n_texts, n_features), default=None
        The reward model's features of each text, ``r = features @ w``.
        None (the default) fits one free strength per text: with a few
        dozen texts that is the model with the fewest assumptions, the
        fastest to refit, and its error bars are those of each text.
        Features shared between texts (for instance
        ``rlhf.text.hash_ngrams(texts, n_features=256)``) let an answer
        move the rewards of texts never shown, and are needed to score new
        texts; keep their columns to a few hundred (the error bars invert
        a Hessian with one row per column, and are not available beyond
        4000).
    prompts : str or sequence of str of length n_texts, default=None
        The prompt each text answers (shown above the pair); a single
        string for all.  Only texts of the same prompt are compared.
    model : rlhf.RewardModel, default=None
        Its parameters are those of every refit (the object itself is not
        fitted).  None: ``RewardModel(C=1.0)``, whose L2 penalty keeps the
        rewards finite before the answers reach every text and with
        one-sided answers.  Pairwise only (``likelihood='bradley-terry'``).
    candidates : array-like of int of shape (n_candidates, 2), default=None
        The pairs that may be shown, as indices into ``texts``.  None: every
        pair of texts with the same prompt.
    strategy : {"information", "uncertainty", "random"}, \
default="information"
        Passed to :func:`rlhf.active.select_comparisons`: the pair of
        largest expected information about the rewards (MacKay 1992), the
        one whose answer the model is least sure of, or one at random.
    random_state : None, int or numpy.random.Generator, default=None
        Drives the random choices (sides, random pairs, and the
        ``random_state`` given to ``select_comparisons``).

    Attributes
    ----------
    texts : ndarray of shape (n_texts,), object
    prompts : ndarray of shape (n_prompts,), object
        The distinct prompts, in order of first appearance.
    text_prompt : ndarray of shape (n_texts,), int64
        Index into ``prompts`` of each text's prompt.
    candidates : ndarray of shape (n_candidates, 2), int64
    model_ : rlhf.RewardModel or None
        The model fitted to the answers so far; None before the first.
    fit_messages_ : list of str
        The warnings of the last refit (for instance a fit that did not
        converge), and why error bars are missing if they are.
    refit_seconds_ : float
        Wall time of the last refit, the error bars included.

    Notes
    -----
    The session keeps copies of ``texts``, ``features`` and
    ``candidates``, never the caller's arrays.  Every answer keeps the
    state before it, so :meth:`undo` restores it exactly (the model, the
    rewards, the pair on screen and the random generator).

    Examples
    --------
    Three answers to one question, the person preferring the correct one:

    >>> from rlhf.annotate import AnnotationSession
    >>> session = AnnotationSession(
    ...     ["Paris.", "Lyon.", "I am not sure."],
    ...     prompts="What is the capital of France?",
    ...     strategy="random", random_state=0)
    >>> for _ in range(3):
    ...     a, b = session.next_pair()
    ...     choice = "tie" if 0 not in (a, b) else (
    ...         "first" if a == 0 else "second")
    ...     session.record(choice)
    >>> session.n_answers, int(session.ties.sum())
    (3, 1)
    >>> session.rewards().round(2)
    array([ 0.59, -0.29, -0.29])
    >>> session.reward_std().round(2)
    array([0.86, 0.85, 0.85])
    """

    def __init__(self, texts: Sequence[str], features: Any = None, *,
                 prompts: Union[str, Sequence[str], None] = None,
                 model: Optional[RewardModel] = None,
                 candidates: Optional[ArrayLike] = None,
                 strategy: str = "information",
                 random_state: RandomState = None) -> None:
        self.texts = _check_texts(texts, "texts", _OWNER)
        n = len(self.texts)
        if n < 2:
            raise ValueError(f"The 'texts' parameter of {_OWNER} must hold "
                             f"at least 2 texts. Got {n} instead.")
        self.prompts, self.text_prompt = self._check_prompts(prompts, n)
        self._check_distinct()
        self._features = self._check_features(features, n)
        if model is None:
            model = RewardModel(C=1.0)
        if not isinstance(model, RewardModel):
            raise TypeError(f"The 'model' parameter of {_OWNER} must be an "
                            "rlhf.RewardModel or None. Got "
                            f"{type(model).__name__} instead.")
        model._validate_params()
        if model.likelihood != "bradley-terry":
            raise ValueError(f"The 'model' parameter of {_OWNER} must be "
                             "pairwise: likelihood='bradley-terry'. Got "
                             f"{model.likelihood!r} instead.")
        self._model_params = model.get_params()
        self.candidates = self._check_candidates(candidates)
        check_option(strategy, "strategy", _OWNER, list(STRATEGIES))
        self.strategy = strategy
        self.random_state = _check_random_state(random_state, _OWNER)
        # the answers: pairs as shown, and what was answered (0 first,
        # 1 second, 2 tie)
        self._shown: List[Tuple[int, int]] = []
        self._answers: List[int] = []
        self._history: List[tuple] = []
        self._current: Optional[Tuple[int, int]] = None
        self.model_: Optional[RewardModel] = None
        self.fit_messages_: List[str] = []
        self.refit_seconds_ = 0.0
        self._rewards = np.zeros(n)
        self._std = self._prior_std()

    # -- checks ------------------------------------------------------------

    @staticmethod
    def _check_prompts(prompts, n):
        if prompts is None or isinstance(prompts, str):
            per_text = np.empty(n, dtype=object)
            per_text[:] = "" if prompts is None else prompts
        else:
            per_text = _check_texts(prompts, "prompts", _OWNER)
            if len(per_text) != n:
                raise ValueError(
                    f"The 'prompts' parameter of {_OWNER} must be a str or "
                    f"hold one prompt per text ({n}). Got {len(per_text)} "
                    "prompts instead.")
        index: dict = {}
        text_prompt = np.array([index.setdefault(p, len(index))
                                for p in per_text], dtype=np.int64)
        distinct = np.empty(len(index), dtype=object)
        distinct[:] = list(index)
        return distinct, text_prompt

    def _check_distinct(self):
        seen: dict = {}
        for i, (p, text) in enumerate(zip(self.text_prompt.tolist(),
                                          self.texts)):
            j = seen.setdefault((p, text), i)
            if j != i:
                raise ValueError(
                    f"The 'texts' parameter of {_OWNER} must hold distinct "
                    f"texts for each prompt; texts {j} and {i} are the same "
                    f"answer to the same prompt: {text[:60]!r}.")

    @staticmethod
    def _check_features(features, n):
        if features is None:
            return None
        F = check_array(features, "features")
        if F.shape[0] != n:
            raise ValueError(
                f"The 'features' parameter of {_OWNER} must have one row per "
                f"text ({n}). Got {F.shape[0]} rows instead.")
        return F.copy()

    def _check_candidates(self, candidates):
        n = len(self.texts)
        if candidates is None:
            i, j = np.triu_indices(n, k=1)
            same = self.text_prompt[i] == self.text_prompt[j]
            pairs = np.stack([i[same], j[same]], axis=1).astype(np.int64)
            if not len(pairs):
                raise ValueError(
                    f"{_OWNER} compares texts of the same prompt, and no "
                    "prompt has two texts; give at least two texts for one "
                    "prompt.")
            return pairs
        try:
            pairs = _check_indices(candidates, "candidates", n_columns=2)
        except (TypeError, ValueError) as error:
            raise type(error)(f"The 'candidates' parameter of {_OWNER}: "
                              f"{error}") from None
        pairs = pairs.copy()
        bad = np.flatnonzero((pairs >= n).any(axis=1))
        if bad.size:
            raise ValueError(
                f"The 'candidates' parameter of {_OWNER} must hold indices "
                f"into texts, below {n}; row {bad[0]} is "
                f"{pairs[bad[0]].tolist()}.")
        bad = np.flatnonzero(pairs[:, 0] == pairs[:, 1])
        if bad.size:
            raise ValueError(
                f"The 'candidates' parameter of {_OWNER} must pair two "
                f"different texts; row {bad[0]} is "
                f"{pairs[bad[0]].tolist()}.")
        bad = np.flatnonzero(self.text_prompt[pairs[:, 0]] !=
                             self.text_prompt[pairs[:, 1]])
        if bad.size:
            raise ValueError(
                f"The 'candidates' parameter of {_OWNER} must pair texts of "
                f"the same prompt; row {bad[0]}, {pairs[bad[0]].tolist()}, "
                "pairs answers to different prompts.")
        return pairs

    # -- the state ---------------------------------------------------------

    @property
    def n_answers(self) -> int:
        """Number of answers recorded."""
        return len(self._answers)

    @property
    def can_undo(self) -> bool:
        """Whether there is an answer to undo."""
        return bool(self._answers)

    @property
    def all_answered(self) -> bool:
        """Whether every candidate pair has an answer (pairs are then shown
        again)."""
        return not self._unanswered().any()

    @property
    def shown(self) -> IntArray:
        """The answered pairs as shown, (A, B): ndarray of shape
        (n_answers, 2), int64."""
        return np.array(self._shown, dtype=np.int64).reshape(-1, 2)

    @property
    def comparisons(self) -> IntArray:
        """The answers as the reward model reads them: ndarray of shape
        (n_answers, 2), int64, the preferred text first (for a tie, the
        order shown)."""
        pairs = self.shown
        second = np.array(self._answers, dtype=np.int64) == 1
        return np.where(second[:, None], pairs[:, ::-1], pairs)

    @property
    def ties(self) -> np.ndarray:
        """ndarray of shape (n_answers,), bool: True where the answer was a
        tie."""
        return np.array(self._answers, dtype=np.int64) == 2

    def rewards(self) -> FloatArray:
        """The current rewards of the texts: ndarray of shape (n_texts,)."""
        return self._rewards.copy()

    def reward_std(self) -> FloatArray:
        """Their Laplace standard errors: ndarray of shape (n_texts,)
        (infinite where the model has no error bars; see
        ``fit_messages_``)."""
        return self._std.copy()

    def prompt_of(self, item: int) -> str:
        """The prompt of text ``item``."""
        return str(self.prompts[self.text_prompt[item]])

    # -- choosing the next pair --------------------------------------------

    def _unanswered(self) -> np.ndarray:
        """Mask over the candidates of the pairs without an answer, in
        either order."""
        if not self._shown:
            return np.ones(len(self.candidates), dtype=bool)
        n = len(self.texts)
        shown = self.shown
        answered = np.minimum(shown[:, 0], shown[:, 1]) * n + np.maximum(
            shown[:, 0], shown[:, 1])
        c = self.candidates
        keys = np.minimum(c[:, 0], c[:, 1]) * n + np.maximum(c[:, 0], c[:, 1])
        return ~np.isin(keys, answered)

    def next_pair(self) -> Tuple[int, int]:
        """The pair to show, (A, B) as indices into ``texts``.

        The same pair until it is answered (:meth:`record`) or an answer
        is undone (then the undone pair comes back).  Chosen among the
        candidates without an answer (all of them once each has one), the
        pool: ``rlhf.active.select_comparisons(model, pool, n=1,
        features=features, strategy=strategy, random_state=random_state)``
        with ``model_``, or before the first answer the unfitted model
        (its prior).  Where that fails (a model without a penalty has no
        prior; the reason goes to ``fit_messages_``), the pair is drawn
        uniformly.  The sides are then
        swapped with probability 1/2.
        """
        if self._current is None:
            unanswered = self._unanswered()
            pool = self.candidates[unanswered] if unanswered.any() \
                else self.candidates
            k = self._pick(pool)
            a, b = (int(v) for v in pool[k])
            if self.random_state.random() < 0.5:
                a, b = b, a
            self._current = (a, b)
        return self._current

    def _pick(self, pool: IntArray) -> int:
        """Index into pool of the next pair."""
        rng = self.random_state
        model = self.model_ if self.model_ is not None else self._new_model()
        try:
            picked = select_comparisons(
                model, pool, n=1, features=self._features,
                strategy=self.strategy, random_state=rng)
        except ValueError as error:
            # no posterior to choose by: a model without a penalty before
            # its first answers, or with a singular Hessian
            self.fit_messages_ = self.fit_messages_ + [
                f"Chose the pair at random: {error}"]
            return int(rng.integers(len(pool)))
        return int(np.asarray(picked).reshape(-1)[0])

    # -- answers -----------------------------------------------------------

    def record(self, choice: Union[str, int]) -> None:
        """Record the answer for the pair on screen and refit the model.

        Parameters
        ----------
        choice : {"first", "second", "tie"} or {0, 1, 2}
            Which text of :meth:`next_pair`'s (A, B) is better: "first"
            (0) for A, "second" (1) for B, "tie" (2) for neither.
        """
        key = choice.lower() if isinstance(choice, str) else choice
        if isinstance(choice, bool) or not isinstance(
                choice, (str, numbers.Integral)) or key not in _CHOICES:
            raise ValueError(
                f"The 'choice' parameter of {_OWNER}.record must be one of "
                "'first', 'second', 'tie', 0, 1, 2. Got "
                f"{format_value(choice)} instead.")
        pair = self.next_pair()
        self._history.append((self.model_, self._rewards, self._std,
                              self.fit_messages_, self.refit_seconds_, pair,
                              self.random_state.bit_generator.state))
        self._shown.append(pair)
        self._answers.append(_CHOICES[key])
        self._current = None
        try:
            self._refit()
        except BaseException:
            # the answer is not kept unless the model could take it (a
            # Ctrl-C during the refit included): the session is as before
            self.undo()
            raise

    def undo(self) -> None:
        """Take back the last answer: the session is as it was before it
        (the model, the rewards and the pair on screen, which is the
        undone one again).

        Raises
        ------
        ValueError
            When there is no answer to undo.
        """
        if not self._answers:
            raise ValueError("There is no answer to undo.")
        (self.model_, self._rewards, self._std, self.fit_messages_,
         self.refit_seconds_, self._current,
         self.random_state.bit_generator.state) = self._history.pop()
        self._shown.pop()
        self._answers.pop()

    def _new_model(self) -> RewardModel:
        return RewardModel(**self._model_params)

    def _prior_std(self) -> FloatArray:
        """The standard errors before any answer: the prior's, sqrt(C)
        times each feature row's norm."""
        alpha = self._new_model()._alpha()
        if self._features is None:
            sq = np.ones(len(self.texts))
        elif _is_sparse(self._features):
            sq = np.asarray(self._features.multiply(
                self._features).sum(axis=1)).ravel()
        else:
            sq = np.einsum("ij,ij->i", self._features, self._features)
        if alpha == 0.0:
            return np.where(sq > 0, np.inf, 0.0)
        return np.sqrt(sq / alpha)

    def _refit(self) -> None:
        start = time.perf_counter()
        model = self._new_model()
        messages = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self._features is None:
                model.fit(None, self.comparisons, ties=self.ties,
                          n_items=len(self.texts))
            else:
                model.fit(self._features, self.comparisons, ties=self.ties)
        messages += [str(w.message) for w in caught]
        rewards = model.predict(self._features)
        try:
            std = model.reward_std(self._features)
        except ValueError as error:  # a singular Hessian (no penalty)
            std = np.full(len(self.texts), np.inf)
            messages.append(f"No error bars: {error}")
        self.model_ = model
        self._rewards, self._std = rewards, std
        self.fit_messages_ = messages
        self.refit_seconds_ = time.perf_counter() - start

    # -- what to show ------------------------------------------------------

    def reward_table(self, max_rows: int = 8) -> List[RewardRow]:
        """The rewards to show next to the pair on screen.

        The texts of the current pair's prompt, best first, at most
        ``max_rows`` of them (the two on screen always among them).

        Returns
        -------
        list of RewardRow
        """
        check_scalar(max_rows, "max_rows", f"{_OWNER}.reward_table",
                     kind="int", low=2)
        a, b = self.next_pair()
        same = np.flatnonzero(self.text_prompt == self.text_prompt[a])
        order = same[np.argsort(-self._rewards[same], kind="stable")]
        keep = [int(i) for i in order[:max_rows]]
        for item in (a, b):
            if item not in keep:
                drop = next(i for i in reversed(keep) if i not in (a, b))
                keep.remove(drop)
                keep.append(item)
        keep.sort(key=lambda i: -self._rewards[i])
        side = {a: "A", b: "B"}
        return [RewardRow(i, str(self.texts[i]), float(self._rewards[i]),
                          float(self._std[i]), side.get(i, ""))
                for i in keep]

    # -- export ------------------------------------------------------------

    def to_dataset(self, name: str = "annotations") -> PreferenceDataset:
        """The answers as an :class:`rlhf.datasets.PreferenceDataset`.

        Its ``texts``, ``prompts`` and ``text_prompt`` are the session's
        (so indices keep their meaning), ``comparisons`` and ``ties`` the
        answers, ``pairs`` the pairs as shown and ``labels`` one column of
        the person's labels of them (1 = A better, 2 = B better, 0 = tie).
        """
        pairs = self.shown
        comparisons = self.comparisons
        labels = np.array([_LABELS[c] for c in self._answers],
                          dtype=np.int64).reshape(-1, 1)
        return PreferenceDataset(
            self.texts.copy(), self.prompts.copy(), self.text_prompt.copy(),
            comparisons, self.ties, self.text_prompt[comparisons[:, 0]],
            pairs, labels, {}, str(name))

    def to_jsonl(self, path: Any, *, include_ties: bool = True) -> int:
        """Write the answers as ``{"prompt", "chosen", "rejected"}`` JSON
        Lines (:meth:`rlhf.datasets.PreferenceDataset.to_jsonl`; a tie
        carries ``"tie": true``).  :func:`rlhf.datasets.
        load_preference_jsonl` reads the file back.

        Returns
        -------
        int
            Number of records written.

        Raises
        ------
        ValueError
            When there is no answer to write yet.
        """
        if not self._answers:
            raise ValueError("There are no answers to write yet.")
        return self.to_dataset().to_jsonl(path, include_ties=include_ties)

    def __repr__(self) -> str:
        return (f"{_OWNER}(n_texts={len(self.texts)}, n_prompts="
                f"{len(self.prompts)}, n_candidates={len(self.candidates)}, "
                f"n_answers={self.n_answers}, strategy={self.strategy!r})")


# --------------------------------------------------------------------------
# the widget


def _import_widgets() -> Any:
    try:
        return importlib.import_module("ipywidgets")
    except ImportError:
        raise ImportError(
            "annotation_panel needs ipywidgets: pip install "
            "'rlhf-lab[notebooks]' (or pip install ipywidgets).") from None


def _short(text: str, length: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[:length - 1] + "\u2026"


def _reward_bars_html(rows: Sequence[RewardRow]) -> str:
    """An HTML table of rewards as bars from zero, with +-1 standard error
    whiskers, in fonts large enough for a projector."""
    finite = [abs(r.reward) + (r.std if np.isfinite(r.std) else 0.0)
              for r in rows]
    scale = max(finite + [1e-12])
    lines = ['<table style="border-collapse:collapse;font-size:18px;'
             'width:100%">',
             '<tr><th style="text-align:left;padding:2px 8px">text</th>'
             '<th style="text-align:right;padding:2px 8px">reward</th>'
             '<th style="padding:2px 8px;width:45%;font-weight:normal">'
             'bar: reward, whisker: \u00b1 1 std. error</th></tr>']
    for row in rows:
        def x(value: float) -> float:  # percent of the cell, 0 in the middle
            return 50.0 + 48.0 * max(-1.0, min(1.0, value / scale))
        low, high = sorted((x(0.0), x(row.reward)))
        colour = "#2a7ab0" if row.reward >= 0 else "#c0504d"
        if np.isfinite(row.std):
            w_low, w_high = x(row.reward - row.std), x(row.reward + row.std)
            std_text = f"{row.std:.2f}"
        else:
            w_low, w_high, std_text = 2.0, 98.0, "\u221e"
        mark = (f'<b style="color:#fff;background:#444;padding:0 6px;'
                f'border-radius:4px">{row.side}</b> ' if row.side else "")
        lines.append(
            '<tr style="border-top:1px solid #ddd">'
            f'<td style="padding:4px 8px;white-space:nowrap">{mark}'
            f'<span style="color:#666">#{row.item}</span> '
            f'{html.escape(_short(row.text, 56))}</td>'
            f'<td style="padding:4px 8px;text-align:right;white-space:nowrap;'
            f'font-family:monospace">{row.reward:+.2f} \u00b1 {std_text}</td>'
            '<td style="padding:4px 8px"><div style="position:relative;'
            'height:22px">'
            '<div style="position:absolute;left:50%;top:0;bottom:0;'
            'border-left:1px solid #888"></div>'
            f'<div style="position:absolute;left:{low:.1f}%;'
            f'width:{high - low:.1f}%;top:4px;height:14px;'
            f'background:{colour}"></div>'
            f'<div style="position:absolute;left:{w_low:.1f}%;'
            f'width:{w_high - w_low:.1f}%;top:10px;height:0;'
            'border-top:2px solid #222"></div>'
            f'<div style="position:absolute;left:{w_low:.1f}%;top:5px;'
            'height:12px;border-left:2px solid #222"></div>'
            f'<div style="position:absolute;left:{w_high:.1f}%;top:5px;'
            'height:12px;border-left:2px solid #222"></div>'
            '</div></td></tr>')
    lines.append("</table>")
    return "".join(lines)


def annotation_panel(session: AnnotationSession, *,
                     path: str = "annotations.jsonl",
                     max_rows: int = 8) -> Any:
    """An ipywidgets panel to annotate with: you are the annotator.

    It shows the prompt and the two responses of ``session.next_pair()``
    side by side, the buttons "A is better", "Tie", "B is better" and
    "Undo", the current rewards of the prompt's texts as bars with
    +-1 standard error whiskers (:meth:`AnnotationSession.reward_table`),
    the number of answers, and a path field with an "Export" button that
    writes the answers as JSON Lines (:meth:`AnnotationSession.to_jsonl`).
    Each click records the answer in the session (which refits the reward
    model) and redraws; every decision is the session's.

    Parameters
    ----------
    session : AnnotationSession
    path : str, default="annotations.jsonl"
        The export path the field starts with.
    max_rows : int, default=8
        Rows of the reward table.

    Returns
    -------
    ipywidgets.VBox
        Display it as the last expression of a notebook cell.

    Raises
    ------
    ImportError
        Without ipywidgets (``pip install 'rlhf-lab[notebooks]'``).

    Examples
    --------
    >>> from rlhf.annotate import AnnotationSession, annotation_panel
    >>> session = AnnotationSession(["Paris.", "Lyon."], prompts="Capital?",
    ...                             random_state=0)
    >>> panel = annotation_panel(session)  # doctest: +SKIP
    >>> panel  # doctest: +SKIP
    """
    if not isinstance(session, AnnotationSession):
        raise TypeError("The 'session' parameter of annotation_panel must be "
                        "an AnnotationSession. Got "
                        f"{type(session).__name__} instead.")
    if not isinstance(path, str):
        raise TypeError("The 'path' parameter of annotation_panel must be a "
                        f"str. Got {format_value(path)} instead.")
    check_scalar(max_rows, "max_rows", "annotation_panel", kind="int", low=2)
    w = _import_widgets()

    text_box = ("border:2px solid {c};border-radius:8px;padding:12px;"
                "font-size:18px;line-height:1.45;white-space:pre-wrap;"
                "min-height:120px")
    prompt = w.HTML()
    count = w.HTML()
    response_a = w.HTML(layout=w.Layout(width="50%"))
    response_b = w.HTML(layout=w.Layout(width="50%"))
    big = dict(layout=w.Layout(height="52px", width="190px"))
    button_a = w.Button(description="A is better", button_style="primary",
                        **big)
    button_tie = w.Button(description="Tie", **big)
    button_b = w.Button(description="B is better", button_style="primary",
                        **big)
    button_undo = w.Button(description="Undo", button_style="warning",
                           **big)
    for button in (button_a, button_tie, button_b, button_undo):
        button.style.font_size = "18px"
        button.style.font_weight = "bold"
    bars = w.HTML()
    message = w.HTML()
    path_label = w.HTML('<span style="font-size:18px">Export to</span>')
    path_field = w.Text(value=path, layout=w.Layout(width="420px",
                                                    height="40px"),
                        style={"font_size": "18px"})
    button_export = w.Button(description="Export", icon="download",
                             layout=w.Layout(height="40px", width="130px"))
    button_export.style.font_size = "18px"
    export_status = w.HTML()

    def redraw(note: str = "") -> None:
        a, b = session.next_pair()
        prompt.value = (
            '<div style="font-size:22px;font-weight:bold;line-height:1.35;'
            f'margin:4px 0">{html.escape(session.prompt_of(a))}</div>')
        again = (" (every pair has an answer; showing pairs again)"
                 if session.all_answered else "")
        count.value = (f'<div style="font-size:18px">Answers: <b>'
                       f'{session.n_answers}</b>{again}</div>')
        for widget, label, item, colour in ((response_a, "A", a, "#2a7ab0"),
                                            (response_b, "B", b, "#8a5db0")):
            widget.value = (
                f'<div style="{text_box.format(c=colour)}"><b style="color:'
                f'{colour}">{label}</b> <span style="color:#666">#{item}</span>\n'
                f'{html.escape(str(session.texts[item]))}'
                '</div>')
        button_undo.disabled = not session.can_undo
        bars.value = _reward_bars_html(session.reward_table(max_rows))
        notes = [note] if note else []
        notes += session.fit_messages_
        if session.n_answers:
            notes.append(f"refit in {1000 * session.refit_seconds_:.1f} ms")
        message.value = ('<div style="font-size:14px;color:#555">'
                         + "<br>".join(html.escape(n) for n in notes)
                         + "</div>")

    def answer(choice: str) -> Callable[[Any], None]:
        def on_click(_: Any) -> None:
            try:
                session.record(choice)
            except Exception as error:  # shown, not lost in a callback
                redraw(f"Not recorded: {error}")
                return
            redraw()
        return on_click

    def on_undo(_: Any) -> None:
        if session.can_undo:
            session.undo()
        redraw()

    def on_export(_: Any) -> None:
        try:
            n = session.to_jsonl(path_field.value)
        except (OSError, ValueError) as error:
            export_status.value = (f'<span style="color:#c0504d">'
                                   f'{html.escape(str(error))}</span>')
            return
        export_status.value = (f'<span style="font-size:18px">Wrote {n} '
                               f"answers to {html.escape(path_field.value)}."
                               "</span>")

    button_a.on_click(answer("first"))
    button_tie.on_click(answer("tie"))
    button_b.on_click(answer("second"))
    button_undo.on_click(on_undo)
    button_export.on_click(on_export)
    redraw()
    return w.VBox([
        prompt,
        w.HBox([response_a, response_b],
               layout=w.Layout(width="100%", grid_gap="12px")),
        w.HBox([button_a, button_tie, button_b, button_undo],
               layout=w.Layout(margin="8px 0", grid_gap="10px")),
        count,
        bars,
        message,
        w.HBox([path_label, path_field, button_export, export_status],
               layout=w.Layout(grid_gap="10px", align_items="center")),
    ], layout=w.Layout(width="100%", max_width="1300px"))
