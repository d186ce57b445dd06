"""rlhf.CostModel: the Safe RLHF cost-model loss, its gradient against
finite differences, scikit-learn where the two coincide, and recovery of
known parameters from simulated judgements."""
import numpy as np
import pytest

import rlhf
from rlhf.safety import _cost_loss_grad


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def simulate(n_items, n_comparisons, coef, intercept, rng):
    """Items with Gaussian features; each comparison orders a random pair by
    Bradley-Terry on the true costs (first = more harmful); every item gets
    the label unsafe with probability sigmoid(cost)."""
    features = rng.normal(size=(n_items, coef.size))
    costs = features @ coef + intercept
    pairs = np.array([rng.choice(n_items, 2, replace=False)
                      for _ in range(n_comparisons)])
    first_worse = rng.random(n_comparisons) < sigmoid(
        costs[pairs[:, 0]] - costs[pairs[:, 1]])
    comparisons = np.where(first_worse[:, None], pairs, pairs[:, ::-1])
    safe = rng.random(n_items) >= sigmoid(costs)
    return features, comparisons, safe


def problem(seed, with_labels=True):
    rng = np.random.default_rng(seed)
    features, comparisons, safe = simulate(30, 60, np.array([1.0, -0.5, 2.0]),
                                           0.3, rng)
    weight = rng.uniform(0.1, 2.0, size=len(comparisons))
    labelled = np.flatnonzero(rng.random(30) < 0.6) if with_labels \
        else np.zeros(0, dtype=np.intp)
    signs = np.where(safe[labelled], -1.0, 1.0)
    return rng, features, comparisons, weight, labelled, signs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_labels", [True, False])
