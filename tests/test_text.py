"""rlhf.text: hashed n-gram counts equal to scikit-learn's, and tokenizers."""
import json
import sys

import numpy as np
import pytest

from rlhf import datasets
from rlhf.text import (ByteTokenizer, CharTokenizer, _hash_columns,
                       _murmurhash3_32, hash_ngrams, tokenizer_from_dict)

# texts that stress the tokenizer and the UTF-8 bytes that are hashed
UNICODE_TEXTS = [
    "",
    "   ",
    "a b c d",  # one-letter words are no tokens
    "Hello, World! Hello world.",
    "naïve café résumé, NAÏVE CAFÉ",
    "straße STRASSE Straße",
    "İstanbul ΣΊΣΥΦΟΣ σίσυφος",
    "emoji 😀 party 🎉🎉 x😀y 👩‍👩‍👧 family",
    "tabs\tand\nnewlines\r\nhere",
    "punctuation... (parens) [brackets] {braces} a-b c_d e.f g/h",
    "日本語のテキスト 中文 한국어 العربية",
    "numbers 123 4567 3.14 1e10 ١٢٣",
    "don't won't it's",
    "__init__ snake_case CamelCase",
    "x" * 300 + " long token",
    "zero\u200bwidth joiner\u200d here",
    "combining e\u0301 vs \u00e9 é",
    "the the the the the the",
]


@pytest.fixture(scope="module")
def qa_texts():
    return datasets.load_finegrained_qa().texts[:300]


def sklearn_counts(texts, n_features, ngram_range=(1, 2), lowercase=True):
    text_module = pytest.importorskip("sklearn.feature_extraction.text")
    vectorizer = text_module.HashingVectorizer(
        n_features=n_features, ngram_range=ngram_range, lowercase=lowercase,
        alternate_sign=False, norm=None,
    )
    return vectorizer.transform(texts)


def assert_same_csr(X, expected):
    assert X.format == "csr"
    assert X.shape == expected.shape
    assert X.has_sorted_indices
    assert X.dtype == expected.dtype
    np.testing.assert_array_equal(X.indptr, expected.indptr)
    np.testing.assert_array_equal(X.indices, expected.indices)
    np.testing.assert_array_equal(X.data, expected.data)


# -- MurmurHash3 -------------------------------------------------------

def murmur_keys():
    """Keys of every tail length, with and without non-ASCII bytes."""
    rng = np.random.default_rng(0)
    keys = [b"", b"\0", b"\0\0\0\0\0", b"\xff" * 7]
    keys += [("abcdefghijklmnopqrstu"[:n]).encode() for n in range(21)]
    keys += [("é" * n).encode() for n in range(11)]
    keys += [("😀" * n + "x").encode() for n in range(6)]
    keys += ["naïve café", "日本語", "the cat", "ΣΊΣΥΦΟΣ"]
    keys += [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
             for n in range(64) for _ in range(3)]
    keys += [b"long " * 200]
    return [k.encode() if isinstance(k, str) else k for k in keys]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
def test_murmurhash3_equals_sklearn(seed):
    utils = pytest.importorskip("sklearn.utils")
    keys = murmur_keys()
    expected = [utils.murmurhash3_32(k, seed=seed) for k in keys]
    hashes = _murmurhash3_32(keys, seed=seed)
    assert hashes.dtype == np.int32
    np.testing.assert_array_equal(hashes, expected)


def test_murmurhash3_one_key_at_a_time_and_none():
    keys = murmur_keys()
    together = _murmurhash3_32(keys)
    alone = [_murmurhash3_32([k])[0] for k in keys]
    np.testing.assert_array_equal(together, alone)
    assert _murmurhash3_32([]).shape == (0,)


def test_murmurhash3_known_values():
    # MurmurHash3_x86_32 test vectors (seed 0), as signed 32-bit ints
    known = {b"": 0, b"hello": 0x248BFA47, b"Hello, world!": 0xC0363E43,
             b"The quick brown fox jumps over the lazy dog": 0x2E4FF723}
    hashes = _murmurhash3_32(list(known))
    expected = [v - 2**32 if v >= 2**31 else v for v in known.values()]
    np.testing.assert_array_equal(hashes, expected)


@pytest.mark.parametrize("n_features", [1, 2, 3, 7, 1000, 2**18, 2**31 - 1])
def test_hash_columns_of_int_min(n_features):
    # scikit-learn's special case for abs(-2**31) in _hashing_fast.pyx
    hashes = np.array([-2**31, -2**31 + 1, -1, 0, 2**31 - 1], dtype=np.int32)
    expected = [(2147483647 - (n_features - 1)) % n_features] + [
        abs(int(h)) % n_features for h in hashes[1:]]
    np.testing.assert_array_equal(_hash_columns(hashes, n_features),
                                  expected)


