"""rlhf.LogisticRegression as a scikit-learn estimator.

Three kinds of evidence: scikit-learn's own estimator checks; the
meta-estimators people use (clone, Pipeline, GridSearchCV,
cross_val_score) working and giving scikit-learn's numbers; and the
compat mode of the installed release (``'1.7'`` from 1.7 on, ``'1.4'`` for
1.4 to 1.6) reproducing its ``LogisticRegression()`` on many random
problems.  Outside CI, the coefficients (to 1e-8) and n_iter_ of the 60
problems were also checked against scikit-learn 1.6.1 (equal to '1.4')
and 1.7.2 (equal to '1.7'); the two modes differ on the 16 problems that
combine class_weight='balanced' with sample weights.
"""
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
sp = pytest.importorskip("scipy.sparse")

from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.exceptions import (  # noqa: E402
    ConvergenceWarning as SkConvergenceWarning,
    NotFittedError as SkNotFittedError,
)
from sklearn.linear_model import (  # noqa: E402
    LogisticRegression as SkLogisticRegression,
)
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    parametrize_with_checks,
)
from sklearn.utils.validation import check_is_fitted  # noqa: E402

import rlhf  # noqa: E402

# -- scikit-learn's estimator checks ------------------------------------------

ESTIMATORS = [
    rlhf.LogisticRegression(),
    rlhf.LogisticRegression(compat="1.7"),
    rlhf.LogisticRegression(solver="newton"),
]

# rlhf does not import scikit-learn, so its estimators cannot derive from
# sklearn.base.BaseEstimator; they implement the protocol instead
# (get_params/set_params, __sklearn_tags__), and scikit-learn says so with a
# UserWarning while it collects the checks. Every check still runs.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=".*does not inherit from `sklearn.base.BaseEstimator`",
        category=UserWarning,
    )
    _ESTIMATOR_CHECKS = parametrize_with_checks(ESTIMATORS)


