"""rlhf.datasets: the bundled human data against the facts its SOURCE.md
notes state, hand-made JSON Lines files of each format, round trips through
to_jsonl, and malformed files."""
import dataclasses
import gzip
import hashlib
import itertools
import json
import re
import zlib
from collections import Counter
from importlib import resources

import numpy as np
import pytest

import rlhf
from rlhf.datasets import (PreferenceDataset, load_finegrained_qa,
                           load_pandalm, load_preference_jsonl)


@pytest.fixture(scope="module")
def finegrained():
    return load_finegrained_qa()


@pytest.fixture(scope="module")
def pandalm():
    return load_pandalm()


def check_consistent(ds):
    """Invariants every PreferenceDataset keeps."""
    m = len(ds)
    assert isinstance(ds, PreferenceDataset)
    assert ds.comparisons.shape == (m, 2) and ds.comparisons.dtype == np.int64
    assert ds.ties.shape == (m,) and ds.ties.dtype == bool
    assert ds.groups.shape == (m,) and ds.groups.dtype == np.int64
    assert ds.pairs.shape == (m, 2)
    assert (ds.comparisons >= 0).all()
    assert (ds.comparisons < len(ds.texts)).all()
    assert (ds.comparisons[:, 0] != ds.comparisons[:, 1]).all()
    # the pair shown and the comparison hold the same two texts
    assert np.array_equal(np.sort(ds.pairs, 1), np.sort(ds.comparisons, 1))
    # each comparison's texts answer its prompt
    assert (ds.text_prompt[ds.comparisons[:, 0]] == ds.groups).all()
    assert (ds.text_prompt[ds.comparisons[:, 1]] == ds.groups).all()
    # texts are distinct within a prompt
    assert len(set(zip(ds.text_prompt.tolist(), ds.texts.tolist()))) == len(
        ds.texts)
    assert all(isinstance(t, str) for t in ds.texts)
    assert all(isinstance(p, str) for p in ds.prompts)


def longer_wins(ds):
    """'The longer text wins' on strict pairs, equal lengths counting 1/2."""
    return ds.accuracy([len(t) for t in ds.texts])


# --------------------------------------------------------------------------
# FineGrainedRLHF qa-feedback: the facts of its SOURCE.md


def test_finegrained_counts(finegrained):
    ds = finegrained
    check_consistent(ds)
    assert len(ds.prompts) == 500
    assert len(ds.texts) == 2000  # 4 distinct answers per question
    assert len(ds) == 3000
    assert int((~ds.ties).sum()) == 2616 and ds.n_ties == 384
    labels = ds.labels[:, 0]
    assert ds.labels.shape == (3000, 1)
    assert Counter(labels.tolist()) == {1: 1577, 2: 1039, 0: 384}
    assert np.array_equal(ds.ties, labels == 0)
    # label 2: the second answer shown is the preferred one
    assert np.array_equal(ds.comparisons[labels == 2],
                          ds.pairs[labels == 2][:, ::-1])
    assert np.array_equal(ds.comparisons[labels != 2], ds.pairs[labels != 2])
    assert round(longer_wins(ds), 3) == 0.512
    assert "n_comparisons=3000" in repr(ds)


def test_finegrained_layout(finegrained):
    ds = finegrained
    assert np.array_equal(ds.text_prompt, np.repeat(np.arange(500), 4))
    assert np.array_equal(ds.groups, np.repeat(np.arange(500), 6))
    # the source's pair order 1v2, 1v3, 1v4, 2v3, 2v4, 3v4 per question
    within = np.array(list(itertools.combinations(range(4), 2)))
    expected = (4 * np.arange(500)[:, None, None] + within).reshape(-1, 2)
    assert np.array_equal(ds.pairs, expected)
    assert ds.prompts[0] == "When does bloom by troye sivan come out?"
    assert ds.texts[1].startswith("Bloom, the second studio album")


def test_finegrained_preferences_have_no_cycles(finegrained):
    """Within every question the strict preferences have no 3-cycle."""
    strict = finegrained.comparisons[~finegrained.ties]
    beats = set(map(tuple, strict.tolist()))
    for q in range(500):
        items = range(4 * q, 4 * q + 4)
        for a, b, c in itertools.permutations(items, 3):
            assert not ((a, b) in beats and (b, c) in beats
                        and (c, a) in beats)


# --------------------------------------------------------------------------
# PandaLM: the facts of its SOURCE.md