# -- hash_ngrams against HashingVectorizer -------------------------------

@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("n_features", [7, 2**18, 2**20])
@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 3), (2, 2)])
def test_hash_ngrams_equals_sklearn_unicode(ngram_range, n_features,
                                            lowercase):
    expected = sklearn_counts(UNICODE_TEXTS, n_features, ngram_range,
                              lowercase)
    X = hash_ngrams(UNICODE_TEXTS, n_features=n_features,
                    ngram_range=ngram_range, lowercase=lowercase)
    assert_same_csr(X, expected)


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("n_features", [7, 2**18, 2**20])
@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 3), (2, 2)])
def test_hash_ngrams_equals_sklearn_dataset(qa_texts, ngram_range,
                                            n_features, lowercase):
    expected = sklearn_counts(qa_texts, n_features, ngram_range, lowercase)
    X = hash_ngrams(qa_texts, n_features=n_features,
                    ngram_range=ngram_range, lowercase=lowercase)
    assert_same_csr(X, expected)


def test_hash_ngrams_defaults_and_extremes(qa_texts):
    assert_same_csr(hash_ngrams(qa_texts), sklearn_counts(qa_texts, 2**18))
    for n_features in (1, 2**31 - 1):
        assert_same_csr(hash_ngrams(UNICODE_TEXTS, n_features=n_features),
                        sklearn_counts(UNICODE_TEXTS, n_features))
    # n-grams longer than every text
    assert_same_csr(
        hash_ngrams(UNICODE_TEXTS, ngram_range=(7, 9)),
        sklearn_counts(UNICODE_TEXTS, 2**18, ngram_range=(7, 9)))


def test_hash_ngrams_counts_by_hand():
    X = hash_ngrams(["the cat sat", "the the", ""], n_features=2**20)
    assert X.shape == (3, 2**20)
    np.testing.assert_array_equal(X.toarray().sum(axis=1), [5, 3, 0])
    # "the" twice and "the the" once
    assert sorted(X[1].data.tolist()) == [1.0, 2.0]


def test_hash_ngrams_input_kinds(qa_texts):
    expected = hash_ngrams(qa_texts[:20])
    for texts in (tuple(qa_texts[:20]), np.array(qa_texts[:20]),
                  np.array(qa_texts[:20], dtype=object)):
        assert_same_csr(hash_ngrams(texts), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64,
                                   np.uint16])
def test_hash_ngrams_dtype(dtype):
    expected = hash_ngrams(UNICODE_TEXTS)
    X = hash_ngrams(UNICODE_TEXTS, dtype=dtype)
    assert X.dtype == dtype
    np.testing.assert_array_equal(X.indices, expected.indices)
    np.testing.assert_array_equal(X.data, expected.data)


def test_hash_ngrams_empty():
    X = hash_ngrams([], n_features=11)
    assert X.shape == (0, 11) and X.nnz == 0
    np.testing.assert_array_equal(X.indptr, [0])
    X = hash_ngrams(["", "a", "!!"], n_features=11)
    assert X.shape == (3, 11) and X.nnz == 0


def test_hash_ngrams_does_not_modify_input():
    texts = list(UNICODE_TEXTS)
    hash_ngrams(texts)
    assert texts == UNICODE_TEXTS


def hide_scipy(monkeypatch):
    # an import of a name bound to None in sys.modules raises ImportError
    for name in [m for m in sys.modules if m == "scipy"
                 or m.startswith("scipy.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "scipy", None)


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2)])
def test_hash_ngrams_without_scipy(monkeypatch, qa_texts, ngram_range):
    texts = list(qa_texts[:100]) + UNICODE_TEXTS
    expected = hash_ngrams(texts, n_features=1000, ngram_range=ngram_range)
    hide_scipy(monkeypatch)
    with pytest.raises(ImportError):
        import scipy.sparse  # noqa: F401
    data, indices, indptr, shape = hash_ngrams(
        texts, n_features=1000, ngram_range=ngram_range)
    assert shape == expected.shape
    assert indices.dtype == indptr.dtype == np.int32
    np.testing.assert_array_equal(data, expected.data)
    np.testing.assert_array_equal(indices, expected.indices)
    np.testing.assert_array_equal(indptr, expected.indptr)

    data, indices, indptr, shape = hash_ngrams([], n_features=5)
    assert shape == (0, 5) and data.shape == indices.shape == (0,)
    np.testing.assert_array_equal(indptr, [0])


