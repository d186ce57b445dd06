"""rlhf.plot: each function draws the data it was given (checked on the
Axes) and returns the Axes; the layout is checked in pixels, through the
Agg renderer's bounding boxes: no two tick labels overlap, no text runs off
the figure or covers a tick label, no legend covers data, text is at least
12 points on a 16:9 figure, also under lecture_style(), which restores the
rcParams on exit.  Without matplotlib a call raises an ImportError that
says how to install it."""
import doctest
import itertools
import sys

import numpy as np
import pytest

import rlhf

matplotlib = pytest.importorskip(
    "matplotlib", reason="the plot tests need matplotlib (pip install "
    "rlhf-lab[plot])")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytestmark = pytest.mark.slow  # half a minute in all


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
    # written in the order of the points along the curve
    assert [t.get_text() for t in ax.texts] == ["10", "1", "0.1"]
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
        axes = rlhf.plot.training_curves(history)
        assert len(axes) == 2       # one panel per quantity
        assert [ax.get_title() for ax in axes] == [
            "expected reward", r"KL($\pi\,\|\,\pi_\mathrm{ref}$)"]
        assert [ax.get_ylabel() for ax in axes] == [r"$E_\pi[r]$", "nats"]
        assert all(ax.get_xlabel() == "step" for ax in axes)
        assert axes[0].get_shared_x_axes().joined(axes[0], axes[1])
        np.testing.assert_array_equal(axes[0].lines[0].get_xdata(),
                                      [0, 10, 20])
        np.testing.assert_array_equal(axes[1].lines[0].get_ydata(),
                                      [0.0, 0.1, 0.3])
    # no step column: the index; a missing entry is a gap (NaN)
    (ax,) = rlhf.plot.training_curves(
        [{"loss": 1.0}, {"loss": 0.5, "acc": 0.9}], keys=["acc"])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [np.nan, 0.9])
    assert ax.get_title() == "acc" and ax.get_xlabel() == "iteration"
    with pytest.raises(ValueError, match=r"keys \['x'\] are not in history"):
        rlhf.plot.training_curves(as_dict, keys=["x"])
    with pytest.raises(ValueError, match="different lengths"):
        rlhf.plot.training_curves({"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError, match="history must be a dict"):
        rlhf.plot.training_curves([1, 2, 3])
    with pytest.raises(ValueError, match="history has no column to draw"):
        rlhf.plot.training_curves({"step": [0, 1]})
    with pytest.raises(ValueError, match=r"axes must hold one Axes per key"):
        rlhf.plot.training_curves(as_dict, keys=["reward", "kl"],
                                  axes=axes[:1])


def test_training_curves_compare_two_runs_on_the_same_panels():
    runs = {"exact": {"reward": [0.1, 0.4, 0.5], "kl": [0.0, 0.2, 0.3]},
            "sampled": {"reward": [0.2, 0.3, 0.6], "kl": [0.0, 0.3, 0.2]}}
    axes = rlhf.plot.training_curves(runs["exact"], label="exact")
    again = rlhf.plot.training_curves(runs["sampled"], axes=axes,
                                      label="sampled", linestyle="--")
    assert list(again) == list(axes)
    for ax, key in zip(axes, ["reward", "kl"]):
        assert [line.get_label() for line in ax.lines] == ["exact",
                                                           "sampled"]
        np.testing.assert_array_equal(ax.lines[1].get_ydata(),
                                      runs["sampled"][key])
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
        "exact", "sampled"]
    # the panels keep their quantities even where the second run has
    # more columns, in another order
    third = {"kl": [0.0, 0.1, 0.1], "entropy": [1.0, 0.9, 0.8],
             "reward": [0.0, 0.2, 0.4]}
    rlhf.plot.training_curves(third, axes=axes)
    np.testing.assert_array_equal(axes[0].lines[2].get_ydata(),
                                  third["reward"])
    np.testing.assert_array_equal(axes[1].lines[2].get_ydata(), third["kl"])


def test_training_curves_leave_out_columns_with_no_value():
    """The explained variance of an exact fit is all NaN: no panel unless
    asked for."""
    history = {"reward": [0.1, 0.2], "explained_variance": [np.nan] * 2}
    assert len(rlhf.plot.training_curves(history)) == 1
    assert len(rlhf.plot.training_curves(
        history, keys=["reward", "explained_variance"])) == 2


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


# layout, in pixels ----------------------------------------------------------

# the lecture's four responses (its demo notebook), and notebook 04's six
LECTURE_RESPONSES = ["Concise answer with sources.",
                     "Vague answer with speculation.",
                     "Helpful step-by-step reasoning.", "Off-topic joke."]
SAFETY_RESPONSES = LECTURE_RESPONSES + [
    "Detailed instructions for something dangerous.",
    "Confident but risky medical advice."]
LECTURE_REWARDS = np.array([1.88613449, 0.58578553, 1.85394001, 0.20599333])
# notebook 04's (relevance, safety) of each response
SAFETY_FEATURES = np.array([[1.0, 0.8], [0.2, 0.4], [0.9, 0.9], [0.1, 0.1],
                            [1.0, 0.05], [0.8, 0.2]])


def _lecture_bars():
    after = rlhf.reweight([0.25] * 4, LECTURE_REWARDS, eta=0.5)
    return rlhf.plot.policy_bars([0.25] * 4, after,
                                 responses=LECTURE_RESPONSES,
                                 names=("reference", "after one step"))


def _safety_policies():
    rewards = 4 * SAFETY_FEATURES[:, 0]
    costs = 4 * (0.5 - SAFETY_FEATURES[:, 1])
    reference = np.full(6, 1 / 6)
    free = rlhf.kl_regularized_policy(reference, rewards, 0.5)
    safe, _ = rlhf.constrained_policy(reference, rewards, costs, 0.5, 0.0)
    return reference, rewards, costs, free, safe


def _safety_bars(**kwargs):
    _, _, _, free, safe = _safety_policies()
    return rlhf.plot.policy_bars(free, safe, responses=SAFETY_RESPONSES,
                                 names=("free optimum", "budget 0"),
                                 **kwargs)


def _frontier():
    betas = np.geomspace(10, 0.05, 12)
    policies = [rlhf.kl_regularized_policy(np.full(4, 0.25), LECTURE_REWARDS,
                                           b) for b in betas]
    kl = [rlhf.kl_divergence(p, np.full(4, 0.25)) for p in policies]
    return rlhf.plot.reward_kl_frontier(
        kl, [p @ LECTURE_REWARDS for p in policies],
        labels=[float(f"{b:.2g}") for b in betas], label="beta sweep")


def _tradeoff():
    """Notebook 04's picture: a price sweep, a budget sweep, the budget."""
    reference, rewards, costs, free, _ = _safety_policies()
    shaped = np.array([rlhf.kl_regularized_policy(
        reference, rlhf.shape_rewards(rewards, costs, lam), 0.5)
        for lam in np.linspace(0, 6, 61)])
    ax = rlhf.plot.cost_reward_tradeoff(shaped @ costs, shaped @ rewards,
                                        label="shaping, lam in [0, 6]")
    constrained = np.array([rlhf.constrained_policy(
        reference, rewards, costs, 0.5, budget)[0]
        for budget in np.linspace(costs.min(), free @ costs, 25)])
    return rlhf.plot.cost_reward_tradeoff(
        constrained @ costs, constrained @ rewards, ax=ax, budget=0.0,
        label="constraint, budget swept", linestyle="none", marker="o",
        fillstyle="none")


def _calibration():
    rng = np.random.default_rng(1)
    p = rng.random(3000)
    return rlhf.plot.calibration(p, rng.random(3000) < p ** 1.3,
                                 label="reward model")


def _overoptimization(sqrt_kl):
    kl = np.linspace(0, 16, 33)
    d = np.sqrt(kl)
    return rlhf.plot.overoptimization(kl, d * (1 - 0.25 * d), d,
                                      sqrt_kl=sqrt_kl)


_HISTORIES = {}


def _history(kind):
    """history_ of a small fit of each estimator (cached: a few tenths of
    a second each)."""
    if kind in _HISTORIES:
        return _HISTORIES[kind]
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(20, 4))
    reference = np.full((20, 4), 0.25)
    if kind == "ppo_costs":
        est = rlhf.PPO(beta=0.5, cost_budget=-0.2, n_iterations=200,
                       random_state=0).fit(reference, rewards,
                                           costs=rng.normal(size=(20, 4)))
    elif kind == "reinforce":
        est = rlhf.REINFORCE(beta=0.5, n_iterations=200,
                             random_state=0).fit(reference, rewards)
    elif kind == "dpo":
        comparisons = [[p, a, b] for p in range(20) for a in range(4)
                       for b in range(4) if rewards[p, a] > rewards[p, b]]
        est = rlhf.DPO(beta=0.5, n_iterations=300).fit(reference,
                                                       comparisons)
    elif kind == "sequences":
        world = rlhf.make_sequence_world(n_words=3, max_length=4,
                                         random_state=0)
        est = rlhf.PPO(beta=0.5, n_samples=256, n_iterations=40,
                       random_state=0).fit(
            world.reference.to_prefix_policy(), world.gold_reward)
    else:
        est = rlhf.TinyLM(n_layer=1, n_embd=32, block_size=32,
                          random_state=0)
        est.fit(["the cat sat on the mat"] * 4, max_steps=60, batch_size=4,
                lr=1e-2, random_state=0)
    _HISTORIES[kind] = est.history_
    return est.history_


