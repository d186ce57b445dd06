"""A small world of questions, answers and a simulated human judge.

InstructGPT's three steps (Ouyang et al. 2022) need data a laptop can
learn from in minutes, and a "human" whose judgement can be asked for as
often as wanted and read off exactly afterwards.  :func:`make_assistant_world`
makes both for a tiny byte-level language model (``rlhf.TinyLM``, 64 bytes
of context including an end-of-text token at each end):

- ``prompts``: short lowercase questions ("capital of france?", "2 + 3?",
  "opposite of hot?") from a built-in table of 60 facts;
- ``sft_prompts``, ``sft_responses``: a supervised fine-tuning corpus of
  answers in a mix of styles -- correct and polite, correct and terse,
  wrong, rambling, rude, and a share with a forbidden word -- whose mean
  gold reward is mediocre, so that RL has room to improve on it;
- :meth:`AssistantWorld.gold_reward`: the hidden human judgement, a
  documented rule (:data:`GOLD_RULE`, :meth:`AssistantWorld.gold_terms`);
- :meth:`AssistantWorld.cost`: forbidden words used, the safety
  constraint;
- :meth:`AssistantWorld.features`: hashed word features, the view of a
  linear proxy reward model;
- :meth:`AssistantWorld.annotate`: simulated annotators, Bradley-Terry on
  the gold reward, giving what ``rlhf.RewardModel.fit`` takes.

A document is ``[eot] + prompt + response + [eot]``; every response starts
with a space, so that ``prompt + response`` reads as one line
("capital of france? paris. glad to help!").  Prompts have at most
:data:`MAX_PROMPT_BYTES` bytes and corpus responses at most
:data:`MAX_RESPONSE_BYTES`, so a document fits in 64 tokens.

The gold rule rewards a correct answer once and politeness once, but the
proxy is linear in word counts: a policy that repeats "glad to help" or the
answer raises the proxy while the gold reward, which charges for length
and repeated words, falls -- over-optimisation of a proxy reward (Gao et
al. 2023, "Scaling laws for reward model overoptimization") that a
notebook can watch happen.
"""
import dataclasses
import re
import types
from collections.abc import Mapping, Set
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._typing import FloatArray, RandomState
from ._validation import check_scalar, format_value
from .preferences import (Comparisons, _check_random_state,
                          simulate_preferences)
from .text import hash_ngrams

__all__ = [
    "AssistantWorld",
    "GOLD_RULE",
    "MAX_PROMPT_BYTES",
    "MAX_RESPONSE_BYTES",
    "STYLES",
    "make_assistant_world",
]

MAX_PROMPT_BYTES = 24
"""Prompts have at most this many bytes."""
# with the two end-of-text tokens, 24 + 36 + 2 = 62 <= 64
MAX_RESPONSE_BYTES = 36
"""Responses of the SFT corpus have at most this many bytes."""

# --------------------------------------------------------------------------
# the knowledge table: (question, accepted answers -- the first is the one
# the corpus writes --, kind).  A wrong answer is another answer of the
# same kind.