def test_pandalm_counts(pandalm):
    ds = pandalm
    check_consistent(ds)
    assert len(ds) == 999 and len(ds.prompts) == 170
    assert ds.labels.shape == (999, 3)
    agreement = ds.agreement
    # a majority exists for every item: 1 = 422, 2 = 472, tie = 105
    assert (agreement.majority >= 0).all()
    assert Counter(agreement.majority.tolist()) == {1: 422, 2: 472, 0: 105}
    assert ds.n_ties == 105 and np.array_equal(ds.ties,
                                               agreement.majority == 0)
    assert np.array_equal(ds.comparisons[agreement.majority == 2],
                          ds.pairs[agreement.majority == 2][:, ::-1])
    assert round(agreement.unanimous * 999) == 879
    assert round(agreement.with_majority.min(), 3) == 0.951
    assert round(agreement.with_majority.max(), 3) == 0.967
    # Cohen's kappa between annotators: 0.85-0.88 (PandaLM README)
    kappas = agreement.cohen_kappa[np.triu_indices(3, 1)]
    assert ((kappas >= 0.85) & (kappas <= 0.88)).all()
    assert int((~ds.ties).sum()) == 894
    assert "n_annotators=3" in repr(ds)


def test_pandalm_longer_response_rule(pandalm):
    """'response1 if it has more characters, else response2' on the 894
    strict items: 0.672 (SOURCE.md); equal lengths counting 1/2: 0.674."""
    ds = pandalm
    length = np.array([len(t) for t in ds.texts])
    strict = ~ds.ties
    predicted_first = length[ds.pairs[:, 0]] > length[ds.pairs[:, 1]]
    first_preferred = ds.comparisons[:, 0] == ds.pairs[:, 0]
    accuracy = np.mean(predicted_first[strict] == first_preferred[strict])
    assert round(accuracy, 3) == 0.672
    assert round(longer_wins(ds), 3) == 0.674


def test_pandalm_fields(pandalm):
    ds = pandalm
    assert np.array_equal(ds.info["idx"], np.arange(999))
    keys = Counter(ds.info["cmp_key"].tolist())
    assert len(keys) == 10
    assert all(89 <= n <= 111 for n in keys.values())
    models = {m for key in keys for m in key.split("_")}
    assert models == {"llama-7b", "bloom-7b", "cerebras-gpt-6.7B", "opt-7b",
                      "pythia-6.9b"}
    # the JSON value true read as the text "True", in six records
    with_true = sorted(
        int(i) for i, (a, b) in zip(ds.info["idx"], ds.pairs)
        if "True" in (ds.texts[a], ds.texts[b]))
    assert with_true == [157, 158, 159, 161, 162, 164]
    first = ds.prompts[ds.groups[0]]
    assert first.startswith("The sentence you are given might be too wordy")
    assert first.endswith("\n\nIf you have any questions about my rate or if "
                          "you find it necessary to increase or decrease the "
                          "scope for this project, please let me know.")


def test_bundled_files_match_their_source_notes():
    """LICENSE and SOURCE.md sit next to each data file, and the sha256
    values the notes state are those of the shipped files."""
    root = resources.files("rlhf.datasets").joinpath("data")
    for directory, name in [("finegrained_qa", "dev_feedback.jsonl.gz"),
                            ("pandalm", "testset-v1.jsonl.gz")]:
        folder = root.joinpath(directory)
        assert "Apache License" in folder.joinpath("LICENSE").read_text()
        note = folder.joinpath("SOURCE.md").read_text(encoding="utf-8")
        assert "What was changed" in note
        packed = folder.joinpath(name).read_bytes()
        unpacked = gzip.decompress(packed)
        compressed = re.search(r"Compressed: ([\d,]+) bytes, sha256 `(\w+)`",
                               note)
        plain = re.search(r"Uncompressed: ([\d,]+) bytes, sha256 `(\w+)`",
                          note)
        assert int(compressed[1].replace(",", "")) == len(packed)
        assert compressed[2] == hashlib.sha256(packed).hexdigest()
        assert int(plain[1].replace(",", "")) == len(unpacked)
        assert plain[2] == hashlib.sha256(unpacked).hexdigest()


# --------------------------------------------------------------------------
# hand-made JSON Lines files