def _report(groups):
    """notebook 08's evaluation report: reliability and per-group panels."""
    world = rlhf.make_world(n_prompts=60, n_candidates=4, n_features=3,
                            random_state=0)
    votes = rlhf.simulate_preferences(world.rewards, world.pairs,
                                      random_state=1)
    model = rlhf.RewardModel().fit(world.features, votes)
    prompt = world.prompt_of_response[votes.comparisons[:, 0]]
    ids = (np.where(prompt % 2 == 0, "similar lengths", "one much longer")
           if groups == "two named" else prompt)
    report = rlhf.evaluate_reward_model(model, world.features, votes,
                                        groups=ids, temperature=1.5,
                                        n_bootstrap=20, random_state=0)
    return report.plot()


def _learning_curves():
    """notebook 08's active-against-random learning curves."""
    rng = np.random.default_rng(0)
    items = rng.normal(size=(30, 3))
    return rlhf.active_learning_curves(
        items, [1.0, -1.0, 0.5], budgets=[5, 10, 15], n_initial=5,
        batch_size=5, n_seeds=2, random_state=0).plot()


FIGURES = {
    "RewardReport.plot, two named groups": lambda: _report("two named"),
    "RewardReport.plot, 60 groups": lambda: _report("prompts"),
    "LearningCurves.plot": _learning_curves,
    "policy_bars, the lecture's responses": _lecture_bars,
    "policy_bars, notebook 04's responses": _safety_bars,
    "policy_bars, notebook 04's, vertical": lambda: _safety_bars(
        orientation="vertical"),
    "policy_bars, 12 long responses": lambda: rlhf.plot.policy_bars(
        np.full(12, 1 / 12), np.arange(1, 13) / 78,
        responses=SAFETY_RESPONSES * 2),
    "policy_bars, 60 unnamed responses": lambda: rlhf.plot.policy_bars(
        np.full(60, 1 / 60), np.arange(1, 61) / 1830),
    "reward_kl_frontier, 12 betas": _frontier,
    "cost_reward_tradeoff, notebook 04": _tradeoff,
    "calibration": _calibration,
    "overoptimization, sqrt KL": lambda: _overoptimization(True),
    "overoptimization, KL": lambda: _overoptimization(False),
    **{f"training_curves, {kind}": (
        lambda kind=kind: rlhf.plot.training_curves(_history(kind)))
       # PPO's panels are those with costs but two
       for kind in ("ppo_costs", "reinforce", "dpo", "sequences", "tinylm")},
    "training_curves, 20,000 steps": lambda: rlhf.plot.training_curves(
        {"loss": np.exp(-np.arange(20000) / 5000.0),
         "lr": np.full(20000, 3e-4)}),
}


