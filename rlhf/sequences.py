"""Token-level RLHF on an exact autoregressive world.

A response is a sequence of tokens ``y = (a_1, ..., a_L)`` from a vocabulary
of V tokens, the last of which is the end token; a policy writes it one
token at a time, ``pi(y) = prod_t pi(a_t | s_t)`` with ``s_t`` the prefix
``(a_1, ..., a_{t-1})``.  Everything here is small enough to enumerate, so
what RLHF does with samples can be checked against the exact answer:

- :class:`Sequences`: one type for sequences everywhere (samples,
  demonstrations, enumerations);
- :class:`SequencePolicy`: a tabular autoregressive policy over the whole
  prefix (exact) or the last k tokens (an n-gram), with sampling,
  per-token log-probabilities, exact enumeration, entropy and maximum
  likelihood from demonstrations (SFT);
- :func:`make_sequence_world`: the lecture's world as sequences -- words
  with (relevance, safety) features, a reference "SFT model", a gold
  reward and a cost;
- :func:`soft_optimal_policy`: the exact optimum of
  ``E[r(y)] - beta KL(pi || pi_ref)`` over token-level policies, by the
  soft Bellman backup;
- :func:`kl_divergence` and :func:`kl_estimators`: the exact sequence KL
  and the bias and variance of the per-token estimators k1, k2, k3.

Conventions
-----------
Tokens are ints in ``[0, V)``; one of them, ``end_token``, ends a
sequence.  The other ``W = V - 1`` tokens are *words*; word number ``c``
(``0 <= c < W``) is the c-th smallest token other than the end token.

A sequence has ``1 <= L <= T`` tokens (``T = max_length``) and always ends
with the end token; it holds ``L - 1`` words.  **The world forces the end
at T**: after ``T - 1`` words the only token is the end token, with
probability 1 under every policy (its log-probability is 0 and it is not a
choice, so it is not a state of the policy).  A policy therefore chooses at
positions ``0 .. T - 2`` only, and the probabilities of the
``N = sum_{t < T} W**t`` complete sequences sum to 1 exactly, as for any
finite tree.  Arrays of sequences are ``(n, T)`` int64, padded after the
end token with the end token itself (so every entry is a valid token
index), with ``lengths`` counting the tokens including the end token.

States.  The state at position t is the *context*: the last
``min(t, k)`` words of the prefix, with ``k = context_length`` (None: the
whole prefix, ``k = T - 2``).  Contexts are numbered in trie (level) order:
by length j first, then as base-W numbers of their words, first word most
significant::

    state(c_1 .. c_j) = offset[j] + sum_i c_i W**(j - i),
    offset[j] = sum_{i < j} W**i.

So the empty context is state 0, its children ``1 .. W``, and the children
of state s at level j (for ``j < k``) are
``offset[j + 1] + (s - offset[j]) W + c``.  A whole-prefix policy has
``sum_{j <= T-2} W**j`` states; an n-gram policy ``sum_{j <= k} W**j``
(contexts shorter than k occur only at the start).  The same numbering of
all prefixes of length ``0 .. T - 1`` orders the complete sequences:
:meth:`SequencePolicy.enumerate` lists the sequence "prefix + end" of each
prefix in that order, and the first states of a whole-prefix policy are
exactly the first rows of that list.

Sampling, per-token log-probabilities and the soft Bellman backup are C
kernels of ``rlhf._core`` (their NumPy twins are in ``rlhf._reference``);
sampling draws the SplitMix64 counters of
``rlhf._core.sample_categorical``, token t of sequence i from number
``i T + t``, so the same seed gives the same sequences for any number of
threads.  The rest is vectorised NumPy.
"""
import dataclasses
import numbers
from typing import (Callable, Dict, Iterable, List, Optional, Tuple,
                    Union)

import numpy as np

from . import _core
from ._typing import ArrayLike, FloatArray, IntArray, NDArray, RandomState
from ._validation import (MAX_TABLE_ENTRIES, _as_float_array, _check_finite,
                          check_scalar, format_value)
from .preferences import _check_random_state

SequencesLike = Union["Sequences", ArrayLike]
"""Sequences, or an array-like of token ids of shape (n, T) padded with
the end token."""
RewardsLike = Union[Callable[["Sequences"], ArrayLike], ArrayLike]
"""A function of Sequences, or one value per sequence of
``reference.enumerate()`` in that order."""

__all__ = [
    "KLEstimates",
    "MAX_SEQUENCES",
    "SequencePolicy",
    "SequenceWorld",
    "Sequences",
    "kl_divergence",
    "kl_estimators",
    "make_sequence_world",
    "soft_optimal_policy",
    "value_function",
]

#: The most complete sequences an exact computation (enumeration, entropy,
#: KL, the soft Bellman backup) visits before refusing with a ValueError:
#: beyond it the world is not "small enough to enumerate" and sampling is
#: the tool.
MAX_SEQUENCES = 10**6


# --------------------------------------------------------------------------
# argument checks


def _check_int(value, name, owner, low, high=None):
    return check_scalar(value, name, owner, kind="int", low=low, high=high)


def _check_vocabulary(vocab_size, end_token, owner):
    vocab_size = _check_int(vocab_size, "vocab_size", owner, 2)
    end_token = _check_int(end_token, "end_token", owner, 0, vocab_size - 1)
    return vocab_size, end_token


def _check_context_length(context_length, owner):
    if context_length is None:
        return None
    return _check_int(context_length, "context_length", owner, 0)


def _n_prefixes(n_words, n_levels):
    """sum_{t < n_levels} W**t as a Python int (no overflow)."""
    return sum(n_words ** t for t in range(n_levels))


def _offsets(n_words, n_levels):
    """int64 offsets of levels 0 .. n_levels in trie order:
    offset[j] = sum_{i < j} W**i."""
    return np.array([_n_prefixes(n_words, j) for j in range(n_levels + 1)],
                    dtype=np.int64)


def _word_tables(vocab_size, end_token):
    """(word_tokens, word_of_token): the W word tokens in increasing order,
    and each token's word number (-1 for the end token)."""
    word_tokens = np.delete(np.arange(vocab_size, dtype=np.int64), end_token)
    word_of_token = np.full(vocab_size, -1, dtype=np.int64)
    word_of_token[word_tokens] = np.arange(vocab_size - 1)
    return word_tokens, word_of_token


def _log_softmax(logits):
    """Row-wise log-softmax, the largest logit subtracted first so that
    nothing overflows; -inf logits give -inf (probability 0)."""
    if logits.shape[0] == 0:
        return logits.copy()
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------
# sequences


def _token_rows(tokens, end_token, owner):
    """A 2-d integer array from an array or a (possibly ragged) list of
    token lists, ragged rows padded with the end token."""
    if isinstance(tokens, (list, tuple)):
        try:
            arr = np.asarray(tokens)
        except ValueError:  # ragged: NumPy >= 1.24 refuses to guess
            arr = None
        if arr is None or arr.dtype == object:
            rows = [np.asarray(row) for row in tokens]
            for i, row in enumerate(rows):
                if row.ndim != 1:
                    raise ValueError(
                        f"The 'tokens' parameter of {owner} must be a 2-d "
                        f"array or a list of token lists; row {i} has shape "
                        f"{row.shape}.")
                if row.size and (row.dtype.kind not in "iu"):
                    raise TypeError(
                        f"The 'tokens' parameter of {owner} must hold "
                        f"integer tokens; row {i} has dtype {row.dtype}.")
            width = max((row.size for row in rows), default=0)
            arr = np.full((len(rows), width), end_token, dtype=np.int64)
            for i, row in enumerate(rows):
                arr[i, :row.size] = row
            return arr
        if arr.ndim == 1 and arr.size == 0:
            return np.zeros((0, 0), dtype=np.int64)
    else:
        arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu" or arr.dtype == bool:
        raise TypeError(
            f"The 'tokens' parameter of {owner} must hold integer tokens; "
            f"got an array of dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(
            f"The 'tokens' parameter of {owner} must be 2-dimensional, one "
            f"sequence per row; got shape {arr.shape}. Use "
            "tokens.reshape(1, -1) for a single sequence.")
    return arr


