"""Fitted models say what they learned: summary() of RewardModel, PPO,
REINFORCE, DPO and SFT, and their HTML in Jupyter.

The reward model's table is checked against statsmodels' Logit on the
Bradley-Terry difference features (no intercept, no penalty), against a
finite-difference Hessian of the penalised loss written here in NumPy,
and its p-values and intervals against scipy.stats.norm.  The policy
summaries are checked against history_ and against the divergences
computed afresh from the fitted policies.
"""
import math

import numpy as np
import pytest

import rlhf

WIDTH = 72


def _bradley_terry_data(seed, n_items=30, n_features=3, n_pairs=400):
    """Features, and pairs (preferred first) drawn from a Bradley-Terry
    model with known weights."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_items, n_features))
    weights = np.linspace(1.0, -0.6, n_features)
    pairs = rng.integers(0, n_items, size=(n_pairs, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    r = features @ weights
    first_wins = rng.random(len(pairs)) < 1 / (
        1 + np.exp(-(r[pairs[:, 0]] - r[pairs[:, 1]])))
    pairs[~first_wins] = pairs[~first_wins][:, ::-1]
    return features, pairs


def _check_text(summary):
    text = str(summary)
    assert repr(summary) == text
    for line in text.splitlines():
        assert len(line) <= WIDTH, line
    return text


# -- RewardModel -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_reward_summary_equals_statsmodels_logit(seed):
    """Without a penalty the Bradley-Terry likelihood is a logistic
    regression without intercept on the feature differences (each
    comparison written either way round); statsmodels' Logit gives the
    maximum-likelihood coefficients, their standard errors from the
    observed information, z, p-values, intervals and log-likelihood."""
    sm = pytest.importorskip("statsmodels.api")
    features, pairs = _bradley_terry_data(seed)
    model = rlhf.RewardModel(penalty=None, tol=1e-12).fit(features, pairs)
    summary = model.summary()
    rng = np.random.default_rng(seed + 100)
    diff = features[pairs[:, 0]] - features[pairs[:, 1]]
    keep = rng.random(len(diff)) < 0.5
    X = np.where(keep[:, None], diff, -diff)
    y = keep.astype(float)
    result = sm.Logit(y, X).fit(method="newton", tol=1e-12, maxiter=100,
                                disp=0)
    np.testing.assert_allclose(summary.coef, result.params, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(summary.std_err, result.bse, rtol=1e-9)
    np.testing.assert_allclose(summary.z, result.tvalues, rtol=1e-8)
    np.testing.assert_allclose(summary.p_value, result.pvalues, rtol=1e-6,
                               atol=1e-300)
    np.testing.assert_allclose(summary.conf_int, result.conf_int(),
                               rtol=1e-8, atol=1e-12)
    assert summary.log_likelihood == pytest.approx(result.llf, rel=1e-12)
    assert summary.n_iter == model.n_iter_ and summary.converged
    text = _check_text(summary)
    assert "Penalty:" in text and "none" in text
    assert f"Comparisons:{len(pairs):>{WIDTH // 2 - 2 - 12}}" in text


def _penalised_loss_grad(w, diff, C):
    """sum -log sigmoid(diff @ w) + ||w||^2 / (2 C) and its gradient."""
    z = diff @ w
    loss = np.logaddexp(0.0, -z).sum() + w @ w / (2 * C)
    grad = -diff.T @ (1.0 / (1.0 + np.exp(z))) + w / C
    return loss, grad


def test_reward_summary_with_a_penalty_matches_a_finite_difference_hessian():
    features, pairs = _bradley_terry_data(3, n_features=4)
    C = 0.7
    model = rlhf.RewardModel(C=C, tol=1e-12).fit(features, pairs)
    summary = model.summary()
    diff = features[pairs[:, 0]] - features[pairs[:, 1]]
    w = model.coef_
    h = 1e-5
    H = np.empty((len(w), len(w)))
    for j in range(len(w)):
        step = np.zeros(len(w))
        step[j] = h
        H[:, j] = (_penalised_loss_grad(w + step, diff, C)[1]
                   - _penalised_loss_grad(w - step, diff, C)[1]) / (2 * h)
    H = (H + H.T) / 2
    np.testing.assert_allclose(summary.std_err,
                               np.sqrt(np.diag(np.linalg.inv(H))), rtol=1e-6)
    # the log-likelihood leaves the penalty out
    loss, grad = _penalised_loss_grad(w, diff, C)
    assert np.abs(grad).max() < 1e-8
    assert summary.log_likelihood == pytest.approx(
        -(loss - w @ w / (2 * C)), rel=1e-12)
    text = _check_text(summary)
    assert "L2, C = 0.7" in text
    assert "penalised" in text


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_reward_summary_p_values_and_intervals_are_normal(alpha):
    stats = pytest.importorskip("scipy.stats")
    features, pairs = _bradley_terry_data(4, n_features=5)
    summary = rlhf.RewardModel(C=2.0).fit(features, pairs).summary(
        alpha=alpha)
    np.testing.assert_allclose(summary.z, summary.coef / summary.std_err,
                               rtol=1e-15)
    np.testing.assert_allclose(
        summary.p_value, 2 * stats.norm.sf(np.abs(summary.z)), rtol=1e-10,
        atol=1e-300)
    q = stats.norm.ppf(1 - alpha / 2)
    np.testing.assert_allclose(
        summary.conf_int,
        np.column_stack([summary.coef - q * summary.std_err,
                         summary.coef + q * summary.std_err]), rtol=1e-12)


def test_reward_summary_header_is_what_the_fit_did():
    features, pairs = _bradley_terry_data(5)
    model = rlhf.RewardModel(solver="lbfgs").fit(features, pairs)
    summary = model.summary()
    assert summary.accuracy == pytest.approx(model.score(features, pairs),
                                             rel=1e-15)
    text = _check_text(summary)
    assert "lbfgs" in text and f"{summary.accuracy:.3f}" in text
    assert "Iterations:" in text and str(model.n_iter_) in text
    assert "Converged:" in text and "yes" in text
    with pytest.warns(rlhf.ConvergenceWarning):
        stopped = rlhf.RewardModel(solver="lbfgs", max_iter=1).fit(
            features, pairs)
    text = _check_text(stopped.summary())
    assert "NO" in text and "iteration limit" in text
    assert not stopped.summary().converged


def test_reward_summary_names_the_features_of_a_dataframe():
    pd = pytest.importorskip("pandas")
    features, pairs = _bradley_terry_data(6)
    frame = pd.DataFrame(features, columns=["helpful", "<b>terse</b>",
                                            "polite"])
    model = rlhf.RewardModel().fit(frame, pairs)
    assert list(model.feature_names_in_) == list(frame.columns)
    summary = model.summary()
    assert summary.names == list(frame.columns)
    text = _check_text(summary)
    assert "helpful" in text and "polite" in text
    page = model._repr_html_()
    assert "&lt;b&gt;terse&lt;/b&gt;" in page and "<b>terse" not in page
    np.testing.assert_array_equal(
        summary.coef, rlhf.RewardModel().fit(features, pairs).coef_)
    # a later fit on an array drops the names
    assert not hasattr(model.fit(features, pairs), "feature_names_in_")
    assert model.summary().names == ["x0", "x1", "x2"]


def test_reward_summary_of_free_strengths_agrees_with_reward_std():
    pairs = np.array([[0, 1], [1, 2], [2, 0], [0, 2], [3, 1], [2, 3],
                      [1, 3]])
    for penalty in ("l2", None):
        model = rlhf.RewardModel(penalty=penalty).fit(None, pairs)
        summary = model.summary()
        assert summary.names == [f"item {i}" for i in range(4)]
        np.testing.assert_allclose(summary.std_err, model.reward_std(),
                                   rtol=1e-12)
        np.testing.assert_array_equal(summary.coef, model.coef_)
        text = _check_text(summary)
        assert "none (strengths)" in text
    assert "up to a shift" in text


def test_reward_summary_of_a_tie_model_shows_its_parameter():
    pairs = np.array([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0], [2, 1]])
    ties = np.array([0, 0, 0, 1, 0, 1], bool)
    model = rlhf.RewardModel(ties="davidson").fit(None, pairs, ties=ties)
    summary = model.summary()
    assert summary.names[-1] == "log nu"
    assert summary.coef[-1] == pytest.approx(math.log(model.tie_param_),
                                             rel=1e-12)
    assert len(summary.coef) == 4 and np.isfinite(summary.std_err).all()
    text = _check_text(summary)
    assert "Davidson" in text and "of which ties" in text


def test_reward_summary_of_unreached_sparse_columns():
    sparse = pytest.importorskip("scipy.sparse")
    features, pairs = _bradley_terry_data(7, n_items=12, n_features=3)
    wide = sparse.csr_matrix(np.hstack([features, np.zeros((12, 2))]))
    C = 4.0
    summary = rlhf.RewardModel(C=C, solver="lbfgs").fit(wide,
                                                       pairs).summary()
    np.testing.assert_array_equal(summary.coef[3:], 0.0)
    np.testing.assert_allclose(summary.std_err[3:], math.sqrt(C),
                               rtol=1e-15)
    dense = rlhf.RewardModel(C=C, solver="lbfgs").fit(features,
                                                     pairs).summary()
    np.testing.assert_allclose(summary.std_err[:3], dense.std_err,
                               rtol=1e-6)
    assert summary.accuracy == dense.accuracy
    # items no comparison names are left out of the fit, not of the data
    rows = np.vstack([features, np.ones((3, 3))])
    model = rlhf.RewardModel(C=C, solver="lbfgs").fit(
        sparse.csr_matrix(rows), pairs + 3)
    assert model.summary().accuracy == pytest.approx(
        model.score(rows, pairs + 3), abs=1e-15)


def test_reward_summary_rows_and_html():
    rng = np.random.default_rng(8)
    pairs = rng.integers(0, 50, size=(400, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    model = rlhf.RewardModel().fit(None, pairs, n_items=50)
    text = _check_text(model.summary(max_rows=5))
    assert "item 4 " in text and "item 5 " not in text
    assert "45 more rows" in text
    assert "item 49" in str(model.summary(max_rows=None))
    assert len(model.summary(max_rows=5).coef) == 50
    page = model._repr_html_()
    assert page.startswith("<div>") and "<table" in page
    assert "item 29" in page and "item 30" not in page
    assert rlhf.RewardModel(C=2.0)._repr_html_() == \
        "<pre>RewardModel(C=2.0)</pre>"
    with pytest.raises(rlhf.NotFittedError):
        rlhf.RewardModel().summary()
    for bad, name in ((0, "max_rows"), (1.5, "max_rows"), (0.0, "alpha"),
                      (1.0, "alpha")):
        with pytest.raises(ValueError, match=name):
            model.summary(**{name: bad})


# -- policies ----------------------------------------------------------------

REFERENCE = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
REWARDS = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.1]])


def _entropy(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.where(p > 0, p * np.log(p), 0.0).sum(axis=1).mean())


@pytest.mark.parametrize("estimator", [
    rlhf.PPO(exact=True, n_iterations=60),
    rlhf.PPO(n_iterations=40, random_state=0),
    rlhf.REINFORCE(n_iterations=40, random_state=0),
])
def test_policy_summary_of_a_table(estimator):
    est = estimator.fit(REFERENCE, REWARDS)
    summary = est.summary()
    table = summary.table
    # end: the history's last entry, which is the fitted policy's
    for key in ("reward", "kl", "entropy"):
        assert table[key][1] == est.history_[key][-1]
    assert table["kl"][1] == pytest.approx(
        rlhf.kl_divergence(est.policy_, REFERENCE).mean(), rel=1e-12)
    assert table["reward"][1] == pytest.approx(
        (est.policy_ * REWARDS).sum(axis=1).mean(), rel=1e-12)
    assert table["entropy"][1] == pytest.approx(_entropy(est.policy_),
                                                rel=1e-12)
    # start: the reference
    assert table["reward"][0] == pytest.approx(
        (REFERENCE * REWARDS).sum(axis=1).mean(), rel=1e-12)
    assert abs(table["kl"][0]) < 1e-15
    assert table["entropy"][0] == pytest.approx(_entropy(REFERENCE),
                                                rel=1e-12)
    text = _check_text(summary)
    n = est.n_iterations
    assert f"{n} of {n}" in text and "completed" in text
    assert type(est).__name__ + " on a table of 2 prompts x 3 responses" \
        in text
    page = summary._repr_html_()
    assert page.startswith("<div>") and "KL to reference" in page


def test_policy_summary_with_costs():
    est = rlhf.PPO(n_iterations=30, cost_budget=0.2, random_state=0).fit(
        REFERENCE, REWARDS, costs=np.array([[1.0, 0, 0], [0, 1, 0]]))
    summary = est.summary()
    assert summary.table["cost"][1] == est.history_["cost"][-1]
    assert summary.table["cost"][0] == pytest.approx(
        (REFERENCE * [[1.0, 0, 0], [0, 1, 0]]).sum(axis=1).mean())
    assert "lambda (end)" in _check_text(summary)


def test_policy_summary_on_sequences():
    world = rlhf.make_sequence_world(n_words=3, max_length=4, random_state=0)
    reference = world.reference.to_prefix_policy()
    est = rlhf.PPO(beta=0.5, n_iterations=15, n_samples=64,
                   random_state=0).fit(reference, world.gold_reward)
    table = est.summary().table
    assert table["kl"][1] == pytest.approx(
        rlhf.kl_divergence(est.policy_, reference), rel=1e-9)
    assert table["entropy"][1] == pytest.approx(est.policy_.entropy(),
                                                rel=1e-9)
    sequences, probs = reference.enumerate()
    assert table["reward"][0] == pytest.approx(
        probs @ world.gold_reward(sequences), rel=1e-12)
    assert table["length"][1] == est.history_["length"][-1]
    text = _check_text(est.summary())
    assert "SequencePolicy" in text and "(exact)" in text


def test_dpo_summary():
    comparisons = np.array([[0, 0, 1], [0, 1, 2], [1, 2, 0], [1, 2, 1]])
    for loss, start in (("sigmoid", math.log(2)), ("hinge", 1.0),
                        ("ipo", 1 / (4 * 0.5 ** 2))):
        est = rlhf.DPO(beta=0.5, loss=loss, n_iterations=50).fit(
            REFERENCE, comparisons)
        summary = est.summary()
        assert summary.table["loss"][0] == pytest.approx(start, rel=1e-12)
        for key in ("loss", "accuracy", "margin", "chosen_log_ratio",
                    "rejected_log_ratio"):
            assert summary.table[key][1] == est.history_[key][-1]
            if key != "loss":
                assert summary.table[key][0] == 0.0
        assert summary.end["kl"] == pytest.approx(
            rlhf.kl_divergence(est.policy_, REFERENCE).mean(), rel=1e-12)
        assert summary.end["entropy"] == pytest.approx(
            _entropy(est.policy_), rel=1e-12)
        text = _check_text(summary)
        assert "50 of 50" in text and loss in text


def test_dpo_summary_on_sequences():
    world = rlhf.make_sequence_world(n_words=3, max_length=4, random_state=0)
    reference = world.reference.to_prefix_policy()
    y = reference.sample(60, random_state=0)
    est = rlhf.DPO(n_iterations=10).fit(reference, (y[:30], y[30:]))
    summary = est.summary()
    assert summary.end["kl"] == pytest.approx(
        rlhf.kl_divergence(est.policy_, reference), rel=1e-9)
    assert summary.end["entropy"] == pytest.approx(est.policy_.entropy(),
                                                   rel=1e-9)
    assert summary.table["accuracy"][1] == est.history_["accuracy"][-1]


def _tiny_lm():
    return rlhf.TinyLM(n_layer=1, n_head=1, n_embd=8, block_size=8,
                       tokenizer=rlhf.text.CharTokenizer("ab? "),
                       random_state=0)


def test_policy_summary_of_an_interrupted_tinylm_fit():
    """A TinyLM fit stopped by Ctrl-C keeps what it learned; its summary
    says so."""
    calls, stop_at = [], [3]

    def reward(prompts, responses):
        calls.append(1)
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        return np.array([r.count("a") for r in responses], dtype=float)

    est = rlhf.PPO(learning_rate=1e-3, n_iterations=5, n_samples=2,
                   random_state=0)
    with pytest.raises(KeyboardInterrupt):
        est.fit(_tiny_lm(), reward, prompts=["a?", "b?"],
                prompts_per_iteration=2, max_new_tokens=3)
    summary = est.summary()
    text = _check_text(summary)
    assert "2 of 5" in text and "interrupted (Ctrl-C)" in text
    assert "estimated from the first iteration's samples" in text
    assert summary.table["reward"] == (est.history_["reward"][0],
                                       est.history_["reward"][-1])
    # a whole fit of the same estimator says it completed
    stop_at[0] = None
    est.fit(_tiny_lm(), reward, prompts=["a?", "b?"],
            prompts_per_iteration=2, max_new_tokens=3)
    text = _check_text(est.summary())
    assert "5 of 5" in text and "completed" in text


def test_dpo_summary_of_a_tinylm():
    est = rlhf.DPO(learning_rate=1e-3, n_iterations=2).fit(
        _tiny_lm(), (["a?"] * 2, ["ab"] * 2, ["b"] * 2))
    summary = est.summary()
    assert summary.end is None
    assert summary.table["loss"] == (pytest.approx(math.log(2), rel=1e-12),
                                     est.history_["loss"][-1])
    assert "not computed" in _check_text(summary)


def test_sft_summary():
    demonstrations = np.array([[0, 0], [0, 0], [0, 1], [1, 2]])
    weight = np.array([1.0, 2.0, 1.0, 0.5])
    est = rlhf.SFT(smoothing=0.5).fit(demonstrations, weight, n_responses=3)
    summary = est.summary()
    p = est.policy_
    expected = float(weight @ np.log(p[demonstrations[:, 0],
                                       demonstrations[:, 1]]))
    assert summary.log_likelihood == pytest.approx(expected, rel=1e-12)
    assert summary.entropy == pytest.approx(_entropy(p), rel=1e-12)
    assert summary.converged
    text = _check_text(summary)
    assert "Demonstrations:" in text and "yes" in text


def test_summaries_before_fit():
    for est in (rlhf.PPO(), rlhf.REINFORCE(), rlhf.DPO(), rlhf.SFT()):
        with pytest.raises(rlhf.NotFittedError):
            est.summary()


def test_reward_summary_without_standard_errors_says_why():
    rng = np.random.default_rng(9)
    pairs = rng.integers(0, 4001, size=(20_000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    model = rlhf.RewardModel(solver="lbfgs").fit(None, pairs, n_items=4001)
    summary = model.summary(max_rows=2)
    assert np.isnan(summary.std_err).all()
    np.testing.assert_array_equal(summary.coef, model.coef_)
    assert "at most 4000 parameters" in _check_text(summary)
    features = np.column_stack([np.linspace(-1, 1, 20), np.ones(20)])
    pairs = pairs[(pairs < 20).all(axis=1)]
    pairs = np.vstack([pairs, [[0, 19], [19, 0], [3, 9], [9, 3]]])
    model = rlhf.RewardModel(penalty=None).fit(features, pairs)
    summary = model.summary()
    assert np.isnan(summary.p_value).all()
    assert "singular" in _check_text(summary)
