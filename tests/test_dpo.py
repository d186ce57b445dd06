"""DPO converges to the KL-regularised optimum of the maximum-likelihood
Bradley-Terry rewards; SFT to the (smoothed) empirical frequencies."""
import itertools

import numpy as np
import pytest

import rlhf
from rlhf import _reference


def total_variation(p, q):
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=1).max()


def bt_problem(seed, n_prompts=3, n_responses=4, scale=0.3):
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.full(n_responses, 2.0), size=n_prompts)
    rewards = rng.normal(scale=scale, size=(n_prompts, n_responses))
    comparisons = np.array([
        (x, a, b) for x in range(n_prompts)
        for a, b in itertools.permutations(range(n_responses), 2)])
    return rng, reference, rewards, comparisons


def test_dpo_with_expected_counts_recovers_the_closed_form():
    """Weights N sigmoid(r_a - r_b) on every ordered pair are the expected
    Bradley-Terry counts; their maximum-likelihood rewards are r itself (up
    to a constant per prompt), so DPO must end at pi_ref exp(r / beta)."""
    _, reference, rewards, comparisons = bt_problem(0)
    x, a, b = comparisons.T
    weights = 50.0 / (1.0 + np.exp(-(rewards[x, a] - rewards[x, b])))
    dpo = rlhf.DPO().fit(reference, comparisons, sample_weight=weights)
    optimum = rlhf.kl_regularized_policy(reference, rewards, 0.1)
    assert total_variation(dpo.policy_, optimum) < 1e-3


def bt_mle(counts_rows, weights, n_prompts, n_responses):
    """Maximum-likelihood Bradley-Terry rewards by SciPy's L-BFGS-B."""
    optimize = pytest.importorskip("scipy.optimize")
    x, a, b = counts_rows.T

    def nll(flat):
        r = flat.reshape(n_prompts, n_responses)
        d = r[x, a] - r[x, b]
        value = (weights * np.logaddexp(0.0, -d)).sum()
        g = -weights / (1.0 + np.exp(d))
        grad = np.zeros_like(r)
        np.add.at(grad, (x, a), g)
        np.add.at(grad, (x, b), -g)
        return value, grad.ravel()

    result = optimize.minimize(nll, np.zeros(n_prompts * n_responses),
                               jac=True, method="L-BFGS-B",
                               options={"gtol": 1e-12, "ftol": 1e-15,
                                        "maxiter": 10_000})
    return result.x.reshape(n_prompts, n_responses)


def test_dpo_with_sampled_counts_matches_the_mle_closed_form():
    """Integer win counts drawn from Bradley-Terry: DPO equals the closed
    form built on the maximum-likelihood rewards of those counts."""
    rng, reference, rewards, _ = bt_problem(1)
    rows, weights = [], []
    for x in range(3):
        for a, b in itertools.combinations(range(4), 2):
            p = 1.0 / (1.0 + np.exp(-(rewards[x, a] - rewards[x, b])))
            wins = rng.binomial(30, p)
            rows += [(x, a, b), (x, b, a)]
            weights += [wins, 30 - wins]
    rows, weights = np.array(rows), np.array(weights, dtype=float)
    assert (weights > 0).all()  # a finite maximum-likelihood estimate
    mle = bt_mle(rows, weights, 3, 4)
    dpo = rlhf.DPO().fit(reference, rows, sample_weight=weights)
    optimum = rlhf.kl_regularized_policy(reference, mle, 0.1)
    assert total_variation(dpo.policy_, optimum) < 1e-3
    # and it is not the closed form of the true rewards (finite data)
    truth = rlhf.kl_regularized_policy(reference, rewards, 0.1)
    assert total_variation(dpo.policy_, truth) > 1e-2


