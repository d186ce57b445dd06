"""The lecture's demo, with rlhf in place of scikit-learn, prints the
lecture's numbers (the recorded output of the lecture notebook,
../shared/seed, reproduced by scikit-learn 1.2.2 in
tests/fixtures/sklearn12_lbfgs.json)."""
import io
import subprocess
import sys

import numpy as np
import pytest

import rlhf
from rlhf.__main__ import demo, lecture_data, mirrored_rows

LECTURE_REWARDS = "Reward estimates: [1.88613449 0.58578553 1.85394001 0.20599333]"
LECTURE_POLICY = ("Updated policy distribution: "
                  "[0.34040625 0.17767664 0.33497052 0.14694659]")


def lecture_run():
    """The lecture's cell, verbatim but for the import."""
    from rlhf import LogisticRegression

    out = io.StringIO()
    responses, features, preferences = lecture_data()
    X, y = [], []
    for better, worse in preferences:
        diff = features[better] - features[worse]
        X.append(diff)
        y.append(1)
        X.append(-diff)
        y.append(0)
    clf = LogisticRegression().fit(X, y)
    rewards = clf.decision_function(features)
    print('Reward estimates:', rewards, file=out)
    policy = np.array([0.25, 0.25, 0.25, 0.25])
    advantage = rewards - rewards.mean()
    policy = np.exp(np.log(policy + 1e-6) + 0.5 * advantage)
    policy /= policy.sum()
    print('Updated policy distribution:', policy, file=out)
    return out.getvalue().splitlines(), clf


def test_lecture_cell_prints_the_lecture_lines():
    lines, clf = lecture_run()
    assert lines == [LECTURE_REWARDS, LECTURE_POLICY]
    assert clf.n_iter_.tolist() == [6]


def test_lecture_matches_recorded_sklearn_digits(sklearn12_cases):
    case = next(c for c in sklearn12_cases if c["name"] == "lecture")
    _, clf = lecture_run()
    _, features, _ = lecture_data()
    np.testing.assert_allclose(clf.decision_function(features),
                               case["extra_decision"], rtol=1e-12,
                               atol=1e-14)


def test_reweight_is_the_lecture_update():
    _, features, preferences = lecture_data()
    X, y = mirrored_rows(features, preferences)
    rewards = rlhf.LogisticRegression().fit(X, y).decision_function(features)
    policy = np.full(4, 0.25)
    expected = np.exp(np.log(policy + 1e-6) + 0.5 * (rewards - rewards.mean()))
    expected /= expected.sum()
    np.testing.assert_allclose(rlhf.reweight(policy, rewards, eta=0.5),
                               expected, rtol=1e-13, atol=0)


@pytest.mark.slow
def test_demo_prints_lecture_lines_first():
    out = io.StringIO()
    demo(out)
    assert out.getvalue().splitlines()[:2] == [LECTURE_REWARDS, LECTURE_POLICY]


@pytest.mark.slow
def test_command_line_demo():
    result = subprocess.run([sys.executable, "-m", "rlhf", "demo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [LECTURE_REWARDS, LECTURE_POLICY]


def test_pairwise_reading_intercept_is_zero():
    """Mirrored rows make the objective symmetric in b, so b* = 0 (DESIGN.md)."""
    _, features, preferences = lecture_data()
    X, y = mirrored_rows(features, preferences)
    exact = rlhf.LogisticRegression(solver="newton").fit(X, y)
    assert abs(exact.intercept_[0]) < 1e-12
