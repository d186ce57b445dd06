"""rlhf.plot: each function draws the data it was given (checked on the
Axes, not in pixels) and returns the Axes; without matplotlib a call
raises an ImportError that says how to install it."""
import sys

import numpy as np
import pytest

import rlhf

matplotlib = pytest.importorskip(
    "matplotlib", reason="the plot tests need matplotlib (pip install "
    "rlhf[plot])")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_reward_kl_frontier():
    kl = np.array([0.5, 0.0, 2.0])
    reward = np.array([1.0, 0.2, 1.5])
    ax = rlhf.plot.reward_kl_frontier(kl, reward, labels=[1.0, 10.0, 0.1],
                                      label="beta sweep")
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(line.get_ydata(), [0.2, 1.0, 1.5])
    assert [t.get_text() for t in ax.texts] == ["1", "10", "0.1"]
    assert ax.get_legend().get_texts()[0].get_text() == "beta sweep"
    with pytest.raises(ValueError, match="kl must be non-negative"):
        rlhf.plot.reward_kl_frontier([-1.0], [0.0])
    with pytest.raises(ValueError, match="reward must have length 3"):
        rlhf.plot.reward_kl_frontier(kl, [1.0])


def test_frontier_of_the_kl_optimum():
    """The beta sweep of pi ∝ pi_ref exp(r / beta): as beta falls, KL and
    expected reward both rise (the frontier is increasing)."""
    reference = np.full(4, 0.25)
    rewards = np.array([1.9, 0.6, 1.85, 0.2])
    betas = np.geomspace(10, 0.05, 12)
    policies = [rlhf.reweight(reference, rewards, eta=1 / b, eps=0.0)
                for b in betas]
    kl = np.array([p @ np.log(p / reference) for p in policies])
    reward = np.array([p @ rewards for p in policies])
    ax = rlhf.plot.reward_kl_frontier(kl, reward)
    y = ax.lines[0].get_ydata()
    np.testing.assert_allclose(y, reward)  # already in KL order
    assert np.all(np.diff(y) > 0)


def test_cost_reward_tradeoff():
    fig, ax = plt.subplots()
    out = rlhf.plot.cost_reward_tradeoff([0.3, 0.2, 0.1], [2.0, 1.5, 1.0],
                                         budget=0.15, ax=ax, label="budget")
    assert out is ax
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0.3, 0.2, 0.1])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0.15, 0.15])


def test_policy_bars():
    before = [0.25, 0.25, 0.5]
    after = [0.1, 0.6, 0.3]
    ax = rlhf.plot.policy_bars(before, after, responses=["a", "b", "c"])
    heights = [[bar.get_height() for bar in c] for c in ax.containers]
    assert heights == [before, after]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="after must have length 3"):
        rlhf.plot.policy_bars(before, [1.0])


def test_calibration_bins_against_a_loop():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    p[:3] = [0.0, 1.0, 0.1]
    y = (rng.random(500) < p).astype(float)
    ax = rlhf.plot.calibration(p, y, n_bins=10)
    diagonal, bins = ax.lines
    np.testing.assert_array_equal(diagonal.get_xdata(), [0, 1])
    expected_x, expected_y = [], []
    for i in range(10):
        lo, hi = i / 10, (i + 1) / 10
        inside = (p >= lo) & ((p < hi) if i < 9 else (p <= hi))
        if inside.any():
            expected_x.append(p[inside].mean())
            expected_y.append(y[inside].mean())
    np.testing.assert_allclose(bins.get_xdata(), expected_x, rtol=1e-12)
    np.testing.assert_allclose(bins.get_ydata(), expected_y, rtol=1e-12)
    # outcomes drawn with these probabilities: each bin's frequency is
    # within 4 binomial standard deviations of its mean prediction
    counts = np.histogram(np.minimum(p * 10, 9.5), bins=np.arange(11))[0]
    sd = np.sqrt(np.asarray(expected_x) * (1 - np.asarray(expected_x))
                 / counts[counts > 0])
    assert np.all(np.abs(np.asarray(expected_y) - expected_x) < 4 * sd + 1e-12)