def test_gradient_matches_finite_differences(seed, with_labels):
    rng, features, comparisons, weight, labelled, signs = problem(
        seed, with_labels)
    n_params = features.shape[1] + (1 if with_labels else 0)
    params = rng.normal(size=n_params)
    args = (features, comparisons, weight, labelled, signs, 0.7, 0.3,
            with_labels)
    _, grad = _cost_loss_grad(params, *args)
    h = 1e-6
    numeric = np.array([
        (_cost_loss_grad(params + h * e, *args)[0]
         - _cost_loss_grad(params - h * e, *args)[0]) / (2 * h)
        for e in np.eye(n_params)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-7)


def test_loss_is_the_written_formula():
    """The objective against the paper's form written with np.logaddexp."""
    rng, features, comparisons, weight, labelled, signs = problem(9)
    params = rng.normal(size=4)
    c = features @ params[:3] + params[3]
    expected = (weight @ np.logaddexp(0, -(c[comparisons[:, 0]]
                                          - c[comparisons[:, 1]]))
                + 0.7 * np.sum(np.logaddexp(0, -signs * c[labelled]))
                + 0.5 * 0.3 * params[:3] @ params[:3])
    loss, _ = _cost_loss_grad(params, features, comparisons, weight,
                              labelled, signs, 0.7, 0.3, True)
    np.testing.assert_allclose(loss, expected, rtol=1e-13)


def test_comparisons_only_equal_sklearn():
    """Without labels the loss is logistic regression without intercept on
    the differences x_a - x_b; scikit-learn's LogisticRegression(C') on the
    mirrored rows (d, 1), (-d, 0) counts the data twice, so it has the
    minimiser of CostModel(C = 2 C')."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    _, features, comparisons, weight, _, _ = problem(3, with_labels=False)
    diff = features[comparisons[:, 0]] - features[comparisons[:, 1]]
    X = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    clf = linear_model.LogisticRegression(C=0.5, fit_intercept=False,
                                          tol=1e-12, max_iter=10000)
    clf.fit(X, y, sample_weight=np.r_[weight, weight])
    model = rlhf.CostModel(C=1.0, tol=1e-10).fit(features, comparisons,
                                                 sample_weight=weight)
    np.testing.assert_allclose(model.coef_, clf.coef_[0], rtol=1e-6,
                               atol=1e-8)
    assert model.intercept_ == 0.0


def test_minimum_is_stationary_and_matches_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    _, features, comparisons, weight, labelled, signs = problem(5)
    safe = np.full(30, np.nan)
    safe[labelled] = (signs < 0).astype(float)
    model = rlhf.CostModel(C=2.0, label_weight=0.7, tol=1e-10).fit(
        features, comparisons, safe=safe, sample_weight=weight)
    args = (features, comparisons, weight, labelled, signs, 0.7, 0.5, True)
    result = optimize.minimize(_cost_loss_grad, np.zeros(4), args=args,
                               jac=True, method="BFGS",
                               options={"gtol": 1e-11})
    np.testing.assert_allclose(np.r_[model.coef_, model.intercept_],
                               result.x, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.loss_, result.fun, rtol=1e-12)


def hessian(features, comparisons, labelled, signs, coef, intercept):
    """The Hessian of the unpenalised negative log-likelihood in (w, b)."""
    x = np.column_stack([features, np.ones(len(features))])
    c = x @ np.r_[coef, intercept]
    d = x[comparisons[:, 0]] - x[comparisons[:, 1]]
    z = c[comparisons[:, 0]] - c[comparisons[:, 1]]
    s = sigmoid(z) * sigmoid(-z)
    xl = x[labelled]
    sl = sigmoid(c[labelled]) * sigmoid(-c[labelled])
    return d.T @ (s[:, None] * d) + xl.T @ (sl[:, None] * xl)


def test_recovers_known_parameters():
    """Simulated from known (w, b): the maximum-likelihood estimate is
    within 4.5 standard errors (inverse Fisher information at the
    estimate) of the truth in every coordinate; a failure by chance has
    probability below 3e-5."""
    rng = np.random.default_rng(2023)
    coef, intercept = np.array([1.5, -2.0, 0.5]), -0.5
    features, comparisons, safe = simulate(400, 3000, coef, intercept, rng)
    model = rlhf.CostModel(C=np.inf, tol=1e-9).fit(features, comparisons,
                                                   safe=safe)
    estimate = np.r_[model.coef_, model.intercept_]
    labelled = np.arange(400)
    signs = np.where(safe, -1.0, 1.0)
    cov = np.linalg.inv(hessian(features, comparisons, labelled, signs,
                                model.coef_, model.intercept_))
    se = np.sqrt(np.diag(cov))
    assert np.all(np.abs(estimate - np.r_[coef, intercept]) < 4.5 * se), (
        estimate, se)
    # and the model orders unseen pairs and labels unseen items well
    test_features, test_comparisons, test_safe = simulate(
        200, 1000, coef, intercept, rng)
    truth = test_features @ coef + intercept
    bayes = np.mean(truth[test_comparisons[:, 0]]
                    > truth[test_comparisons[:, 1]])
    assert model.score(test_features, test_comparisons) > bayes - 0.03
    assert np.mean(model.predict_safe(test_features) == (truth <= 0)) > 0.95


def test_comparisons_only_recover_direction():
    rng = np.random.default_rng(11)
    coef = np.array([1.0, 2.0])
    features, comparisons, _ = simulate(300, 3000, coef, 0.7, rng)
    model = rlhf.CostModel(C=np.inf).fit(features, comparisons)
    assert model.intercept_ == 0.0
    cosine = model.coef_ @ coef / np.linalg.norm(model.coef_) / np.linalg.norm(
        coef)
    assert cosine > 0.99


def test_orientation_matters():
    """Swapping the columns of comparisons (less harmful first) flips the
    sign of the learned costs exactly."""
    _, features, comparisons, weight, _, _ = problem(1, with_labels=False)
    a = rlhf.CostModel(tol=1e-10).fit(features, comparisons)
    b = rlhf.CostModel(tol=1e-10).fit(features, comparisons[:, ::-1])
    np.testing.assert_allclose(a.coef_, -b.coef_, rtol=1e-8)
    assert a.score(features, comparisons) > 0.5


def test_labels_only_is_logistic_regression():
    """With no comparisons, the sign terms are logistic regression of
    'unsafe' on the features: scikit-learn with the same C agrees."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(4)
    features = rng.normal(size=(80, 2))
    safe = rng.random(80) >= sigmoid(features @ [1.0, -1.0] + 0.2)
    model = rlhf.CostModel(C=3.0, tol=1e-10).fit(
        features, np.zeros((0, 2), dtype=int), safe=safe)
    clf = linear_model.LogisticRegression(C=3.0, tol=1e-12, max_iter=10000)
    clf.fit(features, ~safe)
    np.testing.assert_allclose(model.coef_, clf.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(model.intercept_, clf.intercept_[0], rtol=1e-6)


def test_params_and_convergence_warning():
    model = rlhf.CostModel(C=2.0)
    assert model.get_params() == {"C": 2.0, "label_weight": 1.0,
                                  "tol": 1e-6, "max_iter": 1000,
                                  "progress": None}
    assert repr(model) == "CostModel(C=2.0)"
    _, features, comparisons, _, _, _ = problem(0)
    with pytest.warns(rlhf.ConvergenceWarning, match="iteration limit"):
        model.set_params(max_iter=1, tol=1e-12).fit(features, comparisons)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(comparisons=[[0, 1, 2]]), ValueError,
     r"comparisons must have shape \(n_comparisons, 2\)"),
    (dict(comparisons=[[0, 5]]), ValueError, r"must index items in \[0, 4\)"),
    (dict(comparisons=[[0.5, 1.0]]), TypeError, "integer item indices"),
    (dict(safe=[True, False]), ValueError, r"safe must have shape \(4,\)"),
    (dict(safe=[2.0, 0.0, 1.0, 1.0]), ValueError, "safe must hold booleans"),
    (dict(features=[[0.0], [np.nan], [1.0], [2.0]]), ValueError,
     "features contains NaN"),
    (dict(sample_weight=[1.0, -1.0]), ValueError, "non-negative"),
    (dict(sample_weight=[1.0]), ValueError, r"sample_weight must have shape"),
    (dict(comparisons=np.zeros((0, 2), dtype=int)), ValueError,
     "Nothing to fit"),
])
def test_bad_input(kwargs, error, match):
    args = dict(features=[[0.0], [1.0], [2.0], [3.0]],
                comparisons=[[1, 0], [3, 2]])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        rlhf.CostModel().fit(**args)