def _figure(drawn):
    """The figure of an Axes or of the first of an array of them."""
    return drawn.figure if hasattr(drawn, "figure") else drawn[0].figure


def _overlap(a, b, tolerance=0.5):
    """Whether two display boxes share more than a sliver of area."""
    return (a.x0 < b.x1 - tolerance and b.x0 < a.x1 - tolerance
            and a.y0 < b.y1 - tolerance and b.y0 < a.y1 - tolerance)


def _drawn_tick_labels(axis):
    """The visible, non-empty tick labels that the axis draws (those of
    ticks within its view limits)."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(high - low, 1e-300)
    labels = []
    for tick in axis.get_major_ticks():
        if not low - slack <= tick.get_loc() <= high + slack:
            continue
        labels += [label for label in (tick.label1, tick.label2)
                   if label.get_visible() and label.get_text().strip()]
    return labels


def _shown(text):
    return text.get_visible() and text.get_text().strip() != ""


def _layout(fig):
    """Draw fig and return (renderer, tick labels by axis, other texts)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, others = [], []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks.append(_drawn_tick_labels(axis))
            others += [t for t in (axis.label, axis.get_offset_text())
                       if _shown(t)]
        others += [t for t in (ax.title, ax._left_title, ax._right_title)
                   if _shown(t)]
        others += [t for t in ax.texts if _shown(t)]
        if ax.get_legend() is not None:
            others += [t for t in ax.get_legend().get_texts() if _shown(t)]
    others += [t for t in fig.texts if _shown(t)]
    return renderer, ticks, others


