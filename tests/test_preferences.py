"""Simulated preferences and rankings against the models they claim to
sample (frequencies within a stated number of standard errors), agreement
statistics against scikit-learn and a published example, and bad input.

Every Monte Carlo check uses 10^5 draws (or more) and a bound of 5 standard
errors, so a correct sampler fails it with probability below 1e-6 per
check; the seeds are fixed, so the outcome is reproducible anyway."""
import copy
import itertools
import math
import pickle

import numpy as np
import pytest

import rlhf
import rlhf.preferences
from rlhf.preferences import _FEATURE_WORDS, _random_pairs

N_DRAWS = 100_000
SIGMAS = 5.0


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def assert_frequency(count, n, p, what=""):
    """count successes in n draws agree with probability p to SIGMAS
    standard errors (exactly, when p is 0 or 1)."""
    if p in (0.0, 1.0):
        assert count == n * p, what
        return
    se = math.sqrt(p * (1 - p) / n)
    assert abs(count / n - p) < SIGMAS * se, (what, count / n, p, se)


REWARDS = np.array([0.0, 0.5, 1.0, -1.0, 2.0, 1.0])
PAIRS = np.array([[0, 1], [2, 0], [3, 4], [4, 3], [2, 5], [1, 4]])


def repeat_pairs(n):
    return np.tile(PAIRS, (n // len(PAIRS), 1))


# --------------------------------------------------------------------------
# the Boltzmann-rational annotator with lapses


@pytest.mark.parametrize("temperature, noise", [
    (1.0, 0.0), (0.7, 0.2), (2.5, 0.5), (1.0, 1.0), (0.0, 0.0), (0.0, 0.3)])
def test_choice_frequencies_match_the_model(temperature, noise):
    pairs = repeat_pairs(N_DRAWS)
    prefs = rlhf.simulate_preferences(REWARDS, pairs, temperature, noise,
                                      random_state=0)
    first_wins = prefs.comparisons[:, 0] == pairs[:, 0]
    # a non-tie keeps the pair's items: swapped or not
    assert np.array_equal(np.sort(prefs.comparisons, 1), np.sort(pairs, 1))
    assert not prefs.ties.any()
    for k, (a, b) in enumerate(PAIRS):
        rows = slice(k, None, len(PAIRS))
        d = REWARDS[a] - REWARDS[b]
        if temperature > 0:
            bt = sigmoid(d / temperature)
        else:
            bt = 1.0 if d > 0 else 0.0 if d < 0 else 0.5
        p = noise / 2 + (1 - noise) * bt
        assert_frequency(int(first_wins[rows].sum()),
                         first_wins[rows].size, p, (a, b))


def test_rao_kupper_tie_frequencies():
    pairs = repeat_pairs(N_DRAWS)
    temperature, noise, margin = 0.8, 0.1, 0.6
    prefs = rlhf.simulate_preferences(REWARDS, pairs, temperature, noise,
                                      tie_margin=margin, random_state=1)
    first = (prefs.comparisons[:, 0] == pairs[:, 0]) & ~prefs.ties
    second = (prefs.comparisons[:, 0] == pairs[:, 1]) & ~prefs.ties
    # a tie keeps the order shown
    assert np.array_equal(prefs.comparisons[prefs.ties], pairs[prefs.ties])
    for k, (a, b) in enumerate(PAIRS):
        rows = slice(k, None, len(PAIRS))
        n = first[rows].size
        d = REWARDS[a] - REWARDS[b]
        p_a = sigmoid((d - margin) / temperature)
        p_b = sigmoid((-d - margin) / temperature)
        expected = {"first": noise / 2 + (1 - noise) * p_a,
                    "second": noise / 2 + (1 - noise) * p_b,
                    "tie": (1 - noise) * (1 - p_a - p_b)}
        assert_frequency(int(first[rows].sum()), n, expected["first"])
        assert_frequency(int(second[rows].sum()), n, expected["second"])
        assert_frequency(int(prefs.ties[rows].sum()), n, expected["tie"])


def test_rao_kupper_at_temperature_zero_is_a_threshold():
    rewards = np.array([0.0, 0.3, 1.0])
    pairs = np.array([[0, 1], [1, 0], [2, 0], [1, 2]] * 50)
    prefs = rlhf.simulate_preferences(rewards, pairs, temperature=0,
                                      tie_margin=0.5, random_state=0)
    diff = np.abs(rewards[pairs[:, 0]] - rewards[pairs[:, 1]])
    assert np.array_equal(prefs.ties, diff < 0.5)
    strict = ~prefs.ties
    assert (rewards[prefs.comparisons[strict, 0]]
            > rewards[prefs.comparisons[strict, 1]]).all()


def test_rao_kupper_threshold_boundary_is_the_small_temperature_limit():
    # |r_a - r_b| = m exactly: sigmoid(0) = 1/2 for any temperature, so the
    # annotator prefers the better item half the time and ties otherwise
    pairs = np.tile([[1, 0]], (N_DRAWS, 1))
    prefs = rlhf.simulate_preferences([0.0, 0.5], pairs, temperature=0,
                                      tie_margin=0.5, random_state=0)
    assert_frequency(prefs.n_ties, N_DRAWS, 0.5)
    assert (prefs.comparisons[~prefs.ties] == [1, 0]).all()


def test_temperature_zero_prefers_the_higher_reward():
    rewards = np.array([3.0, -1.0, 0.5, 7.0, 0.49])
    prefs = rlhf.simulate_preferences(rewards, 10, temperature=0,
                                      random_state=3)
    assert prefs.accuracy(rewards) == 1.0
    assert (rewards[prefs.comparisons[:, 0]]
            > rewards[prefs.comparisons[:, 1]]).all()


def test_extreme_reward_gaps_give_no_warnings():
    rewards = np.array([0.0, 1e6, -1e6, 800.0])
    pairs = np.array([[0, 1], [0, 2], [3, 0], [1, 2]] * 10)
    prefs = rlhf.simulate_preferences(rewards, pairs, temperature=1e-3,
                                      random_state=0)
    assert prefs.accuracy(rewards) == 1.0


def test_same_seed_same_output_and_generators_accepted():
    kwargs = dict(temperature=[0.5, 2.0], noise=0.1, tie_margin=0.2)
    a = rlhf.simulate_preferences(REWARDS, 12, random_state=5, **kwargs)
    b = rlhf.simulate_preferences(REWARDS, 12, random_state=5, **kwargs)
    c = rlhf.simulate_preferences(REWARDS, 12,
                                  random_state=np.random.default_rng(5),
                                  **kwargs)
    for name in ("comparisons", "ties", "annotators", "groups"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert np.array_equal(getattr(a, name), getattr(c, name))
    # one generator passed twice moves on
    rng = np.random.default_rng(0)
    pairs = repeat_pairs(600)
    first = rlhf.simulate_preferences(REWARDS, pairs, random_state=rng)
    second = rlhf.simulate_preferences(REWARDS, pairs, random_state=rng)
    assert not np.array_equal(first.comparisons, second.comparisons)
    # and unseeded calls differ
    x = rlhf.simulate_preferences(REWARDS, pairs)
    y = rlhf.simulate_preferences(REWARDS, pairs)
    assert not np.array_equal(x.comparisons, y.comparisons)


def test_inputs_are_not_modified_and_read_only_input_is_accepted():
    rewards = REWARDS.copy()
    pairs = PAIRS.copy()
    rewards.flags.writeable = False
    pairs.flags.writeable = False
    prefs = rlhf.simulate_preferences(rewards, pairs, random_state=0)
    assert np.array_equal(rewards, REWARDS) and np.array_equal(pairs, PAIRS)
    assert not np.shares_memory(prefs.comparisons, pairs)
    # float32 rewards and lists work the same as float64 arrays
    a = rlhf.simulate_preferences(REWARDS.astype(np.float32), PAIRS.tolist(),
                                  random_state=0)
    b = rlhf.simulate_preferences(REWARDS.astype(np.float32).astype(float),
                                  PAIRS, random_state=0)
    assert np.array_equal(a.comparisons, b.comparisons)


def test_outputs_are_reward_model_inputs():
    prefs = rlhf.simulate_preferences(REWARDS, 9, tie_margin=0.3,
                                      random_state=0)
    assert prefs.comparisons.dtype == np.int64
    assert prefs.comparisons.shape == (9, 2)
    assert prefs.comparisons.flags.c_contiguous
    assert prefs.ties.dtype == bool and prefs.ties.shape == (9,)
    assert prefs.sample_weight.dtype == np.float64
    assert np.array_equal(np.asarray(prefs), prefs.comparisons)
    assert np.asarray(prefs, dtype=np.float64).dtype == np.float64
    assert len(prefs) == 9 and prefs.n_items == REWARDS.size
    assert "n_comparisons=9" in repr(prefs)


# --------------------------------------------------------------------------
# random pairs


def test_random_pairs_are_distinct_and_cover_all_pairs():
    n = 50
    total = n * (n - 1) // 2
    pairs = _random_pairs(total, n, np.random.default_rng(0), "test")
    unordered = {tuple(sorted(p)) for p in pairs.tolist()}
    assert unordered == set(itertools.combinations(range(n), 2))
    # both orders are shown, about equally often
    assert_frequency(int((pairs[:, 0] < pairs[:, 1]).sum()), total, 0.5)


def test_random_pairs_for_many_items():
    n = 3_000_000  # 4.5e12 pairs: the inverse of the triangular numbering
    pairs = _random_pairs(2000, n, np.random.default_rng(1), "test")
    assert (pairs >= 0).all() and (pairs < n).all()
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 2000
    # pairs at the very end of the numbering come out exactly
    lo, hi = np.sort(pairs, 1).T
    assert hi.max() > 0.9 * n


def test_int_pairs_in_simulate_preferences():
    prefs = rlhf.simulate_preferences(np.arange(5.0), 10, random_state=0)
    assert {tuple(sorted(p)) for p in prefs.comparisons.tolist()} == set(
        itertools.combinations(range(5), 2))
    with pytest.raises(ValueError, match=r"'pairs'.*\[1, 10\].*Got 11"):
        rlhf.simulate_preferences(np.arange(5.0), 11)


# --------------------------------------------------------------------------
# several annotators


def test_every_annotator_labels_every_pair():
    temperature = np.array([0.3, 1.0, 3.0])
    noise = np.array([0.0, 0.1, 0.4])
    pairs = repeat_pairs(N_DRAWS // 2)
    prefs = rlhf.simulate_preferences(REWARDS, pairs, temperature, noise,
                                      random_state=2)
    n_pairs = pairs.shape[0]
    assert len(prefs) == 3 * n_pairs
    assert np.array_equal(prefs.annotators, np.tile([0, 1, 2], n_pairs))
    assert np.array_equal(prefs.groups, np.repeat(np.arange(n_pairs), 3))
    shown = pairs[prefs.groups]
    first_wins = prefs.comparisons[:, 0] == shown[:, 0]
    for j in range(3):
        for k, (a, b) in enumerate(PAIRS):
            rows = (prefs.annotators == j) & (prefs.groups % len(PAIRS) == k)
            p = noise[j] / 2 + (1 - noise[j]) * sigmoid(
                (REWARDS[a] - REWARDS[b]) / temperature[j])
            assert_frequency(int(first_wins[rows].sum()), int(rows.sum()), p)
    labels = np.where(first_wins, 1, 2).reshape(n_pairs, 3)
    expected = rlhf.annotator_agreement(labels)
    assert prefs.agreement.unanimous == expected.unanimous
    assert prefs.agreement.fleiss_kappa == expected.fleiss_kappa
    # theory: annotators agree on a pair with probability
    # sum over outcomes of the product of their choice probabilities
    p_all = 0.0
    for a, b in PAIRS:
        p = noise / 2 + (1 - noise) / (
            1 + np.exp(-(REWARDS[a] - REWARDS[b]) / temperature))
        p_all += (np.prod(p) + np.prod(1 - p)) / len(PAIRS)
    assert abs(prefs.agreement.unanimous - p_all) < SIGMAS * math.sqrt(
        p_all * (1 - p_all) / n_pairs)
    assert "n_annotators=3" in repr(prefs)


def test_random_and_given_annotators():
    pairs = repeat_pairs(60_000)
    prefs = rlhf.simulate_preferences(REWARDS, pairs, [0.5, 5.0],
                                      annotators="random", random_state=4)
    assert len(prefs) == len(pairs) and prefs.agreement is None
    assert_frequency(int((prefs.annotators == 1).sum()), len(pairs), 0.5)
    first_wins = prefs.comparisons[:, 0] == pairs[:, 0]
    # pair (3, 4): reward gap -3
    rows = np.all(pairs == [3, 4], axis=1)
    for j, temperature in enumerate([0.5, 5.0]):
        mask = rows & (prefs.annotators == j)
        assert_frequency(int(first_wins[mask].sum()), int(mask.sum()),
                         sigmoid(-3.0 / temperature))
    who = np.arange(len(PAIRS)) % 2
    given = rlhf.simulate_preferences(REWARDS, PAIRS, [0.0, 0.0],
                                      annotators=who, random_state=0)
    assert np.array_equal(given.annotators, who)
    # pair (2, 5) has equal rewards and counts one half
    assert given.accuracy(REWARDS) == 5.5 / 6


# --------------------------------------------------------------------------
# agreement statistics


def test_cohen_kappa_equals_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=400)
    labels = np.column_stack([
        np.where(rng.random(400) < q, truth, rng.integers(0, 3, 400))
        for q in (0.9, 0.6, 0.3, 0.0)])
    agreement = rlhf.annotator_agreement(labels)
    for a, b in itertools.combinations(range(4), 2):
        assert agreement.cohen_kappa[a, b] == pytest.approx(
            metrics.cohen_kappa_score(labels[:, a], labels[:, b]), abs=1e-12)
    assert np.array_equal(agreement.cohen_kappa, agreement.cohen_kappa.T)
    pairwise = np.mean([np.mean(labels[:, a] == labels[:, b])
                        for a, b in itertools.combinations(range(4), 2)])
    assert agreement.pairwise == pytest.approx(pairwise, abs=1e-15)


def test_fleiss_kappa_on_the_published_example():
    # Fleiss' kappa worked example (10 subjects, 14 raters, 5 categories)
    # as tabulated on Wikipedia's "Fleiss' kappa" page: P = 0.378,
    # P_e = 0.213, kappa = 0.210
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6],
                       [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
                       [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0],
                       [0, 2, 2, 3, 7]])
    labels = np.array([np.repeat(np.arange(1, 6), row) for row in counts])
    assert round(rlhf.annotator_agreement(labels).fleiss_kappa, 3) == 0.210


def test_fleiss_kappa_for_two_raters_is_scotts_pi():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(300, 2))
    labels[:150, 1] = labels[:150, 0]
    p_o = np.mean(labels[:, 0] == labels[:, 1])
    pooled = np.bincount(labels.ravel(), minlength=3) / labels.size
    scott = (p_o - pooled @ pooled) / (1 - pooled @ pooled)
    assert rlhf.annotator_agreement(labels).fleiss_kappa == pytest.approx(
        scott, abs=1e-12)


