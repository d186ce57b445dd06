"""rlhf.evaluation: the reward-model report and temperature scaling.

Oracles: the metrics written again here directly in NumPy (ECE, Brier,
the tie likelihood from predict_proba), scikit-learn's log_loss,
RewardModel.score and PreferenceDataset.accuracy; SciPy's binomial
quantiles; finite differences at the fitted temperature; and, for the
bootstrap, the exact accuracy of a fixed scorer over a population of
prompts under Bradley-Terry, which the intervals must cover at their
nominal rate.
"""
import copy
import itertools
import json
import math

import numpy as np
import pytest

import rlhf
from rlhf.evaluation import RewardReport, evaluate_reward_model, \
    fit_temperature

metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def world_problem(seed=0, n_prompts=200, temperature=1.0, tie_margin=0.0):
    """A world, a model fitted on one draw of its preferences, and a
    second, held-out draw on fresh prompts of the same world."""
    world = rlhf.make_world(n_prompts=2 * n_prompts, n_features=3,
                            random_state=seed)
    half = len(world.pairs) // 2
    train = rlhf.simulate_preferences(
        world.rewards, world.pairs[:half], temperature,
        tie_margin=tie_margin, random_state=seed + 1)
    test = rlhf.simulate_preferences(
        world.rewards, world.pairs[half:], temperature,
        tie_margin=tie_margin, random_state=seed + 2)
    ties = None if tie_margin == 0 else "rao-kupper"
    model = rlhf.RewardModel(ties=ties).fit(world.features, train)
    groups = world.prompt_of_response[test.comparisons[:, 0]]
    return world, model, test, groups


def direct_ece(margins, n_bins):
    """Guo et al.'s ECE of the two-way prediction, written bin by bin:
    confidence in the predicted winner, bins of [1/2, 1]."""
    p = sigmoid(margins)
    confidence = np.maximum(p, 1 - p)
    right = np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    total = 0.0
    for k in range(n_bins):
        last = k == n_bins - 1
        inside = (confidence >= edges[k]) & (
            (confidence <= edges[k + 1]) if last else
            (confidence < edges[k + 1]))
        if inside.any():
            total += inside.sum() / len(margins) * abs(
                right[inside].mean() - confidence[inside].mean())
    return total


def test_metrics_equal_direct_computations():
    world, model, test, groups = world_problem()
    report = evaluate_reward_model(model, world.features, test,
                                   groups=groups, n_bins=7, random_state=0)
    r = model.predict(world.features)
    pairs = test.comparisons
    m = r[pairs[:, 0]] - r[pairs[:, 1]]
    np.testing.assert_array_equal(report.margins, m)
    assert report.accuracy == model.score(world.features, test)
    assert report.accuracy == test.accuracy(r)
    cal = report.calibration
    assert cal.temperature == 1.0
    assert cal.ece == pytest.approx(direct_ece(m, 7), abs=1e-12)
    assert cal.brier == pytest.approx(np.mean((1 - sigmoid(m)) ** 2),
                                      abs=1e-12)
    # scikit-learn's log-loss of the shown order (orientation free)
    shown_first_won = np.random.default_rng(0).random(len(m)) < 0.5
    p_first = np.where(shown_first_won, sigmoid(m), sigmoid(-m))
    assert cal.log_loss == pytest.approx(
        metrics.log_loss(shown_first_won, p_first), abs=1e-12)
    assert cal.brier == pytest.approx(
        metrics.brier_score_loss(shown_first_won, p_first), abs=1e-12)
    # the reliability diagram's numbers add up to the ECE
    used = cal.counts > 0
    assert cal.counts.sum() == len(m)
    assert np.sum(cal.counts[used] * np.abs(
        cal.observed[used] - cal.mean_confidence[used])) / len(m) == \
        pytest.approx(cal.ece, abs=1e-12)
    np.testing.assert_allclose(cal.bin_edges, np.linspace(0.5, 1, 8))
    assert report.margin_mean == pytest.approx(m.mean(), abs=1e-14)
    assert report.margin_quantiles[0.5] == np.median(m)


