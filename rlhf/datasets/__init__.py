"""Human preference data: JSON Lines files and two bundled datasets.

- :func:`load_preference_jsonl` reads the ``{"chosen", "rejected"}`` JSON
  Lines format of Anthropic's HH-RLHF and TRL's implicit-prompt preference
  data, and its ``{"prompt", "chosen", "rejected"}`` variant;
  :meth:`PreferenceDataset.to_jsonl` writes the latter.
- :func:`load_finegrained_qa`: 500 questions, 4 answers each, human
  preferences over all 6 pairs with ties (Wu et al. 2023).
- :func:`load_finegrained_qa_sft`: the same questions, each with its
  most-preferred answer(s) cut to the first sentence: (prompt, response)
  pairs of real text for supervised fine-tuning.
- :func:`load_pandalm`: 999 response pairs, each labelled by three human
  annotators, with ties (Wang et al. 2024).

The bundled files sit next to this module under ``data/``, each with its
LICENSE and a SOURCE.md saying where it comes from and what was changed.
"""
import dataclasses
import gzip
import json
import os
import re
import zlib
from importlib import resources
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .._typing import ArrayLike
from .._validation import check_scalar
from ..preferences import (Agreement, _pairwise_accuracy,
                           annotator_agreement)

__all__ = [
    "PreferenceDataset",
    "load_finegrained_qa",
    "load_finegrained_qa_sft",
    "load_pandalm",
    "load_preference_jsonl",
]

_GZIP_MAGIC = b"\x1f\x8b"