def test_majority_and_agreement_with_it():
    labels = np.array([[1, 1, 2], [0, 0, 0], [2, 1, 0], [2, 2, 1]])
    agreement = rlhf.annotator_agreement(labels)
    assert agreement.majority.tolist() == [1, 0, -1, 2]
    assert agreement.with_majority.tolist() == [1.0, 1.0, 1 / 3]
    assert agreement.unanimous == 0.25
    assert "unanimous=0.250" in repr(agreement)
    # everyone always says the same thing: kappa undefined
    constant = rlhf.annotator_agreement(np.ones((5, 3), dtype=int))
    assert np.isnan(constant.fleiss_kappa) and constant.unanimous == 1.0


@pytest.mark.parametrize("labels, error, match", [
    (np.ones((4, 1), dtype=int), ValueError, "n_annotators >= 2"),
    (np.ones(4, dtype=int), ValueError, "shape"),
    (np.ones((4, 2)), TypeError, "integer labels"),
    (np.zeros((0, 3), dtype=int), ValueError, "n_items >= 1"),
])
def test_agreement_bad_input(labels, error, match):
    with pytest.raises(error, match=match):
        rlhf.annotator_agreement(labels)


# --------------------------------------------------------------------------
# Plackett-Luce rankings


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_choice_frequencies_are_the_softmax(temperature):
    rewards = np.array([0.3, -1.0, 1.2, 0.0, 2.0, 0.1, -0.5])
    group = np.array([6, 0, 2, 3, 1, 4])
    groups = np.tile(group, (N_DRAWS, 1))
    ranked = rlhf.simulate_rankings(rewards, groups, temperature,
                                    random_state=0)
    assert np.array_equal(np.sort(ranked, 1), np.sort(groups, 1))
    expected = softmax(rewards[group] / temperature)
    for item, p in zip(group, expected):
        assert_frequency(int((ranked[:, 0] == item).sum()), N_DRAWS, p, item)


