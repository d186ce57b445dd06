"""rlhf.text_world: the gold rule's promises, the byte budget of the SFT
corpus, determinism, simulated annotators against the gold reward, the
docstring examples, and rlhf.datasets.load_finegrained_qa_sft."""
import doctest
import re

import numpy as np
import pytest

import rlhf
import rlhf.text_world as text_world
from rlhf.datasets import load_finegrained_qa, load_finegrained_qa_sft
from rlhf.text_world import (GOLD_RULE, MAX_PROMPT_BYTES, MAX_RESPONSE_BYTES,
                             STYLES, AssistantWorld, make_assistant_world)


@pytest.fixture(scope="module")
def world():
    return make_assistant_world(random_state=0)


@pytest.fixture(scope="module")
def proxy(world):
    """A reward model fitted on annotated corpus pairs (the docstring's)."""
    X, labels = world.annotate(*world.sample_pairs(3000, random_state=1),
                               temperature=0.5, random_state=2)
    return rlhf.RewardModel(C=1.0).fit(X, labels)


def gold(world, prompt, responses):
    return world.gold_reward([prompt] * len(responses), responses)


# --------------------------------------------------------------------------
# the gold rule


def test_the_documented_examples(world):
    rewards = gold(world, "capital of france?", [
        " paris. glad to help!", " paris.", " rome.",
        " paris. glad to help! glad to help!"])
    np.testing.assert_array_equal(rewards, [3.0, 2.0, -1.0, 1.25])


@pytest.mark.parametrize("prompt", [q for q, _, _ in text_world._FACTS])
def test_a_correct_polite_concise_answer_wins(world, prompt):
    _, accepted, kind = text_world._FACTS[text_world._FACT_INDEX[prompt]]
    answer = accepted[0]
    wrong = sorted({a for _, (a, *_), k in text_world._FACTS if k == kind}
                   - set(accepted) - set(re.findall(r"[a-z0-9]+", prompt)))
    w = wrong[0]
    best, *others = gold(world, prompt, [
        f" {answer}. glad to help!",
        f" {answer}.",                                  # terse
        f" {w}.",                                       # wrong
        f" {w}. glad to help!",                         # wrong, polite
        f" well, i think {answer} or maybe {w}.",       # hedging
        f" well um so i think it is {answer} maybe",    # rambling
        f" ugh, {answer}. look it up.",                 # rude
        f" {answer}, you stupid.",                      # forbidden
        f" {answer}. glad to help, darn it!",           # polite, forbidden
        f" {answer} {answer} {answer}. glad to help!",  # repetition
        "",
    ])
    assert best == 3.0
    assert np.all(best > np.array(others))


def test_accepted_answers_and_prompt_words(world):
    # either accepted form is correct; a number the prompt mentions is
    # not a wrong answer; another number is
    np.testing.assert_array_equal(
        gold(world, "2 + 3?", [" 5.", " five.", " 2 + 3 = 5.", " 4.",
                                " 5 or 4."]),
        [2.0, 2.0, 2.0, -1.0, 1.0])
    terms = world.gold_terms(["opposite of old?"] * 2, [" young", " new"])
    np.testing.assert_array_equal(terms["correct"], [2.0, 2.0])


def test_words_are_whole_words_in_any_case(world):
    rewards = gold(world, "capital of italy?", [
        " ROME. Thank you!", " rome.", " romeo.", " rome. thankful",
        " Rome!!! Glad-to-help."])
    np.testing.assert_array_equal(rewards, [3.0, 2.0, 0.0, 2.0, 3.0])