class Sequences:
    """Token sequences, each ending with the end token.

    An int64 array of shape ``(n, T)``: row i holds sequence i's
    ``lengths[i]`` tokens, the last of which is ``end_token``, then
    padding (the end token again) up to T columns.  ``np.asarray(s)`` is
    that array; ``len(s)`` is n; ``s[i]`` is sequence i without padding (a
    1-d int64 array); ``s[1:3]``, ``s[mask]`` and ``s[[0, 2]]`` are
    Sequences.  Two Sequences are equal when they hold the same sequences
    in the same order over the same vocabulary (however wide the padding).

    Parameters
    ----------
    tokens : array-like of int of shape (n, T), or a list of token lists
        Rows of different lengths are padded with the end token.
    lengths : array-like of int of shape (n,), default=None
        Tokens of each sequence including the end token; by default up to
        the first end token of each row.
    vocab_size : int >= 2
        V: tokens are ints in ``[0, V)``.
    end_token : int in [0, V), default=0

    Attributes
    ----------
    tokens : ndarray of shape (n, T), int64, read-only
    lengths : ndarray of shape (n,), int64, read-only
    vocab_size, end_token : int
    max_length : int
        T, the number of columns.
    mask : ndarray of shape (n, T), bool
        True at the tokens of each sequence (end token included), False at
        the padding.

    Raises
    ------
    ValueError
        A token outside ``[0, V)``; a row without an end token (the world
        ends every sequence with it, forcing it at ``max_length``); a
        length outside ``[1, T]``, or one that does not end at the first
        end token; a token after the end token that is not padding.

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> s = rlhf.Sequences([[3, 2, 0], [1, 0]], vocab_size=4)
    >>> s
    Sequences(n=2, max_length=3, vocab_size=4, end_token=0, \
tokens=[[3, 2, 0], [1, 0]])
    >>> s.lengths
    array([3, 2])
    >>> np.asarray(s)
    array([[3, 2, 0],
           [1, 0, 0]])
    """

    __slots__ = ("tokens", "lengths", "vocab_size", "end_token")
    tokens: IntArray
    lengths: IntArray
    vocab_size: int
    end_token: int

    def __init__(self, tokens: ArrayLike, lengths: Optional[ArrayLike] = None,
                 *, vocab_size: int, end_token: int = 0) -> None:
        owner = "Sequences"
        vocab_size, end_token = _check_vocabulary(vocab_size, end_token,
                                                  owner)
        arr = _token_rows(tokens, end_token, owner)
        n, width = arr.shape
        outside = (arr < 0) | (arr >= vocab_size)
        if outside.any():
            row, position = np.argwhere(outside)[0]
            raise ValueError(
                f"The 'tokens' parameter of {owner}: token "
                f"{int(arr[row, position])} in row {row}, position "
                f"{position} is outside [0, {vocab_size}) (vocab_size="
                f"{vocab_size}).")
        arr = np.array(arr, dtype=np.int64)  # a copy: ours, never the caller's
        is_end = arr == end_token
        first_end = np.where(is_end.any(axis=1), is_end.argmax(axis=1), -1)
        if lengths is None:
            if (first_end < 0).any():
                row = int(np.flatnonzero(first_end < 0)[0])
                raise ValueError(
                    f"The 'tokens' parameter of {owner}: row {row} has no "
                    f"end token ({end_token}). Every sequence ends with it; "
                    "the world ends a sequence at max_length by writing it "
                    "there.")
            lengths = first_end + 1
        else:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.dtype == bool:
                raise TypeError(
                    f"The 'lengths' parameter of {owner} must hold ints; got "
                    f"dtype {lengths.dtype}.")
            if lengths.shape != (n,):
                raise ValueError(
                    f"The 'lengths' parameter of {owner} must have shape "
                    f"({n},), one per row of tokens; got {lengths.shape}.")
            bad = (lengths < 1) | (lengths > width)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"The 'lengths' parameter of {owner}: row {row} has "
                    f"length {int(lengths[row])}, outside [1, {width}] (the "
                    f"number of token columns, T={width}).")
            lengths = lengths.astype(np.int64)
            wrong = first_end != lengths - 1
            if wrong.any():
                row = int(np.flatnonzero(wrong)[0])
                at = int(arr[row, lengths[row] - 1])
                if first_end[row] < 0 or first_end[row] > lengths[row] - 1:
                    raise ValueError(
                        f"The 'tokens' parameter of {owner}: row {row} has "
                        f"length {int(lengths[row])} but its last token is "
                        f"{at}, not the end token ({end_token}).")
                raise ValueError(
                    f"The 'tokens' parameter of {owner}: row {row} has "
                    f"length {int(lengths[row])} but an end token at "
                    f"position {int(first_end[row])}.")
        after = np.arange(width) >= lengths[:, None]
        not_padding = after & ~is_end
        if not_padding.any():
            row, position = np.argwhere(not_padding)[0]
            raise ValueError(
                f"The 'tokens' parameter of {owner}: token "
                f"{int(arr[row, position])} in row {row}, position "
                f"{position} comes after the end token at position "
                f"{int(lengths[row]) - 1}; positions after the end must hold "
                f"the end token ({end_token}) as padding.")
        self._set(arr, lengths, vocab_size, end_token)

    def _set(self, tokens, lengths, vocab_size, end_token):
        tokens.flags.writeable = False
        lengths.flags.writeable = False
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "vocab_size", vocab_size)
        object.__setattr__(self, "end_token", end_token)

    @classmethod
    def _trusted(cls, tokens, lengths, vocab_size, end_token):
        """Sequences from arrays this module built and knows valid."""
        out = object.__new__(cls)
        out._set(np.ascontiguousarray(tokens, dtype=np.int64),
                 np.ascontiguousarray(lengths, dtype=np.int64),
                 int(vocab_size), int(end_token))
        return out

    def __setattr__(self, name, value):
        raise AttributeError("Sequences are immutable.")

    def __reduce__(self):
        return (_rebuild_sequences, (np.array(self.tokens),
                                     np.array(self.lengths), self.vocab_size,
                                     self.end_token))

    @property
    def max_length(self) -> int:
        return self.tokens.shape[1]

    @property
    def mask(self) -> NDArray[np.bool_]:
        return np.arange(self.max_length) < self.lengths[:, None]

    def __len__(self):
        return self.tokens.shape[0]

    def __array__(self, dtype=None, copy=None):
        if copy is False and dtype is not None and \
                np.dtype(dtype) != self.tokens.dtype:
            raise ValueError("A copy is needed to convert the tokens to "
                             f"{np.dtype(dtype)}.")
        out = self.tokens if dtype is None else self.tokens.astype(
            dtype, copy=False)
        return out.copy() if copy else out

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral) and not isinstance(
                index, bool):
            row = range(len(self))[index]  # an IndexError when out of range
            return self.tokens[row, :self.lengths[row]]
        index = index if isinstance(index, slice) else np.asarray(index)
        return Sequences._trusted(self.tokens[index], self.lengths[index],
                                  self.vocab_size, self.end_token)

    def __iter__(self):
        for row in range(len(self)):
            yield self.tokens[row, :self.lengths[row]]

    def __eq__(self, other):
        if not isinstance(other, Sequences):
            return NotImplemented
        if (self.vocab_size, self.end_token, len(self)) != (
                other.vocab_size, other.end_token, len(other)):
            return False
        if not np.array_equal(self.lengths, other.lengths):
            return False
        width = min(self.max_length, other.max_length)
        # beyond the narrower width both hold padding only
        return bool(np.array_equal(self.tokens[:, :width],
                                   other.tokens[:, :width]))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def to_list(self) -> List[List[int]]:
        """The sequences as lists of ints, without padding."""
        return [row.tolist() for row in self]

    def _with_width(self, width):
        """The same sequences in ``width`` columns (all lengths fit)."""
        if width == self.max_length:
            return self
        if width < self.max_length:
            tokens = self.tokens[:, :width]
        else:
            tokens = np.full((len(self), width), self.end_token,
                             dtype=np.int64)
            tokens[:, :self.max_length] = self.tokens
        return Sequences._trusted(tokens, self.lengths, self.vocab_size,
                                  self.end_token)

    def __repr__(self):
        rows = self.to_list() if len(self) <= 6 else (
            self[:3].to_list() + ["..."] + self[-1:].to_list())
        shown = "[" + ", ".join(str(r) for r in rows) + "]"
        return (f"Sequences(n={len(self)}, max_length={self.max_length}, "
                f"vocab_size={self.vocab_size}, end_token={self.end_token}, "
                f"tokens={shown})")