@pytest.mark.parametrize("param, value", [("C", -1), ("C", 0.0),
                                          ("label_weight", -1.0),
                                          ("tol", 0.0), ("max_iter", 0),
                                          ("max_iter", 1.5)])
def test_bad_params(param, value):
    with pytest.raises(ValueError, match=f"The '{param}' parameter of "
                       "CostModel must be"):
        rlhf.CostModel(**{param: value}).fit([[0.0], [1.0]], [[1, 0]])


def test_not_fitted_and_wrong_width():
    with pytest.raises(rlhf.NotFittedError):
        rlhf.CostModel().predict([[1.0]])
    model = rlhf.CostModel().fit([[0.0], [1.0]], [[1, 0]])
    with pytest.raises(ValueError, match="features has 2 features"):
        model.predict([[1.0, 2.0]])


@pytest.mark.parametrize("max_iter", [2**31, 2**64])
def test_max_iter_beyond_a_c_int(max_iter):
    """Regression: max_iter went to the minimiser as a C int, so 2**31
    raised OverflowError.  The minimiser gets at most 2**31 - 1 (no limit
    in practice); the parameter keeps the value given, and n_iter_ counts
    the iterations that ran."""
    _, features, comparisons, weight, labelled, signs = problem(4)
    safe = np.full(30, np.nan)
    safe[labelled] = (signs < 0).astype(float)
    expected = rlhf.CostModel().fit(features, comparisons, safe=safe,
                                    sample_weight=weight)
    model = rlhf.CostModel(max_iter=max_iter).fit(
        features, comparisons, safe=safe, sample_weight=weight)
    assert model.max_iter == max_iter
    assert model.get_params()["max_iter"] == max_iter
    assert 0 < model.n_iter_ == expected.n_iter_ < 1000
    assert model.coef_.tobytes() == expected.coef_.tobytes()
    assert model.intercept_ == expected.intercept_