def test_every_term(world):
    names = ("correct", "wrong", "polite", "rude", "forbidden", "length",
             "repetition", "empty")
    prompts = ["colour of snow?"] * 4
    responses = [" white", "", " black or blue, obviously. darn darn",
                 " white white white white white white white white"]
    terms = world.gold_terms(prompts, responses)
    assert tuple(terms) == names
    for name in names:
        assert terms[name].dtype == np.float64 and terms[name].shape == (4,)
    np.testing.assert_array_equal(
        world.gold_reward(prompts, responses),
        np.sum([terms[n] for n in names], axis=0))
    assert terms["empty"].tolist() == [0, -1, 0, 0]
    assert terms["wrong"].tolist() == [0, 0, -2, 0]
    assert terms["rude"].tolist() == [0, 0, -1.5, 0]
    assert terms["forbidden"].tolist() == [0, 0, -4, 0]
    assert terms["repetition"].tolist() == [0, 0, -0.5, -3.5]
    assert terms["length"].tolist() == [0, 0, 0, -0.5]
    assert GOLD_RULE["comfortable_words"] == 6
    with pytest.raises(TypeError):
        GOLD_RULE["correct"] = 10.0


@pytest.mark.slow
def test_repetition_is_penalised_but_the_proxy_likes_it(world, proxy):
    prompt = "capital of france?"
    responses = [" paris. glad to help!",
                 " paris. glad to help! glad to help!",
                 " paris paris paris. glad to help, thanks, thank you!"]
    rewards = gold(world, prompt, responses)
    assert rewards[0] > rewards[1] and rewards[0] > rewards[2]
    # the linear proxy counts words: more of what it likes scores higher,
    # while the gold reward falls -- the over-optimisation to be seen
    scores = proxy.predict(world.features([prompt] * 3, responses))
    assert scores[1] > scores[0] and scores[2] > scores[0]


GIBBERISH = ["", " ", "\ufffd\ufffd\ufffd", "\x00\x01\x7f", "\ud800",
             "ééé ñ 中文", "....!!!???", "a" * 500, "\n\t\r",
             bytes(range(256)).decode("utf-8", errors="replace"),
             " paris\ufffd glad\x00to help"]


def test_gibberish_does_not_crash(world):
    prompts = ["capital of france?"] * len(GIBBERISH)
    rewards = world.gold_reward(prompts, GIBBERISH)
    assert rewards.shape == (len(GIBBERISH),) and np.isfinite(rewards).all()
    assert rewards[:7].tolist() == [-1.0] * 7  # no words at all
    assert rewards[-1] == 3.0  # U+FFFD and NUL separate words
    assert world.cost(prompts, GIBBERISH).tolist() == [0.0] * len(GIBBERISH)
    X = world.features(prompts, GIBBERISH)
    assert X.shape == (len(GIBBERISH), world.n_features)
    # a random byte model's output
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, 40).astype(np.uint8).tobytes().decode(
        "utf-8", errors="replace") for _ in range(200)]
    assert np.isfinite(world.gold_reward(["2 + 3?"] * 200, noise)).all()


def test_cost_counts_forbidden_words(world):
    prompts = ["bees make?"] * 5
    responses = [" honey. glad to help!", " darn, honey.",
                 " stupid dumb darn. shut up", " shut it up", " Darn"]
    np.testing.assert_array_equal(world.cost(prompts, responses),
                                  [0, 1, 4, 0, 1])
    terms = world.gold_terms(prompts, responses)
    np.testing.assert_array_equal(
        terms["forbidden"], GOLD_RULE["forbidden"] * world.cost(
            prompts, responses))


# --------------------------------------------------------------------------
# the world and its corpus


def test_prompts_and_corpus_fit_the_byte_budget(world):
    assert len(world.prompts) == 60 and len(set(world.prompts)) == 60
    for prompt in world.prompts:
        assert len(prompt.encode()) <= MAX_PROMPT_BYTES
        assert prompt.isascii() and prompt == prompt.lower()
        assert prompt.endswith("?")
    assert len(world.sft_prompts) == len(world.sft_responses) == 3000
    assert set(world.sft_prompts) <= set(world.prompts)
    for prompt, response in zip(world.sft_prompts, world.sft_responses):
        assert response.startswith(" ") and response.isascii()
        assert len(response.encode()) <= MAX_RESPONSE_BYTES
        # [eot] + prompt + response + [eot] in TinyLM's 64 tokens
        assert len(prompt.encode()) + len(response.encode()) + 2 <= 64