@pytest.mark.parametrize("texts, error, match", [
    ("a single text", TypeError,
     r"texts must be a sequence of str, got a single str"),
    (b"bytes", TypeError, r"texts must be a sequence of str, got a single "
                          r"bytes"),
    (["a", 3, "b"], TypeError, r"texts\[1\] is of type int"),
    (["ok", b"bytes"], TypeError, r"texts\[1\] is of type bytes"),
    ([None], TypeError, r"texts\[0\] is of type NoneType"),
    ({"a", "b"}, TypeError, r"texts must be an ordered sequence"),
    ({"a": 1}, TypeError, r"texts must be an ordered sequence"),
    (5, TypeError, r"texts must be a sequence of str, got int"),
    (np.array([["a", "b"]]), ValueError,
     r"texts must be 1-dimensional, got an array of shape \(1, 2\)"),
])
def test_hash_ngrams_text_errors(texts, error, match):
    with pytest.raises(error, match=match):
        hash_ngrams(texts)


@pytest.mark.parametrize("n_features", [0, -1, 2**31, 1.5, True, "10",
                                        None])
def test_hash_ngrams_n_features_errors(n_features):
    with pytest.raises(ValueError,
                       match=r"The 'n_features' parameter of hash_ngrams "
                             r"must be an int in \[1, 2147483647\]"):
        hash_ngrams(["a text"], n_features=n_features)


@pytest.mark.parametrize("ngram_range", [(0, 1), (2, 1), (1,), (1, 2, 3),
                                         (1.0, 2), "12", None, (True, 2),
                                         (-1, 2)])
def test_hash_ngrams_ngram_range_errors(ngram_range):
    with pytest.raises(ValueError,
                       match=r"The 'ngram_range' parameter of hash_ngrams "
                             r"must be a pair of ints \(min_n, max_n\) "
                             r"with 1 <= min_n <= max_n"):
        hash_ngrams(["a text"], ngram_range=ngram_range)


def test_hash_ngrams_accepts_numpy_ints():
    X = hash_ngrams(["a text here"], n_features=np.int64(50),
                    ngram_range=[np.int32(1), np.int64(2)])
    assert_same_csr(X, hash_ngrams(["a text here"], n_features=50))


@pytest.mark.parametrize("dtype", ["not a dtype", object, complex, str,
                                   bool])
def test_hash_ngrams_dtype_errors(dtype):
    with pytest.raises(ValueError, match=r"The 'dtype' parameter of "
                                         r"hash_ngrams must be a NumPy "
                                         r"integer or floating dtype"):
        hash_ngrams(["a text"], dtype=dtype)


# -- tokenizers ---------------------------------------------------------

ROUND_TRIP_TEXTS = [
    "", "a", "Hello, world!", "naïve café", "日本語", "😀🎉 emoji",
    "👩‍👩‍👧 zwj family", "e\u0301 combining",
    "\0 nul and \x7f del",
    "tabs\tand\nnewlines", "Σίσυφος", "\U0010ffff last code point",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text


def test_byte_tokenizer_vocabulary():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.eot_token) == (257, 256)
    assert tok.decode(np.arange(128)) == "".join(map(chr, range(128)))


def test_byte_decode_drops_eot_and_replaces_invalid_utf8():
    tok = ByteTokenizer()
    eot = tok.eot_token
    assert tok.decode([104, eot, 105, eot]) == "hi"
    assert tok.decode([eot, eot]) == ""
    assert tok.decode([]) == ""
    assert tok.decode(np.zeros(0, dtype=np.int32)) == ""
    assert tok.decode([0xFF]) == "\ufffd"
    # the first two bytes of an emoji, then end of text
    assert tok.decode(list("😀".encode())[:2] + [eot, 97]) == "\ufffda"
    stream = np.concatenate([np.append(ids, eot) for ids in
                             tok.encode_batch(ROUND_TRIP_TEXTS)])
    assert tok.decode(stream) == "".join(ROUND_TRIP_TEXTS)


def test_decode_id_dtypes_and_read_only():
    tok = ByteTokenizer()
    for dtype in (np.uint8, np.int8, np.uint16, np.int32, np.int64,
                  np.uint64):
        assert tok.decode(np.array([104, 105], dtype=dtype)) == "hi"
    ids = tok.encode("read only")
    ids.flags.writeable = False
    before = ids.copy()
    assert tok.decode(ids) == "read only"
    np.testing.assert_array_equal(ids, before)