def write_lines(path, lines, compress=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


HH_STYLE = [
    {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!",
     "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."},
    {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4",
     "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"},
    {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!",
     "rejected": "\n\nHuman: Hi?\n\nAssistant: Hm."},
]


@pytest.mark.parametrize("compress", [False, True])
def test_chosen_rejected_format(tmp_path, compress):
    name = "hh.jsonl.gz" if compress else "hh.jsonl"
    path = write_lines(tmp_path / name,
                       [json.dumps(r) for r in HH_STYLE], compress)
    ds = load_preference_jsonl(path)
    check_consistent(ds)
    assert ds.texts.tolist() == [
        "\n\nHuman: Hi?\n\nAssistant: Hello!",
        "\n\nHuman: Hi?\n\nAssistant: Go away.",
        "\n\nHuman: 2+2?\n\nAssistant: 4",
        "\n\nHuman: 2+2?\n\nAssistant: 5",
        "\n\nHuman: Hi?\n\nAssistant: Hm."]
    assert ds.comparisons.tolist() == [[0, 1], [2, 3], [0, 4]]
    assert ds.prompts.tolist() == [""] and ds.groups.tolist() == [0, 0, 0]
    assert not ds.ties.any() and ds.labels is None
    assert ds.info["line"].tolist() == [1, 2, 3]
    assert ds.agreement is None and ds.name == name


def test_prompt_chosen_rejected_format(tmp_path):
    records = [
        {"prompt": "Capital of France?", "chosen": "Paris.",
         "rejected": "Lyon.", "score_chosen": 9, "extra": [1, 2]},
        {"prompt": "Capital of Peru?", "chosen": "Lima.",
         "rejected": "Paris."},
        {"prompt": "Capital of France?", "chosen": "Paris, of course.",
         "rejected": "Paris.", "tie": False},
        {"prompt": "Café ☕?", "chosen": "Oui — ☕", "rejected": "Non",
         "tie": True},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(2, "   ")  # blank lines are not records
    path = write_lines(tmp_path / "trl.jsonl", lines)
    ds = load_preference_jsonl(str(path))
    check_consistent(ds)
    assert ds.prompts.tolist() == ["Capital of France?", "Capital of Peru?",
                                   "Café ☕?"]
    # "Paris." answering two prompts is two texts
    assert ds.texts.tolist() == ["Paris.", "Lyon.", "Lima.", "Paris.",
                                 "Paris, of course.", "Oui — ☕", "Non"]
    assert ds.text_prompt.tolist() == [0, 0, 1, 1, 0, 2, 2]
    assert ds.comparisons.tolist() == [[0, 1], [2, 3], [4, 0], [5, 6]]
    assert ds.groups.tolist() == [0, 1, 0, 2]
    assert ds.ties.tolist() == [False, False, False, True]
    assert ds.info["line"].tolist() == [1, 2, 4, 5]


def test_crlf_line_endings_and_duplicates_are_kept(tmp_path):
    line = json.dumps({"chosen": "a", "rejected": "b"})
    path = tmp_path / "crlf.jsonl"
    path.write_bytes((line + "\r\n" + line + "\r\n").encode())
    ds = load_preference_jsonl(path)
    assert len(ds) == 2 and ds.comparisons.tolist() == [[0, 1], [0, 1]]


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(
        {"chosen": "a", "rejected": "b"}).encode() + b"\n")
    assert load_preference_jsonl(path).texts.tolist() == ["a", "b"]


def test_identical_chosen_and_rejected(tmp_path):
    lines = [json.dumps({"chosen": "a", "rejected": "b"}),
             json.dumps({"chosen": "same", "rejected": "same"})]
    path = write_lines(tmp_path / "same.jsonl", lines)
    with pytest.raises(ValueError, match=r"same\.jsonl, line 2: .*same text"):
        load_preference_jsonl(path)
    dropped = load_preference_jsonl(path, identical="drop")
    assert len(dropped) == 1 and dropped.info["line"].tolist() == [1]
    with pytest.raises(ValueError, match="'identical'"):
        load_preference_jsonl(path, identical="tie")


# --------------------------------------------------------------------------
# round trips


def test_to_jsonl_round_trip(tmp_path):
    records = [
        {"prompt": "p1", "chosen": "x", "rejected": "y"},
        {"prompt": "p2", "chosen": "x", "rejected": "z\nwith a newline"},
        {"prompt": "p1", "chosen": "y", "rejected": "w", "tie": True},
        {"prompt": "p1", "chosen": "x", "rejected": "y"},
    ]
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in records])
    first = load_preference_jsonl(path)
    for name in ("out.jsonl", "out.jsonl.gz"):
        assert first.to_jsonl(tmp_path / name) == 4
        again = load_preference_jsonl(tmp_path / name)
        for field in ("texts", "prompts", "text_prompt", "comparisons",
                      "ties", "groups", "pairs"):
            assert np.array_equal(getattr(first, field),
                                  getattr(again, field)), field
    with gzip.open(tmp_path / "out.jsonl.gz", "rt", encoding="utf-8") as fh:
        written = [json.loads(line) for line in fh]
    assert written == [dict(r, tie=True) if r.get("tie") else
                       {k: r[k] for k in ("prompt", "chosen", "rejected")}
                       for r in records]
    assert first.to_jsonl(tmp_path / "strict.jsonl",
                          include_ties=False) == 3
    assert len(load_preference_jsonl(tmp_path / "strict.jsonl")) == 3