def test_per_group_totals():
    world, model, test, groups = world_problem(seed=3, n_prompts=50)
    # groups with no strict comparison and arbitrary ids
    ties = np.zeros(len(test), bool)
    ties[groups == groups[0]] = True
    labels = np.array([f"prompt {g}" for g in groups])
    report = evaluate_reward_model(model, world.features, test.comparisons,
                                   groups=labels, ties=ties, n_bootstrap=0)
    r = model.predict(world.features)
    right = {}
    for g in np.unique(labels):
        rows = (labels == g) & ~ties
        d = r[test.comparisons[rows, 0]] - r[test.comparisons[rows, 1]]
        right[g] = list((d > 0) + 0.5 * (d == 0))
    for g, n, acc in zip(report.group_ids, report.group_n,
                         report.group_accuracy):
        assert n == len(right[g])
        if n:
            assert acc == pytest.approx(np.mean(right[g]), abs=1e-15)
        else:
            assert math.isnan(acc)
    everything = list(itertools.chain(*right.values()))
    assert report.accuracy == pytest.approx(np.mean(everything), abs=1e-15)
    assert report.accuracy_per_group == pytest.approx(
        np.mean([np.mean(v) for v in right.values() if v]), abs=1e-15)
    assert report.accuracy_ci is None and report.bootstrap_unit == "none"


def test_ties_margins_and_tie_likelihood():
    world, model, test, groups = world_problem(seed=1, tie_margin=0.4)
    assert test.n_ties > 0
    report = evaluate_reward_model(model, world.features, test,
                                   n_bootstrap=0)
    r = model.predict(world.features)
    c = test.comparisons
    d = np.abs(r[c[:, 0]] - r[c[:, 1]])
    assert report.tie_abs_margin == pytest.approx(d[test.ties].mean(),
                                                  abs=1e-14)
    assert report.strict_abs_margin == pytest.approx(d[~test.ties].mean(),
                                                     abs=1e-14)
    tied = c[test.ties]
    p_tie = 1 - model.predict_proba(world.features, tied) \
        - model.predict_proba(world.features, tied[:, ::-1])
    assert report.tie_log_likelihood == pytest.approx(
        np.mean(np.log(p_tie)), rel=1e-10)
    assert report.accuracy == model.score(world.features, test)
    # Davidson's tie model the same way
    train = rlhf.simulate_preferences(world.rewards, world.pairs[:600],
                                      tie_margin=0.4, random_state=5)
    davidson = rlhf.RewardModel(ties="davidson").fit(world.features, train)
    report = evaluate_reward_model(davidson, world.features, test,
                                   n_bootstrap=0)
    p_tie = 1 - davidson.predict_proba(world.features, tied) \
        - davidson.predict_proba(world.features, tied[:, ::-1])
    assert report.tie_log_likelihood == pytest.approx(
        np.mean(np.log(p_tie)), rel=1e-10)
    # without a tie model: none
    plain = rlhf.RewardModel().fit(world.features, train)
    assert evaluate_reward_model(plain, world.features, test,
                                 n_bootstrap=0).tie_log_likelihood is None


def test_temperature_scaling_of_an_overconfident_model():
    world, model, test, groups = world_problem(seed=2, n_prompts=300)
    overconfident = copy.deepcopy(model)
    overconfident.coef_ = 3.0 * model.coef_
    # T fitted on half of the held-out prompts, judged on the other half
    fit_rows = groups % 2 == 0
    T = fit_temperature(overconfident, world.features,
                        test.comparisons[fit_rows])
    assert 2.0 < T < 4.5
    judged = test.subset(~fit_rows)
    before = evaluate_reward_model(overconfident, world.features, judged,
                                   n_bootstrap=0)
    after = evaluate_reward_model(overconfident, world.features, judged,
                                  temperature=T, n_bootstrap=0)
    assert after.calibration.log_loss < before.calibration.log_loss
    assert after.calibration.ece < before.calibration.ece
    assert after.calibration_before.log_loss == before.calibration.log_loss
    assert after.accuracy == before.accuracy
    np.testing.assert_array_equal(after.margins, before.margins)
    assert after.calibration.temperature == T