def test_full_ranking_probabilities_are_plackett_luce():
    rewards = np.array([0.0, 1.0, -0.5])
    groups = np.tile([0, 1, 2], (120_000, 1))
    ranked = rlhf.simulate_rankings(rewards, groups, 0.8, random_state=1)
    w = np.exp(rewards / 0.8)
    for perm in itertools.permutations(range(3)):
        p = (w[perm[0]] / w.sum()) * (w[perm[1]] / (w[perm[1]] + w[perm[2]]))
        count = int(np.all(ranked == perm, axis=1).sum())
        assert_frequency(count, len(groups), p, perm)


def test_two_item_rankings_are_bradley_terry():
    rewards = np.array([0.4, -0.8])
    ranked = rlhf.simulate_rankings(rewards, np.tile([0, 1], (N_DRAWS, 1)),
                                    1.5, random_state=2)
    assert_frequency(int((ranked[:, 0] == 0).sum()), N_DRAWS,
                     sigmoid(1.2 / 1.5))


def test_rankings_at_temperature_zero():
    rewards = np.array([0.0, 2.0, 1.0, 1.0])
    ranked = rlhf.simulate_rankings(rewards, np.tile([0, 1, 2, 3], (4000, 1)),
                                    0, random_state=0)
    assert (ranked[:, 0] == 1).all() and (ranked[:, 3] == 0).all()
    # equal rewards in random order, each first half of the time
    assert_frequency(int((ranked[:, 1] == 2).sum()), 4000, 0.5)
    assert rlhf.simulate_rankings(rewards, [0, 1, 2], 0).tolist() == [1, 2, 0]