def test_calibration_of_a_reward_model():
    """Bradley-Terry probabilities of a fitted reward model on simulated
    preferences."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 2))
    true_reward = features @ [1.0, -1.0]
    pairs = rng.integers(0, 200, size=(2000, 2))
    diff = features[pairs[:, 0]] - features[pairs[:, 1]]
    preferred = rng.random(2000) < 1 / (1 + np.exp(
        -(true_reward[pairs[:, 0]] - true_reward[pairs[:, 1]])))
    model = rlhf.LogisticRegression(fit_intercept=False).fit(diff, preferred)
    probabilities = model.predict_proba(diff)[:, 1]
    ax = rlhf.plot.calibration(probabilities, preferred, n_bins=5)
    x, y = ax.lines[1].get_xdata(), ax.lines[1].get_ydata()
    assert np.max(np.abs(x - y)) < 0.08


@pytest.mark.parametrize("probabilities, outcomes, kwargs, match", [
    ([1.2], [1], {}, r"probabilities must lie in \[0, 1\]"),
    ([0.5], [2], {}, "outcomes must be 0 or 1"),
    ([0.5], [1], {"n_bins": 0}, "n_bins must be an int"),
    ([0.5, 0.2], [1], {}, "outcomes must have length 2"),
    ([np.nan], [1], {}, "probabilities contains NaN"),
])
def test_calibration_bad_input(probabilities, outcomes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rlhf.plot.calibration(probabilities, outcomes, **kwargs)


def test_training_curves_from_dict_and_list():
    as_dict = {"step": [0, 10, 20], "reward": [0.0, 0.5, 0.7],
               "kl": [0.0, 0.1, 0.3]}
    as_list = [{"step": 0, "reward": 0.0, "kl": 0.0},
               {"step": 10, "reward": 0.5, "kl": 0.1},
               {"step": 20, "reward": 0.7, "kl": 0.3}]
    for history in (as_dict, as_list):
        ax = rlhf.plot.training_curves(history)
        assert [line.get_label() for line in ax.lines] == ["reward", "kl"]
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 10, 20])
        np.testing.assert_array_equal(ax.lines[1].get_ydata(),
                                      [0.0, 0.1, 0.3])
    # no step column: the index; a missing entry is a gap (NaN)
    ax = rlhf.plot.training_curves([{"loss": 1.0}, {"loss": 0.5, "acc": 0.9}],
                                   keys=["acc"])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [np.nan, 0.9])
    with pytest.raises(ValueError, match=r"keys \['x'\] are not in history"):
        rlhf.plot.training_curves(as_dict, keys=["x"])
    with pytest.raises(ValueError, match="different lengths"):
        rlhf.plot.training_curves({"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError, match="history must be a dict"):
        rlhf.plot.training_curves([1, 2, 3])


def test_overoptimization():
    """Gao et al.'s functional form for best-of-n, gold = d (a - b d) with
    d = sqrt(KL), peaks at d = a / (2 b); the proxy keeps rising."""
    kl = np.linspace(0, 16, 33)
    d = np.sqrt(kl)
    gold = d * (1.0 - 0.25 * d)
    proxy = d * 1.0
    ax = rlhf.plot.overoptimization(kl, gold, proxy, sqrt_kl=True)
    proxy_line, gold_line, peak = ax.lines
    np.testing.assert_allclose(gold_line.get_xdata(), d)
    np.testing.assert_allclose(proxy_line.get_ydata(), proxy)
    np.testing.assert_allclose(peak.get_xdata(), [2.0, 2.0])  # a / (2 b)
    ax = rlhf.plot.overoptimization(kl[::-1], gold[::-1], proxy[::-1])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), kl)


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install rlhf-lab\[plot\]"):
        rlhf.plot.policy_bars([0.5, 0.5], [0.2, 0.8])