def test_fit_temperature_is_a_stationary_point():
    """The derivative of the mean log-loss in T, by central differences,
    is zero at the fitted T (to the differences' own error)."""
    world, model, test, _ = world_problem(seed=4)
    T = fit_temperature(model, world.features, test)
    r = model.predict(world.features)
    m = r[test.comparisons[:, 0]] - r[test.comparisons[:, 1]]

    def loss(t):
        return np.mean(np.logaddexp(0.0, -m / t))

    # central differences: truncation error h^2 |f'''| / 6 ~ 1e-10,
    # rounding 1e-16 / h ~ 1e-11
    h = 1e-5 * T
    slope = (loss(T + h) - loss(T - h)) / (2 * h)
    assert abs(slope) < 1e-9
    h = 1e-3 * T
    assert (loss(T + h) - 2 * loss(T) + loss(T - h)) / h ** 2 > 0
    # and it is a minimum of the log-loss over T, not just stationary
    assert loss(T) <= min(loss(0.99 * T), loss(1.01 * T))
    # scores given directly: the same T
    assert fit_temperature(r, None, test) == T


def test_fitted_temperature_of_a_well_specified_model_is_one():
    """Bradley-Terry data at temperature 1, a model with (almost) no
    penalty fitted on many comparisons: T = 1 up to sampling error."""
    world = rlhf.make_world(n_prompts=6000, n_features=3, random_state=7)
    half = len(world.pairs) // 2
    train = rlhf.simulate_preferences(world.rewards, world.pairs[:half],
                                      random_state=8)
    test = rlhf.simulate_preferences(world.rewards, world.pairs[half:],
                                     random_state=9)
    model = rlhf.RewardModel(C=1e6).fit(world.features, train)
    assert fit_temperature(model, world.features, test) == pytest.approx(
        1.0, abs=0.08)