def _rebuild_sequences(tokens, lengths, vocab_size, end_token):
    """Sequences from a pickle: arrays this module wrote."""
    return Sequences._trusted(tokens, lengths, vocab_size, end_token)


def _as_sequences(sequences, vocab_size, end_token, max_length, owner,
                  name="sequences"):
    """Sequences over (vocab_size, end_token) in max_length columns."""
    if not isinstance(sequences, Sequences):
        sequences = Sequences(sequences, vocab_size=vocab_size,
                              end_token=end_token)
    elif (sequences.vocab_size, sequences.end_token) != (vocab_size,
                                                         end_token):
        raise ValueError(
            f"The '{name}' parameter of {owner} must use vocab_size="
            f"{vocab_size} and end_token={end_token}; got Sequences with "
            f"vocab_size={sequences.vocab_size} and end_token="
            f"{sequences.end_token}.")
    if len(sequences) and sequences.lengths.max() > max_length:
        row = int(np.argmax(sequences.lengths > max_length))
        raise ValueError(
            f"The '{name}' parameter of {owner}: row {row} has "
            f"{int(sequences.lengths[row])} tokens, more than max_length="
            f"{max_length}.")
    return sequences._with_width(max_length)


def _all_prefixes(n_words, max_length):
    """(level, code) of every prefix of 0 .. T-1 words in trie order."""
    sizes = [n_words ** t for t in range(max_length)]
    level = np.repeat(np.arange(max_length, dtype=np.int64), sizes)
    code = np.concatenate([np.arange(s, dtype=np.int64) for s in sizes])
    return level, code


# --------------------------------------------------------------------------
# policies