def test_dpo_history_curves():
    _, reference, rewards, comparisons = bt_problem(2)
    x, a, b = comparisons.T
    keep = rewards[x, a] > rewards[x, b]  # deterministic preferences
    dpo = rlhf.DPO(n_iterations=200).fit(reference, comparisons[keep])
    h = dpo.history_
    assert set(h) == {"loss", "chosen_log_ratio", "rejected_log_ratio",
                      "margin", "accuracy"}
    assert h["loss"][-1] < h["loss"][0] < np.log(2) + 1e-9
    np.testing.assert_allclose(h["margin"], 0.1 * (h["chosen_log_ratio"]
                                                   - h["rejected_log_ratio"]))
    assert h["margin"][-1] > h["margin"][0]
    assert h["accuracy"][-1] == pytest.approx(1.0, abs=1e-12)
    # the margin grows while the chosen log-ratio itself may fall: the
    # rejected one falls faster
    assert h["rejected_log_ratio"][-1] < h["chosen_log_ratio"][-1]


@pytest.mark.parametrize("loss", ["sigmoid", "robust", "hinge", "ipo"])
def test_losses_rank_preferred_responses_first(loss):
    reference = np.full((1, 3), 1 / 3)
    comparisons = [[0, 0, 1], [0, 1, 2], [0, 0, 2]]
    smoothing = 0.1 if loss in ("sigmoid", "robust") else 0.0
    dpo = rlhf.DPO(beta=0.5, loss=loss, label_smoothing=smoothing,
                   n_iterations=300).fit(reference, comparisons)
    assert dpo.policy_[0, 0] > dpo.policy_[0, 1] > dpo.policy_[0, 2]


def test_ipo_reaches_its_closed_form():
    """IPO's optimum for one comparison a > b in each direction weighted
    w and 1 - w: d = (2 w - 1) / (2 beta)... here with only a > b:
    log-ratio difference 1 / (2 beta)."""
    reference = np.array([[0.5, 0.5]])
    dpo = rlhf.DPO(beta=0.25, loss="ipo", n_iterations=500).fit(
        reference, [[0, 0, 1]])
    d = np.log(dpo.policy_[0, 0] / dpo.policy_[0, 1])
    assert d == pytest.approx(1 / (2 * 0.25), abs=1e-4)


def test_minibatches_linear_policy_and_twins():
    _, reference, rewards, comparisons = bt_problem(3)
    x, a, b = comparisons.T
    weights = 50.0 / (1.0 + np.exp(-(rewards[x, a] - rewards[x, b])))
    features = np.random.default_rng(3).normal(size=(3, 4, 12))
    kwargs = dict(batch_size=5, n_iterations=40, random_state=0)
    ours = rlhf.DPO(policy="linear", **kwargs).fit(
        reference, comparisons, sample_weight=weights, features=features)

    class TwinDPO(rlhf.DPO):
        _kernels = _reference

    twin = TwinDPO(policy="linear", **kwargs).fit(
        reference, comparisons, sample_weight=weights, features=features)
    np.testing.assert_allclose(ours.policy_, twin.policy_, rtol=1e-9)
    again = rlhf.DPO(policy="linear", **kwargs).fit(
        reference, comparisons, sample_weight=weights, features=features)
    assert again.policy_.tobytes() == ours.policy_.tobytes()


