"""Text as numbers: hashed n-gram features and tokenizers.

``hash_ngrams`` turns texts into hashed word n-gram counts, features a
reward model can be fitted on without building a vocabulary first (the
hashing trick, Weinberger et al. 2009).  Its numbers are those of
scikit-learn's ``HashingVectorizer(alternate_sign=False, norm=None)``, so
features computed here and there can be mixed; scikit-learn is not needed.

``ByteTokenizer`` and ``CharTokenizer`` map text to the integer ids of a
tiny byte- or character-level language model and back.  Each has an
end-of-text token, the last id of its vocabulary, which separates
documents in a training stream and is dropped again by ``decode``.  Both
describe themselves as a small JSON-serialisable dict (``to_dict``) that a
model file can store and ``tokenizer_from_dict`` reads back.

Only NumPy is imported; ``hash_ngrams`` returns a SciPy sparse matrix when
SciPy is installed and plain NumPy arrays otherwise.
"""
import re
from collections.abc import Mapping, Set
from typing import (Any, Dict, Iterable, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
from numpy.typing import DTypeLike

from ._typing import ArrayLike, NDArray
from ._validation import check_scalar, format_value

__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "hash_ngrams",
    "tokenizer_from_dict",
]

# scikit-learn's default token_pattern: runs of two or more word characters
_TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")
_MAX_FEATURES = 2**31 - 1

# MurmurHash3_x86_32 constants (Appleby, MurmurHash3.cpp in SMHasher)
_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)
_M = np.uint32(5)
_N = np.uint32(0xE6546B64)
_F1 = np.uint32(0x85EBCA6B)
_F2 = np.uint32(0xC2B2AE35)
# zero bytes that pad a key of length L to 4 * (L // 4 + 1): its whole
# blocks, then one word holding the 0-3 tail bytes (zero when there are none)
_PADDING = (b"\0" * 4, b"\0" * 3, b"\0" * 2, b"\0")


def _rotl32(x, r):
    """Rotate the uint32 array x left by r bits."""
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _scramble(k):
    """k1 *= c1; k1 = rotl32(k1, 15); k1 *= c2 -- one word before mixing."""
    k = k * _C1
    k = _rotl32(k, 15)
    return k * _C2


def _murmurhash3_32(keys, seed=0):
    """MurmurHash3_x86_32 of each key, as signed 32-bit integers.

    Austin Appleby's MurmurHash3 (public domain, SMHasher), in NumPy over
    all keys at once: step j mixes the j-th little-endian 4-byte block of
    every key that has one.  The results are those of scikit-learn's
    ``murmurhash3_32(key, seed)`` (its ``murmurhash3_bytes_s32``).

    Parameters
    ----------
    keys : list of bytes
        The keys to hash.
    seed : int, default=0
        The seed, an unsigned 32-bit integer.

    Returns
    -------
    hashes : ndarray of shape (len(keys),), dtype int32
    """
    n_keys = len(keys)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n_keys)
    words = np.frombuffer(
        b"".join([key + _PADDING[len(key) & 3] for key in keys]),
        dtype="<u4",
    )
    n_blocks = lengths // 4
    starts = np.zeros(n_keys, dtype=np.int64)
    np.cumsum(n_blocks[:-1] + 1, out=starts[1:])

    # keys with the most blocks first: those still being mixed at step j
    # are then a prefix h[:n_active[j]] and no mask is needed
    order = np.argsort(-n_blocks, kind="stable")
    n_blocks = n_blocks[order]
    starts = starts[order]
    max_blocks = int(n_blocks[0]) if n_keys else 0
    n_active = np.searchsorted(-n_blocks, -np.arange(max_blocks), side="left")

    h = np.full(n_keys, seed, dtype=np.uint32)
    for j in range(max_blocks):
        m = n_active[j]
        # h1 ^= k1; h1 = rotl32(h1, 13); h1 = h1 * 5 + 0xe6546b64
        mixed = h[:m] ^ _scramble(words[starts[:m] + j])
        h[:m] = _rotl32(mixed, 13) * _M + _N
    # the tail word is zero without tail bytes, and scrambles to zero
    h ^= _scramble(words[starts + n_blocks])
    # h1 ^= len, then fmix32 for avalanche
    h ^= lengths[order].astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= _F1
    h ^= h >> np.uint32(13)
    h *= _F2
    h ^= h >> np.uint32(16)

    hashes = np.empty(n_keys, dtype=np.uint32)
    hashes[order] = h
    return hashes.view(np.int32)