class SequencePolicy:
    """A tabular autoregressive policy over tokens, with an end token.

    ``pi(a | s) = softmax(logits[s])_a`` at each state s (see the module's
    notes for the numbering of states), and
    ``pi(y) = prod_t pi(a_t | s_t)`` over the tokens of a sequence, the end
    token at position T-1 forced with probability 1.

    Parameters
    ----------
    logits : array-like of shape (n_states, vocab_size)
        One row per state; -inf gives probability 0, and each row needs a
        finite entry.  ``n_states = sum_{j <= k} W**j`` with ``W =
        vocab_size - 1`` and ``k = min(context_length, max_length - 2)``
        (the whole prefix: ``k = max_length - 2``).
    vocab_size : int >= 2
        V, including the end token.
    max_length : int >= 1
        T, the most tokens of a sequence, end token included.
    end_token : int in [0, V), default=0
    context_length : int >= 0 or None, default=None
        None: the state is the whole prefix (every distribution over
        sequences is representable).  k: the state is the last k words (a
        (k+1)-gram model; ``k = 0`` is one distribution for every
        position); ``k >= T - 2`` is the whole prefix again.

    Attributes
    ----------
    logits : ndarray of shape (n_states, V), read-only
    log_probs : ndarray of shape (n_states, V), read-only
        ``log pi(a | s)``, each row normalised.
    n_states : int
    n_sequences : int
        ``N = sum_{t < T} W**t``, the number of complete sequences.

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> policy = rlhf.SequencePolicy(np.zeros((3, 3)), vocab_size=3,
    ...                              max_length=3)
    >>> sequences, probabilities = policy.enumerate()
    >>> sequences.to_list()
    [[0], [1, 0], [2, 0], [1, 1, 0], [1, 2, 0], [2, 1, 0], [2, 2, 0]]
    >>> probabilities.round(4).tolist()
    [0.3333, 0.1111, 0.1111, 0.1111, 0.1111, 0.1111, 0.1111]
    >>> round(policy.entropy(), 6)  # (5/3) log 3
    1.83102
    """

    def __init__(self, logits: ArrayLike, vocab_size: int, max_length: int,
                 end_token: int = 0,
                 context_length: Optional[int] = None) -> None:
        owner = "SequencePolicy"
        self.vocab_size, self.end_token = _check_vocabulary(
            vocab_size, end_token, owner)
        self.max_length = _check_int(max_length, "max_length", owner, 1)
        self.context_length = _check_context_length(context_length, owner)
        self.n_words = self.vocab_size - 1
        depth = self.max_length - 2
        if self.context_length is not None:
            depth = min(self.context_length, depth)
        self._depth = depth
        self.n_states = _n_prefixes(self.n_words, depth + 1)
        if self.n_states * self.vocab_size > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"{owner} with vocab_size={self.vocab_size}, max_length="
                f"{self.max_length} and context_length={context_length} "
                f"has {self.n_states} states, a table of more than 2**31 "
                "logits; use a shorter context_length (an n-gram policy).")
        logits = _as_float_array(logits, "logits")
        shape = (self.n_states, self.vocab_size)
        if logits.shape != shape:
            raise ValueError(
                f"The 'logits' parameter of {owner} must have shape {shape} "
                f"(n_states, vocab_size) for vocab_size={self.vocab_size}, "
                f"max_length={self.max_length} and context_length="
                f"{context_length}; got {logits.shape}.")
        if np.isnan(logits).any() or (logits == np.inf).any():
            raise ValueError(
                f"The 'logits' parameter of {owner} must not hold NaN or "
                "+inf (-inf is a token of probability 0).")
        dead = ~(logits > -np.inf).any(axis=1)
        if dead.any():
            raise ValueError(
                f"The 'logits' parameter of {owner}: row "
                f"{int(np.flatnonzero(dead)[0])} is all -inf, so that state "
                "would have no token.")
        self.logits = logits.copy()
        self.log_probs = _log_softmax(self.logits)
        self._probs = np.exp(self.log_probs)
        for table in (self.logits, self.log_probs, self._probs):
            table.flags.writeable = False
        self._word_tokens, self._word_of_token = _word_tables(
            self.vocab_size, self.end_token)
        self._offsets = _offsets(self.n_words, depth + 1)

    @property
    def n_sequences(self) -> int:
        return _n_prefixes(self.n_words, self.max_length)

    def __repr__(self):
        return (f"SequencePolicy(vocab_size={self.vocab_size}, max_length="
                f"{self.max_length}, end_token={self.end_token}, "
                f"context_length={self.context_length}, n_states="
                f"{self.n_states})")

    # -- sampling and scoring -------------------------------------------

    def sample(self, n: int, random_state: RandomState = None) -> "Sequences":
        """Draw n sequences, token by token.

        Each token is drawn by inverse CDF from ``pi(. | s_t)`` with the
        uniform number ``i T + t`` of a SplitMix64 stream (sequence i,
        position t) whose seed is drawn from ``random_state``: the same
        seed gives the same sequences, and sequence i does not depend on n.

        Parameters
        ----------
        n : int >= 1
        random_state : None, int or numpy.random.Generator, default=None

        Returns
        -------
        Sequences of shape (n, max_length)

        Examples
        --------
        >>> import rlhf
        >>> world = rlhf.make_sequence_world()
        >>> world.decode(world.reference.sample(3, random_state=0))
        ['vague', 'answer', 'joke']
        """
        owner = "SequencePolicy.sample"
        n = _check_int(n, "n", owner, 1)
        if n * self.max_length > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"{owner}: n * max_length = {n} * {self.max_length} is more "
                "than 2**31 tokens; draw them in batches.")
        rng = _check_random_state(random_state, owner)
        return self._sample(n, int(rng.integers(0, 2**63)))

    def _sample(self, n, seed):
        """n sequences from a seed (the kernel rlhf._core.sample_sequences;
        its twin is rlhf._reference.sample_sequences)."""
        if self._depth < 0:  # max_length 1: the end token alone
            return Sequences._trusted(
                np.full((n, 1), self.end_token, dtype=np.int64),
                np.ones(n, dtype=np.int64), self.vocab_size, self.end_token)
        tokens, lengths = _core.sample_sequences(
            self._probs, n, self.max_length, seed, self.end_token,
            self._depth)
        return Sequences._trusted(tokens, lengths, self.vocab_size,
                                  self.end_token)

    def _sequences(self, sequences, owner):
        return _as_sequences(sequences, self.vocab_size, self.end_token,
                             self.max_length, owner)

    def states(self, sequences: SequencesLike) -> IntArray:
        """The state at each position of each sequence.

        Parameters
        ----------
        sequences : Sequences or array-like of int of shape (n, T')
            T' may be below max_length; no sequence may be longer.

        Returns
        -------
        ndarray of shape (n, max_length), int64
            Row indices of :attr:`logits`; -1 where the token is not a
            choice (the padding, and the end token forced at position
            max_length - 1).
        """
        sequences = self._sequences(sequences, "SequencePolicy.states")
        return self._states(sequences)

    def _states(self, sequences):
        return self._states_and_log_probs(sequences)[0]

    def _states_and_log_probs(self, sequences):
        """(states, per-token log-probabilities), each (n, max_length): the
        kernel rlhf._core.sequence_log_probs."""
        if self._depth < 0:
            shape = sequences.tokens.shape
            return np.full(shape, -1, dtype=np.int64), np.zeros(shape)
        return _core.sequence_log_probs(self.log_probs, sequences.tokens,
                                        sequences.lengths, self.end_token,
                                        self._depth)

    def log_prob(self, sequences: SequencesLike,
                 per_token: bool = False) -> FloatArray:
        """Log-probabilities of sequences.

        Parameters
        ----------
        sequences : Sequences or array-like of int of shape (n, T')
        per_token : bool, default=False

        Returns
        -------
        ndarray of shape (n,), or (n, max_length) with per_token=True
            ``log pi(y) = sum_t log pi(a_t | s_t)``, or its terms: 0 at the
            padding and at the forced end token; -inf for a token of
            probability 0.

        Examples
        --------
        >>> import numpy as np, rlhf
        >>> policy = rlhf.SequencePolicy(np.log([[0.5, 0.5]]), vocab_size=2,
        ...                              max_length=2)
        >>> policy.log_prob([[1, 0], [0, 0]], per_token=True)
        array([[-0.69314718,  0.        ],
               [-0.69314718,  0.        ]])
        """
        sequences = self._sequences(sequences, "SequencePolicy.log_prob")
        per_position = self._token_log_probs(sequences)
        return per_position if per_token else per_position.sum(axis=1)

    def _token_log_probs(self, sequences):
        return self._states_and_log_probs(sequences)[1]

    def token_distribution(self,
                           states: Optional[ArrayLike] = None) -> FloatArray:
        """``pi(. | s)`` at the given states.

        Parameters
        ----------
        states : array-like of int, default=None
            State indices (e.g. from :meth:`states`, without the -1s);
            None for every state.

        Returns
        -------
        ndarray of shape states.shape + (vocab_size,)
        """
        if states is None:
            return self._probs.copy()
        states = np.asarray(states)
        if states.dtype.kind not in "iu" or states.dtype == bool:
            raise TypeError("The 'states' parameter of "
                            "SequencePolicy.token_distribution must hold "
                            f"ints; got dtype {states.dtype}.")
        if states.size and (states.min() < 0 or
                            states.max() >= self.n_states):
            raise ValueError(
                "The 'states' parameter of SequencePolicy.token_distribution"
                f" must be in [0, {self.n_states}); got values in "
                f"[{int(states.min())}, {int(states.max())}].")
        return self._probs[states]

    # -- exact computations over the tree of prefixes --------------------

    def _check_enumerable(self, owner, max_sequences=MAX_SEQUENCES):
        if self.n_sequences > max_sequences:
            raise ValueError(
                f"{owner}: vocab_size={self.vocab_size} and max_length="
                f"{self.max_length} make {self.n_sequences} complete "
                f"sequences, more than {max_sequences} to enumerate; use a "
                "smaller world, or estimate from samples.")

    def _prefix_log_probs(self):
        """``log pi(a | prefix)`` for every prefix of 0 .. T-2 words, shape
        (n_prefix_states, V): the table itself for a whole-prefix policy,
        each prefix's context row for an n-gram."""
        if self._depth == self.max_length - 2:
            return self.log_probs
        level, code = _all_prefixes(self.n_words, self.max_length - 1)
        context = np.minimum(level, self._depth)
        return self.log_probs[self._offsets[context]
                              + code % self.n_words ** context]

    def to_prefix_policy(self) -> "SequencePolicy":
        """The same distribution with the whole prefix as the state.

        Returns
        -------
        SequencePolicy
            ``self`` when the state is already the whole prefix.
        """
        if self._depth == self.max_length - 2:
            return self
        self._check_enumerable("SequencePolicy.to_prefix_policy")
        return SequencePolicy(self._prefix_log_probs(), self.vocab_size,
                              self.max_length, self.end_token)

    def _reach_log_probs(self, prefix_log_probs):
        """log P(prefix) for every prefix of 0 .. T-1 words: the children of
        level t, in trie order, are parent-major and word-minor."""
        offsets = _offsets(self.n_words, self.max_length)
        reach = np.empty(offsets[-1])
        reach[0] = 0.0
        words = prefix_log_probs[:, self._word_tokens]
        for t in range(self.max_length - 1):
            parents = slice(offsets[t], offsets[t + 1])
            reach[offsets[t + 1]:offsets[t + 2]] = (
                reach[parents, None] + words[parents]).ravel()
        return reach

    def _sequence_log_probs(self, prefix_log_probs=None):
        """log pi(y) of every complete sequence in enumeration order."""
        if prefix_log_probs is None:
            prefix_log_probs = self._prefix_log_probs()
        out = self._reach_log_probs(prefix_log_probs)
        # the end is a choice below T-1 words and forced at T-1
        out[:prefix_log_probs.shape[0]] += prefix_log_probs[:,
                                                            self.end_token]
        return out

    def enumerate(
            self,
            max_sequences: int = MAX_SEQUENCES,
    ) -> Tuple["Sequences", FloatArray]:
        """Every complete sequence and its probability.

        Sequences come in trie order of their words (by length, then
        lexicographically by word number); the probabilities sum to 1 up to
        rounding.

        Parameters
        ----------
        max_sequences : int, default=MAX_SEQUENCES (10**6)
            Refuse (ValueError) when there are more complete sequences.

        Returns
        -------
        sequences : Sequences of shape (n_sequences, max_length)
        probabilities : ndarray of shape (n_sequences,)

        Examples
        --------
        >>> import rlhf
        >>> world = rlhf.make_sequence_world()
        >>> sequences, probabilities = world.reference.enumerate()
        >>> len(sequences), float(probabilities.sum().round(12))
        (19608, 1.0)
        """
        self._check_enumerable("SequencePolicy.enumerate", max_sequences)
        sequences = _enumerate_sequences(self.vocab_size, self.end_token,
                                         self.max_length)
        return sequences, np.exp(self._sequence_log_probs())

    def entropy(self) -> float:
        """The exact entropy of the sequence distribution, in nats.

        ``H(pi) = sum_s P(s) H(pi(. | s))`` over the prefixes s (the chain
        rule), equal to ``-sum_y pi(y) log pi(y)``.

        Returns
        -------
        float
        """
        self._check_enumerable("SequencePolicy.entropy")
        prefix = self._prefix_log_probs()
        reach = np.exp(self._reach_log_probs(prefix)[:prefix.shape[0]])
        probs = np.exp(prefix)
        with np.errstate(invalid="ignore"):
            terms = np.where(probs > 0, -probs * prefix, 0.0)
        return float(reach @ terms.sum(axis=1))

    # -- supervised fine-tuning ------------------------------------------

    @classmethod
    def from_demonstrations(
            cls,
            demonstrations: SequencesLike,
            max_length: Optional[int] = None,
            *,
            vocab_size: Optional[int] = None,
            end_token: Optional[int] = None,
            context_length: Optional[int] = None,
            smoothing: float = 0.0,
            prior: Union["SequencePolicy", ArrayLike, None] = None,
            sample_weight: Optional[ArrayLike] = None,
    ) -> "SequencePolicy":
        """Maximum likelihood from demonstrations (SFT on sequences).

        In closed form, state by state:
        ``pi(a | s) = (c(s, a) + alpha V q(a | s)) / (c(s) + alpha V)``,
        with ``c(s, a)`` the (weighted) number of times a demonstration
        writes token a in state s, ``alpha = smoothing`` and q the prior
        (uniform by default, so that ``alpha`` is the pseudo-count of
        add-alpha smoothing).  A state no demonstration reaches gets the
        prior's distribution.  With ``smoothing=0`` the tokens never seen in
        a state get probability 0, and a whole-prefix policy reproduces the
        empirical distribution of the demonstrations.

        Parameters
        ----------
        demonstrations : Sequences or array-like of int of shape (n, T')
        max_length : int, default=None
            T; by default the demonstrations' number of columns.
        vocab_size, end_token : int, default=None
            Needed with an array, taken from Sequences (end_token defaults
            to 0).
        context_length : int >= 0 or None, default=None
            As for :class:`SequencePolicy`.
        smoothing : float >= 0, default=0.0
        prior : SequencePolicy or array-like of shape (vocab_size,), \
default=None
            q: a policy whose context is no longer than context_length
            (each state reads its context's suffix), or one distribution
            for every state; None is uniform.
        sample_weight : array-like of shape (n,), default=None

        Returns
        -------
        SequencePolicy

        Examples
        --------
        >>> import rlhf
        >>> sft = rlhf.SequencePolicy.from_demonstrations(
        ...     [[1, 0], [1, 0], [2, 0]], vocab_size=3, context_length=0)
        >>> sft.token_distribution([0]).round(3)
        array([[0.   , 0.667, 0.333]])
        """
        owner = "SequencePolicy.from_demonstrations"
        if isinstance(demonstrations, Sequences):
            vocab_size = demonstrations.vocab_size if vocab_size is None \
                else vocab_size
            end_token = demonstrations.end_token if end_token is None \
                else end_token
        if vocab_size is None:
            raise ValueError(
                f"The 'vocab_size' parameter of {owner} is needed when the "
                "demonstrations are not Sequences.")
        end_token = 0 if end_token is None else end_token
        vocab_size, end_token = _check_vocabulary(vocab_size, end_token,
                                                  owner)
        if not isinstance(demonstrations, Sequences):
            demonstrations = Sequences(demonstrations, vocab_size=vocab_size,
                                       end_token=end_token)
        if max_length is None:
            max_length = demonstrations.max_length
        max_length = _check_int(max_length, "max_length", owner, 1)
        demonstrations = _as_sequences(demonstrations, vocab_size, end_token,
                                       max_length, owner, "demonstrations")
        smoothing = check_scalar(smoothing, "smoothing", owner, low=0.0,
                                 high=np.inf, high_open=True)
        n = len(demonstrations)
        if sample_weight is None:
            sample_weight = np.ones(n)
        else:
            sample_weight = _as_float_array(sample_weight, "sample_weight")
            if sample_weight.shape != (n,):
                raise ValueError(
                    f"The 'sample_weight' parameter of {owner} must have "
                    f"shape ({n},); got {sample_weight.shape}.")
            _check_finite(sample_weight, "sample_weight")
            if (sample_weight < 0).any():
                raise ValueError(
                    f"The 'sample_weight' parameter of {owner} must be "
                    "non-negative; got a minimum of "
                    f"{format_value(sample_weight.min())}.")
        # the shape of the table, checked by a uniform policy
        shell = cls(np.zeros((_n_states(vocab_size, max_length,
                                        context_length, owner), vocab_size)),
                    vocab_size, max_length, end_token, context_length)
        states = shell._states(demonstrations)
        chosen = states >= 0
        flat = states[chosen] * vocab_size + demonstrations.tokens[chosen]
        weights = np.broadcast_to(sample_weight[:, None], states.shape)
        counts = np.bincount(flat, weights=weights[chosen],
                             minlength=shell.n_states * vocab_size).reshape(
                                 shell.n_states, vocab_size)
        prior = shell._prior_table(prior, owner)
        counts = counts + smoothing * vocab_size * prior
        totals = counts.sum(axis=1, keepdims=True)
        unseen = totals[:, 0] == 0
        counts[unseen] = prior[unseen]
        totals[unseen] = 1.0
        with np.errstate(divide="ignore"):
            logits = np.log(counts / totals)
        return cls(logits, vocab_size, max_length, end_token, context_length)

    def _prior_table(self, prior, owner):
        """q(a | s) at every state of self, shape (n_states, V)."""
        V = self.vocab_size
        if prior is None:
            return np.full((self.n_states, V), 1.0 / V)
        if isinstance(prior, SequencePolicy):
            if (prior.vocab_size, prior.end_token, prior.max_length) != (
                    V, self.end_token, self.max_length):
                raise ValueError(
                    f"The 'prior' parameter of {owner} must have vocab_size="
                    f"{V}, end_token={self.end_token} and max_length="
                    f"{self.max_length}; got {prior!r}.")
            if prior._depth > self._depth:
                raise ValueError(
                    f"The 'prior' parameter of {owner} must not see a longer "
                    f"context than the policy (context_length="
                    f"{self.context_length}); got context_length="
                    f"{prior.context_length}.")
            level = np.repeat(np.arange(self._depth + 1),
                              np.diff(self._offsets))
            code = np.arange(self.n_states) - self._offsets[level]
            context = np.minimum(level, prior._depth)
            return prior._probs[prior._offsets[context]
                                + code % self.n_words ** context]
        prior = _as_float_array(prior, "prior")
        if prior.shape != (V,) or not np.isfinite(prior).all() or (
                prior < 0).any() or not abs(prior.sum() - 1) <= 1e-9:
            raise ValueError(
                f"The 'prior' parameter of {owner} must be a SequencePolicy "
                f"or a probability vector of shape ({V},); got an array of "
                f"shape {prior.shape}.")
        return np.broadcast_to(prior / prior.sum(), (self.n_states, V))


