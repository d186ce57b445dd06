"""rlhf.active and RewardModel's predictive uncertainty.

Oracles, in order of strength: closed forms (the information gain as the
log-determinant change of the posterior precision, formed here with NumPy
from the comparisons, independently of the C Hessian; the greedy batch
against brute-force recomputation with the directly inverted updated
covariance); SciPy's adaptive quadrature and Monte Carlo over the Gaussian
posterior for the moderated probability and its spread; refits on
annotators simulated from the true Bradley-Terry model for the Laplace
standard deviation, with tolerances from the number of refits.
"""
import math

import numpy as np
import pytest

import rlhf
from rlhf.active import (LearningCurves, active_learning_curves,
                         bootstrap_rewards, information_gain,
                         select_comparisons)

integrate = pytest.importorskip("scipy.integrate")
stats = pytest.importorskip("scipy.stats")


def sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def all_pairs(n_items):
    a, b = np.triu_indices(n_items, 1)
    return np.stack([a, b], axis=1)


def feature_model(seed=0, n_items=25, n_features=3, n_pairs=60, C=2.0):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, n_features))
    w = rng.normal(size=n_features)
    prefs = rlhf.simulate_preferences(F @ w, n_pairs, random_state=seed)
    return F, prefs.comparisons, rlhf.RewardModel(C=C).fit(
        F, prefs.comparisons)


def precision_from_data(X_train, coef, C):
    """The Hessian of the penalised objective, sum q x x^T + I / C, from
    the training differences (winner minus loser), in NumPy."""
    q = sigmoid(X_train @ coef) * (1 - sigmoid(X_train @ coef))
    return (X_train * q[:, None]).T @ X_train + np.eye(X_train.shape[1]) / C


def logdet_gain(precision, x, q):
    return 0.5 * (np.linalg.slogdet(precision + q * np.outer(x, x))[1]
                  - np.linalg.slogdet(precision)[1])


# --------------------------------------------------------------------------
# information gain and the greedy batch


@pytest.mark.no_sanitizer
def test_information_gain_is_the_log_determinant_change():
    F, train, model = feature_model()
    precision = precision_from_data(F[train[:, 0]] - F[train[:, 1]],
                                    model.coef_, 2.0)
    candidates = all_pairs(len(F))
    gain = information_gain(model, candidates, features=F)
    m = F[candidates[:, 0]] @ model.coef_ - F[candidates[:, 1]] @ model.coef_
    q = sigmoid(m) * (1 - sigmoid(m))
    direct = [logdet_gain(precision, F[a] - F[b], qi)
              for (a, b), qi in zip(candidates, q)]
    np.testing.assert_allclose(gain, direct, rtol=1e-9, atol=1e-12)


@pytest.mark.no_sanitizer
def test_information_gain_of_free_strengths_uses_e_a_minus_e_b():
    pairs = np.array([[0, 1], [1, 2], [2, 0], [0, 1], [3, 2], [1, 3]])
    C = 3.0
    model = rlhf.RewardModel(C=C).fit(None, pairs)
    X = np.zeros((len(pairs), 4))
    X[np.arange(len(pairs)), pairs[:, 0]] = 1
    X[np.arange(len(pairs)), pairs[:, 1]] = -1
    precision = precision_from_data(X, model.coef_, C)
    candidates = all_pairs(4)
    gain = information_gain(model, candidates)
    for k, (a, b) in enumerate(candidates):
        x = np.eye(4)[a] - np.eye(4)[b]
        p = sigmoid(model.coef_[a] - model.coef_[b])
        assert gain[k] == pytest.approx(logdet_gain(precision, x, p * (1 - p)),
                                        rel=1e-9)