_FACTS = (
    ("capital of france?", ("paris",), "capital"),
    ("capital of italy?", ("rome",), "capital"),
    ("capital of japan?", ("tokyo",), "capital"),
    ("capital of spain?", ("madrid",), "capital"),
    ("capital of germany?", ("berlin",), "capital"),
    ("capital of egypt?", ("cairo",), "capital"),
    ("capital of peru?", ("lima",), "capital"),
    ("capital of kenya?", ("nairobi",), "capital"),
    ("capital of canada?", ("ottawa",), "capital"),
    ("capital of china?", ("beijing",), "capital"),
    ("colour of the sky?", ("blue",), "colour"),
    ("colour of grass?", ("green",), "colour"),
    ("colour of snow?", ("white",), "colour"),
    ("colour of coal?", ("black",), "colour"),
    ("colour of a banana?", ("yellow",), "colour"),
    ("colour of blood?", ("red",), "colour"),
    ("colour of a carrot?", ("orange",), "colour"),
    ("2 + 3?", ("5", "five"), "number"),
    ("2 + 2?", ("4", "four"), "number"),
    ("3 + 4?", ("7", "seven"), "number"),
    ("5 + 4?", ("9", "nine"), "number"),
    ("6 - 2?", ("4", "four"), "number"),
    ("2 * 3?", ("6", "six"), "number"),
    ("10 - 3?", ("7", "seven"), "number"),
    ("4 + 4?", ("8", "eight"), "number"),
    ("legs on a spider?", ("8", "eight"), "number"),
    ("legs on a dog?", ("4", "four"), "number"),
    ("days in a week?", ("7", "seven"), "number"),
    ("months in a year?", ("12", "twelve"), "number"),
    ("hours in a day?", ("24",), "number"),
    ("sides of a triangle?", ("3", "three"), "number"),
    ("wheels on a bicycle?", ("2", "two"), "number"),
    ("opposite of hot?", ("cold",), "opposite"),
    ("opposite of up?", ("down",), "opposite"),
    ("opposite of big?", ("small", "little"), "opposite"),
    ("opposite of day?", ("night",), "opposite"),
    ("opposite of fast?", ("slow",), "opposite"),
    ("opposite of wet?", ("dry",), "opposite"),
    ("opposite of old?", ("new", "young"), "opposite"),
    ("opposite of full?", ("empty",), "opposite"),
    ("opposite of hard?", ("soft",), "opposite"),
    ("a baby cat is a?", ("kitten",), "animal"),
    ("a baby dog is a?", ("puppy",), "animal"),
    ("animal that says moo?", ("cow",), "animal"),
    ("animal that barks?", ("dog",), "animal"),
    ("animal that says baa?", ("sheep",), "animal"),
    ("largest land animal?", ("elephant",), "animal"),
    ("largest planet?", ("jupiter",), "space"),
    ("the red planet?", ("mars",), "space"),
    ("planet we live on?", ("earth",), "space"),
    ("planet closest to sun?", ("mercury",), "space"),
    ("star nearest to earth?", ("sun",), "space"),
    ("plural of mouse?", ("mice",), "plural"),
    ("plural of child?", ("children",), "plural"),
    ("plural of foot?", ("feet",), "plural"),
    ("plural of tooth?", ("teeth",), "plural"),
    ("plural of goose?", ("geese",), "plural"),
    ("frozen water is?", ("ice",), "stuff"),
    ("bees make?", ("honey",), "stuff"),
    ("cows give us?", ("milk",), "stuff"),
)

_FACT_INDEX = {question: i for i, (question, _, _) in enumerate(_FACTS)}
# every accepted answer of each kind
_KIND_ANSWERS: Dict[str, set] = {}
for _question, _answers, _kind in _FACTS:
    _KIND_ANSWERS.setdefault(_kind, set()).update(_answers)

# --------------------------------------------------------------------------
# the gold rule

# words: runs of ASCII letters and digits, lowercased; anything else
# (punctuation, U+FFFD, other scripts) separates words
_WORD = re.compile(r"[a-z0-9]+", re.ASCII)
_POLITE = ("please", "thank", "thanks", "glad to help", "happy to help")
_RUDE = ("ugh", "duh", "obviously", "whatever", "look it up",
         "everyone knows")
_FORBIDDEN = ("darn", "stupid", "dumb", "shut up")

GOLD_RULE = types.MappingProxyType({
    "correct": 2.0,      # once, if an accepted answer is among the words
    "wrong": -1.0,       # per distinct other answer of the fact's kind
    "polite": 1.0,       # once, for any of _POLITE
    "rude": -1.5,        # once, for any of _RUDE
    "forbidden": -2.0,   # per occurrence of a forbidden word
    "length": -0.25,     # per word beyond comfortable_words
    "repetition": -0.5,  # per word that repeats an earlier one
    "empty": -1.0,       # once, for a response without a word
    "comfortable_words": 6,
})
"""The gold reward's weights, read-only; see ``AssistantWorld.gold_terms``."""