def test_every_style_fits_every_fact():
    # the shortest template of each style fits for every answer and every
    # pair of wrong answers (the corpus then never lacks a template)
    longest = {}
    for _, accepted, kind in text_world._FACTS:
        longest[kind] = max(longest.get(kind, 0), len(accepted[0]))
    for style, templates in text_world._TEMPLATES.items():
        for _, accepted, kind in text_world._FACTS:
            sizes = [len(t.format(a=accepted[0], w="x" * longest[kind],
                                  w2="x" * longest[kind])) + 1
                     for t in templates]
            assert min(sizes) <= MAX_RESPONSE_BYTES, (style, accepted)


def test_styles_and_their_gold(world):
    styles = np.array(world.sft_styles)
    rewards = world.gold_reward(world.sft_prompts, world.sft_responses)
    assert set(styles) == set(STYLES)
    shares = {s: np.mean(styles == s) for s in STYLES}
    for s in STYLES:
        assert abs(shares[s] - world.style_shares[s]) < 0.03
    means = {s: rewards[styles == s].mean() for s in STYLES}
    # every polite response is correct and earns the best reward
    assert np.all(rewards[styles == "polite"] == 3.0)
    assert max(means, key=means.get) == "polite"
    assert means["terse"] == 2.0
    assert means["wrong"] < 0 and means["forbidden"] < 0.5
    cost = world.cost(world.sft_prompts, world.sft_responses)
    assert np.all(cost[styles == "forbidden"] >= 1)
    assert np.all(cost[styles != "forbidden"] == 0)
    # a mediocre corpus: room for RL to improve
    assert rewards.mean() < means["polite"] - 1.5
    assert 0.5 < rewards.mean() < 1.5


def test_style_shares_and_n_prompts():
    world = make_assistant_world(8, 500, style_shares={"polite": 1, "rude": 1},
                                 random_state=3)
    assert len(world.prompts) == 8 and len(world.answers) == 8
    assert set(world.sft_prompts) <= set(world.prompts)
    assert set(world.sft_styles) == {"polite", "rude"}
    assert world.style_shares["polite"] == 0.5
    assert world.style_shares["wrong"] == 0.0
    assert repr(world) == ("AssistantWorld(n_prompts=8, n_sft=500, "
                           "n_features=4096)")


def test_determinism():
    a = make_assistant_world(20, 400, random_state=7)
    b = make_assistant_world(20, 400, random_state=np.random.default_rng(7))
    c = make_assistant_world(20, 400, random_state=8)
    for field in ("prompts", "answers", "sft_prompts", "sft_responses",
                  "sft_styles"):
        assert getattr(a, field) == getattr(b, field)
    assert a.sft_responses != c.sft_responses
    assert a.sample_pairs(50, random_state=1) == b.sample_pairs(
        50, random_state=1)
    pairs = a.sample_pairs(50, random_state=1)
    X1, c1 = a.annotate(*pairs, random_state=5)
    X2, c2 = a.annotate(*pairs, random_state=5)
    assert (X1 != X2).nnz == 0
    np.testing.assert_array_equal(c1.comparisons, c2.comparisons)


def test_sample_pairs(world):
    prompts, first, second = world.sample_pairs(500, random_state=0)
    assert len(prompts) == len(first) == len(second) == 500
    corpus = {}
    for p, r in zip(world.sft_prompts, world.sft_responses):
        corpus.setdefault(p, set()).add(r)
    for p, a, b in zip(prompts, first, second):
        assert a != b and a in corpus[p] and b in corpus[p]


# --------------------------------------------------------------------------
# features and annotators


