"""rlhf.annotate: the annotation session and its ipywidgets panel.

Oracles: a RewardModel fitted directly to the same answers (the session
must hold exactly that model), the prior's closed-form standard error
before any answer, rlhf.active.select_comparisons called on the same pool,
and load_preference_jsonl reading the export back.  The widget is driven by
calling its buttons' click handlers.
"""
import copy
import sys

import numpy as np
import pytest

from rlhf.active import select_comparisons
from rlhf.annotate import AnnotationSession, RewardRow, annotation_panel
from rlhf.datasets import load_preference_jsonl
from rlhf.reward import RewardModel

pytestmark = pytest.mark.no_sanitizer

PROMPTS = ["What is the capital of France?"] * 3 + ["Who wrote Hamlet?"] * 3
TEXTS = ["Paris.", "Lyon.", "I am not sure.",
         "Shakespeare.", "Marlowe.", "A playwright."]
QUALITY = np.array([2.0, 0.0, -1.0, 2.0, 0.5, -0.5])


def make_session(**kwargs):
    kwargs.setdefault("prompts", PROMPTS)
    kwargs.setdefault("random_state", 0)
    return AnnotationSession(TEXTS, **kwargs)


def answer_by_quality(session, quality=QUALITY, tie_within=0.0):
    """The answer of a person who prefers the higher quality."""
    a, b = session.next_pair()
    if abs(quality[a] - quality[b]) <= tie_within:
        return "tie"
    return "first" if quality[a] > quality[b] else "second"


def pair_keys(pairs):
    return {tuple(sorted(map(int, p))) for p in pairs}


def test_answers_recorded_in_order_and_oriented():
    session = make_session()
    shown, choices = [], ["first", "second", "tie", 0, 1, 2, "FIRST"]
    for choice in choices:
        shown.append(session.next_pair())
        session.record(choice)
    assert session.n_answers == len(choices)
    assert session.shown.tolist() == [list(p) for p in shown]
    code = {"first": 0, "second": 1, "tie": 2, "FIRST": 0}
    expected = [(b, a) if code.get(c, c) == 1 else (a, b)
                for (a, b), c in zip(shown, choices)]
    assert session.comparisons.tolist() == [list(p) for p in expected]
    assert session.ties.tolist() == [code.get(c, c) == 2 for c in choices]
    # only texts of one prompt are compared
    prompt = session.text_prompt
    assert (prompt[session.shown[:, 0]] == prompt[session.shown[:, 1]]).all()


def test_refit_after_each_answer_matches_a_direct_fit():
    session = make_session(model=RewardModel(C=2.0))
    assert session.model_ is None
    previous, previous_std = None, session.reward_std()
    for k in range(1, 7):
        choice = answer_by_quality(session, tie_within=1.0)
        session.record(choice)
        assert session.n_answers == k
        model = session.model_
        direct = RewardModel(C=2.0).fit(None, session.comparisons,
                                        ties=session.ties, n_items=6)
        np.testing.assert_array_equal(model.coef_, direct.coef_)
        np.testing.assert_array_equal(session.rewards(), direct.predict())
        np.testing.assert_array_equal(session.reward_std(),
                                      direct.reward_std())
        # each answer adds information: the error bars shrink somewhere; a
        # strict answer also moves the rewards (a tie between equal rewards
        # need not)
        assert (session.reward_std() < previous_std - 1e-9).any()
        if previous is not None and choice != "tie":
            assert not np.array_equal(model.coef_, previous)
        previous, previous_std = model.coef_.copy(), session.reward_std()
    assert session.ties.any() and not session.ties.all()


def test_refit_with_features_matches_a_direct_fit():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(6, 3))
    session = make_session(features=features, model=RewardModel(C=0.5))
    for _ in range(4):
        session.record(answer_by_quality(session))
    direct = RewardModel(C=0.5).fit(features, session.comparisons,
                                    ties=session.ties)
    np.testing.assert_array_equal(session.model_.coef_, direct.coef_)
    np.testing.assert_array_equal(session.rewards(),
                                  direct.predict(features))
    np.testing.assert_array_equal(session.reward_std(),
                                  direct.reward_std(features))