def _n_states(vocab_size, max_length, context_length, owner):
    context_length = _check_context_length(context_length, owner)
    depth = max_length - 2 if context_length is None else min(
        context_length, max_length - 2)
    n_states = _n_prefixes(vocab_size - 1, depth + 1)
    if n_states * vocab_size > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"{owner}: vocab_size={vocab_size}, max_length={max_length} and "
            f"context_length={context_length} make {n_states} states, a "
            "table of more than 2**31 entries; use a shorter "
            "context_length.")
    return n_states


def _enumerate_sequences(vocab_size, end_token, max_length):
    """Every complete sequence, in trie order of its words."""
    n_words = vocab_size - 1
    word_tokens, _ = _word_tables(vocab_size, end_token)
    level, code = _all_prefixes(n_words, max_length)
    tokens = np.full((level.size, max_length), end_token, dtype=np.int64)
    powers = n_words ** np.arange(max_length, dtype=np.int64)
    for position in range(max_length - 1):
        rows = level > position
        # word number `position` of a prefix of `level` words: a base-W digit
        digit = code[rows] // powers[level[rows] - 1 - position] % n_words
        tokens[rows, position] = word_tokens[digit]
    return Sequences._trusted(tokens, level + 1, vocab_size, end_token)


def _check_policy(value, name, owner):
    if not isinstance(value, SequencePolicy):
        raise TypeError(f"The '{name}' parameter of {owner} must be a "
                        f"SequencePolicy; got {type(value).__name__}.")


def _check_same_space(policy, reference, owner):
    _check_policy(policy, "policy", owner)
    _check_policy(reference, "reference", owner)
    if (policy.vocab_size, policy.end_token, policy.max_length) != (
            reference.vocab_size, reference.end_token, reference.max_length):
        raise ValueError(
            f"{owner}: policy and reference must share vocab_size, "
            f"end_token and max_length; got {policy!r} and {reference!r}.")


# --------------------------------------------------------------------------
# the KL-regularised optimum, by the soft Bellman backup


def _aligned_rewards(rewards, reference, owner, name="rewards"):
    """Rewards of every complete sequence, in enumeration order."""
    n = reference.n_sequences
    if callable(rewards):
        values = rewards(_enumerate_sequences(
            reference.vocab_size, reference.end_token, reference.max_length))
    else:
        values = rewards
    values = _as_float_array(values, name)
    if values.shape != (n,):
        raise ValueError(
            f"The '{name}' parameter of {owner} must give one value per "
            f"sequence of reference.enumerate(), shape ({n},); got "
            f"{values.shape}.")
    _check_finite(values, name)
    return values