def test_rankings_are_reproducible():
    groups = np.arange(12).reshape(3, 4)
    rewards = np.linspace(0, 1, 12)
    a = rlhf.simulate_rankings(rewards, groups, random_state=9)
    b = rlhf.simulate_rankings(rewards, groups,
                               random_state=np.random.default_rng(9))
    assert np.array_equal(a, b) and a.dtype == np.int64
    assert np.array_equal(groups, np.arange(12).reshape(3, 4))


# --------------------------------------------------------------------------
# rankings to comparisons


def test_rankings_to_comparisons_by_hand():
    out = rlhf.rankings_to_comparisons([[2, 0, 1], [3, 1, 0]])
    assert out.comparisons.tolist() == [[2, 0], [2, 1], [0, 1],
                                        [3, 1], [3, 0], [1, 0]]
    assert out.groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert not out.ties.any() and (out.sample_weight == 1).all()
    assert out.n_items == 4 and out.comparisons.dtype == np.int64


def test_ties_in_rankings_form_tiers():
    # ranking 5 > {2 = 7} > 1 = 0
    out = rlhf.rankings_to_comparisons(
        [[5, 2, 7, 1, 0]], ties=[[False, True, False, True]])
    pairs = {tuple(p): t for p, t in zip(out.comparisons.tolist(),
                                         out.ties.tolist())}
    assert len(pairs) == 10
    assert {p for p, t in pairs.items() if t} == {(2, 7), (1, 0)}
    assert pairs[(5, 2)] is False and pairs[(7, 1)] is False