def test_before_any_answer_rewards_are_the_prior():
    # the prior N(0, C I) of the penalty: reward f.w has std sqrt(C) ||f||
    session = make_session(model=RewardModel(C=4.0))
    np.testing.assert_array_equal(session.rewards(), np.zeros(6))
    np.testing.assert_allclose(session.reward_std(), np.full(6, 2.0))
    features = np.arange(12.0).reshape(6, 2)
    session = make_session(features=features, model=RewardModel(C=4.0))
    np.testing.assert_allclose(session.reward_std(),
                               2.0 * np.linalg.norm(features, axis=1))
    # one answer (a tie) informs only the two texts shown: with free
    # strengths the Hessian is C^-1 I plus a block on that pair, so the
    # other texts keep the prior's error bars exactly and the two shrink
    single = make_session(model=RewardModel(C=4.0))
    shown = single.next_pair()
    single.record("tie")
    std = single.reward_std()
    others = np.setdiff1d(np.arange(6), shown)
    np.testing.assert_allclose(std[others], 2.0, rtol=1e-12)
    assert (std[list(shown)] < 2.0 - 1e-3).all()


def test_an_answer_whose_refit_fails_is_not_kept(monkeypatch):
    session = make_session(model=RewardModel(C=4.0))
    session.record("first")
    before = state_of(session)
    pair = session.next_pair()

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(session, "_refit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.record("second")
    monkeypatch.undo()
    assert session.n_answers == 1 and session.next_pair() == pair
    assert_same_state(state_of(session), before)


def test_one_sided_answers_stay_finite():
    # the same text wins every time: without a penalty its strength has no
    # maximum; the default penalty keeps it finite
    session = AnnotationSession(["best", "b", "c", "d"], random_state=3,
                                candidates=[[0, 1], [0, 2], [0, 3]])
    for _ in range(3):
        a, b = session.next_pair()
        session.record("first" if a == 0 else "second")
    assert np.isfinite(session.rewards()).all()
    assert np.isfinite(session.reward_std()).all()
    assert session.rewards().argmax() == 0
    assert session.fit_messages_ == []


def test_fit_problems_are_reported_not_raised():
    session = AnnotationSession(["best", "b", "c"], random_state=3,
                                model=RewardModel(penalty=None, max_iter=50))
    assert np.isinf(session.reward_std()).all()  # no prior
    for _ in range(2):
        a, b = session.next_pair()
        session.record("first" if a == 0 else "second" if b == 0 else "tie")
    assert session.fit_messages_  # the warning of a fit without a maximum
    assert session.n_answers == 2


def state_of(session):
    return (session.rewards(), session.reward_std(), session.next_pair(),
            session.comparisons, session.ties, session.n_answers,
            None if session.model_ is None else session.model_.coef_.copy(),
            list(session.fit_messages_))


def assert_same_state(left, right):
    for x, y in zip(left, right):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_undo_restores_the_previous_state_exactly():
    session = make_session()
    before_any = state_of(session)
    for _ in range(3):
        session.record(answer_by_quality(session))
    before = state_of(session)
    after_states = []
    for choice in ["second", "tie"]:
        session.record(choice)
        after_states.append(state_of(session))
        session.undo()
        assert_same_state(state_of(session), before)
    # answering again after an undo gives what answering first gave
    session.record("tie")
    assert_same_state(state_of(session), after_states[1])
    for _ in range(4):
        session.undo()
    assert_same_state(state_of(session), before_any)
    assert not session.can_undo
    with pytest.raises(ValueError, match="no answer to undo"):
        session.undo()


def test_export_round_trips(tmp_path):
    session = make_session()
    for choice in ["first", "tie", "second", "first", "tie"]:
        session.record(choice)
    path = tmp_path / "answers.jsonl"
    assert session.to_jsonl(path) == 5
    back = load_preference_jsonl(path)
    records = [(str(back.prompts[g]), str(back.texts[a]), str(back.texts[b]),
                bool(t)) for (a, b), g, t in zip(back.comparisons,
                                                  back.groups, back.ties)]
    expected = [(PROMPTS[a], TEXTS[a], TEXTS[b], bool(t))
                for (a, b), t in zip(session.comparisons, session.ties)]
    assert records == expected
    data = session.to_dataset()
    assert data.labels[:, 0].tolist() == [1, 0, 2, 1, 0]
    np.testing.assert_array_equal(data.pairs, session.shown)
    assert session.to_jsonl(tmp_path / "strict.jsonl",
                            include_ties=False) == 3


@pytest.mark.parametrize("strategy", ["information", "uncertainty",
                                      "random"])
def test_next_pair_is_never_an_answered_one_while_others_remain(strategy):
    session = make_session(strategy=strategy)
    n_candidates = len(session.candidates)
    assert n_candidates == 6  # 3 pairs per prompt
    answered = set()
    for k in range(n_candidates):
        assert not session.all_answered
        key = tuple(sorted(session.next_pair()))
        assert key not in answered
        assert key in pair_keys(session.candidates)
        session.record(answer_by_quality(session))
        answered.add(key)
    assert answered == pair_keys(session.candidates)
    assert session.all_answered
    # then pairs come back
    assert tuple(sorted(session.next_pair())) in answered


def test_next_pair_is_select_comparisons_pick():
    texts = [f"response {i}" for i in range(8)]
    session = AnnotationSession(texts, random_state=5)
    for step in range(6):
        unanswered = [list(p) for p in session.candidates.tolist()
                      if tuple(sorted(p)) not in pair_keys(session.shown)]
        model = session.model_ if session.model_ is not None else \
            RewardModel(C=1.0)
        pick = select_comparisons(model, unanswered, n=1,
                                         strategy="information")
        expected = tuple(sorted(unanswered[int(pick[0])]))
        assert tuple(sorted(session.next_pair())) == expected
        session.record(["first", "second", "tie"][step % 3])


def test_random_strategy_is_reproducible():
    pairs = []
    for _ in range(2):
        session = make_session(strategy="random", random_state=11)
        shown = []
        for _ in range(5):
            shown.append(session.next_pair())
            session.record("first")
        pairs.append(shown)
    assert pairs[0] == pairs[1]


def test_session_keeps_copies():
    features = np.eye(6)
    candidates = np.array([[0, 1], [1, 2], [3, 4]])
    session = make_session(features=features, candidates=candidates)
    features[:] = 5.0
    candidates[:] = 0
    session.record("first")
    direct = RewardModel().fit(np.eye(6), session.comparisons,
                               ties=session.ties)
    np.testing.assert_array_equal(session.model_.coef_, direct.coef_)
    assert pair_keys(session.candidates) == {(0, 1), (1, 2), (3, 4)}


def test_reward_table():
    texts = [f"answer {i}" for i in range(6)]
    session = AnnotationSession(texts, random_state=2)
    quality = np.arange(6.0)
    for _ in range(8):
        session.record(answer_by_quality(session, quality))
    rows = session.reward_table(max_rows=3)
    assert len(rows) == 3 and all(isinstance(r, RewardRow) for r in rows)
    rewards = [r.reward for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    a, b = session.next_pair()
    assert {r.item for r in rows if r.side} == {a, b}
    assert {r.side for r in rows if r.side} == {"A", "B"}
    for r in rows:
        assert r.reward == session.rewards()[r.item]
        assert r.std == session.reward_std()[r.item]
        assert r.text == texts[r.item]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(texts="one string"), TypeError, "single string"),
    (dict(texts=["a", 3]), TypeError, "element 1 is a int"),
    (dict(texts=["a"]), ValueError, "at least 2 texts"),
    (dict(texts=["a", "a"]), ValueError, "texts 0 and 1 are the same"),
    (dict(texts=["a", "b"], prompts=["p"]), ValueError, "one prompt per"),
    (dict(texts=["a", "b"], prompts=["p", "q"]), ValueError,
     "no prompt has two texts"),
    (dict(texts=["a", "b"], features=np.ones((3, 2))), ValueError,
     "one row per text"),
    (dict(texts=["a", "b", "c"], candidates=[[0, 3]]), ValueError,
     "below 3"),
    (dict(texts=["a", "b", "c"], candidates=[[1, 1]]), ValueError,
     "two different texts"),
    (dict(texts=["a", "b", "c"], candidates=[[0, 1.5]]), TypeError,
     "integer item indices"),
    (dict(texts=["a", "b", "c"], prompts=["p", "p", "q"],
          candidates=[[0, 2]]), ValueError, "same prompt"),
    (dict(texts=["a", "b"], model="bt"), TypeError, "rlhf.RewardModel"),
    (dict(texts=["a", "b"], model=RewardModel(C=-1.0)), ValueError,
     "'C' parameter"),
    (dict(texts=["a", "b"], model=RewardModel(likelihood="plackett-luce")),
     ValueError, "pairwise"),
    (dict(texts=["a", "b"], strategy="best"), ValueError,
     "'strategy' parameter of AnnotationSession must be one of"),
    (dict(texts=["a", "b"], random_state=-1), TypeError, "random_state"),
])
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        AnnotationSession(**kwargs)