def _hash_columns(hashes, n_features):
    """The column of each signed hash: abs(h) % n_features.

    Computed in int64, where abs(-2**31) is 2**31; scikit-learn special
    cases that hash to give the same column, 2**31 % n_features, in int32.
    """
    return np.abs(hashes.astype(np.int64)) % n_features


def _word_ngrams(tokens, min_n, max_n):
    """The n-grams of tokens for min_n <= n <= max_n, each joined by one
    space (scikit-learn's ``_word_ngrams`` without stop words; the order
    differs, the multiset does not)."""
    if min_n == 1 and max_n == 1:
        return tokens
    ngrams = list(tokens) if min_n == 1 else []
    for n in range(max(min_n, 2), min(max_n, len(tokens)) + 1):
        ngrams.extend(map(" ".join, zip(*[tokens[k:] for k in range(n)])))
    return ngrams


def _check_text_sequence(texts, name):
    """texts as a list, refusing a single string and unordered containers;
    the elements are checked where they are used."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of str, got a single "
            f"{type(texts).__name__}; wrap one text in a list: [text]."
        )
    if isinstance(texts, (Set, Mapping)):
        raise TypeError(
            f"{name} must be an ordered sequence of str, got a "
            f"{type(texts).__name__}."
        )
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise ValueError(
            f"{name} must be 1-dimensional, got an array of shape "
            f"{texts.shape}."
        )
    try:
        return list(texts)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of str, got "
            f"{type(texts).__name__}."
        ) from None


def _element_type_error(name, index, value):
    return TypeError(
        f"{name} must be a sequence of str; {name}[{index}] is of type "
        f"{type(value).__name__}."
    )


def _check_ngram_range(ngram_range):
    ok = (
        isinstance(ngram_range, (tuple, list))
        and len(ngram_range) == 2
        and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                for n in ngram_range)
        and 1 <= ngram_range[0] <= ngram_range[1]
    )
    if not ok:
        raise ValueError(
            "The 'ngram_range' parameter of hash_ngrams must be a pair of "
            "ints (min_n, max_n) with 1 <= min_n <= max_n. Got "
            f"{format_value(ngram_range)} instead."
        )
    return int(ngram_range[0]), int(ngram_range[1])


def _check_dtype(dtype):
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or checked.kind not in "iuf" or checked == np.float16:
        raise ValueError(
            "The 'dtype' parameter of hash_ngrams must be a NumPy integer "
            "or floating dtype (not float16, which sparse matrices do not "
            f"hold). Got {format_value(dtype)} instead."
        )
    return checked


def hash_ngrams(texts: Sequence[str], n_features: int = 2**18,
                ngram_range: Tuple[int, int] = (1, 2), lowercase: bool = True,
                dtype: DTypeLike = np.float64) -> Any:
    """Hashed word n-gram counts of each text.

    Each text is lowercased (optionally), split into tokens of two or
    more word characters (the regular expression ``(?u)\\b\\w\\w+\\b``),
    and every run of n consecutive tokens, ``ngram_range[0] <= n <=
    ngram_range[1]``, joined by single spaces, is an n-gram.  An n-gram
    counts in column ``abs(h) % n_features`` of its text's row, where h is
    the signed 32-bit MurmurHash3 (x86, seed 0; Appleby) of its UTF-8
    bytes.  Distinct n-grams may share a column; with enough columns that
    changes inner products little (Weinberger et al. 2009).

    The result equals scikit-learn's ``HashingVectorizer(n_features=
    n_features, ngram_range=ngram_range, lowercase=lowercase,
    alternate_sign=False, norm=None).transform(texts)``.

    Parameters
    ----------
    texts : sequence of str of length n_texts
        The texts, one row each.  A list, a tuple or a 1-d array.
    n_features : int, default=2**18
        Number of columns, in [1, 2**31 - 1].
    ngram_range : tuple (min_n, max_n), default=(1, 2)
        The lengths of the n-grams counted, ``1 <= min_n <= max_n``:
        (1, 1) words only, (1, 2) words and pairs of adjacent words.
    lowercase : bool, default=True
        Whether to lowercase the texts (``str.lower``) before tokenizing.
    dtype : NumPy integer or floating dtype, default=np.float64
        The type of the counts.

    Returns
    -------
    counts : scipy.sparse.csr_matrix of shape (n_texts, n_features)
        With sorted column indices and no duplicates (canonical format).
        When SciPy cannot be imported, the tuple ``(data, indices, indptr,
        shape)`` of the same matrix instead: the ndarrays of its CSR
        representation (``scipy.sparse.csr_matrix((data, indices, indptr),
        shape=shape)`` would build it) and the pair ``shape``.  The index
        arrays are int32, or int64 when there are 2**31 or more entries.

    Raises
    ------
    TypeError
        If texts is a single string, or one of its elements is not a str.
    ValueError
        If n_features, ngram_range or dtype is out of its range.

    Notes
    -----
    Repeated n-grams are hashed once per call; the hashing of the distinct
    ones runs in NumPy.

    References
    ----------
    K. Weinberger, A. Dasgupta, J. Langford, A. Smola and J. Attenberg,
    "Feature hashing for large scale multitask learning", ICML 2009.

    A. Appleby, MurmurHash3, https://github.com/aappleby/smhasher

    Examples
    --------
    >>> from rlhf.text import hash_ngrams
    >>> X = hash_ngrams(["the cat sat", "the cat"], n_features=16)
    >>> X.shape, X.toarray().sum(axis=1).tolist()
    ((2, 16), [5.0, 3.0])
    """
    texts = _check_text_sequence(texts, "texts")
    n_features = check_scalar(n_features, "n_features", "hash_ngrams",
                              kind="int", low=1, high=_MAX_FEATURES)
    min_n, max_n = _check_ngram_range(ngram_range)
    dtype = _check_dtype(dtype)

    ngrams = []
    row_lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _element_type_error("texts", i, text)
        if lowercase:
            text = text.lower()
        row = _word_ngrams(_TOKEN_PATTERN.findall(text), min_n, max_n)
        ngrams.extend(row)
        row_lengths[i] = len(row)

    # only the distinct n-grams are hashed; a dict then gives each
    # occurrence its column
    distinct = list(dict.fromkeys(ngrams))
    hashes = _murmurhash3_32([g.encode("utf-8") for g in distinct])
    column_of = dict(zip(distinct, _hash_columns(hashes, n_features).tolist()))
    columns = np.fromiter(map(column_of.__getitem__, ngrams), dtype=np.int64,
                          count=len(ngrams))
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), row_lengths)
    # one sort of the (row, column) keys sums the duplicates and orders
    # the columns within each row; row * n_features + column < 2**63 for
    # fewer than 2**32 texts
    cells, counts = np.unique(rows * n_features + columns,
                              return_counts=True)
    index_dtype = np.int32 if len(cells) <= _MAX_FEATURES else np.int64
    data = counts.astype(dtype)
    indices = (cells % n_features).astype(index_dtype)
    indptr = np.zeros(len(texts) + 1, dtype=index_dtype)
    np.cumsum(np.bincount(cells // n_features, minlength=len(texts)),
              out=indptr[1:])
    shape = (len(texts), n_features)

    try:
        from scipy import sparse
    except ImportError:
        return data, indices, indptr, shape
    return sparse.csr_matrix((data, indices, indptr), shape=shape)


# -- tokenizers ---------------------------------------------------------

def _check_text(text, name):
    if not isinstance(text, str):
        raise TypeError(
            f"{name} must be a str, got {type(text).__name__}."
        )


def _check_ids(ids, vocab_size):
    """ids as a 1-d int64 array of ids in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(
            f"ids must be 1-dimensional, got an array of shape {arr.shape}."
        )
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"ids must hold integer token ids, got an array of dtype "
            f"{arr.dtype}."
        )
    outside = (arr < 0) | (arr >= vocab_size)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"ids must be token ids in [0, {vocab_size}); ids[{i}] is "
            f"{format_value(arr[i])}."
        )
    return arr.astype(np.int64, copy=False)