# a surrogate code point in a str: JSON's escapes can make one ("\\ud800"
# alone), but it is not a character and UTF-8 cannot encode it
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class PreferenceDataset:
    """Texts and human preferences between them.

    A text is one response to one prompt: the same words answering two
    prompts are two texts.  ``comparisons`` and ``ties`` are the inputs of a
    pairwise reward model, with features computed from ``texts`` (and, if
    wanted, ``prompts[text_prompt]``).

    Attributes
    ----------
    texts : ndarray of shape (n_texts,), object
        Distinct (prompt, response) responses, in order of first appearance.
    prompts : ndarray of shape (n_prompts,), object
        Distinct prompts, in order of first appearance; ``""`` for records
        without one (their texts then hold the whole conversation).
    text_prompt : ndarray of shape (n_texts,), int64
        Index into ``prompts`` of each text's prompt.
    comparisons : ndarray of shape (n_comparisons, 2), int64
        Indices into ``texts``, preferred first; for a tie, the order shown.
    ties : ndarray of shape (n_comparisons,), bool
    groups : ndarray of shape (n_comparisons,), int64
        Index into ``prompts`` of each comparison, for grouped
        cross-validation.
    pairs : ndarray of shape (n_comparisons, 2), int64
        The two texts in the order annotators saw them (``comparisons``
        itself when the source does not say).
    labels : ndarray of shape (n_comparisons, n_annotators), int64, or None
        Each annotator's label of ``pairs``: 1 = first better, 2 = second
        better, 0 = tie; None when the source has only chosen/rejected.
    info : dict of str to ndarray of shape (n_comparisons,)
        Other per-comparison fields of the source (e.g. PandaLM's ``idx``).
    name : str

    Examples
    --------
    >>> from rlhf import datasets
    >>> data = datasets.load_finegrained_qa()
    >>> data.comparisons.shape, data.n_ties
    ((3000, 2), 384)
    >>> len(data.strict())  # without the ties
    2616
    >>> str(data.texts[data.comparisons[0, 0]])[:24]  # the preferred text
    'Bloom is the second stud'
    """

    texts: np.ndarray
    prompts: np.ndarray
    text_prompt: np.ndarray
    comparisons: np.ndarray
    ties: np.ndarray
    groups: np.ndarray
    pairs: np.ndarray
    labels: Optional[np.ndarray] = None
    info: dict = dataclasses.field(default_factory=dict)
    name: str = ""

    def __len__(self):
        return self.comparisons.shape[0]

    @property
    def n_ties(self) -> int:
        """Number of ties."""
        return int(np.count_nonzero(self.ties))

    @property
    def agreement(self) -> Optional[Agreement]:
        """rlhf.Agreement of the annotators' labels (None with fewer than
        two annotators)."""
        if self.labels is None or self.labels.shape[1] < 2:
            return None
        return annotator_agreement(self.labels)

    def subset(self, index: ArrayLike) -> "PreferenceDataset":
        """The comparisons selected by a boolean mask or integer index
        array (rows in that order), as a new PreferenceDataset with the
        same texts and prompts (so item indices keep their meaning)."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != self.ties.shape:
                raise ValueError(
                    f"A boolean index must have shape {self.ties.shape}; "
                    f"got {index.shape}.")
        elif index.dtype.kind not in "iu":
            raise TypeError("index must be a boolean mask or integer "
                            f"indices; got dtype {index.dtype}.")
        return dataclasses.replace(
            self, comparisons=self.comparisons[index],
            ties=self.ties[index], groups=self.groups[index],
            pairs=self.pairs[index],
            labels=None if self.labels is None else self.labels[index],
            info={key: value[index] for key, value in self.info.items()})

    def strict(self) -> "PreferenceDataset":
        """The comparisons that are not ties."""
        return self.subset(~self.ties)

    def accuracy(self, scores: ArrayLike) -> float:
        """Fraction of strict comparisons that ``scores`` (one per text)
        order the same way; equal scores count 1/2."""
        return _pairwise_accuracy(scores, self.comparisons, self.ties,
                                  self.texts.shape[0])

    def to_jsonl(self, path: Union[str, "os.PathLike[str]"], *,
                 include_ties: bool = True) -> int:
        """Write one ``{"prompt", "chosen", "rejected"}`` line per comparison.

        This is TRL's explicit-prompt preference format; gzip-compressed
        when ``path`` ends in ``.gz``.  A tie is written with the extra key
        ``"tie": true`` (which :func:`load_preference_jsonl` reads back;
        trainers that do not know the key see an ordinary pair), or left
        out with ``include_ties=False``.  Annotator labels and ``info`` are
        not written.

        Parameters
        ----------
        path : str or os.PathLike
        include_ties : bool, default=True

        Returns
        -------
        int
            Number of records written.

        Raises
        ------
        ValueError
            A text or prompt to be written holds a surrogate code point,
            which UTF-8 cannot encode; the message names the file, the line,
            the key and the text's index.  Nothing is written.
        """
        path = os.fspath(path)
        # every string is checked before the file is opened, so that a
        # text UTF-8 cannot encode leaves no half-written file behind
        for line_no, record, indices in self._records_to_write(include_ties):
            for key, value in record.items():
                if isinstance(value, str):
                    problem = _surrogate_problem(value)
                    if problem:
                        raise ValueError(
                            f"{path}, line {line_no}: cannot write key "
                            f"{key!r}: {indices[key]} {problem}.")
        opener = gzip.open if path.endswith(".gz") else open
        n = 0
        with opener(path, "wt", encoding="utf-8", newline="\n") as fh:
            for n, record, _ in self._records_to_write(include_ties):
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return n

    def _records_to_write(self, include_ties):
        """(line number, record, where each value comes from) of every
        line :meth:`to_jsonl` writes."""
        line_no = 0
        for (a, b), tie, group in zip(self.comparisons.tolist(),
                                      self.ties.tolist(),
                                      self.groups.tolist()):
            if tie and not include_ties:
                continue
            line_no += 1
            record = {"prompt": self.prompts[group],
                      "chosen": self.texts[a], "rejected": self.texts[b]}
            if tie:
                record["tie"] = True
            indices = {"prompt": f"prompts[{group}]", "chosen": f"texts[{a}]",
                       "rejected": f"texts[{b}]"}
            yield line_no, record, indices

    def __repr__(self):
        parts = [f"name={self.name!r}"] if self.name else []
        parts += [f"n_texts={self.texts.shape[0]}",
                  f"n_prompts={self.prompts.shape[0]}",
                  f"n_comparisons={len(self)}", f"n_ties={self.n_ties}"]
        if self.labels is not None:
            parts.append(f"n_annotators={self.labels.shape[1]}")
        return f"PreferenceDataset({', '.join(parts)})"


class _Builder:
    """Collects texts, prompts and comparisons, giving each distinct
    (prompt, text) one index."""

    def __init__(self):
        self.prompt_index = {}
        self.text_index = {}
        self.text_prompt = []
        self.pairs = []
        self.groups = []

    def prompt(self, prompt):
        return self.prompt_index.setdefault(prompt, len(self.prompt_index))

    def text(self, prompt_id, text):
        key = (prompt_id, text)
        index = self.text_index.get(key)
        if index is None:
            index = self.text_index[key] = len(self.text_index)
            self.text_prompt.append(prompt_id)
        return index

    def add(self, prompt, first, second):
        p = self.prompt(prompt)
        self.pairs.append((self.text(p, first), self.text(p, second)))
        self.groups.append(p)

    def build(self, labels, name, info=None, ties=None):
        """labels: (m, n_annotators) codes of ``pairs`` or None (pairs are
        chosen-first); ties: the tie mask when labels is None."""
        pairs = np.array(self.pairs, dtype=np.int64).reshape(-1, 2)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64).reshape(
                pairs.shape[0], -1)
            verdict = _majority(labels)
            ties = verdict == 0
            comparisons = np.where((verdict == 2)[:, None], pairs[:, ::-1],
                                   pairs)
        else:
            ties = np.asarray(ties, dtype=bool)
            comparisons = pairs.copy()
        texts = np.empty(len(self.text_index), dtype=object)
        texts[:] = [text for _, text in self.text_index]
        prompts = np.empty(len(self.prompt_index), dtype=object)
        prompts[:] = list(self.prompt_index)
        return PreferenceDataset(
            texts, prompts, np.array(self.text_prompt, dtype=np.int64),
            comparisons, ties, np.array(self.groups, dtype=np.int64), pairs,
            labels, dict(info or {}), name)


def _majority(labels):
    """The label given by more than half of the annotators of each row."""
    n_annotators = labels.shape[1]
    verdict = np.full(labels.shape[0], -1, dtype=np.int64)
    for code in (0, 1, 2):
        verdict[np.sum(labels == code, axis=1) * 2 > n_annotators] = code
    if (verdict < 0).any():
        row = int(np.flatnonzero(verdict < 0)[0])
        raise ValueError(f"Record {row} has no majority label: "
                         f"{labels[row].tolist()}.")
    return verdict


# --------------------------------------------------------------------------
# JSON Lines


def _open_binary(path):
    """A binary stream of a file, gunzipped when it starts with gzip's
    magic bytes, and the underlying file."""
    raw = open(path, "rb")
    try:
        magic = raw.peek(2)[:2]
    except BaseException as error:
        raw.close()
        if isinstance(error, OSError):
            raise ValueError(f"{path}, line 1: cannot read "
                             f"({error}).") from error
        raise
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _records(stream, source):
    """(line number, dict) for every non-blank line of a binary JSON Lines
    stream; a clear error naming source and line for anything else."""
    line_no = 0
    try:
        for line_no, raw_line in enumerate(stream, start=1):
            # decoded line by line, so that an error names its line
            try:
                line = raw_line.decode("utf-8-sig" if line_no == 1
                                       else "utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{source}, line {line_no}: not UTF-8 text "
                    f"({error.reason} at byte {error.start}).") from error
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                hint = ""
                if line_no == 1 and line.lstrip().startswith("["):
                    hint = (" The file looks like one JSON array; this "
                            "loader reads JSON Lines (one object per line).")
                raise ValueError(
                    f"{source}, line {line_no}: invalid JSON ({error.msg} at "
                    f"column {error.colno}).{hint}") from error
            except RecursionError as error:
                raise ValueError(
                    f"{source}, line {line_no}: invalid JSON (arrays or "
                    "objects nested too deeply to read).") from error
            except ValueError as error:
                # e.g. an integer of more digits than Python converts
                raise ValueError(f"{source}, line {line_no}: invalid JSON "
                                 f"({error}).") from error
            if not isinstance(record, dict):
                raise ValueError(
                    f"{source}, line {line_no}: expected a JSON object, got "
                    f"{_json_type(record)}.")
            yield line_no, record
    # gzip's errors: BadGzipFile (an OSError) for a bad header or checksum,
    # EOFError for a truncated stream, zlib.error for a corrupt body
    except zlib.error as error:
        raise ValueError(f"{source}, line {line_no + 1}: cannot read "
                         f"(corrupt gzip data: {error}).") from error
    except (OSError, EOFError) as error:
        raise ValueError(f"{source}, line {line_no + 1}: cannot read "
                         f"({error}).") from error


def _json_type(value):
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number",
            str: "a string", list: "an array", dict: "an object"}.get(
                type(value), type(value).__name__)


def _text_field(record, key, source, line_no, optional=False):
    if key not in record:
        if optional:
            return None
        raise ValueError(
            f"{source}, line {line_no}: missing key {key!r} (the record has "
            f"{sorted(record)}).")
    value = record[key]
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, list):
            hint = (" Conversational records (lists of messages) are not "
                    "supported; join the messages into one text first.")
        raise TypeError(
            f"{source}, line {line_no}: key {key!r} must be a string, got "
            f"{_json_type(value)}.{hint}")
    problem = _surrogate_problem(value)
    if problem:
        # refused here: such a text could not be written back by to_jsonl,
        # nor by any UTF-8 writer
        raise ValueError(f"{source}, line {line_no}: key {key!r} {problem}.")
    return value


def _surrogate_problem(text):
    """What is wrong with a text holding a surrogate code point, or ""."""
    match = _SURROGATE.search(text)
    if match is None:
        return ""
    return (f"holds the lone surrogate U+{ord(match.group()):04X} at "
            f"character {match.start()} (not a character: UTF-8 cannot "
            "encode it)")


def load_preference_jsonl(path: Union[str, "os.PathLike[str]"], *,
                          identical: str = "raise") -> "PreferenceDataset":
    """Read preference pairs from a JSON Lines file.

    Each non-blank line is a JSON object with string values ``"chosen"``
    and ``"rejected"`` (Anthropic HH-RLHF; TRL's implicit-prompt format,
    where each text holds the whole conversation) and optionally
    ``"prompt"`` (TRL's explicit-prompt format) and ``"tie": true/false``
    (written by :meth:`PreferenceDataset.to_jsonl`).  Other keys are
    ignored.  gzip-compressed files (any name) are read as such.

    Parameters
    ----------
    path : str or os.PathLike
    identical : {"raise", "drop"}, default="raise"
        What to do with a record whose chosen and rejected texts are equal
        (a text compared with itself says nothing about it): raise a
        ValueError naming its line, or leave such records out.

    Returns
    -------
    PreferenceDataset
        ``comparisons`` are (chosen, rejected); ``pairs`` equals it and
        ``labels`` is None; ``info["line"]`` holds each comparison's line
        number.

    Raises
    ------
    ValueError
        A file that cannot be read (truncated or corrupt gzip data, bytes
        that are not UTF-8), invalid JSON (including arrays nested too
        deeply to read), a record that is not an object, a missing key, a
        text holding a lone surrogate such as the escape ``"\\ud800"``
        (UTF-8 cannot encode it, so it could not be written back), a file
        without records; the message names the file and the line.
    TypeError
        A value that is not a string (or a "tie" that is not a boolean),
        with the file, line and key.
    OSError
        A file that cannot be opened (missing, a directory, not
        readable), as from ``open``, with its name.

    Examples
    --------
    Write five comparisons out and read them back:

    >>> import os, tempfile
    >>> from rlhf import datasets
    >>> data = datasets.load_finegrained_qa().subset([0, 1, 2, 3, 4])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "prefs.jsonl")
    ...     n_written = data.to_jsonl(path)
    ...     back = datasets.load_preference_jsonl(path)
    >>> n_written, len(back), back.n_ties
    (5, 5, 2)
    """
    if identical not in ("raise", "drop"):
        raise ValueError(
            "The 'identical' parameter of load_preference_jsonl must be one "
            f"of 'raise', 'drop'. Got {identical!r} instead.")
    source = os.fspath(path)
    builder = _Builder()
    ties, lines = [], []
    stream, raw = _open_binary(source)
    with raw, stream:
        for line_no, record in _records(stream, source):
            chosen = _text_field(record, "chosen", source, line_no)
            rejected = _text_field(record, "rejected", source, line_no)
            prompt = _text_field(record, "prompt", source, line_no,
                                 optional=True)
            tie = record.get("tie", False)
            if not isinstance(tie, bool):
                raise TypeError(
                    f"{source}, line {line_no}: key 'tie' must be true or "
                    f"false, got {_json_type(tie)}.")
            if chosen == rejected:
                if identical == "raise":
                    raise ValueError(
                        f"{source}, line {line_no}: keys 'chosen' and "
                        "'rejected' hold the same text. Pass identical='drop'"
                        " to leave such records out.")
                continue
            builder.add("" if prompt is None else prompt, chosen, rejected)
            ties.append(tie)
            lines.append(line_no)
    if not lines:
        raise ValueError(f"{source} holds no preference records.")
    name = os.path.basename(source)
    return builder.build(None, name, {"line": np.array(lines, np.int64)},
                         ties)


# --------------------------------------------------------------------------
# bundled datasets


def _bundled_records(directory, filename):
    # one name per joinpath: Python < 3.11 takes no more
    resource = resources.files(__name__).joinpath("data").joinpath(
        directory).joinpath(filename)
    source = f"rlhf/datasets/data/{directory}/{filename}"
    with resource.open("rb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            return list(_records(unzipped, source)), source


# FineGrainedRLHF's order of the six pairs of predictions 1..4
_FINEGRAINED_PAIRS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def load_finegrained_qa() -> "PreferenceDataset":
    """Human preferences among 4 answers to each of 500 questions.

    The dev split of FineGrainedRLHF's qa-feedback (Wu et al. 2023,
    "Fine-grained human feedback gives better rewards for language model
    training", NeurIPS; Apache-2.0): questions from ASQA, four answers of a
    supervised policy each, and an annotator's preference for each of the
    six pairs -- 3,000 comparisons, 384 of them ties.  Within a question
    the strict preferences have no cycle, so they form a ranking with ties
    of the four answers.  See ``rlhf/datasets/data/finegrained_qa/
    SOURCE.md``.

    Returns
    -------
    PreferenceDataset
        ``texts[4 * q + k]`` is answer ``k + 1`` to question ``q`` =
        ``prompts[q]``; ``pairs`` follow the source's order (1v2, 1v3, 1v4,
        2v3, 2v4, 3v4) per question; ``labels`` has one column (1 = first
        better, 2 = second, 0 = no preference).

    Examples
    --------
    >>> from rlhf import datasets
    >>> data = datasets.load_finegrained_qa()
    >>> len(data.texts), len(data.prompts), len(data)
    (2000, 500, 3000)
    """
    records, source = _bundled_records("finegrained_qa",
                                       "dev_feedback.jsonl.gz")
    builder = _Builder()
    labels = []
    for line_no, record in records:
        question = _text_field(record, "question", source, line_no)
        answers = [_text_field(record, f"prediction {k}", source, line_no)
                   for k in range(1, 5)]
        preference = record.get("preference")
        if not (isinstance(preference, list) and len(preference) == 6 and
                all(type(v) is int and v in (0, 1, 2) for v in preference)):
            raise ValueError(f"{source}, line {line_no}: key 'preference' "
                             "must be a list of six labels in {0, 1, 2}.")
        p = builder.prompt(question)
        for answer in answers:
            builder.text(p, answer)
        for (i, j), label in zip(_FINEGRAINED_PAIRS, preference):
            builder.add(question, answers[i - 1], answers[j - 1])
            labels.append(label)
    return builder.build(np.array(labels)[:, None], "finegrained_qa")


# a period after one of these does not end a sentence ("Dr. No", "St.
# Louis"); nor does one after a single letter or inside "U.S." and "a.m."
_ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Dr St Jr Sr No Gen Col Lt Capt Sgt Mt Ft Co Inc Ltd Corp vs "
    "etc Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Vol Rev Prof "
    "Gov Sen Rep Pres".split())
# an end mark followed by white space and no lowercase letter ("Mamma
# Mia! is a film" goes on), or by the end of the text
_SENTENCE_END = re.compile(r"[.!?](?=\s+[^a-z\s]|\s*$)")


def _first_sentence(text):
    """text up to its first sentence end: '.', '!' or '?' followed by
    white space and no lowercase letter, or by the end, except after an
    abbreviation."""
    for match in _SENTENCE_END.finditer(text):
        end = match.start()
        word = text[:end].rsplit(None, 1)[-1] if text[:end].strip() else ""
        word = word.lstrip("(\"'")
        if text[end] == "." and (len(word) == 1 or "." in word
                                 or word in _ABBREVIATIONS):
            continue
        return text[:end + 1]
    return text


def _cut(text, max_chars):
    """The first sentence of text, then at most max_chars characters,
    cut at a word boundary (within a word only if the first word alone is
    longer)."""
    text = _first_sentence(" ".join(text.split()))
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[:max_chars + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else text[:max_chars]
    return cut.rstrip(" ,;:-")


def load_finegrained_qa_sft(
        max_chars: int = 200,
) -> Tuple[List[str], List[str]]:
    """Questions and their best human-preferred answers, for SFT.

    From :func:`load_finegrained_qa`: for each of the 500 questions, the
    answers no other answer to it was strictly preferred to (its top tier:
    one answer, or several the annotator did not separate), each cut to
    its first sentence and then to at most ``max_chars`` characters at a
    word boundary.  White space runs become single spaces; an answer
    whose cut text repeats one already kept for the question is kept once.

    Parameters
    ----------
    max_chars : int >= 1 or None, default=200
        Longest response in characters (not bytes: a few answers hold
        non-ASCII characters); None keeps whole first sentences.

    Returns
    -------
    prompts : list of str
        The question of each pair (repeated when a question has several
        top answers).
    responses : list of str
        The cut answers, in question order and, within a question, in the
        source's order (prediction 1 to 4).

    Examples
    --------
    >>> from rlhf.datasets import load_finegrained_qa_sft
    >>> prompts, responses = load_finegrained_qa_sft(max_chars=60)
    >>> prompts[0]
    'When does bloom by troye sivan come out?'
    >>> max(len(r) for r in responses) <= 60
    True
    """
    if max_chars is not None:
        max_chars = check_scalar(max_chars, "max_chars",
                                 "load_finegrained_qa_sft", kind="int", low=1)
    data = load_finegrained_qa()
    # a strict comparison (not a tie) puts its second text below the top
    beaten = np.zeros(len(data.texts), dtype=bool)
    beaten[data.comparisons[~data.ties, 1]] = True
    prompts, responses = [], []
    for q, question in enumerate(data.prompts.tolist()):
        kept = set()
        for k in range(4 * q, 4 * q + 4):
            if beaten[k]:
                continue
            response = _cut(data.texts[k], max_chars)
            if response and response not in kept:
                kept.add(response)
                prompts.append(question)
                responses.append(response)
    return prompts, responses


def load_pandalm() -> "PreferenceDataset":
    """Three human annotators' verdicts on 999 pairs of responses.

    PandaLM's human-annotated test set (Wang et al. 2024, "PandaLM: an
    automatic evaluation benchmark for LLM instruction tuning
    optimization", ICLR; Apache-2.0): 170 instructions (with inputs) from
    the self-instruct human-evaluation set, answered by five 7B models and
    compared in pairs; each annotator says which response is better or
    calls a tie.  ``comparisons`` follow the majority of the three (which
    always exists): 894 strict, 105 ties.  See
    ``rlhf/datasets/data/pandalm/SOURCE.md``.

    Returns
    -------
    PreferenceDataset
        A prompt is the instruction, followed by a blank line and the input
        when there is one.  ``pairs`` are (response1, response2);
        ``labels`` has the three annotators' columns (1 = response1 better,
        2 = response2, 0 = tie); ``info`` holds ``idx``, ``cmp_key`` (the
        two models, not saying which wrote response1) and
        ``motivation_app``.  The JSON value ``true`` that stands for a
        response in six records is read as the text "True".

    Examples
    --------
    Three annotators labelled every pair; they agree on most:

    >>> from rlhf import datasets
    >>> data = datasets.load_pandalm()
    >>> data.labels.shape
    (999, 3)
    >>> round(data.agreement.fleiss_kappa, 2)
    0.86
    """
    records, source = _bundled_records("pandalm", "testset-v1.jsonl.gz")
    builder = _Builder()
    labels = []
    info: Dict[str, List[Any]] = {"idx": [], "cmp_key": [],
                                  "motivation_app": []}
    for line_no, record in records:
        instruction = _text_field(record, "instruction", source, line_no)
        extra = _text_field(record, "input", source, line_no)
        prompt = instruction + ("\n\n" + extra if extra else "")
        responses = []
        for key in ("response1", "response2"):
            if record.get(key) is True:
                record = dict(record, **{key: "True"})
            responses.append(_text_field(record, key, source, line_no))
        builder.add(prompt, *responses)
        votes = [record.get(f"annotator{k}") for k in (1, 2, 3)]
        if not all(type(v) is int and v in (0, 1, 2) for v in votes):
            raise ValueError(f"{source}, line {line_no}: annotator labels "
                             f"must be 0, 1 or 2; got {votes}.")
        labels.append(votes)
        idx = record.get("idx")
        if type(idx) is not int:
            raise ValueError(f"{source}, line {line_no}: key 'idx' must be "
                             f"an integer; got {_json_type(idx)}.")
        info["idx"].append(idx)
        for key in ("cmp_key", "motivation_app"):
            info[key].append(_text_field(record, key, source, line_no))
    columns = {"idx": np.array(info["idx"], dtype=np.int64),
               "cmp_key": np.array(info["cmp_key"], dtype=object),
               "motivation_app": np.array(info["motivation_app"],
                                          dtype=object)}
    return builder.build(np.array(labels), "pandalm", columns)