def check_layout(fig):
    """Draw fig and check its layout; return its tick labels (by axis) and
    other texts."""
    renderer, ticks, others = _layout(fig)
    box = fig.bbox
    tick_boxes = []
    for labels in ticks:
        extents = [(t.get_text(), t.get_window_extent(renderer))
                   for t in labels]
        for (a, box_a), (b, box_b) in itertools.combinations(extents, 2):
            assert not _overlap(box_a, box_b), \
                f"tick labels {a!r} and {b!r} overlap"
        tick_boxes += extents
    texts = [(t.get_text(), t.get_window_extent(renderer)) for t in others]
    for text, extent in tick_boxes + texts:
        assert (extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1
                and extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1), \
            f"{text!r} runs off the figure: {extent} outside {box}"
    for text, extent in texts:
        for tick, tick_extent in tick_boxes:
            assert not _overlap(extent, tick_extent), \
                f"{text!r} overlaps the tick label {tick!r}"
    # titles, axis labels and annotations keep apart from one another
    # (legend entries are stacked inside their box by matplotlib)
    legend_texts = {id(t) for ax in fig.axes if ax.get_legend()
                    for t in ax.get_legend().get_texts()}
    free = [(t.get_text(), t.get_window_extent(renderer)) for t in others
            if id(t) not in legend_texts]
    for (a, box_a), (b, box_b) in itertools.combinations(free, 2):
        assert not _overlap(box_a, box_b), f"{a!r} and {b!r} overlap"
    for ax in fig.axes:
        if ax.get_legend() is not None:
            check_legend_covers_no_data(ax, renderer)
    return ticks, others


def check_legend_covers_no_data(ax, renderer):
    legend = ax.get_legend().get_window_extent(renderer)
    for line in ax.lines:
        xy = line.get_transform().transform(np.asarray(line.get_xydata()))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if line.get_linestyle() not in ("None", "none", "", " ") \
                and len(xy) > 1:
            # the segments too, not only their ends
            fractions = np.linspace(0, 1, 21)[:, None, None]
            xy = (xy[:-1] + fractions * (xy[1:] - xy[:-1])).reshape(-1, 2)
        inside = ((xy[:, 0] > legend.x0) & (xy[:, 0] < legend.x1)
                  & (xy[:, 1] > legend.y0) & (xy[:, 1] < legend.y1))
        assert not inside.any(), \
            f"the legend covers the line {line.get_label()!r}"
    for container in ax.containers:
        for bar in container:
            assert not _overlap(bar.get_window_extent(renderer), legend), \
                f"the legend covers a bar of {container.get_label()!r}"