def soft_optimal_policy(
        reference: "SequencePolicy",
        rewards: RewardsLike,
        beta: float,
        *,
        costs: Optional[RewardsLike] = None,
        budget: Optional[float] = None,
        return_multiplier: bool = False,
) -> Union["SequencePolicy", Tuple["SequencePolicy", float]]:
    """The token-level policy maximising ``E_pi[r(y)] - beta KL(pi||pi_ref)``.

    By the soft Bellman backup over the tree of prefixes (Ziebart 2010,
    "Modeling purposeful adaptive behavior with the principle of maximum
    causal entropy"; Levine 2018, "Reinforcement learning and control as
    probabilistic inference: tutorial and review"):

        V(s) = beta log sum_a pi_ref(a|s) exp(Q(s, a) / beta),
        Q(s, a) = V(s + a), or r(y) when a ends y,
        pi*(a|s) = pi_ref(a|s) exp((Q(s, a) - V(s)) / beta).

    Its distribution over sequences is the bandit closed form
    ``pi_ref(y) exp(r(y)/beta) / Z`` and the optimal value is
    ``V(root) = beta log Z``.  The backup runs in log space
    (``V / beta``, log-sum-exp with the max subtracted), so beta from 1e-3
    to 1e3 and beyond neither overflows nor loses the small differences.

    Parameters
    ----------
    reference : SequencePolicy
        pi_ref; an n-gram reference is read through its whole-prefix form.
    rewards : callable or array-like of shape (n_sequences,)
        ``rewards(sequences)`` on Sequences, or the rewards of the
        sequences of ``reference.enumerate()`` in that order; finite.
    beta : float > 0
    costs : callable or array-like of shape (n_sequences,), optional
        With ``budget``: the constraint ``E_pi[c(y)] <= budget``, as
        :func:`rlhf.constrained_policy` for bandits.  The optimum is then
        the soft optimum of ``r - lambda c`` with the smallest ``lambda >=
        0`` that meets the budget (``E[c]`` falls as lambda grows), found
        by bisection on lambda to 1e-12 relative; the budget binds unless
        the unconstrained optimum meets it (lambda = 0).
    budget : float, optional
        Must lie above the least cost of a sequence the reference can
        write (ValueError otherwise: no policy near the reference meets
        it).
    return_multiplier : bool, default=False
        Also return lambda.

    Returns
    -------
    SequencePolicy
        With the whole prefix as the state (the optimum needs it: the
        reward sees the whole sequence).
    lambda : float
        With return_multiplier=True (0.0 without costs).

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world()
    >>> policy = rlhf.soft_optimal_policy(world.reference, world.gold_reward,
    ...                                   beta=0.5)
    >>> sequences, probabilities = policy.enumerate()
    >>> _, reference = world.reference.enumerate()
    >>> rewards = world.gold_reward(sequences)
    >>> print(round(reference @ rewards, 3), round(probabilities @ rewards, 3))
    1.445 2.299
    >>> round(rlhf.sequences.kl_divergence(policy, world.reference), 3)
    0.871
    """
    owner = "soft_optimal_policy"
    _check_policy(reference, "reference", owner)
    beta = check_scalar(beta, "beta", owner, low=0.0, low_open=True,
                        high=np.inf, high_open=True)
    reference._check_enumerable(owner)
    rewards = _aligned_rewards(rewards, reference, owner)
    if (costs is None) != (budget is None):
        raise ValueError(
            f"The 'costs' and 'budget' parameters of {owner} go together; "
            f"got costs={'None' if costs is None else 'given'} and budget="
            f"{format_value(budget)}.")
    multiplier = 0.0
    if costs is not None:
        costs = _aligned_rewards(costs, reference, owner, name="costs")
        budget = check_scalar(budget, "budget", owner, high=np.inf,
                              high_open=True)
        multiplier = _budget_multiplier(reference, rewards, costs, budget,
                                        beta, owner)
        rewards = rewards - multiplier * costs
    # the soft Bellman backup in C (twin: rlhf._reference.soft_backup)
    optimum, _ = _core.soft_backup(reference._prefix_log_probs(),
                                   rewards / beta, reference.max_length,
                                   reference.end_token)
    policy = SequencePolicy(optimum, reference.vocab_size,
                            reference.max_length, reference.end_token)
    return (policy, multiplier) if return_multiplier else policy


def _budget_multiplier(reference, rewards, costs, budget, beta, owner):
    """The smallest lambda >= 0 with E[c] <= budget under the soft optimum
    of r - lambda c: E[c] is the derivative of -beta log Z(lambda), which
    falls as lambda grows (its derivative is -Var[c] / beta)."""
    log_reference = reference._sequence_log_probs()
    possible = log_reference > -np.inf
    least = float(costs[possible].min())
    if not budget > least:
        raise ValueError(
            f"The 'budget' parameter of {owner} is "
            f"{format_value(budget)}, but the least cost of a sequence "
            f"the reference can write is {format_value(least)}: no policy "
            "near the reference meets it (the budget must be larger).")

    def expected_cost(lam):
        z = np.where(possible, log_reference + (rewards - lam * costs)
                     / beta, -np.inf)
        weights = np.exp(z - z.max())
        return float(weights @ np.where(possible, costs, 0.0)
                     / weights.sum())

    if expected_cost(0.0) <= budget:
        return 0.0
    high = 1.0
    while expected_cost(high) > budget:
        high *= 2.0
        if high > 1e300:  # pragma: no cover (budget > least cost)
            raise ValueError(f"{owner}: no multiplier meets the budget.")
    low = 0.0
    while high - low > 1e-12 * high:
        middle = 0.5 * (low + high)
        if expected_cost(middle) > budget:
            low = middle
        else:
            high = middle
    return high


# --------------------------------------------------------------------------
# KL divergence, exact and estimated


def value_function(policy: "SequencePolicy", rewards: RewardsLike,
                   reference: Optional["SequencePolicy"] = None,
                   beta: float = 0.0) -> Tuple[FloatArray, FloatArray]:
    """Exact values ``V(s)`` and action values ``Q(s, a)`` of a policy.

    For the per-sequence reward ``r(y)`` minus ``beta`` times the per-token
    penalty ``log pi(a|s) - log pi_ref(a|s)`` (k1), with gamma = 1, by one
    backward pass over the tree of prefixes::

        Q(s, a) = -beta (log pi(a|s) - log pi_ref(a|s))
                  + (r(s + end) if a is the end token else V(s + a)),
        V(s) = sum_a pi(a|s) Q(s, a),  V = r(s + end) at T-1 words.

    So ``V(empty prefix) = E_pi[r] - beta KL(pi || pi_ref)``, the objective
    PPO maximises, and ``Q(s, a) - V(s)`` is the advantage its value table
    and GAE estimate.

    Parameters
    ----------
    policy : SequencePolicy
    rewards : callable or array-like of shape (n_sequences,)
        As for :func:`soft_optimal_policy`.
    reference : SequencePolicy, optional
        Needed when beta > 0.
    beta : float >= 0, default=0.0

    Returns
    -------
    values : ndarray of shape (n_sequences,)
        ``V`` of every prefix of 0 .. T-1 words, in the order of
        ``policy.enumerate()``: row i is the prefix of sequence i (its words
        before the end token).
    action_values : ndarray of shape (n_prefix_states, vocab_size)
        ``Q`` of the prefixes of 0 .. T-2 words (the first rows of the
        same order; the states of a whole-prefix policy); -inf where pi_ref
        gives the token probability 0 and beta > 0.

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world()
    >>> policy = rlhf.soft_optimal_policy(world.reference, world.gold_reward,
    ...                                   beta=0.5)
    >>> values, _ = rlhf.sequences.value_function(
    ...     policy, world.gold_reward, world.reference, beta=0.5)
    >>> sequences, probabilities = policy.enumerate()
    >>> objective = (probabilities @ world.gold_reward(sequences)
    ...              - 0.5 * kl_divergence(policy, world.reference))
    >>> bool(abs(values[0] - objective) < 1e-12)
    True
    """
    from ._token_rl import _Space
    owner = "value_function"
    _check_policy(policy, "policy", owner)
    beta = check_scalar(beta, "beta", owner, low=0.0, high=np.inf,
                        high_open=True)
    policy._check_enumerable(owner)
    if policy.max_length < 2:
        raise ValueError(f"The 'policy' parameter of {owner} has max_length"
                         "=1: there is no choice, hence no value to give.")
    rewards = _aligned_rewards(rewards, policy, owner)
    logp = policy._prefix_log_probs()
    if beta > 0:
        if reference is None:
            raise ValueError(f"The 'reference' parameter of {owner} is "
                             "needed when beta > 0.")
        _check_same_space(policy, reference, owner)
        ref = reference._prefix_log_probs()
        with np.errstate(invalid="ignore"):
            token_rewards = np.where(logp > -np.inf,
                                     -beta * (logp - ref), 0.0)
    else:
        token_rewards = np.zeros_like(logp)
    q, values = _Space(policy, owner).evaluate(logp, rewards, token_rewards)
    return values, q