def test_baselines_on_data_where_the_longer_text_wins():
    rng = np.random.default_rng(0)
    lengths = rng.permutation(40).astype(float) + 10
    pairs = rng.integers(0, 40, size=(200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    longer_first = np.where((lengths[pairs[:, 0]] > lengths[pairs[:, 1]])
                            [:, None], pairs, pairs[:, ::-1])
    scores = rng.normal(size=40)
    report = evaluate_reward_model(scores, None, longer_first,
                                   lengths=lengths, random_state=0,
                                   n_bootstrap=200)
    assert report.baselines["longer wins"].accuracy == 1.0
    assert report.baselines["shorter wins"].accuracy == 0.0
    assert report.baselines["longer wins"].ci == (1.0, 1.0)
    assert report.best_baseline == "longer wins"
    assert not report.beats_best_baseline
    assert "does NOT beat the best baseline (longer wins" in str(report)
    assert report.calibration is None  # scores have no probability scale
    # the lengths as the scorer: the same accuracy as the baseline
    same = evaluate_reward_model(lengths, None, longer_first, n_bootstrap=0)
    assert same.accuracy == 1.0


def test_position_baseline_and_dataset_input():
    data = rlhf.datasets.load_finegrained_qa()
    scores = np.random.default_rng(1).normal(size=len(data.texts))
    report = evaluate_reward_model(scores, None, data, n_bootstrap=100,
                                   random_state=0)
    strict = ~data.ties
    # the annotators' majority said "the first shown is better"
    labels = data.labels
    first_better = np.sum(labels == 1, axis=1) * 2 > labels.shape[1]
    assert report.baselines["first shown wins"].accuracy == \
        first_better[strict].sum() / strict.sum()
    lengths = np.array([len(t) for t in data.texts], dtype=float)
    assert report.baselines["longer wins"].accuracy == data.accuracy(lengths)
    assert report.accuracy == data.accuracy(scores)
    assert report.n_ties == data.n_ties
    assert report.bootstrap_unit == "groups"
    assert len(report.group_ids) == len(data.prompts)
    # the same from explicit arguments
    explicit = evaluate_reward_model(
        scores, None, data.comparisons, ties=data.ties, groups=data.groups,
        lengths=lengths, shown_first=data.pairs[:, 0] == data.comparisons[
            :, 0], n_bootstrap=100, random_state=0)
    # (as JSON: a group of ties only has accuracy NaN, unequal to itself)
    assert json.dumps(explicit.to_dict()) == json.dumps(report.to_dict())


def test_no_position_baseline_without_the_shown_order(tmp_path):
    """Chosen/rejected records do not say which text was shown first (the
    dataset's pairs are then its comparisons): no position baseline."""
    data = rlhf.datasets.load_finegrained_qa().subset(np.arange(60))
    path = tmp_path / "prefs.jsonl"
    data.to_jsonl(path)
    read = rlhf.datasets.load_preference_jsonl(path)
    assert read.labels is None
    scores = np.zeros(len(read.texts))
    report = evaluate_reward_model(scores, None, read, n_bootstrap=0)
    assert "first shown wins" not in report.baselines
    assert "longer wins" in report.baselines


def test_chance_interval_is_the_binomial_one():
    for n in (1, 2, 7, 100, 1001):
        scores = np.arange(3.0)
        pairs = np.tile([[2, 1]], (n, 1))
        report = evaluate_reward_model(scores, None, pairs, n_bootstrap=0,
                                       confidence=0.9)
        low, high = stats.binom.interval(0.9, n, 0.5)
        assert report.baselines["chance"].ci == (low / n, high / n)
        assert report.baselines["chance"].accuracy == 0.5


def test_bootstrap_details():
    world, model, test, groups = world_problem(seed=5, n_prompts=60)
    one = evaluate_reward_model(model, world.features, test, groups=groups,
                                random_state=3, n_bootstrap=300)
    two = evaluate_reward_model(model, world.features, test, groups=groups,
                                random_state=3, n_bootstrap=300)
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
    low, high = one.accuracy_ci
    assert low <= one.accuracy <= high
    assert one.calibration.ece_ci[0] <= one.calibration.ece_ci[1]
    # Comparisons bring their groups (the simulated pair); plain arrays
    # fall back to comparisons, and the report says so
    plain = evaluate_reward_model(model, world.features, test.comparisons,
                                  random_state=3, n_bootstrap=300)
    assert plain.bootstrap_unit == "comparisons" and not plain.grouped
    assert "no groups were given" in str(plain)
    assert one.bootstrap_unit == "groups"
    # a cluster bootstrap of one comparison per group is the plain one
    per_row = evaluate_reward_model(
        model, world.features, test.comparisons, groups=np.arange(len(test)),
        random_state=3, n_bootstrap=300)
    assert per_row.accuracy_ci == plain.accuracy_ci


def test_report_outputs():
    world, model, test, groups = world_problem(seed=6, n_prompts=40)
    report = evaluate_reward_model(model, world.features, test,
                                   groups=groups, temperature=1.5,
                                   lengths=world.features[:, 0],
                                   random_state=0, n_bootstrap=200)
    assert isinstance(report, RewardReport)
    text = str(report.summary())
    assert "1 -> 1.5" in text and "cluster bootstrap" in text
    assert all(len(line) <= 72 for line in text.splitlines())
    assert repr(report).startswith("RewardReport(accuracy=")
    assert "<table" in report._repr_html_()
    json.dumps(report.to_dict())
    pd = pytest.importorskip("pandas")
    frame = report.to_frame()
    assert list(frame.index) == ["model", "longer wins", "shorter wins",
                                 "chance"]
    assert frame.loc["model", "accuracy"] == report.accuracy
    assert isinstance(report.group_frame(), pd.DataFrame)


def test_inputs_are_copied():
    scores = np.array([0.3, 0.1, 0.9, 0.5])
    pairs = np.array([[2, 0], [3, 1], [0, 1], [1, 2]])
    groups = np.array([0, 0, 1, 1])
    report = evaluate_reward_model(scores, None, pairs, groups=groups,
                                   n_bootstrap=0)
    before = report.to_dict()
    scores[:] = 0
    pairs[:] = 0
    groups[:] = 5
    assert report.to_dict() == before
    assert report.accuracy == 0.75


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(comparisons=[[0, 1, 2]]), ValueError, r"shape \(n_comparisons, 2"),
    (dict(comparisons=[[0, 9]]), ValueError, "refers to item 9"),
    (dict(comparisons=[[0.5, 1]]), TypeError, "integer item indices"),
    (dict(groups=[0, 1]), ValueError, r"'groups' .* shape \(3,\)"),
    (dict(ties=[True]), ValueError, r"'ties' .* shape \(3,\)"),
    (dict(ties=[True, True, True]), ValueError, "Every comparison"),
    (dict(lengths=[1.0, 2.0]), ValueError, r"'lengths' .* shape \(4,\)"),
    (dict(shown_first=[1, 0]), ValueError, r"'shown_first' .* shape"),
    (dict(temperature=0.0), ValueError,
     r"'temperature' parameter .* \(0\.0, inf\)\. Got 0\.0"),
    (dict(temperature=-1), ValueError, "'temperature' parameter"),
    (dict(confidence=1.0), ValueError,
     r"'confidence' parameter .* \(0\.0, 1\.0\)\. Got 1\.0"),
    (dict(confidence=0), ValueError, "'confidence' parameter"),
    (dict(n_bootstrap=-1), ValueError, "'n_bootstrap' parameter"),
    (dict(n_bins=0), ValueError, "'n_bins' parameter"),
    (dict(model=[[1.0, 2.0]]), ValueError, "1-d array with one score"),
    (dict(model=[1.0, np.nan, 0.0, 2.0]), ValueError, "NaN"),
    (dict(features=np.ones((4, 1))), TypeError, "'features' parameter"),
    (dict(model=rlhf.RewardModel()), rlhf.NotFittedError, "not fitted"),
    (dict(model=rlhf.RewardModel), TypeError, "fitted rlhf.RewardModel"),
    (dict(comparisons=3), TypeError, "'comparisons' parameter"),
])
def test_bad_inputs(kwargs, error, match):
    arguments = dict(model=[0.0, 1.0, 2.0, 3.0], features=None,
                     comparisons=[[3, 0], [2, 1], [1, 0]])
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate_reward_model(arguments.pop("model"),
                              arguments.pop("features"),
                              arguments.pop("comparisons"), **arguments)