STYLES = ("polite", "terse", "wrong", "rambling", "rude", "forbidden")
"""The styles of the SFT corpus, in the order of ``style_shares``."""

_DEFAULT_SHARES = (0.15, 0.20, 0.20, 0.15, 0.15, 0.15)

# {a}: the answer; {w}, {w2}: two different wrong answers of its kind
_TEMPLATES = {
    "polite": (
        "{a}. glad to help!",
        "{a}. happy to help!",
        "it is {a}. glad to help!",
        "{a}, thanks for asking!",
        "the answer is {a}. thank you!",
        "{a}. hope that helps, thanks!",
    ),
    "terse": (
        "{a}.",
        "{a}",
        "{a}!",
        "it is {a}.",
        "the answer is {a}.",
    ),
    "wrong": (
        "{w}.",
        "it is {w}.",
        "the answer is {w}.",
        "{w}. glad to help!",
        "{w}, thanks for asking!",
        "i do not know.",
        "not sure, sorry.",
    ),
    "rambling": (
        "well, i think {a} or maybe {w}.",
        "um, {w}? no wait, {a} i guess.",
        "so hmm, it could be {a}, or {w}",
        "well well, maybe {a}, not sure",
        "i guess it is {a}, i think, maybe",
        "hmm, {w} or {a} or {w2}, who knows",
    ),
    "rude": (
        "{a}. obviously.",
        "ugh, {a}. look it up.",
        "{a}, everyone knows that.",
        "{a}. whatever.",
        "it is {a}, duh.",
        "ugh. {a}. next.",
    ),
    "forbidden": (
        "{a}, you stupid.",
        "darn, it is {a}.",
        "{a}. now shut up.",
        "{a}. dumb question.",
        "stupid question. {a}.",
        "{a}. glad to help, darn it!",
        "darn it, {w}.",
    ),
}


def _words(text):
    return _WORD.findall(text.lower())


def _count_phrases(words, phrases):
    """Occurrences of any of the phrases (one or more whole words:
    'thankful' is not 'thank') in the list of words."""
    count = 0
    for phrase in phrases:
        parts = phrase.split()
        k = len(parts)
        count += sum(words[i:i + k] == parts
                     for i in range(len(words) - k + 1))
    return count


def _prompt_key(prompt):
    """The prompt as one token of word characters: 'capital_of_france',
    '2_plus_3' (the operators are words, so '2 + 3' and '2 * 3' differ)."""
    parts = re.findall(r"[a-z0-9]+|[+\-*/]", prompt.lower(), re.ASCII)
    names = {"+": "plus", "-": "minus", "*": "times", "/": "over"}
    return "_".join(names.get(p, p) for p in parts) or "none"


def _check_texts(values, name, owner):
    """values as a list of str; the error names the argument."""
    if isinstance(values, (str, bytes)):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a sequence of str; "
            f"got a single {type(values).__name__}. Wrap one text in a "
            "list: [text].")
    if isinstance(values, (Set, Mapping)):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be an ordered sequence "
            f"of str; got a {type(values).__name__}.")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be 1-dimensional; got "
            f"an array of shape {values.shape}.")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a sequence of str; "
            f"got {type(values).__name__}.") from None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(
                f"The '{name}' parameter of {owner} must hold str; "
                f"{name}[{i}] is of type {type(value).__name__}.")
    return values


def _check_same_length(owner, **named):
    lengths = {name: len(values) for name, values in named.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"The parameters of {owner} must have one entry "
                         f"per item; {shown}.")


def _fact_of(prompts, owner):
    """Index into the knowledge table of each prompt."""
    facts = np.empty(len(prompts), dtype=np.int64)
    for i, prompt in enumerate(prompts):
        fact = _FACT_INDEX.get(prompt.strip().lower())
        if fact is None:
            raise ValueError(
                f"The 'prompts' parameter of {owner} must hold questions of "
                f"the world's knowledge table; prompts[{i}] = "
                f"{format_value(prompt)} is not one of them.")
        facts[i] = fact
    return facts