def triples(ds):
    return Counter(
        (ds.prompts[g], ds.texts[a], ds.texts[b], bool(t))
        for (a, b), t, g in zip(ds.comparisons.tolist(), ds.ties.tolist(),
                                ds.groups.tolist()))


@pytest.mark.parametrize("loader", [load_finegrained_qa, load_pandalm])
def test_bundled_data_round_trips(tmp_path, loader):
    ds = loader()
    path = tmp_path / "out.jsonl.gz"
    assert ds.to_jsonl(path) == len(ds)
    again = load_preference_jsonl(path)
    assert triples(again) == triples(ds)
    assert len(again.texts) == len(ds.texts)
    assert len(again.prompts) == len(ds.prompts)


# --------------------------------------------------------------------------
# malformed files


@pytest.mark.parametrize("lines, error, match", [
    (['{"chosen": "a", "rejected": "b"}', '{"chosen": "a", "rejected": '],
     ValueError, r"bad\.jsonl, line 2: invalid JSON"),
    (['{"chosen": "a", "rejected": "b"}', '{"chosen": "a"}'],
     ValueError, r"bad\.jsonl, line 2: missing key 'rejected'"),
    (['{"rejected": "b"}'], ValueError, r"line 1: missing key 'chosen'"),
    (['{"chosen": 3, "rejected": "b"}'], TypeError,
     r"bad\.jsonl, line 1: key 'chosen' must be a string, got a number"),
    (['{"chosen": "a", "rejected": null}'], TypeError,
     r"line 1: key 'rejected' must be a string, got null"),
    (['{"prompt": ["x"], "chosen": "a", "rejected": "b"}'], TypeError,
     r"line 1: key 'prompt' must be a string, got an array"),
    (['{"chosen": [{"role": "user", "content": "a"}], "rejected": "b"}'],
     TypeError, "Conversational records"),
    (['{"chosen": "a", "rejected": "b", "tie": "yes"}'], TypeError,
     r"line 1: key 'tie' must be true or false, got a string"),
    (['["a", "b"]'], ValueError, r"line 1: expected a JSON object, got an"),
    (['[{"chosen": "a",', '"rejected": "b"}]'], ValueError,
     "one JSON array"),
    ([], ValueError, r"bad\.jsonl holds no preference records"),
    (["", "  "], ValueError, "holds no preference records"),
])
def test_malformed_files(tmp_path, lines, error, match):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(error, match=match):
        load_preference_jsonl(path)


def test_truncated_gzip_and_bad_encoding(tmp_path):
    good = gzip.compress(b'{"chosen": "a", "rejected": "b"}\n' * 100)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz, line \d+: cannot "
                                         "read"):
        load_preference_jsonl(path)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"chosen": "a", "rejected": "b"}\n'
                      b'{"chosen": "caf\xe9", "rejected": "b"}\n')
    with pytest.raises(ValueError, match=r"latin\.jsonl, line 2: not UTF-8"):
        load_preference_jsonl(latin)
    with pytest.raises(FileNotFoundError):
        load_preference_jsonl(tmp_path / "missing.jsonl")


GOOD_LINE = b'{"chosen": "a", "rejected": "b"}\n'
GZIP_HEADER = gzip.compress(GOOD_LINE)[:10]


@pytest.mark.parametrize("name, payload, match, cause", [
    # a valid gzip header, then bytes that are no deflate stream
    ("corrupt.jsonl.gz", GZIP_HEADER + b"\xff" * 64,
     r"corrupt\.jsonl\.gz, line 1: cannot read \(corrupt gzip data",
     zlib.error),
    # the header alone
    ("header.jsonl.gz", GZIP_HEADER,
     r"header\.jsonl\.gz, line 1: cannot read", EOFError),
    # gzip's magic bytes, then an unknown compression method
    ("method.jsonl.gz", b"\x1f\x8b\x07" + b"\x00" * 20,
     r"method\.jsonl\.gz, line 1: cannot read", gzip.BadGzipFile),
    ("deep.jsonl", GOOD_LINE + b"[" * 100_000 + b"\n",
     r"deep\.jsonl, line 2: invalid JSON \(arrays or objects nested too "
     "deeply", RecursionError),
    # more digits than Python converts to an int
    ("digits.jsonl", GOOD_LINE + b'{"chosen": "a", "rejected": "b", "n": '
     + b"9" * 5000 + b"}\n", r"digits\.jsonl, line 2: invalid JSON",
     ValueError),
    # a surrogate encoded in UTF-8's pattern (CESU-8), not UTF-8
    ("cesu.jsonl", b'{"chosen": "\xed\xa0\x80", "rejected": "b"}\n',
     r"cesu\.jsonl, line 1: not UTF-8", UnicodeDecodeError),
], ids=["corrupt-gzip-body", "gzip-header-only", "gzip-unknown-method",
        "nested-100000-deep", "5000-digit-number", "cesu-8-surrogate"])