@pytest.mark.parametrize("kwargs, fit_args, error, match", [
    ({"beta": 0.0}, {}, ValueError, "'beta' parameter of DPO"),
    ({"loss": "log"}, {}, ValueError, "'loss' parameter of DPO"),
    ({"label_smoothing": 0.5}, {}, ValueError, "'label_smoothing'"),
    ({"label_smoothing": 0.1, "loss": "ipo"}, {}, ValueError,
     "'label_smoothing'"),
    ({}, {"comparisons": [[0, 0, 3]]}, ValueError,
     "other response index 3 in row 0 is outside"),
    ({}, {"comparisons": [[1, 0, 2]]}, ValueError, "prompt index 1"),
    ({}, {"comparisons": [[0, -1, 2]]}, ValueError, "preferred response"),
    ({}, {"comparisons": [[0, 1, 1]]}, ValueError, "with itself"),
    ({}, {"comparisons": [[0.0, 1.0, 2.0]]}, TypeError, "integer indices"),
    ({}, {"comparisons": [0, 1, 2]}, ValueError, "shape \\(n_rows, 3\\)"),
    ({}, {"sample_weight": [-1.0]}, ValueError, "non-negative"),
    ({}, {"sample_weight": [1.0, 2.0]}, ValueError, "sample_weight"),
    ({}, {"sample_weight": [0.0]}, ValueError, "positive sum"),
    ({}, {"reference_policy": [[0.0, 0.5, 0.5]]}, ValueError,
     "probability 0"),
    ({}, {"reference_policy": [[0.2, 0.3, np.nan]]}, ValueError, "NaN"),
])
def test_dpo_bad_input(kwargs, fit_args, error, match):
    args = {"reference_policy": [[0.2, 0.3, 0.5]],
            "comparisons": [[0, 0, 1]]}
    args.update(fit_args)
    with pytest.raises(error, match=match):
        rlhf.DPO(**kwargs).fit(**args)


def test_sft_tabular_is_the_smoothed_frequency():
    rng = np.random.default_rng(4)
    demonstrations = np.column_stack([rng.integers(0, 3, 200),
                                      rng.integers(0, 5, 200)])
    weights = rng.random(200)
    for smoothing in (0.0, 0.5, 3.0):
        sft = rlhf.SFT(smoothing=smoothing).fit(
            demonstrations, sample_weight=weights, n_responses=5)
        counts = np.zeros((3, 5))
        np.add.at(counts, tuple(demonstrations.T), weights)
        counts += smoothing
        np.testing.assert_allclose(
            sft.policy_, counts / counts.sum(1, keepdims=True), atol=1e-8)


def test_sft_linear_matches_feature_expectations():
    """First-order optimality of the linear softmax likelihood: the
    expected features under the fit equal the observed ones."""
    rng = np.random.default_rng(5)
    features = rng.normal(size=(4, 6, 3))
    demonstrations = np.column_stack([rng.integers(0, 4, 300),
                                      rng.integers(0, 6, 300)])
    sft = rlhf.SFT(policy="linear", smoothing=0.0).fit(
        demonstrations, features=features)
    counts = np.zeros((4, 6))
    np.add.at(counts, tuple(demonstrations.T), 1.0)
    observed = np.einsum("xy,xyd->d", counts, features)
    expected = np.einsum("x,xy,xyd->d", counts.sum(1), sft.policy_, features)
    np.testing.assert_allclose(expected, observed, atol=1e-6)


def test_sft_then_dpo_pipeline():
    """SFT gives the reference that DPO starts from."""
    sft = rlhf.SFT().fit([[0, 0], [0, 1], [0, 1], [1, 2]], n_responses=3)
    dpo = rlhf.DPO(n_iterations=50).fit(sft.policy_, [[0, 0, 1], [1, 2, 0]])
    assert dpo.policy_[0, 0] > sft.policy_[0, 0]


@pytest.mark.parametrize("kwargs, fit_args, error, match", [
    ({"smoothing": -1}, {}, ValueError, "'smoothing' parameter of SFT"),
    ({}, {"demonstrations": [[0, 5]], "n_responses": 3}, ValueError,
     "response index 5"),
    ({}, {"demonstrations": [[0.5, 1]]}, TypeError, "integer indices"),
    ({"policy": "linear"}, {}, ValueError, "needs features"),
    ({}, {"n_prompts": 0}, ValueError, "'n_prompts'"),
])
def test_sft_bad_input(kwargs, fit_args, error, match):
    args = {"demonstrations": [[0, 1], [1, 0]]}
    args.update(fit_args)
    with pytest.raises(error, match=match):
        rlhf.SFT(**kwargs).fit(**args)