# --------------------------------------------------------------------------
# the world


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class AssistantWorld:
    """Questions, an SFT corpus, and a simulated human who judges answers.

    Made by :func:`make_assistant_world`.

    Attributes
    ----------
    prompts : tuple of str
        The questions, each at most ``MAX_PROMPT_BYTES`` bytes.
    answers : tuple of str
        The answer the corpus writes for each prompt ("paris", "5").
    sft_prompts, sft_responses : tuple of str
        The SFT corpus: ``sft_responses[i]`` (a leading space, then at
        most ``MAX_RESPONSE_BYTES - 1`` bytes) answers ``sft_prompts[i]``.
    sft_styles : tuple of str
        The style (one of :data:`STYLES`) each corpus response was written
        in.
    style_shares : dict of str to float
        The probability of each style in the corpus.
    n_features : int
        Columns of :meth:`features`.

    Examples
    --------
    The simulated human rewards a correct answer and marks down a rude
    one; the cost counts forbidden words:

    >>> import rlhf
    >>> world = rlhf.text_world.make_assistant_world(random_state=0)
    >>> prompt = "star nearest to earth?"
    >>> answers = [" sun.", " moon.", " ugh, sun. obviously"]
    >>> world.gold_reward([prompt] * 3, answers).tolist()
    [2.0, 0.0, 0.5]
    >>> world.cost([prompt] * 3, answers).tolist()
    [0.0, 0.0, 0.0]
    """

    prompts: tuple
    answers: tuple
    sft_prompts: tuple
    sft_responses: tuple
    sft_styles: tuple
    style_shares: dict
    n_features: int

    max_response_bytes = MAX_RESPONSE_BYTES

    def __repr__(self):
        return (f"AssistantWorld(n_prompts={len(self.prompts)}, "
                f"n_sft={len(self.sft_responses)}, "
                f"n_features={self.n_features})")

    def _texts(self, prompts, responses, owner):
        prompts = _check_texts(prompts, "prompts", owner)
        responses = _check_texts(responses, "responses", owner)
        _check_same_length(owner, prompts=prompts, responses=responses)
        return prompts, responses

    def gold_terms(self, prompts: Sequence[str],
                   responses: Sequence[str]) -> Dict[str, FloatArray]:
        """Each term of the gold reward, already weighted.

        A response is read as its words: runs of ASCII letters and digits,
        lowercased (punctuation, U+FFFD and other bytes only separate
        words).  With the weights of :data:`GOLD_RULE`:

        - ``correct``: +2 if an accepted answer of the prompt's fact is one
          of the words ("paris"; "5" or "five");
        - ``wrong``: -1 for each distinct other answer of the same kind
          (another capital, colour, number...) that the prompt does not
          itself mention -- a wrong answer, or a hedge between several;
        - ``polite``: +1, once, for "please", "thank", "thanks", "glad to
          help" or "happy to help";
        - ``rude``: -1.5, once, for "ugh", "duh", "obviously", "whatever",
          "look it up" or "everyone knows";
        - ``forbidden``: -2 for each occurrence of "darn", "stupid", "dumb"
          or "shut up" (whole words);
        - ``length``: -0.25 for each word beyond 6;
        - ``repetition``: -0.5 for each word that repeats an earlier word
          of the response (number of words minus distinct words);
        - ``empty``: -1 for a response without a word.

        So "paris. glad to help!" scores 3, "paris." 2, "rome." -1, and
        "paris. glad to help! glad to help!" 1.25 (one word too many,
        three repeated).

        Parameters
        ----------
        prompts : sequence of str of length n
            Questions of the knowledge table (any of the 60, not only
            ``self.prompts``).
        responses : sequence of str of length n
            Any text.

        Returns
        -------
        dict of str to ndarray of shape (n,), float64
            The terms above, in that order; their sum is
            :meth:`gold_reward`.
        """
        owner = "AssistantWorld.gold_terms"
        prompts, responses = self._texts(prompts, responses, owner)
        facts = _fact_of(prompts, owner)
        names = ("correct", "wrong", "polite", "rude", "forbidden", "length",
                 "repetition", "empty")
        terms = {name: np.zeros(len(prompts)) for name in names}
        comfortable = GOLD_RULE["comfortable_words"]
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            _, accepted, kind = _FACTS[facts[i]]
            words = _words(response)
            distinct = set(words)
            wrong = (distinct & _KIND_ANSWERS[kind]) - set(accepted) - set(
                _words(prompt))
            terms["correct"][i] = bool(distinct.intersection(accepted))
            terms["wrong"][i] = len(wrong)
            terms["polite"][i] = _count_phrases(words, _POLITE) > 0
            terms["rude"][i] = _count_phrases(words, _RUDE) > 0
            terms["forbidden"][i] = _count_phrases(words, _FORBIDDEN)
            terms["length"][i] = max(len(words) - comfortable, 0)
            terms["repetition"][i] = len(words) - len(distinct)
            terms["empty"][i] = not words
        for name in names:
            # + 0.0: a zero count is 0, not -0 (a negative weight's sign)
            terms[name] = terms[name] * GOLD_RULE[name] + 0.0
        return terms

    def gold_reward(self, prompts: Sequence[str],
                    responses: Sequence[str]) -> FloatArray:
        """The simulated human's reward of each response: the sum of
        :meth:`gold_terms`.

        Deterministic, defined for any text (gibberish scores about -1 to
        0), and hidden from the learner, which sees only preferences
        (:meth:`annotate`).

        Parameters
        ----------
        prompts : sequence of str of length n
        responses : sequence of str of length n

        Returns
        -------
        ndarray of shape (n,), float64
        """
        terms = self.gold_terms(prompts, responses)
        return np.sum(list(terms.values()), axis=0).reshape(-1)

    def cost(self, prompts: Sequence[str],
             responses: Sequence[str]) -> FloatArray:
        """Forbidden words used: the safety cost.

        The number of occurrences of "darn", "stupid", "dumb" and "shut up"
        (as whole words, in any case) in each response; a safe policy
        keeps its expected value under a budget.

        Parameters
        ----------
        prompts : sequence of str of length n
            Not read: the cost does not depend on the question.
        responses : sequence of str of length n

        Returns
        -------
        ndarray of shape (n,), float64
        """
        owner = "AssistantWorld.cost"
        prompts, responses = self._texts(prompts, responses, owner)
        counts = np.zeros(len(responses))
        for i, response in enumerate(responses):
            counts[i] = _count_phrases(_words(response), _FORBIDDEN)
        return counts

    def features(self, prompts: Sequence[str],
                 responses: Sequence[str]) -> Any:
        """Hashed word features: what a linear proxy reward model sees.

        Each (prompt, response) becomes the counts of three kinds of
        token, hashed by ``rlhf.text.hash_ngrams`` into ``n_features``
        columns: each word of the response (``w_paris``), each pair of
        adjacent words (``b_glad_to``), and each word paired with the
        whole prompt (``x_capital_of_france__paris``) -- the last is how a
        linear model can tell a right answer from a wrong one.  Words are
        those of :meth:`gold_terms`, so one-letter words ("5", "i") count.

        The view is linear in counts: a word the model likes is liked
        twice as much when written twice.  The gold rule does not work
        that way (politeness and correctness count once, repetition and
        length cost), which is what a policy optimising the proxy ends up
        exploiting.

        Parameters
        ----------
        prompts : sequence of str of length n
            Any prompts (not only the knowledge table's).
        responses : sequence of str of length n

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n, n_features)
            A dense ndarray when SciPy is not installed.
        """
        owner = "AssistantWorld.features"
        prompts, responses = self._texts(prompts, responses, owner)
        documents = []
        for prompt, response in zip(prompts, responses):
            key = _prompt_key(prompt)
            words = _words(response)
            tokens = ["w_" + w for w in words]
            tokens += [f"b_{a}_{b}" for a, b in zip(words, words[1:])]
            tokens += [f"x_{key}__{w}" for w in words]
            documents.append(" ".join(tokens))
        counts = hash_ngrams(documents, n_features=self.n_features,
                             ngram_range=(1, 1), lowercase=False)
        if isinstance(counts, tuple):  # no SciPy: CSR arrays, made dense
            data, indices, indptr, shape = counts
            dense = np.zeros(shape)
            rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
            dense[rows, indices] = data
            return dense
        return counts

    def annotate(self, prompts: Sequence[str], responses_a: Sequence[str],
                 responses_b: Sequence[str], temperature: float = 1.0,
                 noise: float = 0.0, *, tie_margin: float = 0.0,
                 random_state: RandomState = None) -> Tuple[Any, Comparisons]:
        """Simulated annotators compare two responses to each prompt.

        Annotator choices follow Bradley-Terry on the gold reward: shown
        ``a`` and ``b``, ``a`` is preferred with probability
        ``sigmoid((gold(a) - gold(b)) / temperature)`` (with a lapse rate
        ``noise`` and Rao-Kupper ties within ``tie_margin``), as
        ``rlhf.simulate_preferences`` draws them.

        Parameters
        ----------
        prompts : sequence of str of length n
        responses_a, responses_b : sequence of str of length n
            The two responses shown for each prompt.
        temperature : float >= 0, default=1.0
            Annotator noise in gold-reward units; 0 always prefers the
            higher gold reward.
        noise : float in [0, 1], default=0.0
            Probability of answering at random.
        tie_margin : float >= 0, default=0.0
            Declare a tie when the difference is within this margin (at
            ``temperature=0``, a tiny margin such as 1e-9 makes equal gold
            rewards ties instead of coin flips).
        random_state : None, int or numpy.random.Generator, default=None

        Returns
        -------
        features : scipy.sparse.csr_matrix of shape (2 n, n_features)
            :meth:`features` of the 2 n items: item ``i`` is
            ``(prompts[i], responses_a[i])``, item ``n + i`` is
            ``(prompts[i], responses_b[i])``.
        comparisons : rlhf.Comparisons
            One per prompt, preferred item first (``groups`` is the index
            of the prompt).  ``rlhf.RewardModel().fit(features,
            comparisons)`` fits a reward model on them.

        Examples
        --------
        Fit a reward model on annotated pairs of the SFT corpus and check
        it against the gold reward on new pairs:

        >>> import rlhf
        >>> from rlhf.text_world import make_assistant_world
        >>> world = make_assistant_world(random_state=0)
        >>> pairs = world.sample_pairs(3000, random_state=1)
        >>> X, labels = world.annotate(*pairs, temperature=0.5, random_state=2)
        >>> model = rlhf.RewardModel(C=1.0).fit(X, labels)
        >>> test_pairs = world.sample_pairs(1000, random_state=3)
        >>> X_test, truth = world.annotate(*test_pairs, temperature=0,
        ...                                tie_margin=1e-9)  # exact judge
        >>> round(model.score(X_test, truth), 2)  # pairwise accuracy on gold
        0.86
        """
        owner = "AssistantWorld.annotate"
        prompts = _check_texts(prompts, "prompts", owner)
        responses_a = _check_texts(responses_a, "responses_a", owner)
        responses_b = _check_texts(responses_b, "responses_b", owner)
        _check_same_length(owner, prompts=prompts, responses_a=responses_a,
                           responses_b=responses_b)
        if not prompts:
            raise ValueError(f"The 'prompts' parameter of {owner} is empty; "
                             "at least one pair is needed.")
        rng = _check_random_state(random_state, owner)
        n = len(prompts)
        items_prompts = prompts + prompts
        items_responses = responses_a + responses_b
        gold = self.gold_reward(items_prompts, items_responses)
        shown = np.column_stack([np.arange(n), np.arange(n, 2 * n)])
        comparisons = simulate_preferences(
            gold, shown, temperature, noise, tie_margin=tie_margin,
            random_state=rng)
        return self.features(items_prompts, items_responses), comparisons

    def sample_pairs(
            self,
            n_pairs: int,
            random_state: RandomState = None,
    ) -> Tuple[List[str], List[str], List[str]]:
        """Pairs of different corpus responses to one prompt.

        A prompt is drawn as often as the corpus asks it, then two of its
        distinct responses, each as likely as it is frequent in the
        corpus -- the pairs a labeller would be shown of an SFT model that
        had learned the corpus exactly.

        Parameters
        ----------
        n_pairs : int >= 1
        random_state : None, int or numpy.random.Generator, default=None

        Returns
        -------
        prompts, responses_a, responses_b : lists of str of length n_pairs
            The arguments of :meth:`annotate`.
        """
        owner = "AssistantWorld.sample_pairs"
        n_pairs = check_scalar(n_pairs, "n_pairs", owner, kind="int", low=1)
        rng = _check_random_state(random_state, owner)
        by_prompt: Dict[str, Dict[str, int]] = {}
        for prompt, response in zip(self.sft_prompts, self.sft_responses):
            counts = by_prompt.setdefault(prompt, {})
            counts[response] = counts.get(response, 0) + 1
        # only prompts with two distinct responses can make a pair
        usable = [p for p, c in by_prompt.items() if len(c) >= 2]
        if not usable:
            raise ValueError("No prompt of the corpus has two different "
                             "responses to compare.")
        # the distinct responses of all usable prompts one after another;
        # prompt k's occupy [base[k], base[k] + total[k]) on the axis of
        # cumulative counts
        texts = [t for p in usable for t in by_prompt[p]]
        freq = np.array([c for p in usable for c in by_prompt[p].values()],
                        dtype=np.int64)
        ends = np.cumsum(freq)
        total = np.array([sum(by_prompt[p].values()) for p in usable],
                         dtype=np.int64)
        base = np.concatenate([[0], np.cumsum(total)[:-1]])
        k = rng.choice(len(usable), size=n_pairs, p=total / total.sum())
        # a: a response of prompt k, as likely as it is frequent
        a = np.searchsorted(ends, base[k] + rng.integers(0, total[k]),
                            side="right")
        # b: the same among the others, by skipping a's stretch of the axis
        start_a = ends[a] - freq[a]
        y = base[k] + rng.integers(0, total[k] - freq[a])
        y = np.where(y >= start_a, y + freq[a], y)
        b = np.searchsorted(ends, y, side="right")
        return ([usable[i] for i in k.tolist()],
                [texts[i] for i in a.tolist()],
                [texts[i] for i in b.tolist()])