def test_encode_batch():
    for tok in (ByteTokenizer(), CharTokenizer.from_corpus(ROUND_TRIP_TEXTS)):
        batch = tok.encode_batch(ROUND_TRIP_TEXTS)
        assert isinstance(batch, list) and len(batch) == len(
            ROUND_TRIP_TEXTS)
        for ids, text in zip(batch, ROUND_TRIP_TEXTS):
            np.testing.assert_array_equal(ids, tok.encode(text))
            assert ids.dtype == np.int32
        assert tok.encode_batch([]) == []
        assert len(tok.encode_batch(tuple(ROUND_TRIP_TEXTS[:3]))) == 3


@pytest.mark.parametrize("tok", [ByteTokenizer(), CharTokenizer("ab")])
@pytest.mark.parametrize("ids, error, match", [
    ([0, 1, -1], ValueError, r"ids must be token ids in \[0, {size}\); "
                             r"ids\[2\] is -1"),
    ([0, 10**6], ValueError, r"ids\[1\] is 1000000"),
    ([0.0, 1.0], TypeError, r"ids must hold integer token ids, got an "
                            r"array of dtype float64"),
    ([[0, 1]], ValueError, r"ids must be 1-dimensional, got an array of "
                           r"shape \(1, 2\)"),
    (0, ValueError, r"ids must be 1-dimensional"),
])
def test_decode_errors(tok, ids, error, match):
    with pytest.raises(error, match=match.format(size=tok.vocab_size)):
        tok.decode(ids)


def test_decode_error_at_vocab_size():
    for tok in (ByteTokenizer(), CharTokenizer("ab")):
        with pytest.raises(ValueError, match=rf"ids\[0\] is "
                                             rf"{tok.vocab_size}\."):
            tok.decode([tok.vocab_size])


@pytest.mark.parametrize("tok", [ByteTokenizer(), CharTokenizer("ab")])
@pytest.mark.parametrize("text, name", [
    (None, "NoneType"), (b"ab", "bytes"), (["a", "b"], "list"), (3, "int"),
])
def test_encode_type_errors(tok, text, name):
    with pytest.raises(TypeError, match=rf"text must be a str, got {name}\."):
        tok.encode(text)


@pytest.mark.parametrize("tok", [ByteTokenizer(), CharTokenizer("ab")])
def test_encode_batch_errors(tok):
    with pytest.raises(TypeError, match=r"texts must be a sequence of str, "
                                        r"got a single str"):
        tok.encode_batch("ab")
    with pytest.raises(TypeError, match=r"texts\[1\] is of type bytes"):
        tok.encode_batch(["ab", b"ab"])


def test_byte_encode_lone_surrogate():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match=r"text cannot be encoded as UTF-8: "
                                         r"it holds the lone surrogate "
                                         r"'\\ud800' at position 1"):
        tok.encode("a\ud800b")
    with pytest.raises(ValueError, match=r"texts\[1\] cannot be encoded"):
        tok.encode_batch(["ok", "\udfff"])


def test_char_round_trip_on_corpus():
    texts = datasets.load_finegrained_qa().texts[:200]
    tok = CharTokenizer.from_corpus(texts)
    assert tok.chars == "".join(sorted(set("".join(texts))))
    assert tok.vocab_size == len(tok.chars) + 1
    assert tok.eot_token == len(tok.chars)
    for text in texts:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.shape == (len(text),)
        assert ids.max(initial=0) < tok.eot_token
        assert tok.decode(ids) == text
    stream = np.concatenate([np.append(tok.encode(t), tok.eot_token)
                             for t in texts])
    assert tok.decode(stream) == "".join(texts)


def test_char_tokenizer_vocabulary():
    tok = CharTokenizer("cabbage")
    assert tok.chars == "abceg"
    assert (tok.vocab_size, tok.eot_token) == (6, 5)
    assert tok.encode("cage").tolist() == [2, 0, 4, 3]
    assert tok.decode([2, 0, 5, 4, 3, 5]) == "cage"
    assert tok.decode([]) == ""
    assert CharTokenizer(["b", "a", "b"]).chars == "ab"
    assert CharTokenizer(iter("ba")).chars == "ab"
    assert CharTokenizer(np.array(["b", "a"])).chars == "ab"
    # characters beyond the Basic Multilingual Plane and lone surrogates
    tok = CharTokenizer.from_corpus(["a😀", "\ud800z"])
    assert tok.chars == "az\ud800😀"
    for text in ("😀a\ud800", "", "zz"):
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text, shown, position", [
    ("abXcY", "'X'", 2),
    ("!ab", "'!'", 0),     # below every character of the vocabulary
    ("ab~", "'~'", 2),     # above every one
    ("a😀", "'😀'", 1),
    ("ab\ud800", r"'\\ud800'", 2),
])
def test_char_encode_unknown(text, shown, position):
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=rf"text holds the character {shown} "
                                         rf"at position {position}, which is "
                                         r"not in the vocabulary"):
        tok.encode(text)