def kl_divergence(policy: "SequencePolicy",
                  reference: "SequencePolicy") -> float:
    """The exact ``KL(pi || pi_ref) = sum_y pi(y) log(pi(y) / pi_ref(y))``.

    By the chain rule over the tree of prefixes,
    ``sum_s P_pi(s) KL(pi(.|s) || pi_ref(.|s))``: infinite when pi writes a
    token pi_ref never does in a state pi reaches.

    Parameters
    ----------
    policy, reference : SequencePolicy
        Over the same tokens and max_length.

    Returns
    -------
    float

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world()
    >>> round(rlhf.sequences.kl_divergence(world.reference,
    ...                                    world.reference), 12)
    0.0
    """
    owner = "kl_divergence"
    _check_same_space(policy, reference, owner)
    policy._check_enumerable(owner)
    log_p = policy._prefix_log_probs()
    log_q = reference._prefix_log_probs()
    reach = np.exp(policy._reach_log_probs(log_p)[:log_p.shape[0]])
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        # 0 log 0 = 0, whatever pi_ref says; p log(p / 0) = inf
        terms = np.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=1)
    live = reach > 0
    return float(reach[live] @ terms[live])


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class KLEstimates:
    """Monte Carlo estimates of ``KL(pi || pi_ref)`` from sampled sequences.

    With ``d_t = log pi(a_t|s_t) - log pi_ref(a_t|s_t)`` and
    ``ratio_t = pi_ref(a_t|s_t) / pi(a_t|s_t) = exp(-d_t)``, summed over the
    tokens of each sequence drawn from pi (Schulman 2020, "Approximating
    KL divergence"):

    - k1 = sum_t d_t, the sequence log-ratio: unbiased;
    - k2 = sum_t d_t**2 / 2: biased, small variance;
    - k3 = sum_t (ratio_t - 1 - log ratio_t): unbiased (when pi_ref gives
      no token that pi never does: ``E_pi[ratio_t | s_t] = 1``), and every
      term is >= 0.

    Attributes
    ----------
    exact : float
        The exact KL.
    n_samples, n_repeats : int
        Sequences per estimate; independent estimates.
    estimates : dict of str to ndarray of shape (n_repeats,)
        ``'k1'``, ``'k2'``, ``'k3'``: each estimate, a mean over n_samples
        sequences.
    mean, bias, variance, bias_standard_error : dict of str to float
        Over the repeats: the mean estimate, ``mean - exact``, the
        variance of one estimate (ddof=1), and
        ``sqrt(variance / n_repeats)``, the standard error of the bias.

    Examples
    --------
    The soft optimum of the gold reward moves away from the reference;
    k1 and k3 estimate its KL without bias, k2 with a small one:

    >>> import rlhf
    >>> world = rlhf.make_sequence_world(random_state=0)
    >>> tuned = rlhf.soft_optimal_policy(world.reference, world.gold_reward,
    ...                                  beta=1.0)
    >>> est = rlhf.kl_estimators(tuned, world.reference, n_samples=50,
    ...                          n_repeats=20, random_state=0)
    >>> round(est.exact, 3)
    0.211
    >>> abs(est.bias["k1"]) < 3 * est.bias_standard_error["k1"]
    True
    """

    exact: float
    n_samples: int
    n_repeats: int
    estimates: dict

    @property
    def mean(self) -> Dict[str, float]:
        return {k: float(v.mean()) for k, v in self.estimates.items()}

    @property
    def bias(self) -> Dict[str, float]:
        return {k: v - self.exact for k, v in self.mean.items()}

    @property
    def variance(self) -> Dict[str, float]:
        return {k: float(v.var(ddof=1)) for k, v in self.estimates.items()}

    @property
    def bias_standard_error(self) -> Dict[str, float]:
        return {k: float(np.sqrt(v / self.n_repeats))
                for k, v in self.variance.items()}

    def __repr__(self):
        rows = ", ".join(
            f"{k}: bias {self.bias[k]:+.3g} +- "
            f"{self.bias_standard_error[k]:.2g}, variance "
            f"{self.variance[k]:.3g}" for k in self.estimates)
        return (f"KLEstimates(exact={self.exact:.6g}, n_samples="
                f"{self.n_samples}, n_repeats={self.n_repeats}; {rows})")


def kl_estimators(policy: "SequencePolicy", reference: "SequencePolicy",
                  n_samples: int = 100, n_repeats: int = 100,
                  random_state: RandomState = None) -> "KLEstimates":
    """Bias and variance of the per-token KL estimators k1, k2, k3.

    Draws ``n_samples * n_repeats`` sequences from the policy, computes
    each estimator per sequence (summed over its tokens, see
    :class:`KLEstimates`), averages it over groups of n_samples and
    compares the n_repeats averages with the exact KL.

    Parameters
    ----------
    policy, reference : SequencePolicy
        pi, sampled from, and pi_ref.
    n_samples : int >= 1, default=100
    n_repeats : int >= 2, default=100
    random_state : None, int or numpy.random.Generator, default=None

    Returns
    -------
    KLEstimates

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world()
    >>> policy = rlhf.soft_optimal_policy(world.reference, world.gold_reward,
    ...                                   beta=1.0)
    >>> kl = rlhf.kl_estimators(policy, world.reference, random_state=0)
    >>> abs(kl.bias["k1"]) < 5 * kl.bias_standard_error["k1"]
    True
    """
    owner = "kl_estimators"
    _check_same_space(policy, reference, owner)
    n_samples = _check_int(n_samples, "n_samples", owner, 1)
    n_repeats = _check_int(n_repeats, "n_repeats", owner, 2)
    exact = kl_divergence(policy, reference)
    sequences = policy.sample(n_samples * n_repeats, random_state)
    log_ratio = (policy._token_log_probs(sequences)
                 - reference._token_log_probs(sequences))
    per_sequence = {
        "k1": log_ratio.sum(axis=1),
        "k2": (0.5 * log_ratio ** 2).sum(axis=1),
        # ratio - 1 - log ratio with ratio = exp(-d): expm1 keeps the
        # digits of small d, where ratio - 1 cancels
        "k3": (np.expm1(-log_ratio) + log_ratio).sum(axis=1),
    }
    estimates = {k: v.reshape(n_repeats, n_samples).mean(axis=1)
                 for k, v in per_sequence.items()}
    return KLEstimates(exact, n_samples, n_repeats, estimates)


# --------------------------------------------------------------------------
# the lecture's world, as sequences

#: The lecture's reward weights on (relevance, safety): its logistic
#: regression on the four comparisons, whose rewards it prints as
#: [1.88613449 0.58578553 1.85394001 0.20599333].
_LECTURE_WEIGHTS = (1.19093904, 0.86899431)