def _check_dict(d, kind, owner):
    if not isinstance(d, Mapping):
        raise TypeError(
            f"d must be a dict describing a tokenizer, got "
            f"{type(d).__name__}."
        )
    if d.get("kind") != kind:
        raise ValueError(
            f"d describes a tokenizer of kind {format_value(d.get('kind'))}"
            f", not a {owner} (kind {kind!r})."
        )


class _Tokenizer:
    """What the tokenizers share: batches, equality, hashing, repr."""

    kind: Optional[str] = None
    vocab_size: int
    eot_token: int

    def _encode(self, text: str, name: str) -> NDArray[np.int32]:
        raise NotImplementedError

    def decode(self, ids: ArrayLike) -> str:
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def encode(self, text: str) -> NDArray[np.int32]:
        _check_text(text, "text")
        return self._encode(text, "text")

    def encode_batch(self, texts: Sequence[str]) -> List[NDArray[np.int32]]:
        """Token ids of each text, as ``[encode(t) for t in texts]``.

        Parameters
        ----------
        texts : sequence of str
            The texts; an error names the offending one as ``texts[i]``.

        Returns
        -------
        ids : list of ndarray of dtype int32
        """
        texts = _check_text_sequence(texts, "texts")
        encoded = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise _element_type_error("texts", i, text)
            encoded.append(self._encode(text, f"texts[{i}]"))
        return encoded

    def _state(self):
        return ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._state() == other._state()

    def __hash__(self):
        return hash((type(self).__name__,) + self._state())

    @classmethod
    def from_dict(cls, d):
        """The tokenizer that ``to_dict`` described.

        Parameters
        ----------
        d : dict
            The output of ``to_dict`` (for example read back from JSON).

        Returns
        -------
        tokenizer : an instance of this class
        """
        _check_dict(d, cls.kind, cls.__name__)
        return cls._from_checked_dict(d)