def brute_force_batch(precision, X, m, n, strategy):
    """Greedy picks, each with the covariance inverted afresh from the
    precision plus the Fisher information of the picks so far."""
    q = sigmoid(m) * (1 - sigmoid(m))
    picks = []
    for _ in range(n):
        cov = np.linalg.inv(precision)
        s2 = np.einsum("ij,jk,ik->i", X, cov, X)
        if strategy == "information":
            score = 0.5 * np.log1p(q * s2)
        else:
            score = -np.abs(m) / np.sqrt(1 + math.pi * s2 / 8)
        score[picks] = -np.inf
        best = int(np.argmax(score))
        picks.append(best)
        precision = precision + q[best] * np.outer(X[best], X[best])
    return picks


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("strategy", ["information", "uncertainty"])
def test_greedy_batch_equals_brute_force_recomputation(strategy):
    F, train, model = feature_model(seed=3, n_items=30, n_features=4)
    precision = precision_from_data(F[train[:, 0]] - F[train[:, 1]],
                                    model.coef_, 2.0)
    candidates = all_pairs(len(F))
    X = F[candidates[:, 0]] - F[candidates[:, 1]]
    m = X @ model.coef_
    picks = select_comparisons(model, candidates, 4, features=F,
                               strategy=strategy)
    assert picks.dtype == np.int64 and picks.shape == (4,)
    assert picks.tolist() == brute_force_batch(precision, X, m, 4, strategy)
    # a batch of one is the first pick of the batch
    alone = select_comparisons(model, candidates, 1, features=F,
                               strategy=strategy)
    assert alone[0] == picks[0]


@pytest.mark.no_sanitizer
def test_batch_does_not_spend_labels_on_near_copies():
    """Ten near-copies of the most informative direction and one pair on
    the other feature: the second pick is the other feature, not a copy."""
    F = np.array([[0.0, 0.0]] + [[1.0, 0.01 * k] for k in range(10)]
                 + [[0.0, 1.0]])
    candidates = np.array([[0, k] for k in range(1, 12)])
    first, second = select_comparisons(None, candidates, 2, features=F)
    assert first < 10 and second == 10
    # without the update the second best is a near-copy
    gain = information_gain(None, candidates, features=F)
    assert np.argsort(-gain)[1] < 10


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("strategy", ["random", "uncertainty",
                                      "information"])
def test_batch_never_repeats_a_pair_while_others_remain(strategy):
    F, _, model = feature_model(seed=1, n_items=6, n_pairs=15)
    distinct = all_pairs(6)[:5]
    # each pair five times, in both orders
    candidates = np.concatenate([distinct, distinct[:, ::-1]] * 3)
    before = candidates.copy()
    picks = select_comparisons(model, candidates, 5, features=F,
                               strategy=strategy, random_state=0)
    keys = {tuple(sorted(candidates[i])) for i in picks}
    assert len(keys) == 5
    more = select_comparisons(model, candidates, 12, features=F,
                              strategy=strategy, random_state=0)
    assert len(set(more.tolist())) == 12
    assert len({tuple(sorted(candidates[i])) for i in more[:5]}) == 5
    np.testing.assert_array_equal(candidates, before)


@pytest.mark.no_sanitizer
def test_prior_selection_is_a_d_optimal_start():
    """Unfitted: mean 0, covariance C I, every p = 1/2, so the gain is
    0.5 log(1 + C ||x||^2 / 4)."""
    rng = np.random.default_rng(0)
    F = rng.normal(size=(8, 3))
    candidates = all_pairs(8)
    X = F[candidates[:, 0]] - F[candidates[:, 1]]
    for model, C in ((None, 1.0), (rlhf.RewardModel(C=5.0), 5.0)):
        gain = information_gain(model, candidates, features=F)
        np.testing.assert_allclose(
            gain, 0.5 * np.log1p(C * np.sum(X * X, axis=1) / 4), rtol=1e-12)
    # free strengths under the prior: disjoint pairs first
    picks = select_comparisons(None, all_pairs(6), 3)
    items = all_pairs(6)[picks].ravel()
    assert len(set(items.tolist())) == 6
    with pytest.raises(ValueError, match="no penalty"):
        select_comparisons(rlhf.RewardModel(penalty=None), candidates, 1,
                           features=F)
    random = select_comparisons(rlhf.RewardModel(penalty=None), candidates,
                                3, features=F, strategy="random",
                                random_state=0)
    assert len(set(random.tolist())) == 3