def test_unreadable_files_are_value_errors_naming_file_and_line(
        tmp_path, name, payload, match, cause):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match) as info:
        load_preference_jsonl(path)
    assert isinstance(info.value.__cause__, cause)


@pytest.mark.parametrize("line, key, code_point", [
    (r'{"chosen": "\ud800", "rejected": "b"}', "chosen", "D800"),
    (r'{"chosen": "a", "rejected": "x\udfffy"}', "rejected", "DFFF"),
    (r'{"prompt": "\udc00\ud800", "chosen": "a", "rejected": "b"}',
     "prompt", "DC00"),
])
def test_lone_surrogates_are_refused_when_read(tmp_path, line, key,
                                               code_point):
    """A JSON escape of half a surrogate pair makes a str that UTF-8
    cannot encode, so to_jsonl could not write it back: refused with the
    file, line and key."""
    path = write_lines(tmp_path / "half.jsonl",
                       [json.dumps({"chosen": "a", "rejected": "b"}), line])
    with pytest.raises(ValueError, match=(
            rf"half\.jsonl, line 2: key '{key}' holds the lone surrogate "
            rf"U\+{code_point}")):
        load_preference_jsonl(path)


def test_a_whole_surrogate_pair_is_one_character(tmp_path):
    path = write_lines(tmp_path / "pair.jsonl",
                       [r'{"chosen": "\ud83d\ude00", "rejected": "b"}'])
    ds = load_preference_jsonl(path)
    assert ds.texts.tolist() == ["\U0001f600", "b"]
    assert ds.to_jsonl(tmp_path / "out.jsonl") == 1


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_to_jsonl_refuses_a_surrogate_before_writing(tmp_path, name):
    path = write_lines(tmp_path / "in.jsonl", [
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}),
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "a"})])
    ds = load_preference_jsonl(path)
    texts = ds.texts.copy()
    texts[2] = "c\udc80"
    with pytest.raises(ValueError, match=(
            rf"{re.escape(name)}, line 2: cannot write key 'chosen': "
            r"texts\[2\] holds the lone surrogate U\+DC80 at character 1")):
        dataclasses.replace(ds, texts=texts).to_jsonl(tmp_path / name)
    assert not (tmp_path / name).exists()
    prompts = np.array(["\ud800"], dtype=object)
    with pytest.raises(ValueError, match=r"line 1: cannot write key "
                                         r"'prompt': prompts\[0\] holds"):
        dataclasses.replace(ds, prompts=prompts).to_jsonl(tmp_path / name)


def test_a_directory_is_an_os_error_naming_it(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        load_preference_jsonl(tmp_path)
    assert info.value.filename == str(tmp_path)


def test_datasets_is_a_submodule():
    assert rlhf.datasets.load_pandalm is load_pandalm
    assert "datasets" in rlhf.__all__


def test_subset_and_strict_keep_the_texts():
    data = rlhf.datasets.load_finegrained_qa()
    strict = data.strict()
    assert len(strict) == len(data) - data.n_ties and strict.n_ties == 0
    np.testing.assert_array_equal(strict.comparisons,
                                  data.comparisons[~data.ties])
    assert strict.texts is data.texts and strict.prompts is data.prompts
    picked = data.subset([5, 0, 7])
    np.testing.assert_array_equal(picked.comparisons,
                                  data.comparisons[[5, 0, 7]])
    np.testing.assert_array_equal(picked.groups, data.groups[[5, 0, 7]])
    np.testing.assert_array_equal(picked.labels, data.labels[[5, 0, 7]])
    with pytest.raises(ValueError, match="boolean index"):
        data.subset(np.ones(3, bool))
    with pytest.raises(TypeError, match="index"):
        data.subset(np.array([0.5]))