def test_instructgpt_weights_and_ragged_rankings():
    rankings = [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13, 14]]
    out = rlhf.rankings_to_comparisons(rankings, normalize=True, n_items=20)
    sizes = [len(r) * (len(r) - 1) // 2 for r in rankings]
    assert len(out) == sum(sizes) == 1 + 6 + 36 and out.n_items == 20
    totals = np.bincount(out.groups, weights=out.sample_weight)
    np.testing.assert_allclose(totals, 1.0, rtol=1e-15)
    assert out.sample_weight[out.groups == 1][0] == 1 / 6
    assert "weighted" in repr(out)


def test_rankings_of_a_world_at_temperature_zero_agree_with_rewards():
    world = rlhf.make_world(n_prompts=200, n_candidates=5, random_state=0)
    ranked = rlhf.simulate_rankings(world.rewards, world.candidates, 0,
                                    random_state=0)
    comparisons = rlhf.rankings_to_comparisons(ranked)
    assert len(comparisons) == 200 * 10
    assert comparisons.accuracy(world.rewards) == 1.0
    assert np.array_equal(comparisons.groups, np.repeat(np.arange(200), 10))


def naive_rankings_to_comparisons(rankings, ties, normalize):
    """One ranking at a time, pair by pair."""
    rows = []
    for g, (ranking, tie) in enumerate(zip(rankings, ties)):
        tier = [0]
        for t in tie:
            tier.append(tier[-1] + (not t))
        k = len(ranking)
        for i, j in itertools.combinations(range(k), 2):
            rows.append((ranking[i], ranking[j], tier[i] == tier[j],
                         2 / (k * (k - 1)) if normalize else 1.0, g))
    return rows


@pytest.mark.parametrize("normalize", [False, True])
def test_rankings_to_comparisons_equals_a_naive_loop(normalize):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 7, size=300)
    rankings = [rng.permutation(40)[:k].tolist() for k in lengths]
    ties = [(rng.random(k - 1) < 0.3).tolist() for k in lengths]
    out = rlhf.rankings_to_comparisons(rankings, ties, normalize=normalize)
    got = list(zip(out.comparisons[:, 0].tolist(),
                   out.comparisons[:, 1].tolist(), out.ties.tolist(),
                   out.sample_weight.tolist(), out.groups.tolist()))
    assert got == naive_rankings_to_comparisons(rankings, ties, normalize)
    # a rectangular array and its list give the same comparisons
    square = np.array([r[:2] for r in rankings])
    tie = np.array([t[:1] for t in ties])
    a = rlhf.rankings_to_comparisons(square, tie)
    b = rlhf.rankings_to_comparisons(square.tolist(), tie.tolist())
    assert np.array_equal(a.comparisons, b.comparisons)
    assert np.array_equal(a.ties, b.ties)


@pytest.mark.parametrize("rankings, kwargs, error, match", [
    ([[0, 1, 0]], {}, ValueError, "repeats item 0"),
    ([[0, -1]], {}, ValueError, r"got -1 at rankings\[0\]\[1\]"),
    ([[0, 1, 2], [3, 4], [5, -6]], {}, ValueError,
     r"got -6 at rankings\[2\]\[1\]"),
    ([[0, 1, 2], [3, 4], [5, 5]], {}, ValueError, "repeats item 5 in row 2"),
    ([[0]], {}, ValueError, "at least 2 items"),
    ([], {}, ValueError, "at least one ranking"),
    ([[0.0, 1.0]], {}, TypeError, "integer item indices"),
    (np.arange(3), {}, ValueError, "2-dimensional"),
    ([[0, 1, 2]], {"ties": [[True]]}, ValueError, "K - 1 = 2"),
    ([[0, 1, 2]], {"ties": [[1, 0]]}, TypeError, "booleans"),
    ([[0, 1], [1, 2]], {"ties": [[True]]}, ValueError, "one row per"),
    ([[0, 5]], {"n_items": 3}, ValueError, "< 3"),
    ([[0, 1]], {"normalize": "yes"}, TypeError, "'normalize'"),
    ([[0, 1]], {"n_items": 0}, ValueError, "'n_items'"),
])
def test_rankings_to_comparisons_bad_input(rankings, kwargs, error, match):
    with pytest.raises(error, match=match):
        rlhf.rankings_to_comparisons(rankings, **kwargs)


# --------------------------------------------------------------------------
# the synthetic world