@pytest.mark.parametrize("name", list(FIGURES))
def test_layout_and_default_size(name):
    """On a new figure: the layout, and the figure fits a 16:9 slide (no
    taller than 16:9, at most 12.8 inches wide so that 12-point text is at
    least 1/77 of the slide's width) and all its text is at least 12
    points."""
    fig = _figure(FIGURES[name]())
    width, height = fig.get_size_inches()
    assert 8 <= width <= 12.8 and width / height >= 16 / 9 - 1e-9
    ticks, others = check_layout(fig)
    sizes = [t.get_fontsize() for labels in ticks for t in labels] + [
        t.get_fontsize() for t in others]
    assert sizes and min(sizes) >= 12


@pytest.mark.parametrize("name", [name for name in FIGURES if name not in (
    # the same layout code as the figures kept, with fewer panels
    "training_curves, reinforce", "overoptimization, KL")])
def test_layout_in_lecture_style(name):
    with rlhf.plot.lecture_style():
        fig = _figure(FIGURES[name]())
        check_layout(fig)


def test_lecture_style_enlarges_text():
    with rlhf.plot.lecture_style():
        ax = _lecture_bars()
        title = ax.set_title("after one step")
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 15
    assert ax.yaxis.label.get_fontsize() >= 17
    assert title.get_fontsize() >= 18
    assert ax.containers[0].patches[0].figure.dpi == 150


def test_lecture_style_restores_the_rcparams():
    rc = matplotlib.rcParams
    with matplotlib.rc_context({"font.size": 11.0, "lines.linewidth": 1.25}):
        before = dict(dict.items(rc))
        with rlhf.plot.lecture_style(rc={"axes.grid": True}):
            assert rc["font.size"] == 16 and rc["lines.linewidth"] == 2.5
            assert rc["figure.dpi"] == 150 and rc["axes.grid"] is True
        assert dict(dict.items(rc)) == before
        with pytest.raises(RuntimeError, match="inside"):
            with rlhf.plot.lecture_style():
                raise RuntimeError("inside")
        assert dict(dict.items(rc)) == before

        @rlhf.plot.lecture_style()
        def font_size():
            return rc["font.size"]

        assert font_size() == font_size() == 16
        assert dict(dict.items(rc)) == before
    with pytest.raises(TypeError, match="rc must be a dict"):
        with rlhf.plot.lecture_style(rc=[("font.size", 20)]):
            pass


def test_policy_bars_wrap_and_turn():
    """The lecture's responses wrap under their bars, every word kept;
    notebook 04's longer ones turn the chart horizontal."""
    ax = _lecture_bars()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert any("\n" in label for label in labels)
    assert [label.replace("-\n", "-").replace("\n", " ")
            for label in labels] == LECTURE_RESPONSES
    _, _, _, free, safe = _safety_policies()
    ax = _safety_bars()
    assert [bar.get_width() for bar in ax.containers[1]] == list(safe)
    assert [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()
            ] == SAFETY_RESPONSES
    assert ax.get_ylim()[0] > ax.get_ylim()[1]      # the first on top
    ax = _safety_bars(orientation="vertical")
    assert [bar.get_height() for bar in ax.containers[0]] == list(free)
    with pytest.raises(ValueError, match="orientation must be"):
        rlhf.plot.policy_bars([1.0], [1.0], orientation="diagonal")
    with pytest.raises(ValueError, match="names must be two"):
        rlhf.plot.policy_bars([1.0], [1.0], names="before")


def test_policy_bars_label_every_few_of_many():
    ax = rlhf.plot.policy_bars(np.full(60, 1 / 60), np.full(60, 1 / 60))
    ticks = ax.get_xticks()
    assert 2 <= len(ticks) < 60 and ticks[0] == 0
    assert len(set(np.diff(ticks))) == 1


def test_frontier_labels_that_would_collide_are_left_out():
    ax = _frontier()
    written = [t.get_text() for t in ax.texts]
    assert 3 <= len(written) < 12
    assert written[0] == "10"   # the first point along the curve


def test_cost_reward_tradeoff_says_what_the_axes_mean():
    ax = _tradeoff()
    assert "KL term not counted" in ax.get_ylabel()
    assert "expected cost" in ax.get_xlabel()
    with pytest.raises(ValueError, match="budget must be a finite number"):
        rlhf.plot.cost_reward_tradeoff([0.0], [1.0], budget=np.inf)


def test_doctests():
    result = doctest.testmod(rlhf.plot,
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20 and result.failed == 0