class ByteTokenizer(_Tokenizer):
    """Tokens are the bytes of the UTF-8 encoding, plus end-of-text.

    Every text can be encoded and every id sequence decoded, with no
    vocabulary to learn; a character outside ASCII takes 2-4 tokens.

    Attributes
    ----------
    vocab_size : int
        257: the 256 byte values, then end-of-text.
    eot_token : int
        256, the end-of-text token.

    Examples
    --------
    >>> from rlhf.text import ByteTokenizer
    >>> tok = ByteTokenizer()
    >>> tok.encode("hé").tolist()
    [104, 195, 169]
    >>> tok.decode([104, 195, 169, tok.eot_token])
    'hé'
    """

    kind = "byte"
    vocab_size = 257
    eot_token = 256

    def encode(self, text: str) -> NDArray[np.int32]:
        """The UTF-8 bytes of text as token ids (no end-of-text added).

        Parameters
        ----------
        text : str

        Returns
        -------
        ids : ndarray of shape (n_bytes,), dtype int32

        Raises
        ------
        TypeError
            If text is not a str.
        ValueError
            If text holds a lone surrogate, which UTF-8 cannot encode.
        """
        return super().encode(text)

    def _encode(self, text, name):
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{name} cannot be encoded as UTF-8: it holds the lone "
                f"surrogate {text[error.start]!r} at position {error.start}."
            ) from None
        return np.frombuffer(encoded, dtype=np.uint8).astype(np.int32)

    def decode(self, ids: ArrayLike) -> str:
        """The text of a sequence of token ids.

        End-of-text tokens are dropped (a stream of several documents
        decodes to their concatenation; split on ``eot_token`` first to
        keep them apart).  The remaining bytes are decoded as UTF-8, an
        invalid sequence (as a model may sample) becoming U+FFFD.

        Parameters
        ----------
        ids : array-like of int of shape (n_tokens,)

        Returns
        -------
        text : str

        Raises
        ------
        ValueError
            If an id is outside [0, vocab_size).
        """
        ids = _check_ids(ids, self.vocab_size)
        data = ids[ids != self.eot_token].astype(np.uint8)
        return data.tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable description, ``{"kind": "byte"}``."""
        return {"kind": self.kind}

    @classmethod
    def _from_checked_dict(cls, d):
        return cls()

    def __repr__(self):
        return "ByteTokenizer()"


class CharTokenizer(_Tokenizer):
    """One token per character of a fixed alphabet, plus end-of-text.

    Parameters
    ----------
    chars : str or iterable of str
        The characters of the vocabulary (each a str of length 1);
        repeats count once.  Their ids follow code point order.

    Attributes
    ----------
    chars : str
        The distinct characters, sorted: ``chars[i]`` has id i.
    vocab_size : int
        ``len(chars) + 1``.
    eot_token : int
        ``len(chars)``, the end-of-text token.

    Examples
    --------
    >>> from rlhf.text import CharTokenizer
    >>> tok = CharTokenizer.from_corpus(["abba", "cab"])
    >>> tok
    CharTokenizer(chars='abc')
    >>> tok.encode("cab").tolist(), tok.eot_token
    ([2, 0, 1], 3)
    """

    kind = "char"

    def __init__(self, chars: Union[str, Iterable[str]]) -> None:
        if isinstance(chars, str):
            distinct = set(chars)
        else:
            chars = _check_text_sequence(chars, "chars")
            for i, c in enumerate(chars):
                if not isinstance(c, str) or len(c) != 1:
                    raise ValueError(
                        f"chars must hold single characters; chars[{i}] is "
                        f"{format_value(c)}."
                    )
            distinct = set(chars)
        if not distinct:
            raise ValueError(
                "chars is empty; a CharTokenizer needs at least one "
                "character."
            )
        self.chars = "".join(sorted(distinct))
        self.vocab_size = len(self.chars) + 1
        self.eot_token = len(self.chars)
        # code points, ascending, so that encode is a searchsorted
        self._codes = _code_points(self.chars)

    @classmethod
    def from_corpus(cls, texts: Sequence[str]) -> "CharTokenizer":
        """The tokenizer of every character that occurs in texts.

        Parameters
        ----------
        texts : sequence of str
            The corpus.

        Returns
        -------
        tokenizer : CharTokenizer

        Raises
        ------
        ValueError
            If the texts hold no character at all.
        """
        texts = _check_text_sequence(texts, "texts")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise _element_type_error("texts", i, text)
        chars = set("".join(texts))
        if not chars:
            raise ValueError(
                "texts holds no characters"
                + (" (it is empty)" if not texts else "")
                + "; a CharTokenizer needs at least one."
            )
        return cls("".join(chars))

    def encode(self, text: str) -> NDArray[np.int32]:
        """The id of each character of text (no end-of-text added).

        Parameters
        ----------
        text : str

        Returns
        -------
        ids : ndarray of shape (len(text),), dtype int32

        Raises
        ------
        TypeError
            If text is not a str.
        ValueError
            If text holds a character outside the vocabulary; the message
            names the first one and its position.
        """
        return super().encode(text)

    def _encode(self, text, name):
        codes = _code_points(text)
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not known.all():
            i = int(np.argmin(known))
            raise ValueError(
                f"{name} holds the character {text[i]!r} at position {i}, "
                "which is not in the vocabulary of this CharTokenizer."
            )
        return ids.astype(np.int32)

    def decode(self, ids: ArrayLike) -> str:
        """The text of a sequence of token ids.

        End-of-text tokens are dropped (a stream of several documents
        decodes to their concatenation; split on ``eot_token`` first to
        keep them apart).

        Parameters
        ----------
        ids : array-like of int of shape (n_tokens,)

        Returns
        -------
        text : str

        Raises
        ------
        ValueError
            If an id is outside [0, vocab_size).
        """
        ids = _check_ids(ids, self.vocab_size)
        codes = self._codes[ids[ids != self.eot_token]]
        return codes.astype("<u4").tobytes().decode("utf-32-le",
                                                    "surrogatepass")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable description,
        ``{"kind": "char", "chars": chars}``."""
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def _from_checked_dict(cls, d):
        chars = d.get("chars")
        if not isinstance(chars, str):
            raise ValueError(
                "d must give the characters of a CharTokenizer as a str "
                f"under 'chars'; got {format_value(chars)}."
            )
        return cls(chars)

    def _state(self):
        return (self.chars,)

    def __repr__(self):
        return f"CharTokenizer(chars={self.chars!r})"