def test_world_shapes_and_truth():
    world = rlhf.make_world(n_prompts=1000, n_candidates=4, random_state=0)
    assert world.features.shape == (4000, 2)
    assert world.feature_names == ("relevance", "safety")
    assert ((world.features >= 0) & (world.features <= 1)).all()
    # summed in einsum's order (not BLAS's, which depends on its threads)
    np.testing.assert_allclose(world.rewards, world.features @ world.weights,
                               rtol=1e-14, atol=0)
    assert ((world.weights >= 0.5) & (world.weights <= 2.0)).all()
    assert world.candidates.shape == (1000, 4)
    assert np.array_equal(world.candidates.ravel(), np.arange(4000))
    assert np.array_equal(world.prompt_of_response, np.repeat(
        np.arange(1000), 4))
    pairs = world.pairs
    assert pairs.shape == (6000, 2)
    prompt = world.prompt_of_response
    assert (prompt[pairs[:, 0]] == prompt[pairs[:, 1]]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == 6000
    assert len(world.responses) == 4000 and len(world.prompts) == 1000
    assert "n_prompts=1000" in repr(world)


def test_world_descriptions_in_the_lectures_style():
    world = rlhf.make_world(n_prompts=2, n_features=3, random_state=1,
                            weights=[1.0, 2.0, 0.5])
    assert world.feature_names == ("relevance", "safety", "helpfulness")
    for text, (relevance, safety, helpful) in zip(world.responses,
                                                  world.features):
        words = text.rstrip(".").lower().split(", ")
        assert words[0] == ("off-topic", "vague", "relevant",
                            "on-point")[int(relevance * 4)]
        assert words[1] == ("harmful", "risky", "careful",
                            "safe")[int(safety * 4)]
        assert text.endswith(" answer.") and text[0].isupper()
    custom = rlhf.make_world(n_features=1, feature_names=["fun"],
                             random_state=0)
    assert custom.responses[0].startswith("Fun 0.")
    many = rlhf.make_world(n_features=10, random_state=0)
    assert many.feature_names[8:] == ("feature_8", "feature_9")


def describe_column_by_column(features, names):
    """The descriptions as make_world wrote them before they were made on
    first read (adding one column of words at a time): the oracle."""
    text = None
    for j, name in enumerate(names):
        levels = _FEATURE_WORDS.get(name)
        if levels is None:
            escaped = name.replace("%", "%%")
            if j == 0:
                escaped = escaped[:1].upper() + escaped[1:]
            words = np.char.mod(escaped + " %.1f", features[:, j]).astype(
                object)
        else:
            if j == 0:
                levels = tuple(w[:1].upper() + w[1:] for w in levels)
            quarter = np.minimum((features[:, j] * 4).astype(np.int64), 3)
            words = np.array(levels, dtype=object)[quarter]
        text = words if text is None else text + ", " + words
    return text + " answer."


def world_without_responses(features, names):
    """A World whose responses are described when first read."""
    n = features.shape[0]
    return rlhf.World(np.array(["Prompt 0"], dtype=object), None, features,
                      tuple(names), np.ones(len(names)), features.sum(1),
                      np.arange(n, dtype=np.int64).reshape(1, n))


def test_world_describes_its_responses_only_when_read(monkeypatch):
    """make_world builds no description (a million take seconds); the
    first read of world.responses builds them all, once."""
    calls = []

    def counting_describe(features, names):
        calls.append(features.shape)
        return describe(features, names)

    describe = rlhf.preferences._describe
    monkeypatch.setattr(rlhf.preferences, "_describe", counting_describe)
    world = rlhf.make_world(n_prompts=50, n_features=10, random_state=0)
    assert calls == []
    assert "n_prompts=50" in repr(world) and world.pairs.shape == (300, 2)
    responses = world.responses
    assert calls == [(200, 10)]
    assert world.responses is responses and calls == [(200, 10)]
    assert isinstance(responses, np.ndarray)
    assert responses.dtype == object and responses.shape == (200,)
    assert all(type(text) is str for text in responses)
    assert responses.tolist() == describe_column_by_column(
        world.features, world.feature_names).tolist()


@pytest.mark.parametrize("kwargs", [
    {},
    {"n_prompts": 30, "n_features": 8},
    {"n_prompts": 30, "n_features": 12},
    {"n_features": 1, "feature_names": ["fun"]},
    {"n_features": 3, "feature_names": ["100%", "", "safety"]},
    {"n_features": 2, "feature_names": ["%s %%d", "relevance"]},
    {"n_prompts": 3, "n_features": 1500},
])
def test_world_descriptions_are_those_of_the_column_by_column_formula(
        kwargs):
    world = rlhf.make_world(random_state=5, **kwargs)
    assert world.responses.tolist() == describe_column_by_column(
        world.features, world.feature_names).tolist()


def test_world_descriptions_round_values_as_percent_formatting_does():
    """An unnamed feature's value is written as "%.1f" writes it, for the
    values where a table of tenths could go wrong: halves of a tenth and
    their neighbours, ties to even (0.25), 0.0 and -0.0, 1.0, and, in a
    World made by hand, values outside [0, 1], inf and NaN."""
    halves = (2 * np.arange(10) + 1) / 20
    values = np.concatenate([
        halves, np.nextafter(halves, 0.0), np.nextafter(halves, 1.0),
        [0.0, -0.0, 1.0, np.nextafter(1.0, 0.0), 0.25, 0.75, 1.04, 1.06,
         -0.04, -0.06, 12.35, 1e300, np.inf, -np.inf, np.nan]])
    rng = np.random.default_rng(0)
    features = np.column_stack([values, rng.permutation(values),
                                rng.random(len(values))])
    names = ("feature_0", "x%", "relevance")
    world = world_without_responses(features, names)
    assert world.responses.tolist() == describe_column_by_column(
        features, names).tolist()
    first_words = [text.split(", ")[0] for text in world.responses]
    assert first_words == [f"Feature_0 {v:.1f}" for v in values.tolist()]
    assert "Feature_0 0.2" == first_words[values.tolist().index(0.25)]


def test_world_pickles_and_copies_before_and_after_its_responses_are_read():
    world = rlhf.make_world(n_prompts=20, n_features=9, random_state=2)
    expected = describe_column_by_column(world.features,
                                         world.feature_names).tolist()
    for clone in (pickle.loads(pickle.dumps(world)), copy.deepcopy(world),
                  copy.copy(world)):
        assert repr(clone) == repr(world)
        np.testing.assert_array_equal(clone.features, world.features)
        assert clone.responses.tolist() == expected
    responses = world.responses
    clone = pickle.loads(pickle.dumps(world))
    assert clone.responses.tolist() == responses.tolist() == expected
    assert world == world and world != clone  # eq=False: identity
    with pytest.raises(AttributeError, match="'World' object has no "
                                             "attribute 'description'"):
        world.description
    given = rlhf.World(world.prompts, responses, world.features,
                       world.feature_names, world.weights, world.rewards,
                       world.candidates)
    assert given.responses is responses


def test_world_is_reproducible_and_reward_noise_is_unexplained():
    a = rlhf.make_world(50, 3, random_state=7, reward_noise=0.5)
    b = rlhf.make_world(50, 3, random_state=np.random.default_rng(7),
                        reward_noise=0.5)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    residual = a.rewards - a.features @ a.weights
    assert 0.3 < residual.std() < 0.7


def test_simulated_world_recovers_the_true_weights():
    """Bradley-Terry's maximum-likelihood weights from simulated choices
    agree with the true weights within 5 standard errors (the inverse
    Fisher information at the truth)."""
    world = rlhf.make_world(n_prompts=5000, random_state=3,
                            weights=[2.0, 1.0])
    prefs = rlhf.simulate_preferences(world.rewards, world.pairs,
                                      temperature=1.0, random_state=4)
    diff = (world.features[prefs.comparisons[:, 0]]
            - world.features[prefs.comparisons[:, 1]])
    X = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    model = rlhf.LogisticRegression(C=1e8, fit_intercept=False, tol=1e-10,
                                    max_iter=1000).fit(X, y)
    shown = world.features[world.pairs[:, 0]] - world.features[
        world.pairs[:, 1]]
    p = 1 / (1 + np.exp(-shown @ world.weights))
    fisher = (shown * (p * (1 - p))[:, None]).T @ shown
    se = np.sqrt(np.diag(np.linalg.inv(fisher)))
    assert (np.abs(model.coef_[0] - world.weights) < SIGMAS * se).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_prompts": 0}, ValueError, "'n_prompts'.*>= 1"),
    ({"n_candidates": 1}, ValueError, "'n_candidates'"),
    ({"n_features": 2.0}, ValueError, "'n_features'"),
    ({"feature_names": "relevance"}, TypeError, "'feature_names'"),
    ({"feature_names": ["a", "a"]}, ValueError, "distinct"),
    ({"weights": [1.0]}, ValueError, r"shape \(2,\)"),
    ({"weights": [1.0, np.nan]}, ValueError, "NaN"),
    ({"reward_noise": -1.0}, ValueError, "'reward_noise'"),
    ({"random_state": "seed"}, TypeError, "'random_state'"),
])
def test_world_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        rlhf.make_world(**kwargs)