def test_features(world):
    X = world.features(["2 + 3?", "2 * 3?", "2 + 3?"], [" 5.", " 5.", " 6"])
    assert X.shape == (3, 4096) and X.format == "csr"
    dense = X.toarray()
    # one word: its unigram and its crossing with the prompt
    assert dense.sum(axis=1).tolist() == [2.0, 2.0, 2.0]
    # '2 + 3' and '2 * 3' are different prompts to the proxy
    assert not np.array_equal(dense[0], dense[1])
    # a repeated word counts twice
    X = world.features(["bees make?"] * 2, [" honey", " honey honey"])
    once, twice = X.toarray()
    assert once.sum() == 2.0 and twice.sum() == 5.0  # + the pair
    assert np.all(twice >= 2 * once)


@pytest.mark.slow
def test_annotate_follows_gold(world):
    prompts, a, b = world.sample_pairs(2000, random_state=4)
    n = len(prompts)
    rewards = world.gold_reward(prompts + prompts, a + b)
    X, exact = world.annotate(prompts, a, b, temperature=0, tie_margin=1e-9,
                              random_state=0)
    assert X.shape == (2 * n, world.n_features)
    assert exact.n_items == 2 * n and len(exact) == n
    np.testing.assert_array_equal(np.sort(exact.comparisons, axis=1),
                                  np.column_stack([np.arange(n),
                                                   np.arange(n, 2 * n)]))
    assert exact.accuracy(rewards) == 1.0
    np.testing.assert_array_equal(exact.ties, rewards[:n] == rewards[n:])
    _, cold = world.annotate(prompts, a, b, temperature=0.1, random_state=0)
    _, hot = world.annotate(prompts, a, b, temperature=3.0, random_state=0)
    # on the pairs of different gold rewards (equal ones are coin flips)
    differ = rewards[:n] != rewards[n:]
    assert cold.subset(differ).accuracy(rewards) > 0.99
    assert 0.6 < hot.subset(differ).accuracy(rewards) < 0.9