def test_char_encode_batch_names_the_text():
    with pytest.raises(ValueError, match=r"texts\[2\] holds the character "
                                         r"'d' at position 1"):
        CharTokenizer("abc").encode_batch(["a", "b", "ad"])


@pytest.mark.parametrize("chars, match", [
    ("", r"chars is empty"),
    ([], r"chars is empty"),
    (["ab"], r"chars must hold single characters; chars\[0\] is 'ab'"),
    (["a", 1], r"chars\[1\] is 1"),
    (["a", ""], r"chars\[1\] is ''"),
])
def test_char_tokenizer_errors(chars, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer(chars)


@pytest.mark.parametrize("texts, error, match", [
    ([], ValueError, r"texts holds no characters \(it is empty\)"),
    (["", ""], ValueError, r"texts holds no characters;"),
    ("abc", TypeError, r"texts must be a sequence of str, got a single str"),
    (["a", None], TypeError, r"texts\[1\] is of type NoneType"),
])
def test_from_corpus_errors(texts, error, match):
    with pytest.raises(error, match=match):
        CharTokenizer.from_corpus(texts)


def test_equality_hash_repr():
    assert ByteTokenizer() == ByteTokenizer()
    assert hash(ByteTokenizer()) == hash(ByteTokenizer())
    assert CharTokenizer("ab") == CharTokenizer("ba")
    assert hash(CharTokenizer("ab")) == hash(CharTokenizer("bba"))
    assert CharTokenizer("ab") != CharTokenizer("abc")
    assert ByteTokenizer() != CharTokenizer("ab")
    assert CharTokenizer("ab") != "ab"
    assert len({ByteTokenizer(), ByteTokenizer(), CharTokenizer("a")}) == 2
    assert repr(ByteTokenizer()) == "ByteTokenizer()"
    assert repr(CharTokenizer("ba'\n")) == """CharTokenizer(chars="\\n'ab")"""
    for tok in (ByteTokenizer(), CharTokenizer("ba'\n😀")):
        assert eval(repr(tok)) == tok


@pytest.mark.parametrize("tok", [
    ByteTokenizer(),
    CharTokenizer("abc"),
    CharTokenizer("\"'\\ \n😀\ud800é"),
])
def test_to_dict_round_trip_through_json(tok):
    d = tok.to_dict()
    assert d["kind"] == tok.kind
    loaded = json.loads(json.dumps(d))
    assert tokenizer_from_dict(loaded) == tok
    assert type(tok).from_dict(loaded) == tok
    assert type(tokenizer_from_dict(loaded)) is type(tok)


@pytest.mark.parametrize("call, d, error, match", [
    (tokenizer_from_dict, {"kind": "word"}, ValueError,
     r"d must have a 'kind' among 'byte', 'char'; got 'word'"),
    (tokenizer_from_dict, {}, ValueError, r"got None"),
    (tokenizer_from_dict, ["byte"], TypeError,
     r"d must be a dict describing a tokenizer, got list"),
    (ByteTokenizer.from_dict, {"kind": "char", "chars": "ab"}, ValueError,
     r"d describes a tokenizer of kind 'char', not a ByteTokenizer"),
    (CharTokenizer.from_dict, {"kind": "byte"}, ValueError,
     r"not a CharTokenizer \(kind 'char'\)"),
    (CharTokenizer.from_dict, {"kind": "char"}, ValueError,
     r"d must give the characters of a CharTokenizer as a str under "
     r"'chars'; got None"),
    (tokenizer_from_dict, {"kind": "char", "chars": ["a"]}, ValueError,
     r"under 'chars'; got \['a'\]"),
    (tokenizer_from_dict, {"kind": "char", "chars": ""}, ValueError,
     r"chars is empty"),
    (CharTokenizer.from_dict, "char", TypeError,
     r"d must be a dict describing a tokenizer, got str"),
])
def test_from_dict_errors(call, d, error, match):
    with pytest.raises(error, match=match):
        call(d)