def test_fit_temperature_without_an_optimum():
    scores = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="every strict comparison"):
        fit_temperature(scores, None, [[1, 0], [2, 1]])
    with pytest.raises(ValueError, match="no better than chance"):
        fit_temperature(scores, None, [[0, 1], [1, 2], [2, 0]])
    with pytest.raises(ValueError, match="Every comparison"):
        fit_temperature(scores, None, [[1, 0]], ties=[True])


@pytest.mark.slow
def test_cluster_bootstrap_covers_the_true_accuracy():
    """A fixed scorer evaluated on 150 prompts drawn from a population of
    20,000, each with all 6 pairs of its 4 responses labelled under
    Bradley-Terry.  Its true accuracy is the population mean of
    P(correct) = sigmoid(d) [s_a > s_b] + sigmoid(-d) [s_b > s_a] over the
    pairs (every prompt has the same number of pairs, so the ratio of the
    expected sums is the mean).  The 90% cluster-bootstrap interval must
    cover it in 90% of 1000 draws, within three Monte-Carlo standard
    errors."""
    population = rlhf.make_world(n_prompts=20000, n_features=3,
                                 random_state=0)
    rng = np.random.default_rng(1)
    scores = population.rewards + rng.normal(0, 0.5, len(
        population.rewards))
    pairs = population.pairs
    d = population.rewards[pairs[:, 0]] - population.rewards[pairs[:, 1]]
    order = np.sign(scores[pairs[:, 0]] - scores[pairs[:, 1]])
    true_accuracy = np.mean(np.where(order > 0, sigmoid(d), sigmoid(-d)))
    n_pairs = pairs.shape[0] // population.candidates.shape[0]
    n_draws, n_prompts, confidence = 1000, 150, 0.9
    covered = 0
    for draw in range(n_draws):
        prompts = rng.integers(0, population.candidates.shape[0], n_prompts)
        rows = (prompts[:, None] * n_pairs + np.arange(n_pairs)).ravel()
        votes = rlhf.simulate_preferences(population.rewards, pairs[rows],
                                          random_state=rng)
        report = evaluate_reward_model(
            scores, None, votes.comparisons,
            groups=np.repeat(np.arange(n_prompts), n_pairs),
            n_bootstrap=500, confidence=confidence, random_state=rng)
        low, high = report.accuracy_ci
        covered += low <= true_accuracy <= high
    rate = covered / n_draws
    error = math.sqrt(confidence * (1 - confidence) / n_draws)
    assert abs(rate - confidence) < 3 * error, rate