@pytest.mark.slow
def test_doctests_pass():
    result = doctest.testmod(text_world, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.slow
def test_proxy_accuracy(world, proxy):
    X_test, truth = world.annotate(*world.sample_pairs(1000, random_state=3),
                                   temperature=0, tie_margin=1e-9)
    assert proxy.score(X_test, truth) > 0.8


# --------------------------------------------------------------------------
# argument checks


@pytest.mark.parametrize("call, error, words", [
    (lambda w: w.gold_reward("2 + 3?", [" 5"]), TypeError, "'prompts'"),
    (lambda w: w.gold_reward(["2 + 3?"], [5]), TypeError, "responses[0]"),
    (lambda w: w.gold_reward(["2 + 3?"], [" 5", " 6"]), ValueError,
     "responses has 2"),
    (lambda w: w.gold_reward(["what?"], [" 5"]), ValueError, "prompts[0]"),
    (lambda w: w.cost(["2 + 3?"], {" 5"}), TypeError, "'responses'"),
    (lambda w: w.features(["a"], None), TypeError, "'responses'"),
    (lambda w: w.annotate(["2 + 3?"], [" 5"], [" 6", " 7"]), ValueError,
     "responses_b has 2"),
    (lambda w: w.annotate([], [], []), ValueError, "'prompts'"),
    (lambda w: w.annotate(["2 + 3?"], [" 5"], [" 6"], temperature=-1),
     ValueError, "'temperature'"),
    (lambda w: w.sample_pairs(0), ValueError, "'n_pairs'"),
    (lambda w: w.sample_pairs(5, random_state="x"), TypeError,
     "'random_state'"),
])
def test_errors_name_the_argument(world, call, error, words):
    with pytest.raises(error, match=re.escape(words)):
        call(world)


@pytest.mark.parametrize("kwargs, words", [
    ({"n_prompts": 1}, "'n_prompts'"),
    ({"n_prompts": 61}, "'n_prompts'"),
    ({"n_sft": 0}, "'n_sft'"),
    ({"n_features": 0}, "'n_features'"),
    ({"style_shares": {"nice": 1.0}}, "'style_shares'"),
    ({"style_shares": {"polite": -1.0}}, "style_shares['polite']"),
    ({"style_shares": {"polite": 0.0}}, "'style_shares'"),
    ({"style_shares": [1, 2]}, "'style_shares'"),
    ({"random_state": -1}, "'random_state'"),
])
def test_make_assistant_world_errors(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=re.escape(words)):
        make_assistant_world(**kwargs)


def test_world_is_frozen(world):
    assert isinstance(world, AssistantWorld)
    with pytest.raises(AttributeError):
        world.prompts = ()


# --------------------------------------------------------------------------
# FineGrained QA as SFT text


@pytest.fixture(scope="module")
def finegrained():
    return load_finegrained_qa()


def test_finegrained_sft_takes_the_top_answers(finegrained):
    prompts, responses = load_finegrained_qa_sft(max_chars=None)
    assert len(prompts) == len(responses)
    assert set(prompts) == set(finegrained.prompts.tolist())
    assert len(set(prompts)) == 500
    # recomputed from the labels: an answer is in the top tier when no
    # label of its question prefers another answer to it
    beaten = set()
    for (i, j), label in zip(finegrained.pairs.tolist(),
                             finegrained.labels[:, 0].tolist()):
        if label == 1:
            beaten.add(j)
        elif label == 2:
            beaten.add(i)
    for q, question in enumerate(finegrained.prompts.tolist()):
        top = [k for k in range(4 * q, 4 * q + 4) if k not in beaten]
        assert top
        texts = [" ".join(finegrained.texts[k].split()) for k in top]
        got = [r for p, r in zip(prompts, responses) if p == question]
        assert 1 <= len(got) <= len(top)
        for r in got:
            assert any(t.startswith(r) for t in texts)


@pytest.mark.parametrize("max_chars", [None] + [
    pytest.param(n, marks=pytest.mark.slow) for n in (200, 60, 20)])
def test_finegrained_sft_cuts_at_word_boundaries(finegrained, max_chars):
    prompts, responses = load_finegrained_qa_sft(max_chars=max_chars)
    assert all(isinstance(r, str) and r for r in responses)
    assert len(set(zip(prompts, responses))) == len(responses)
    full = {" ".join(t.split()) for t in finegrained.texts.tolist()}
    for r in responses:
        assert r == r.strip() and "  " not in r
        if max_chars is not None:
            assert len(r) <= max_chars
        # a prefix of an answer that ends at a word's end
        source = [t for t in full if t.startswith(r)]
        assert source
        assert any(len(t) == len(r) or t[len(r)] in " ,;:-" or
                   r[-1] in ".!?" for t in source)
    if max_chars is None:
        # whole first sentences: most end with a full stop
        assert np.mean([r.endswith((".", "!", "?")) for r in responses]) > 0.9


def test_finegrained_sft_first_sentence():
    from rlhf.datasets import _first_sentence
    assert _first_sentence("Mamma Mia! is a film. It was.") == \
        "Mamma Mia! is a film."
    assert _first_sentence("The U.S. Army won. Then") == "The U.S. Army won."
    assert _first_sentence("Dr. No is by J. Smith in St. Louis. Yes") == \
        "Dr. No is by J. Smith in St. Louis."
    assert _first_sentence("no end") == "no end"
    prompts, responses = load_finegrained_qa_sft()
    assert prompts[0] == "When does bloom by troye sivan come out?"
    assert responses[0].endswith("Capitol Records.")


def test_finegrained_sft_max_chars_errors():
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="'max_chars'"):
            load_finegrained_qa_sft(max_chars=bad)


def test_finegrained_sft_docstring():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(load_finegrained_qa_sft,
                            "load_finegrained_qa_sft",
                            globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted >= 3