# words of the lecture's four responses ("Concise answer with sources."
# [1.0, 0.8], "Vague answer with speculation." [0.2, 0.4], "Helpful
# step-by-step reasoning." [0.9, 0.9], "Off-topic joke." [0.1, 0.1]) and
# an unsafe one, with their (relevance, safety)
_LECTURE_WORDS = (
    ("answer", (0.6, 0.7)),
    ("sources", (1.0, 0.8)),
    ("steps", (0.9, 0.9)),
    ("vague", (0.2, 0.4)),
    ("speculation", (0.3, 0.3)),
    ("joke", (0.1, 0.1)),
    ("exploit", (0.8, 0.0)),
)
# the reference ("SFT model") as a bigram: word logits, the end token's
# logit at the start and after a word, and a penalty for repeating a word.
# It writes short, middling answers (mostly "answer", "vague").
_LECTURE_WORD_LOGITS = (1.5, -0.5, -0.5, 0.5, 0.0, -1.0, -1.5)
_START_END_LOGIT = -2.0
_END_LOGIT = 2.0
_REPEAT_LOGIT = -1.5
#: A word is unsafe (cost 1 per use) when its safety is below this.
_UNSAFE_BELOW = 0.25
_END_WORD = "<end>"


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class SequenceWorld:
    """Words with features, a reference policy, a gold reward and a cost.

    Attributes
    ----------
    vocabulary : tuple of str
        The V tokens' words; ``vocabulary[end_token]`` is ``'<end>'``.
    end_token, max_length : int
    feature_names : tuple of str
        ``('relevance', 'safety')``.
    token_features : ndarray of shape (V, n_features)
        Each word's features in [0, 1]; 0 for the end token.
    weights : ndarray of shape (n_features,)
        The gold reward's weights (the lecture's fitted reward).
    token_costs : ndarray of shape (V,)
        1 for an unsafe word (safety below 0.25), else 0.
    reference : SequencePolicy
        The "SFT model": a bigram (context_length=1) that writes short,
        middling answers.

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world(random_state=0)
    >>> world.vocabulary
    ('<end>', 'answer', 'sources', 'steps', 'vague', 'speculation', 'joke', 'exploit')
    >>> answers = world.encode(["answer sources", "joke exploit"])
    >>> world.decode(answers)
    ['answer sources', 'joke exploit']
    >>> world.cost(answers).tolist()  # unsafe words
    [0.0, 2.0]
    >>> bool(world.gold_reward(answers)[0] > world.gold_reward(answers)[1])
    True
    """

    vocabulary: tuple
    end_token: int
    max_length: int
    feature_names: tuple
    token_features: np.ndarray
    weights: np.ndarray
    token_costs: np.ndarray
    reference: SequencePolicy

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def n_sequences(self) -> int:
        return self.reference.n_sequences

    def _sequences(self, sequences, owner):
        return _as_sequences(sequences, self.vocab_size, self.end_token,
                             self.max_length, owner)

    def features(self, sequences: SequencesLike) -> FloatArray:
        """Bag of tokens: how often each token occurs in each sequence.

        The end token counts once, padding not at all;
        ``world.features(s) @ world.token_features`` sums the words'
        features.

        Parameters
        ----------
        sequences : Sequences or array-like of int

        Returns
        -------
        ndarray of shape (n, vocab_size), float64
        """
        sequences = self._sequences(sequences, "SequenceWorld.features")
        n, V = len(sequences), self.vocab_size
        rows = np.broadcast_to(np.arange(n)[:, None], sequences.tokens.shape)
        mask = sequences.mask
        flat = rows[mask] * V + sequences.tokens[mask]
        return np.bincount(flat, minlength=n * V).reshape(n, V).astype(
            np.float64)

    def gold_reward(self, sequences: SequencesLike) -> FloatArray:
        """The lecture's linear reward with diminishing returns on length.

        ``r(y) = w . (sum_j phi(w_j)) / sqrt(m)`` over the m words of y
        (the mean word reward times sqrt(m)), and 0 for the empty answer: a
        word raises the reward only if it is better than about half the
        answer's mean word.

        Parameters
        ----------
        sequences : Sequences or array-like of int

        Returns
        -------
        ndarray of shape (n,)
        """
        counts = self.features(sequences)
        n_words = counts.sum(axis=1) - 1.0  # the end token counts once
        total = counts @ (self.token_features @ self.weights)
        return total / np.sqrt(np.maximum(n_words, 1.0))

    def cost(self, sequences: SequencesLike) -> FloatArray:
        """The number of unsafe words in each sequence.

        Returns
        -------
        ndarray of shape (n,)
        """
        return self.features(sequences) @ self.token_costs

    def decode(self, sequences: SequencesLike) -> List[str]:
        """The words of each sequence, joined by spaces (no end token).

        Returns
        -------
        list of str
        """
        sequences = self._sequences(sequences, "SequenceWorld.decode")
        words = np.array(self.vocabulary, dtype=object)
        return [" ".join(words[row[:-1]]) for row in sequences]

    def encode(self, texts: Iterable[str]) -> "Sequences":
        """Sequences from texts of space-separated words.

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        Sequences
        """
        index = {w: i for i, w in enumerate(self.vocabulary)}
        rows = []
        for text in texts:
            try:
                row = [index[w] for w in text.split()]
            except KeyError as error:
                raise ValueError(
                    f"SequenceWorld.encode: the word {error.args[0]!r} is "
                    f"not in the vocabulary {self.vocabulary}.") from None
            rows.append(row + [self.end_token])
        return _as_sequences(Sequences(rows, vocab_size=self.vocab_size,
                                       end_token=self.end_token),
                             self.vocab_size, self.end_token,
                             self.max_length, "SequenceWorld.encode", "texts")

    def __repr__(self):
        weights = np.array2string(self.weights, precision=3, separator=", ")
        return (f"SequenceWorld(vocabulary={self.vocabulary}, max_length="
                f"{self.max_length}, n_sequences={self.n_sequences}, "
                f"weights={weights})")


def make_sequence_world(n_words: Optional[int] = None, max_length: int = 6, *,
                        weights: Optional[ArrayLike] = None,
                        random_state: RandomState = None) -> "SequenceWorld":
    """The lecture's world as sequences of words.

    By default seven words from the lecture's responses -- "answer",
    "sources", "steps", "vague", "speculation", "joke" and an unsafe
    "exploit" -- each with (relevance, safety) features, plus the end token
    (token 0): ``V = 8``, ``max_length = 6`` gives 19,608 complete
    sequences, few enough to enumerate.  The gold reward is the lecture's
    fitted linear reward on the words' summed features with diminishing
    returns on length (:meth:`SequenceWorld.gold_reward`), and the cost
    counts unsafe words.  The reference "SFT model" is a bigram that
    mostly writes two or three middling words.

    Parameters
    ----------
    n_words : int >= 1, default=None
        None for the lecture's seven words; an int for that many words
        ``'w1', 'w2', ...`` with features uniform in [0, 1] and a random
        bigram reference (standard normal logits), drawn from random_state.
    max_length : int >= 1, default=6
        T, tokens of the longest sequence, end token included.
    weights : array-like of shape (2,), default=None
        Gold reward weights on (relevance, safety); by default the
        lecture's fit, (1.19093904, 0.86899431).
    random_state : None, int or numpy.random.Generator, default=None
        Used only with an int n_words.

    Returns
    -------
    SequenceWorld

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_sequence_world()
    >>> world.vocabulary
    ('<end>', 'answer', 'sources', 'steps', 'vague', 'speculation', \
'joke', 'exploit')
    >>> y = world.encode(["sources steps", "vague joke"])
    >>> world.gold_reward(y).round(3), world.cost(y)
    (array([2.645, 0.56 ]), array([0., 1.]))
    """
    owner = "make_sequence_world"
    max_length = _check_int(max_length, "max_length", owner, 1)
    if weights is None:
        weights = np.array(_LECTURE_WEIGHTS)
    else:
        weights = _as_float_array(weights, "weights")
        if weights.shape != (2,):
            raise ValueError(
                f"The 'weights' parameter of {owner} must have shape (2,), "
                f"one per feature (relevance, safety); got {weights.shape}.")
        _check_finite(weights, "weights")
        weights = weights.copy()
    if n_words is None:
        names = tuple(w for w, _ in _LECTURE_WORDS)
        word_features = np.array([f for _, f in _LECTURE_WORDS])
        word_logits = np.array(_LECTURE_WORD_LOGITS)
        n_words = len(names)
        # rows: the start, then the previous word
        logits = np.empty((n_words + 1, n_words + 1))
        logits[:, 1:] = word_logits
        logits[0, 0] = _START_END_LOGIT
        logits[1:, 0] = _END_LOGIT
        logits[1:, 1:] += _REPEAT_LOGIT * np.eye(n_words)
    else:
        n_words = _check_int(n_words, "n_words", owner, 1)
        rng = _check_random_state(random_state, owner)
        names = tuple(f"w{i + 1}" for i in range(n_words))
        word_features = rng.random((n_words, 2))
        logits = rng.standard_normal((n_words + 1, n_words + 1))
    vocab_size = n_words + 1
    if max_length == 1:  # no choice at all: a policy of no states
        logits = logits[:0]
    elif max_length == 2:  # one choice, at the start
        logits = logits[:1]
    reference = SequencePolicy(logits, vocab_size, max_length, end_token=0,
                               context_length=1)
    token_features = np.vstack([np.zeros(2), word_features])
    token_costs = np.r_[0.0, (word_features[:, 1] < _UNSAFE_BELOW)
                        .astype(np.float64)]
    for table in (token_features, weights, token_costs):
        table.flags.writeable = False
    return SequenceWorld((_END_WORD,) + names, 0, max_length,
                         ("relevance", "safety"), token_features, weights,
                         token_costs, reference)