@pytest.mark.no_sanitizer
def test_random_selection_is_reproducible_and_uniform_enough():
    candidates = all_pairs(10)
    a = select_comparisons(None, candidates, 5, strategy="random",
                           random_state=1)
    b = select_comparisons(None, candidates, 5, strategy="random",
                           random_state=1)
    np.testing.assert_array_equal(a, b)
    counts = np.zeros(len(candidates))
    rng = np.random.default_rng(0)
    for _ in range(400):
        counts[select_comparisons(None, candidates, 5, strategy="random",
                                  random_state=rng)] += 1
    # each candidate is chosen with probability 5/45: 44.4 of 400 times,
    # binomial sd 6.3; 6 sd either way
    assert counts.min() > 44.4 - 6 * 6.3 and counts.max() < 44.4 + 6 * 6.3


# --------------------------------------------------------------------------
# errors


@pytest.mark.no_sanitizer
def test_select_comparisons_errors():
    F, _, model = feature_model()
    candidates = all_pairs(5)
    with pytest.raises(ValueError, match=r"'n' parameter of "
                       r"select_comparisons must be an int in \[1, 10\].*"
                       "Got 11"):
        select_comparisons(model, candidates, 11, features=F)
    with pytest.raises(ValueError, match=r"'n' parameter.*\[1, inf\).*"
                       "Got 0 instead"):
        select_comparisons(model, candidates, 0, features=F)
    with pytest.raises(ValueError, match="'n' parameter"):
        select_comparisons(model, candidates, 1.5, features=F)
    with pytest.raises(ValueError, match="'random', 'uncertainty', "
                       "'information'. Got 'entropy'"):
        select_comparisons(model, candidates, features=F,
                           strategy="entropy")
    for bad in (np.arange(4), np.zeros((3, 3), int), np.zeros((0, 2), int)):
        with pytest.raises(ValueError, match="shape \\(n_candidates, 2\\)"):
            select_comparisons(model, bad, features=F)
    with pytest.raises(ValueError, match=r"< 25 .*got 25 at "
                       r"candidates\[1, 1\]"):
        select_comparisons(model, [[0, 1], [2, 25]], features=F)
    with pytest.raises(ValueError, match=">= 0.*got -1"):
        select_comparisons(model, [[0, -1]], features=F,
                           strategy="random")
    with pytest.raises(ValueError, match="row 1 pairs item 3 with itself"):
        select_comparisons(model, [[0, 1], [3, 3]], features=F)
    with pytest.raises(TypeError, match="integer item indices"):
        select_comparisons(model, [[0, 1.5]], features=F)
    with pytest.raises(ValueError, match="'features' parameter.*must be "
                       "given"):
        select_comparisons(model, candidates)
    with pytest.raises(ValueError, match="has 2 columns, but the model "
                       "was fitted with 3"):
        select_comparisons(model, candidates, features=F[:, :2])
    free = rlhf.RewardModel().fit(None, [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="must be None"):
        select_comparisons(free, [[0, 1]], features=F)
    with pytest.raises(ValueError, match="< 3"):
        select_comparisons(free, [[0, 3]])
    with pytest.raises(TypeError, match="rlhf.RewardModel or None"):
        select_comparisons("model", candidates, features=F)


@pytest.mark.no_sanitizer
def test_uncertainty_errors():
    F, pairs, model = feature_model()
    with pytest.raises(TypeError, match="'return_std' parameter.*bool"):
        model.predict_proba(F, pairs, return_std="yes")
    tie_model = rlhf.RewardModel(ties="rao-kupper").fit(
        F, pairs, ties=np.arange(len(pairs)) % 5 == 0)
    with pytest.raises(ValueError, match="without a tie model"):
        tie_model.predict_proba(F, pairs, return_std=True)
    with pytest.raises(ValueError, match="'k' parameter"):
        model.conservative_reward(F, k=np.inf)


# --------------------------------------------------------------------------
# predictive uncertainty


@pytest.mark.no_sanitizer
def test_default_predict_proba_is_unchanged_and_return_std_only_adds():
    F, pairs, model = feature_model()
    p = model.predict_proba(F, pairs)
    d = F[pairs[:, 0]] @ model.coef_ - F[pairs[:, 1]] @ model.coef_
    np.testing.assert_allclose(p, sigmoid(d), rtol=1e-14)
    p2, std = model.predict_proba(F, pairs, return_std=True)
    np.testing.assert_array_equal(p, p2)
    assert std.shape == p.shape and np.all(std > 0)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_moderated_probability_and_std_match_monte_carlo_over_posterior():
    """Draw the coefficients from N(coef_, Sigma) (Sigma inverted here from
    the NumPy Hessian) and push them through sigmoid(x . w)."""
    F, train, model = feature_model(seed=5, n_pairs=30, C=4.0)
    cov = np.linalg.inv(precision_from_data(
        F[train[:, 0]] - F[train[:, 1]], model.coef_, 4.0))
    pairs = all_pairs(len(F))[::7]
    p_mod, std = model.predict_proba(F, pairs, return_std=True,
                                     moderated=True)
    rng = np.random.default_rng(0)
    n_draws = 200_000
    w = rng.multivariate_normal(model.coef_, cov, size=n_draws)
    X = F[pairs[:, 0]] - F[pairs[:, 1]]
    draws = sigmoid(w @ X.T)
    mc_mean, mc_std = draws.mean(axis=0), draws.std(axis=0)
    # Monte Carlo standard errors: of the mean, std / sqrt(n); of the std,
    # sqrt((mu_4 - var^2) / (4 var n)) (the delta method on the sample
    # variance; the draws are skewed, so not std / sqrt(2 n)); 5 of them,
    # plus the probit approximation's own error for the mean (below 0.015,
    # see the next test)
    centred = draws - mc_mean
    mu4 = np.mean(centred**4, axis=0)
    se_std = np.sqrt((mu4 - mc_std**4) / (4 * mc_std**2 * n_draws))
    np.testing.assert_array_less(np.abs(p_mod - mc_mean),
                                 0.015 + 5 * mc_std / math.sqrt(n_draws))
    np.testing.assert_array_less(np.abs(std - mc_std), 5 * se_std)


def quadrature_grid(slow):
    if slow:
        return [(m, s) for m in (-6.0, -1.0, 0.0, 0.5, 2.0, 5.0)
                for s in (0.01, 0.3, 1.0, 3.0, 10.0, 40.0)]
    return [(0.0, 40.0), (2.0, 3.0), (-1.0, 0.3)]


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("slow", [
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_probit_approximation_error_and_std_against_adaptive_quadrature(
        slow):
    """For margins N(m, s^2): the moderated probability within 0.015 of
    E[sigmoid] (MacKay's probit approximation; its largest error on the
    slow grid is 0.0148), the std to 1e-8, both against
    scipy.integrate.quad."""
    from rlhf.reward import _sigmoid_std  # the std for given (m, s)
    worst = 0.0
    for m, s in quadrature_grid(slow):
        def density(t, m=m, s=s):
            return stats.norm.pdf(t, m, s)

        lo, hi = m - 12 * s, m + 12 * s
        pts = [0.0] if lo < 0 < hi else None
        mean = integrate.quad(lambda t: sigmoid(t) * density(t), lo, hi,
                              points=pts, limit=500, epsabs=1e-14)[0]
        var = integrate.quad(lambda t: (sigmoid(t) - mean) ** 2 *
                             density(t), lo, hi, points=pts, limit=500,
                             epsabs=1e-14)[0]
        assert _sigmoid_std(np.array([m]), np.array([s]))[0] == \
            pytest.approx(math.sqrt(var), abs=1e-8)
        worst = max(worst, abs(sigmoid(m / math.sqrt(
            1 + math.pi * s * s / 8)) - mean))
    assert worst < 0.015
    if slow:
        assert worst > 0.01  # an approximation: not the quadrature itself


@pytest.mark.no_sanitizer
def test_free_strength_margin_variance_and_conservative_reward():
    pairs = np.array([[0, 1], [1, 2], [2, 0], [0, 1], [3, 2], [1, 3],
                      [0, 3]])
    model = rlhf.RewardModel(C=3.0).fit(None, pairs)
    X = np.zeros((len(pairs), 4))
    X[np.arange(len(pairs)), pairs[:, 0]] = 1
    X[np.arange(len(pairs)), pairs[:, 1]] = -1
    cov = np.linalg.inv(precision_from_data(X, model.coef_, 3.0))
    queries = all_pairs(4)
    s = np.sqrt([cov[a, a] + cov[b, b] - 2 * cov[a, b] for a, b in queries])
    m = model.coef_[queries[:, 0]] - model.coef_[queries[:, 1]]
    p = model.predict_proba(None, queries, moderated=True)
    np.testing.assert_allclose(p, sigmoid(m / np.sqrt(1 + math.pi * s**2 / 8)),
                               rtol=1e-9)
    for k in (1.0, 2.5, -1.0):
        np.testing.assert_array_equal(
            model.conservative_reward(k=k),
            model.predict() - k * model.reward_std())
    F, _, fmodel = feature_model()
    np.testing.assert_array_equal(fmodel.conservative_reward(F, k=2.0),
                                  fmodel.predict(F) - 2 * fmodel.reward_std(F))


@pytest.mark.no_sanitizer
def test_sparse_features_margin_variance_includes_unseen_columns():
    """Columns no comparison reaches keep the prior variance C."""
    sparse = pytest.importorskip("scipy.sparse")
    F = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    pairs = np.array([[0, 1], [2, 1], [0, 2]])
    model = rlhf.RewardModel(C=2.0).fit(sparse.csr_matrix(F), pairs)
    dense = rlhf.RewardModel(C=2.0).fit(F, pairs)
    # the dense fit's covariance has exactly C on the untouched column
    queries = np.array([[0, 3], [1, 2]])
    _, std_sparse = model.predict_proba(sparse.csr_matrix(F), queries,
                                        return_std=True)
    _, std_dense = dense.predict_proba(F, queries, return_std=True)
    np.testing.assert_allclose(std_sparse, std_dense, rtol=1e-8)
    np.testing.assert_allclose(
        information_gain(model, queries, features=sparse.csr_matrix(F)),
        information_gain(dense, queries, features=F), rtol=1e-8)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_laplace_std_matches_refits_on_resampled_annotators():
    """Fixed pairs and items, labels redrawn from the true Bradley-Terry
    model R times, the (nearly unpenalised) model refitted each time: the
    spread of its margins across refits against the mean Laplace std of
    the margin.  A std estimated from R = 400 refits has relative standard
    error 1 / sqrt(2 (R - 1)) = 3.5%; the Laplace std is asymptotic (the
    inverse Fisher information at the estimate, 300 comparisons, 3
    weights), so 15% in all."""
    rng = np.random.default_rng(0)
    n_items, R = 40, 400
    F = rng.normal(size=(n_items, 3))
    w = np.array([1.0, -0.5, 0.25])
    pairs = rng.choice(all_pairs(n_items), 300, replace=False)
    queries = all_pairs(n_items)[::37]
    margins, laplace, proba, proba_laplace = [], [], [], []
    for r in range(R):
        labels = rlhf.simulate_preferences(F @ w, pairs, random_state=r)
        model = rlhf.RewardModel(C=1e4).fit(F, labels.comparisons)
        margins.append(model.predict(F[queries[:, 0]] - F[queries[:, 1]]))
        laplace.append(model.reward_std(F[queries[:, 0]] - F[queries[:, 1]]))
        p, s = model.predict_proba(F, queries, return_std=True)
        proba.append(p)
        proba_laplace.append(s)
    ratio = np.std(margins, axis=0, ddof=1) / np.mean(laplace, axis=0)
    np.testing.assert_allclose(ratio, 1.0, atol=0.15)
    assert abs(np.median(ratio) - 1.0) < 0.06
    ratio_p = np.std(proba, axis=0, ddof=1) / np.mean(proba_laplace, axis=0)
    np.testing.assert_allclose(ratio_p, 1.0, atol=0.15)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_bootstrap_ensemble_agrees_with_laplace():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(40, 3))
    labels = rlhf.simulate_preferences(F @ [1.0, -0.5, 0.25], 400,
                                       random_state=1)
    queries = all_pairs(40)[::37]
    model = rlhf.RewardModel(C=1e4)
    boot = bootstrap_rewards(model, F, labels, 300, pairs=queries,
                             random_state=0)
    assert "coef_" not in model.__dict__  # the template is not fitted
    laplace = model.fit(F, labels).reward_std(F)
    # 300 refits: the bootstrap std has a 4% standard error; the bootstrap
    # and the Laplace approximation differ at order 1/sqrt(n) beyond that
    np.testing.assert_allclose(boot.std / laplace, 1.0, atol=0.2)
    _, std = model.predict_proba(F, queries, return_std=True)
    np.testing.assert_allclose(boot.proba_std / std, 1.0, atol=0.2)


@pytest.mark.no_sanitizer
def test_bootstrap_groups_resample_whole_groups():
    F, pairs, model = feature_model()
    one = bootstrap_rewards(rlhf.RewardModel(), F, pairs, 3,
                            groups=np.zeros(len(pairs)), random_state=0)
    # one group: every resample is the whole data set once
    np.testing.assert_allclose(one.std, 0.0, atol=1e-12)
    fit = rlhf.RewardModel().fit(F, pairs).predict(F)
    np.testing.assert_allclose(one.mean, fit, rtol=1e-10)
    many = bootstrap_rewards(rlhf.RewardModel(), F, pairs, 3,
                             random_state=0)
    assert many.rewards.shape == (3, len(F)) and np.all(many.std > 0)
    assert many.proba is None
    with pytest.raises(ValueError, match="'groups' parameter.*shape"):
        bootstrap_rewards(rlhf.RewardModel(), F, pairs, 3, groups=[0, 1])
    with pytest.raises(ValueError, match="'n_models' parameter"):
        bootstrap_rewards(rlhf.RewardModel(), F, pairs, 1)


# --------------------------------------------------------------------------
# learning curves


@pytest.mark.no_sanitizer
def test_comparisons_to_reach_interpolates_linearly():
    budgets = np.array([10, 20, 40])
    accuracy = np.array([[[0.6, 0.7, 0.9], [0.6, 0.8, 0.85]],
                         [[0.8, 0.9, 0.95], [0.5, 0.55, 0.6]]])
    curves = LearningCurves(("random", "information"), budgets, accuracy,
                            np.zeros_like(accuracy))
    reach = curves.comparisons_to_reach(0.8)
    # random's mean curve: 0.6, 0.75, 0.875 -> 20 + (0.05 / 0.125) * 20
    assert reach["random"] == pytest.approx(28.0)
    # information's: 0.65, 0.725, 0.775 -> never
    assert math.isnan(reach["information"])
    seeds = curves.comparisons_to_reach(0.8, per_seed=True)
    # seed 0: 0.7 at 20, 0.9 at 40 -> 30; seed 1: 0.8 at 20
    np.testing.assert_allclose(seeds["random"], [30.0, 20.0])
    assert seeds["information"][0] == 10.0 and math.isnan(
        seeds["information"][1])
    text = curves.summary()
    assert "random" in text and "information" in text
    # at 0.72: random 10 + (0.12 / 0.15) * 10 = 18, information 10 +
    # (0.07 / 0.075) * 10 = 19.33, 7% more; at 0.65: 13.33 and 10 (the
    # first budget), 25% fewer
    assert "19.3 (7% more than random)" in curves.summary(0.72)
    assert "10.0 (25% fewer than random)" in curves.summary(0.65)
    with pytest.raises(ValueError, match="'accuracy' parameter"):
        curves.comparisons_to_reach(1.5)


@pytest.mark.no_sanitizer
def test_learning_curves_run_and_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    world = rlhf.make_world(n_prompts=20, n_candidates=4, random_state=0)
    kwargs = dict(candidates=world.pairs, budgets=[5, 12, 20], n_initial=5,
                  batch_size=4, n_seeds=2, random_state=0)
    curves = active_learning_curves(world, **kwargs)
    again = active_learning_curves(world, **kwargs)
    np.testing.assert_array_equal(curves.accuracy, again.accuracy)
    assert curves.accuracy.shape == (3, 2, 3)
    # the same start for every strategy
    np.testing.assert_array_equal(curves.accuracy[:, :, 0],
                                  curves.accuracy[[0], :, 0].repeat(3, 0))
    assert np.all((curves.accuracy >= 0) & (curves.accuracy <= 1))
    assert np.all(curves.coef_error >= 0)
    ax = curves.plot()
    assert len(ax.lines) == 3 and len(ax.collections) == 3
    assert ax.xaxis.label.get_size() >= 13
    plt.close("all")
    with pytest.raises(ValueError, match="'budgets' parameter"):
        active_learning_curves(world, budgets=[3, 10], n_initial=5)
    with pytest.raises(ValueError, match="'strategies' parameter"):
        active_learning_curves(world, strategies=("random", "greedy"))
    with pytest.raises(ValueError, match="'true_coef' parameter"):
        active_learning_curves(world.features)


def seed_bootstrap_savings(curves, n_resamples=500):
    """The saving of 'information' against 'random' (1 - comparisons
    needed / random's, at random's final mean accuracy) on resamples of
    the seeds: its spread.  Not reached counts as a saving of -1."""
    rng = np.random.default_rng(0)
    n_seeds = curves.accuracy.shape[1]
    savings = []
    for _ in range(n_resamples):
        seeds = rng.integers(0, n_seeds, n_seeds)
        boot = LearningCurves(curves.strategies, curves.budgets,
                              curves.accuracy[:, seeds],
                              curves.coef_error[:, seeds])
        reach = boot.comparisons_to_reach(boot.mean()[0, -1])
        savings.append(1 - reach["information"] / reach["random"])
    return np.nan_to_num(np.array(savings), nan=-1.0)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_information_gain_needs_30_percent_fewer_comparisons_than_random():
    """A world where many random pairs say little: 200 items, 5 Gaussian
    features scaled per item by a lognormal(0, 1) factor (so many items
    sit near the origin and pairs of them have nearly equal rewards: a
    label of such a pair is a coin flip), true weights of norm 2, every
    pair of items a candidate (19,900) and scored; a Bradley-Terry
    annotator at temperature 1, RewardModel(C=1), 20 seeds, 10 random
    comparisons to start, batches of 10.  The target is the accuracy
    random selection reaches (mean over seeds) with 200 comparisons.
    Measured (random_state 1, 2, 3): random 0.964, 0.963, 0.962 (sd over
    seeds 0.013-0.016); information gain reaches it with 39-40
    comparisons, 80-81% fewer; 5% quantile of the saving over bootstrap
    resamples of the seeds 0.75-0.77."""
    rng = np.random.default_rng(0)
    F = rng.normal(size=(200, 5)) * rng.lognormal(0.0, 1.0, (200, 1))
    w = rng.normal(size=5)
    w *= 2.0 / np.linalg.norm(w)
    curves = active_learning_curves(
        F, w, strategies=("random", "information"),
        budgets=[10, 20, 30, 40, 60, 80, 100, 150, 200], n_seeds=20,
        random_state=1)
    reach = curves.comparisons_to_reach(curves.mean()[0, -1])
    saving = 1 - reach["information"] / reach["random"]
    assert saving >= 0.3, curves.summary()
    assert np.quantile(seed_bootstrap_savings(curves), 0.05) >= 0.3


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_information_gain_beats_random_on_make_world():
    """The package's own world, as a reward model meets it: make_world
    with 300 prompts, 4 responses each, 4 features uniform in [0, 1], the
    candidates every pair of responses to one prompt (1800), scored on
    the same pairs; otherwise as above, 40 seeds, budgets to 300.  Here
    the saving is smaller and varies with the seeds: measured 56%, 25%
    and 66% (random_state 1, 2, 3; random's final accuracy 0.91-0.93, sd
    over seeds 0.03), so only the direction is asserted: information
    gain needs fewer comparisons, also on the 5% quantile of the seed
    bootstrap (0.41, 0.05, 0.43)."""
    world = rlhf.make_world(n_prompts=300, n_candidates=4, n_features=4,
                            random_state=0)
    curves = active_learning_curves(
        world, candidates=world.pairs, strategies=("random", "information"),
        budgets=[10, 20, 40, 60, 80, 100, 150, 200, 300], n_seeds=40,
        random_state=1)
    reach = curves.comparisons_to_reach(curves.mean()[0, -1])
    assert reach["information"] < reach["random"], curves.summary()
    assert np.quantile(seed_bootstrap_savings(curves), 0.05) > 0


def test_default_budgets_fit_a_small_pool():
    """12 items have 66 pairs: the default budgets (10, 20, ... 110) stop
    at the pool's size instead of failing over a parameter not passed."""
    features = np.random.default_rng(0).normal(size=(12, 2))
    curves = active_learning_curves(features, [1.0, -1.0], n_seeds=1,
                                    strategies=("random",), random_state=0)
    assert curves.budgets.tolist() == [10, 20, 30, 40, 50, 60, 66]
    with pytest.raises(ValueError, match="'n_initial' parameter"):
        active_learning_curves(features, [1.0, -1.0], n_initial=70,
                               n_seeds=1)