@pytest.mark.slow
def test_plot_layout():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    world, model, test, groups = world_problem(seed=8, n_prompts=60)
    try:
        for kwargs in (dict(groups=groups % 5, temperature=1.4),
                       dict(groups=groups, lengths=world.features[:, 1]),
                       dict(lengths=world.features[:, 1])):
            report = evaluate_reward_model(model, world.features,
                                           test.comparisons, n_bootstrap=100,
                                           random_state=0, **kwargs)
            with rlhf.plot.lecture_style():
                axes = report.plot()
            fig = axes[0].figure
            assert fig.get_size_inches().tolist() == [10.0, 5.625]
            check_no_overlap(fig)
            if kwargs.get("temperature"):
                # the two reliability curves: T = 1, then the fitted one
                assert [line.get_label() for line in axes[0].lines] == [
                    "calibrated", "T = 1", "T = 1.4"]
            plt.close(fig)
    finally:
        plt.close("all")


def check_no_overlap(fig):
    """No two texts (tick labels, axis labels, titles, legend entries)
    share more than a sliver of area, none runs off the figure, and none
    is smaller than 12 points."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks():
                if low - 1e-9 <= tick.get_loc() <= high + 1e-9 and \
                        tick.label1.get_visible() and \
                        tick.label1.get_text().strip():
                    texts.append(tick.label1)
            texts.append(axis.label)
        texts += [ax.title] + list(ax.texts)
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    figure = fig.bbox
    for text, box in boxes:
        assert box.x0 >= figure.x0 - 1 and box.x1 <= figure.x1 + 1 and \
            box.y0 >= figure.y0 - 1 and box.y1 <= figure.y1 + 1, \
            f"{text!r} runs off the figure"
    for t in texts:
        assert t.get_fontsize() >= 12, f"{t.get_text()!r} is too small"
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not overlap(box_a, box_b), f"{a!r} and {b!r} overlap"
    # a legend covers no point of a curve, nor its segments, nor a bar
    for ax in fig.axes:
        if ax.get_legend() is None:
            continue
        legend = ax.get_legend().get_window_extent(renderer)
        for line in ax.lines:
            xy = line.get_transform().transform(line.get_xydata())
            fractions = np.linspace(0, 1, 21)[:, None, None]
            xy = (xy[:-1] + fractions * (xy[1:] - xy[:-1])).reshape(-1, 2)
            assert not np.any((xy[:, 0] > legend.x0) & (xy[:, 0] < legend.x1)
                              & (xy[:, 1] > legend.y0)
                              & (xy[:, 1] < legend.y1)), \
                f"the legend covers {line.get_label()!r}"
        for patch in ax.patches:
            assert not overlap(patch.get_window_extent(renderer), legend)


def overlap(a, b, tolerance=0.5):
    """Whether two display boxes share more than a sliver of area."""
    return (a.x0 < b.x1 - tolerance and b.x0 < a.x1 - tolerance
            and a.y0 < b.y1 - tolerance and b.y0 < a.y1 - tolerance)


def test_one_group_gives_no_interval_and_says_so():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=30)
    pairs = rng.integers(0, 30, size=(200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    with pytest.warns(UserWarning, match="all in one group"):
        report = evaluate_reward_model(scores, None, pairs,
                                       groups=["prompt"] * len(pairs),
                                       random_state=0)
    assert report.accuracy_ci is None and report.difference_ci is None
    assert report.bootstrap_unit == "none"
    # a few groups: intervals, with a caution in the summary
    few = evaluate_reward_model(scores, None, pairs,
                                groups=np.arange(len(pairs)) % 5,
                                n_bootstrap=50, random_state=0)
    assert few.n_groups_resampled == 5 and few.accuracy_ci is not None
    assert "only 5 groups" in str(few.summary())


def test_groups_of_mixed_kinds_name_the_argument():
    with pytest.raises(TypeError, match="'groups' parameter"):
        evaluate_reward_model(np.arange(3.0), None, [[0, 1], [1, 2], [2, 0]],
                              groups=["a", None, "b"])