@pytest.mark.parametrize("choice", ["A", 3, True, 1.0, None])
def test_bad_choice(choice):
    session = make_session()
    with pytest.raises(ValueError, match="'choice' parameter of "
                       "AnnotationSession.record must be one of"):
        session.record(choice)
    assert session.n_answers == 0


def test_export_without_answers(tmp_path):
    with pytest.raises(ValueError, match="no answers to write"):
        make_session().to_jsonl(tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# -- the widget -----------------------------------------------------------


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def button(panel, description):
    widgets = pytest.importorskip("ipywidgets")
    found = [w for w in walk(panel) if isinstance(w, widgets.Button)
             and w.description == description]
    assert len(found) == 1, description
    return found[0]


def html_text(panel):
    widgets = pytest.importorskip("ipywidgets")
    return "".join(w.value for w in walk(panel)
                   if isinstance(w, widgets.HTML))


def test_panel_buttons_drive_the_session(tmp_path):
    widgets = pytest.importorskip("ipywidgets")
    session = make_session()
    panel = annotation_panel(session, path=str(tmp_path / "out.jsonl"))
    assert isinstance(panel, widgets.VBox)
    a, b = session.next_pair()
    page = html_text(panel)
    assert TEXTS[a] in page and TEXTS[b] in page and PROMPTS[a] in page
    assert "Answers: <b>0</b>" in page
    assert button(panel, "Undo").disabled

    button(panel, "A is better").click()
    assert session.comparisons.tolist() == [[a, b]]
    c, d = session.next_pair()
    button(panel, "B is better").click()
    assert session.comparisons.tolist()[-1] == [d, c]
    button(panel, "Tie").click()
    assert session.ties.tolist() == [False, False, True]
    assert "Answers: <b>3</b>" in html_text(panel)
    assert not button(panel, "Undo").disabled

    button(panel, "Undo").click()
    assert session.n_answers == 2
    assert "Answers: <b>2</b>" in html_text(panel)

    button(panel, "Export").click()
    back = load_preference_jsonl(tmp_path / "out.jsonl")
    assert len(back) == 2
    assert "Wrote 2 answers" in html_text(panel)


def test_panel_shows_export_errors(tmp_path):
    pytest.importorskip("ipywidgets")
    session = make_session()
    panel = annotation_panel(session, path=str(tmp_path / "out.jsonl"))
    button(panel, "Export").click()
    assert "no answers to write" in html_text(panel)


def test_panel_bad_input():
    with pytest.raises(TypeError, match="'session' parameter of "
                       "annotation_panel must be an AnnotationSession"):
        annotation_panel(["a", "b"])
    with pytest.raises(ValueError, match="'max_rows' parameter"):
        annotation_panel(make_session(), max_rows=1)


def test_panel_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"pip install 'rlhf-lab\[notebooks"):
        annotation_panel(make_session())


def test_undo_keeps_the_random_generator():
    session = make_session(strategy="random")
    session.record("first")
    saved = copy.deepcopy(session.random_state.bit_generator.state)
    session.next_pair()
    session.record("second")
    session.undo()
    session.undo()
    session.record("first")
    assert session.random_state.bit_generator.state == saved