# --------------------------------------------------------------------------
# making a world


def _fill(template, answer, wrong):
    return " " + template.format(a=answer, w=wrong[0], w2=wrong[1])


def _check_shares(style_shares, owner):
    if style_shares is None:
        return dict(zip(STYLES, _DEFAULT_SHARES))
    if not isinstance(style_shares, Mapping):
        raise TypeError(
            f"The 'style_shares' parameter of {owner} must be a dict of "
            f"style to share. Got {format_value(style_shares)} instead.")
    unknown = [s for s in style_shares if s not in STYLES]
    if unknown:
        raise ValueError(
            f"The 'style_shares' parameter of {owner} must name styles among "
            f"{STYLES}. Got {format_value(unknown[0])} instead.")
    shares = {}
    for style in STYLES:
        shares[style] = check_scalar(style_shares.get(style, 0.0),
                                     f"style_shares[{style!r}]", owner,
                                     low=0.0, high=np.inf, high_open=True)
    total = sum(shares.values())
    if total <= 0:
        raise ValueError(
            f"The 'style_shares' parameter of {owner} must give some style "
            "a positive share. Got all zeros instead.")
    return {style: share / total for style, share in shares.items()}


def make_assistant_world(n_prompts: Optional[int] = None, n_sft: int = 3000, *,
                         style_shares: Optional[Mapping[str, float]] = None,
                         n_features: int = 2**12,
                         random_state: RandomState = None) -> "AssistantWorld":
    """A question-answering world for InstructGPT on a laptop.

    Parameters
    ----------
    n_prompts : int in [2, 60] or None, default=None
        Questions drawn from the 60 of the knowledge table (in table
        order); None takes them all.
    n_sft : int >= 1, default=3000
        Pairs in the SFT corpus.
    style_shares : dict of str to float, default=None
        Relative frequency of each style of :data:`STYLES` in the corpus
        (normalised; missing styles get 0).  The default, polite 0.15,
        terse 0.20, wrong 0.20, rambling 0.15, rude 0.15, forbidden 0.15,
        gives a corpus whose mean gold reward is about 0.9 where a
        correct, polite answer earns 3.
    n_features : int >= 1, default=4096
        Columns of the hashed features (:meth:`AssistantWorld.features`).
    random_state : None, int or numpy.random.Generator, default=None
        The same value gives the same world.

    Returns
    -------
    AssistantWorld

    Notes
    -----
    A corpus response picks its style, then one of that style's templates
    that fits in ``MAX_RESPONSE_BYTES`` bytes for the prompt's answer,
    then fills in the answer and, where the template wants them, wrong
    answers of the same kind.

    Examples
    --------
    >>> from rlhf.text_world import make_assistant_world
    >>> world = make_assistant_world(random_state=0)
    >>> world
    AssistantWorld(n_prompts=60, n_sft=3000, n_features=4096)
    >>> world.gold_reward(["capital of france?"] * 3,
    ...                   [" paris. glad to help!", " paris.", " rome."])
    array([ 3.,  2., -1.])
    """
    owner = "make_assistant_world"
    if n_prompts is not None:
        n_prompts = check_scalar(n_prompts, "n_prompts", owner, kind="int",
                                 low=2, high=len(_FACTS))
    n_sft = check_scalar(n_sft, "n_sft", owner, kind="int", low=1)
    n_features = check_scalar(n_features, "n_features", owner, kind="int",
                              low=1, high=2**31 - 1)
    shares = _check_shares(style_shares, owner)
    rng = _check_random_state(random_state, owner)

    if n_prompts is None:
        facts = np.arange(len(_FACTS))
    else:
        facts = np.sort(rng.choice(len(_FACTS), size=n_prompts,
                                   replace=False))
    prompt_facts = rng.choice(facts, size=n_sft)
    styles = rng.choice(len(STYLES), size=n_sft,
                        p=[shares[s] for s in STYLES])
    sft_prompts, sft_responses = [], []
    for fact, style in zip(prompt_facts.tolist(), styles.tolist()):
        question, accepted, kind = _FACTS[fact]
        answer = accepted[0]
        # wrong answers: the kind's written answers, not this fact's, not
        # a word of the question ("2 + 3?" is not answered wrongly by "3")
        candidates = sorted({f[1][0] for f in _FACTS if f[2] == kind}
                            - set(accepted) - set(_words(question)))
        wrong = [candidates[k] for k in rng.choice(len(candidates), size=2,
                                                  replace=False)]
        templates = [t for t in _TEMPLATES[STYLES[style]]
                     if len(_fill(t, answer, wrong).encode())
                     <= MAX_RESPONSE_BYTES]
        template = templates[rng.integers(len(templates))]
        sft_prompts.append(question)
        sft_responses.append(_fill(template, answer, wrong))
    return AssistantWorld(
        prompts=tuple(_FACTS[f][0] for f in facts.tolist()),
        answers=tuple(_FACTS[f][1][0] for f in facts.tolist()),
        sft_prompts=tuple(sft_prompts),
        sft_responses=tuple(sft_responses),
        sft_styles=tuple(STYLES[s] for s in styles.tolist()),
        style_shares=shares,
        n_features=n_features,
    )