# --------------------------------------------------------------------------
# Comparisons helpers


def test_subset_strict_and_accuracy():
    prefs = rlhf.simulate_preferences(REWARDS, repeat_pairs(600), 0.5,
                                      tie_margin=0.3, random_state=0)
    strict = prefs.strict()
    assert len(strict) == len(prefs) - prefs.n_ties and not strict.ties.any()
    first = prefs.subset(np.arange(10))
    assert np.array_equal(first.comparisons, prefs.comparisons[:10])
    ordered = REWARDS[strict.comparisons]
    expected = np.mean(ordered[:, 0] > ordered[:, 1]) + 0.5 * np.mean(
        ordered[:, 0] == ordered[:, 1])
    assert prefs.accuracy(REWARDS) == pytest.approx(expected, abs=1e-15)
    assert prefs.accuracy(-REWARDS) == pytest.approx(
        1 - expected, abs=1e-12)
    with pytest.raises(ValueError, match=r"scores must have shape \(6,\)"):
        prefs.accuracy(REWARDS[:3])
    with pytest.raises(ValueError, match="boolean index"):
        prefs.subset(np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match="boolean mask or integer"):
        prefs.subset(np.ones(3))
    with pytest.raises(ValueError, match="no strict"):
        prefs.subset(prefs.ties).accuracy(REWARDS)