def _code_points(text):
    """The code points of text as a uint32 array (lone surrogates too)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                         dtype="<u4")


_TOKENIZERS = {cls.kind: cls for cls in (ByteTokenizer, CharTokenizer)}


def tokenizer_from_dict(
        d: Mapping[str, Any],
) -> Union["ByteTokenizer", "CharTokenizer"]:
    """The tokenizer described by d, whichever its kind.

    Parameters
    ----------
    d : dict
        The output of a tokenizer's ``to_dict``; its "kind" picks the
        class ("byte": ByteTokenizer, "char": CharTokenizer).

    Returns
    -------
    tokenizer : ByteTokenizer or CharTokenizer

    Examples
    --------
    >>> import json
    >>> from rlhf.text import CharTokenizer, tokenizer_from_dict
    >>> saved = json.dumps(CharTokenizer("ab").to_dict())
    >>> tokenizer_from_dict(json.loads(saved))
    CharTokenizer(chars='ab')
    """
    if not isinstance(d, Mapping):
        raise TypeError(
            f"d must be a dict describing a tokenizer, got "
            f"{type(d).__name__}."
        )
    kind = d.get("kind")
    if not isinstance(kind, str) or kind not in _TOKENIZERS:
        known = ", ".join(repr(k) for k in _TOKENIZERS)
        raise ValueError(
            f"d must have a 'kind' among {known}; got "
            f"{format_value(kind)}."
        )
    return _TOKENIZERS[kind].from_dict(d)