@_ESTIMATOR_CHECKS
def test_sklearn_estimator_check(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_array_api_check_in_its_own_process():
    # scikit-learn skips check_array_api_input unless SCIPY_ARRAY_API=1 was
    # set before SciPy was imported, so it runs here in a fresh process
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "warnings.filterwarnings('ignore', message='.*does not inherit')\n"
        "import rlhf\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "check_array_api_input('LogisticRegression',\n"
        "                      rlhf.LogisticRegression(),\n"
        "                      array_namespace='numpy',\n"
        "                      expect_only_array_outputs=False)\n"
    )
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_importing_rlhf_does_not_import_sklearn():
    code = (
        "import sys, rlhf\n"
        "clf = rlhf.LogisticRegression().fit([[0.0], [1.0]], [0, 1])\n"
        "clf.predict([[0.5]])\n"
        "try:\n"
        "    rlhf.LogisticRegression().predict([[0.5]])\n"
        "except rlhf.NotFittedError:\n"
        "    pass\n"
        "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tags_declare_a_binary_classifier():
    clf = rlhf.LogisticRegression()
    tags = get_tags(clf)
    assert is_classifier(clf)
    assert tags.estimator_type == "classifier"
    assert tags.classifier_tags.multi_class is False
    assert tags.input_tags.sparse is True
    assert tags.requires_fit is True


def test_warnings_are_sklearns_too():
    # code written for scikit-learn silences its ConvergenceWarning by class
    X, y = _blobs(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SkConvergenceWarning)
        rlhf.LogisticRegression(max_iter=1).fit(X, y)
    with pytest.warns(SkConvergenceWarning) as caught:
        rlhf.LogisticRegression(max_iter=1).fit(X, y)
    assert issubclass(caught[0].category, rlhf.ConvergenceWarning)
    assert caught[0].category.__name__ == "ConvergenceWarning"
    with pytest.warns(sklearn.exceptions.DataConversionWarning) as caught:
        rlhf.LogisticRegression().fit(X, y[:, None])
    assert issubclass(caught[0].category, rlhf.DataConversionWarning)


def test_not_fitted_error_is_sklearns_too():
    clf = rlhf.LogisticRegression()
    with pytest.raises(SkNotFittedError) as info:
        clf.predict([[1.0]])
    error = info.value
    assert isinstance(error, rlhf.NotFittedError)
    assert isinstance(error, ValueError) and isinstance(error, AttributeError)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    with pytest.raises(SkNotFittedError):
        check_is_fitted(clf)
    check_is_fitted(clf.fit([[0.0], [1.0]], [0, 1]))


# -- the parameter protocol ---------------------------------------------------

def test_get_params_set_params_clone():
    clf = rlhf.LogisticRegression(C=0.5, class_weight={0: 1.0, 1: 2.0},
                                  compat="1.7")
    params = clf.get_params()
    assert params == {
        "C": 0.5, "class_weight": {0: 1.0, 1: 2.0}, "compat": "1.7",
        "fit_intercept": True, "max_iter": 100, "n_jobs": None,
        "penalty": "l2", "solver": "lbfgs", "tol": 1e-4, "verbose": 0,
    }
    assert clf.get_params(deep=False) == params
    assert clf.set_params(C=3.0, tol=1e-6) is clf
    assert (clf.C, clf.tol) == (3.0, 1e-6)
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        clf.set_params(alpha=1.0)

    clf.fit([[0.0], [1.0], [2.0]], [0, 1, 1])
    twin = clone(clf)
    assert twin is not clf and type(twin) is type(clf)
    assert twin.get_params() == clf.get_params()
    assert twin.class_weight is not clf.class_weight
    assert not hasattr(twin, "coef_")
    assert repr(twin) == (
        "LogisticRegression(C=3.0, class_weight={0: 1.0, 1: 2.0}, "
        "compat='1.7', tol=1e-06)"
    )


def _blobs(seed, n=120, d=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * [1.0, 3.0, 0.5, 2.0][:d] + 1.5
    w = rng.standard_normal(d)
    y = (X @ w - (1.5 * w).sum() + rng.standard_normal(n) > 0).astype(int)
    return X, y


def test_pipeline_with_scaler_matches_sklearn():
    X, y = _blobs(0)
    ours = make_pipeline(StandardScaler(),
                         rlhf.LogisticRegression(compat="1.7")).fit(X, y)
    theirs = make_pipeline(StandardScaler(), SkLogisticRegression()).fit(X, y)
    a, b = ours[-1], theirs[-1]
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_array_equal(a.n_iter_, b.n_iter_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                               rtol=1e-8, atol=1e-12)
    assert ours.score(X, y) == theirs.score(X, y)
    named = Pipeline([("scale", StandardScaler()),
                      ("model", rlhf.LogisticRegression())])
    named.set_params(model__C=0.25)
    assert named.get_params()["model__C"] == 0.25


@pytest.mark.slow
def test_grid_search_over_C_matches_sklearn():
    X, y = _blobs(1, n=150)
    grid = {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}
    ours = GridSearchCV(
        make_pipeline(StandardScaler(), rlhf.LogisticRegression(compat="1.7")),
        grid, cv=3, scoring="neg_log_loss").fit(X, y)
    theirs = GridSearchCV(
        make_pipeline(StandardScaler(), SkLogisticRegression()),
        grid, cv=3, scoring="neg_log_loss").fit(X, y)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               theirs.cv_results_["mean_test_score"],
                               rtol=1e-10)
    a, b = ours.best_estimator_[-1], theirs.best_estimator_[-1]
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(a.n_iter_, b.n_iter_)

    plain = GridSearchCV(rlhf.LogisticRegression(compat="1.7"),
                         {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert plain.best_estimator_.C in (0.01, 1.0)


@pytest.mark.slow
def test_cross_val_score_matches_sklearn():
    X, y = _blobs(2, n=100)
    ours = cross_val_score(rlhf.LogisticRegression(compat="1.7"), X, y, cv=5)
    theirs = cross_val_score(SkLogisticRegression(), X, y, cv=5)
    np.testing.assert_array_equal(ours, theirs)
    ours = cross_val_score(rlhf.LogisticRegression(compat="1.7"), X, y, cv=5,
                           scoring="roc_auc")
    theirs = cross_val_score(SkLogisticRegression(), X, y, cv=5,
                             scoring="roc_auc")
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# -- pandas feature names -----------------------------------------------------

def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = _blobs(3, d=3)
    frame = pd.DataFrame(X, columns=["length", "helpful", "polite"])
    clf = rlhf.LogisticRegression(compat="1.7").fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_,
                                  ["length", "helpful", "polite"])
    assert clf.feature_names_in_.dtype == object
    sk = SkLogisticRegression().fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, sk.feature_names_in_)
    np.testing.assert_allclose(clf.coef_, sk.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(clf.predict(frame), sk.predict(frame))

    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame[["helpful", "length", "polite"]])
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame.rename(columns={"polite": "rude"}))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)

    # refitting on an ndarray forgets the names
    clf.fit(X, y)
    assert not hasattr(clf, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names"):
        clf.predict(frame)


# -- compat == the installed scikit-learn, on random problems ----------

LABEL_PAIRS = [
    (0, 1),
    ("ham", "spam"),
    (False, True),
    (-1.0, 1.0),
    (7, 3),
    ("yes", "no"),
]
N_PROBLEMS = 60


def _problem(seed):
    """One random, moderately conditioned problem; the seed also cycles
    through every option so that each appears in several problems."""
    rng = np.random.default_rng(1000 + seed)
    sparse = seed % 2 == 1
    fit_intercept = (seed // 2) % 2 == 0
    weights = ("none", "uniform", "integer")[seed % 3]
    class_weight = ("none", "balanced", "dict", "none", "balanced")[seed % 5]
    labels = LABEL_PAIRS[(seed // 3) % len(LABEL_PAIRS)]
    no_penalty = seed % 7 == 3
    hits_limit = seed % 7 == 5

    d = int(rng.integers(5, 16)) if hits_limit else int(rng.integers(1, 16))
    n_min = 20 * d if no_penalty else 20
    n = int(rng.integers(n_min, n_min + 280))
    if sparse:
        X = sp.random(n, d, density=0.4, format="csr", random_state=rng,
                      data_rvs=rng.standard_normal)
        dense = X.toarray()
    else:
        X = dense = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    # noise keeps the classes overlapping, so even without a penalty the
    # optimum is finite and well conditioned
    y01 = (dense @ w + 0.3 + 1.5 * rng.standard_normal(n) > 0).astype(int)
    y01[:2] = [0, 1]
    y = np.array(labels)[y01]

    sample_weight = None
    if weights == "uniform":
        sample_weight = rng.uniform(0.2, 3.0, n)
    elif weights == "integer":
        sample_weight = rng.integers(0, 4, n).astype(float)
        sample_weight[:2] = 1.0

    params = {
        "C": float(10 ** rng.uniform(-2, 2)),
        "tol": 1e-10 if hits_limit else float(10 ** rng.uniform(-7, -3)),
        "fit_intercept": fit_intercept,
        "max_iter": int(rng.integers(1, 4)) if hits_limit else 200,
        "class_weight": {
            "none": None,
            "balanced": "balanced",
            "dict": {labels[0]: 0.7, labels[1]: 1.8},
        }[class_weight],
    }
    X_test = rng.standard_normal((25, d))
    return X, y, sample_weight, params, no_penalty, hits_limit, X_test


def _fit_recording(model, X, y, sample_weight):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, sample_weight=sample_weight)
    return [w.category for w in caught]


def _installed_compat():
    """The compat mode that reproduces the installed scikit-learn."""
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 7):
        return "1.7"
    if (major, minor) >= (1, 4):
        return "1.4"
    return "1.2"


# the first seven problems take every option but some label types
@pytest.mark.parametrize("seed", [*range(7), *(
    pytest.param(seed, marks=pytest.mark.slow)
    for seed in range(7, N_PROBLEMS))])
def test_compat_equals_installed_sklearn(seed):
    X, y, sample_weight, params, no_penalty, hits_limit, X_test = \
        _problem(seed)
    ours = rlhf.LogisticRegression(
        penalty=None if no_penalty else "l2", compat=_installed_compat(),
        **params)
    sk_params = dict(params, C=np.inf) if no_penalty else params
    theirs = SkLogisticRegression(**sk_params)

    ours_warned = _fit_recording(ours, X, y, sample_weight)
    theirs_warned = _fit_recording(theirs, X, y, sample_weight)
    assert all(issubclass(c, rlhf.ConvergenceWarning) for c in ours_warned)
    assert all(issubclass(c, SkConvergenceWarning) for c in theirs_warned)
    assert bool(ours_warned) == bool(theirs_warned)
    if hits_limit:
        assert ours_warned and theirs_warned
        assert ours.n_iter_[0] == params["max_iter"]

    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert ours.classes_.dtype == theirs.classes_.dtype
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_array_equal(ours.n_iter_, theirs.n_iter_)
    assert ours.n_iter_.dtype == theirs.n_iter_.dtype
    assert ours.coef_.shape == theirs.coef_.shape
    assert ours.intercept_.shape == theirs.intercept_.shape
    assert ours.n_features_in_ == theirs.n_features_in_

    # the fitted models predict alike (to the agreement of their
    # coefficients; labels may differ only where a score is ~0)
    for data in (X, X_test):
        ours_score = ours.decision_function(data)
        theirs_score = theirs.decision_function(data)
        np.testing.assert_allclose(ours_score, theirs_score, rtol=1e-7,
                                   atol=1e-9)
        clear = np.abs(theirs_score) > 1e-6
        np.testing.assert_array_equal(ours.predict(data)[clear],
                                      theirs.predict(data)[clear])
    assert ours.score(X, y, sample_weight) == pytest.approx(
        theirs.score(X, y, sample_weight), abs=1e-12)

    # with the same coefficients, the prediction code agrees to rounding
    theirs.coef_ = ours.coef_.copy()
    theirs.intercept_ = ours.intercept_.copy()
    for data in (X, X_test):
        np.testing.assert_allclose(ours.decision_function(data),
                                   theirs.decision_function(data),
                                   rtol=1e-12, atol=1e-15)
        # 1 - p near p = 1 carries SciPy's and NumPy's exp rounding as an
        # absolute error of an ulp of 1
        np.testing.assert_allclose(ours.predict_proba(data),
                                   theirs.predict_proba(data),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(ours.predict(data),
                                      theirs.predict(data))
        log_proba = ours.predict_log_proba(data)
        np.testing.assert_allclose(np.exp(log_proba),
                                   theirs.predict_proba(data),
                                   rtol=1e-12, atol=1e-15)
    assert ours.score(X, y, sample_weight) == theirs.score(X, y,
                                                           sample_weight)


def test_problems_cover_every_option():
    seen = set()
    for seed in range(N_PROBLEMS):
        X, y, sample_weight, params, no_penalty, hits_limit, _ = \
            _problem(seed)
        seen.add(("sparse", sp.issparse(X)))
        seen.add(("intercept", params["fit_intercept"]))
        seen.add(("weights", None if sample_weight is None
                  else bool((sample_weight == 0).any())))
        seen.add(("class_weight", type(params["class_weight"]).__name__))
        seen.add(("labels", y.dtype.kind))
        seen.add(("no_penalty", no_penalty))
        seen.add(("limit", hits_limit))
        seen.add(("limit", hits_limit, sp.issparse(X)))
        seen.add(("labels", y.dtype.kind, sp.issparse(X)))
    assert seen >= {
        ("sparse", True), ("sparse", False),
        ("intercept", True), ("intercept", False),
        ("weights", None), ("weights", False), ("weights", True),
        ("class_weight", "NoneType"), ("class_weight", "str"),
        ("class_weight", "dict"),
        ("labels", "i"), ("labels", "U"), ("labels", "b"), ("labels", "f"),
        ("no_penalty", True), ("no_penalty", False),
        ("limit", True), ("limit", False),
        ("limit", True, True), ("limit", True, False),
        ("labels", "U", True), ("labels", "U", False),
    }