# --------------------------------------------------------------------------
# bad input


def sim(**kwargs):
    args = dict(rewards=REWARDS, pairs=PAIRS)
    args.update(kwargs)
    return rlhf.simulate_preferences(**args)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": -1.0}, ValueError,
     r"'temperature' parameter of simulate_preferences must be a float or "
     r"an array of floats in \[0.0, inf\). Got -1.0"),
    ({"temperature": np.nan}, ValueError, "'temperature'"),
    ({"temperature": "hot"}, ValueError, "'temperature'"),
    ({"temperature": [1.0, -2.0]}, ValueError,
     "'temperature'.*Got -2.0 at index 1"),
    ({"temperature": [[1.0]]}, ValueError, "'temperature'.*1-dimensional"),
    ({"noise": 1.5}, ValueError, r"'noise'.*\[0.0, 1.0\]. Got 1.5"),
    ({"noise": -0.1}, ValueError, "'noise'"),
    ({"noise": [0.1, 0.2], "temperature": [1.0, 1.0, 1.0]}, ValueError,
     "different numbers of annotators"),
    ({"tie_margin": -0.5}, ValueError, "'tie_margin'"),
    ({"tie_margin": [0.5]}, ValueError, "'tie_margin'"),
    ({"pairs": [[0, 6]]}, ValueError,
     r"'pairs'.*< 6 \(the number of items\); got 6 at pairs\[0, 1\]"),
    ({"pairs": [[0, 1], [-1, 2]]}, ValueError, r"got -1 at pairs\[1, 0\]"),
    ({"pairs": [[0, 1, 2]]}, ValueError, r"'pairs'.*got shape \(1, 3\)"),
    ({"pairs": [0, 1]}, ValueError, r"'pairs'.*got shape \(2,\)"),
    ({"pairs": np.zeros((0, 2), dtype=int)}, ValueError, "n_pairs >= 1"),
    ({"pairs": [[0, 1], [3, 3]]}, ValueError,
     r"pairs item 3 with itself at pairs\[1\]"),
    ({"pairs": [[0.0, 1.0]]}, TypeError, "integer item indices"),
    ({"pairs": [[True, False]]}, TypeError, "integer item indices"),
    ({"pairs": 0}, ValueError, r"'pairs'.*\[1, 15\]"),
    ({"pairs": 2.0}, TypeError, "'pairs'"),
    ({"pairs": True}, TypeError, "'pairs'"),
    ({"pairs": None}, TypeError, "'pairs'"),
    ({"rewards": [1.0, np.nan, 2.0]}, ValueError, "rewards contains NaN"),
    ({"rewards": [1.0, np.inf, 2.0]}, ValueError,
     "rewards contains infinity"),
    ({"rewards": [[1.0, 2.0]]}, ValueError, "'rewards'.*1-dimensional"),
    ({"rewards": [1.0]}, ValueError, "'rewards'.*at least 2"),
    ({"rewards": None}, ValueError, "'rewards'"),
    ({"rewards": ["a", "b"]}, ValueError, "rewards must be numeric"),
    ({"random_state": -1}, TypeError, "'random_state'"),
    ({"random_state": 1.5}, TypeError, "'random_state'"),
    ({"random_state": np.random.RandomState(0)}, TypeError,
     "'random_state'"),
    ({"annotators": "each"}, ValueError, "'annotators'"),
    ({"annotators": [0, 0]}, ValueError, r"'annotators'.*\(6,\)"),
    ({"annotators": [0, 1, 0, 0, 0, 0]}, ValueError,
     r"'annotators'.*< 1"),
])
def test_simulate_preferences_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        sim(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": -1.0}, ValueError, "'temperature'"),
    ({"temperature": [1.0, 2.0]}, ValueError, "'temperature'"),
    ({"groups": [[0, 1, 1]]}, ValueError, "repeats item 1 in row 0"),
    ({"groups": [[0, 9]]}, ValueError, "'groups'.*< 3"),
    ({"groups": [[0.0, 1.0]]}, TypeError, "'groups'"),
    ({"groups": np.zeros((0, 3), dtype=int)}, ValueError, "n_groups, K >= 1"),
    ({"groups": np.zeros((2, 2, 2), dtype=int)}, ValueError, "'groups'"),
    ({"rewards": [0.0, np.nan, 1.0]}, ValueError, "NaN"),
    ({"random_state": "x"}, TypeError, "'random_state'"),
])
def test_simulate_rankings_bad_input(kwargs, error, match):
    args = dict(rewards=[0.0, 1.0, 2.0], groups=[[0, 1, 2]])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        rlhf.simulate_rankings(**args)
