"""What rlhf.LogisticRegression accepts, and how it refuses the rest.

Refused input raises ValueError or TypeError whose message names the
argument; accepted array-likes fit exactly as the equivalent C-contiguous
float64 array; the caller's arrays are never written to.
"""
import copy

import numpy as np
import pytest

import rlhf

sp = pytest.importorskip("scipy.sparse")

N, D = 30, 3


def _data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(
        np.int64)
    y[:2] = [0, 1]
    return X, y


X0, Y0 = _data()


def _with(X, index, value, dtype=None):
    X = np.array(X, dtype=dtype)
    X[index] = value
    return X


def _object_X(value):
    X = X0.astype(object)
    X[1, 2] = value
    return X


# -- refused input to fit -----------------------------------------------------

# (id, X, y, sample_weight, exception, message pattern)
BAD_DATA = [
    ("X NaN", _with(X0, (3, 1), np.nan), Y0, None, ValueError,
     "X contains NaN"),
    ("X inf", _with(X0, (3, 1), np.inf), Y0, None, ValueError,
     "X contains infinity"),
    ("X -inf", _with(X0, (0, 0), -np.inf), Y0, None, ValueError,
     "X contains infinity"),
    ("X float32 NaN", _with(X0, (3, 1), np.nan, np.float32), Y0, None,
     ValueError, "X contains NaN"),
    ("sparse X NaN", sp.csr_matrix(_with(X0, (3, 1), np.nan)), Y0, None,
     ValueError, "X contains NaN"),
    ("sparse X inf", sp.csc_matrix(_with(X0, (3, 1), np.inf)), Y0, None,
     ValueError, "X contains infinity"),
    ("y NaN", X0, _with(Y0, 4, np.nan, float), None, ValueError,
     "y contains NaN"),
    ("y inf", X0, _with(Y0, 4, np.inf, float), None, ValueError,
     "y contains infinity"),
    ("y None among labels", X0, _with(Y0, 4, None, object), None, TypeError,
     "y mixes label types"),
    ("y float NaN in objects", X0, _with(Y0.astype(float), 4, np.nan, object),
     None, ValueError, "y contains NaN"),
    ("sample_weight NaN", X0, Y0, _with(np.ones(N), 5, np.nan), ValueError,
     "sample_weight contains NaN"),
    ("sample_weight inf", X0, Y0, _with(np.ones(N), 5, np.inf), ValueError,
     "sample_weight contains infinity"),
    ("X 1-d", X0[:, 0], Y0, None, ValueError,
     "2-dimensional array for X.*1-dimensional"),
    ("X 3-d", X0.reshape(N, D, 1), Y0, None, ValueError,
     "2-dimensional array for X.*3 dimensions"),
    ("X scalar", 1.0, Y0, None, ValueError, "2-dimensional array for X"),
    ("y too short", X0, Y0[:-1], None, ValueError,
     "X and y have inconsistent numbers of samples: X has 30, y has 29"),
    ("y too long", X0, np.r_[Y0, 1], None, ValueError,
     "X and y have inconsistent numbers of samples"),
    ("y 2-d", X0, np.c_[Y0, Y0], None, ValueError,
     r"y must be 1-dimensional.*\(30, 2\)"),
    ("y None", X0, None, None, ValueError, "target y is None"),
    ("sample_weight too short", X0, Y0, np.ones(N - 1), ValueError,
     r"sample_weight must have shape \(30,\), got \(29,\)"),
    ("sample_weight too long", X0, Y0, np.ones(N + 1), ValueError,
     r"sample_weight must have shape \(30,\)"),
    ("sample_weight 2-d", X0, Y0, np.ones((N, 1)), ValueError,
     r"sample_weight must have shape \(30,\), got \(30, 1\)"),
    ("sample_weight negative", X0, Y0, _with(np.ones(N), 2, -0.5),
     ValueError, "sample_weight must be non-negative.*-0.5"),
    ("sample_weight all zero", X0, Y0, np.zeros(N), ValueError,
     "sample_weight.*zero for every sample"),
    ("sample_weight strings", X0, Y0, np.array(["1"] * N), ValueError,
     "sample_weight must be numeric"),
    ("one class", X0, np.ones(N, int), None, ValueError,
     "y contains only one class: 1"),
    ("one string class", X0, np.array(["good"] * N), None, ValueError,
     "y contains only one class: 'good'"),
    ("one class of objects", X0, np.array(["good"] * N, dtype=object), None,
     ValueError, "y contains only one class: 'good'"),
    ("three classes", X0, np.arange(N) % 3, None, ValueError,
     r"Only binary classification is supported.*y has 3 classes, \[0, 1, 2\]"),
    ("continuous y", X0, np.linspace(0.0, 1.0, N), None, ValueError,
     "Unknown label type: continuous. y holds non-integer floats"),
    ("continuous y of objects", X0, np.linspace(0.0, 1.0, N).astype(object),
     None, ValueError, "Unknown label type: continuous"),
    ("X strings", X0.astype(str), Y0, None, ValueError,
     "X must be numeric, got an array of dtype <U"),
    ("X object strings", _object_X("high"), Y0, None, ValueError,
     "X must hold numbers.*could not convert string to float: 'high'"),
    ("X object dict", _object_X({"a": 1}), Y0, None, TypeError,
     "X must hold numbers.*argument must be a string or a real number"),
    # NumPy converts None to NaN, as scikit-learn's check_array does
    ("X object None", _object_X(None), Y0, None, ValueError,
     "X contains NaN"),
    ("X complex", X0 + 1j, Y0, None, ValueError,
     "Complex data not supported: X must be real"),
    ("sparse X complex", sp.csr_matrix(X0 + 1j), Y0, None, ValueError,
     "Complex data not supported: X must be real"),
    ("y complex", X0, Y0 + 0j, None, ValueError,
     "Complex data not supported: y"),
    ("X no rows", np.empty((0, D)), np.empty(0), None, ValueError,
     r"0 sample\(s\) \(shape=\(0, 3\)\).*required for X"),
    ("X no columns", np.empty((N, 0)), Y0, None, ValueError,
     r"0 feature\(s\) \(shape=\(30, 0\)\).*required for X"),
    ("sparse X no rows", sp.csr_matrix((0, D)), np.empty(0), None,
     ValueError, r"0 sample\(s\).*required for X"),
    ("sparse X no columns", sp.csr_matrix((N, 0)), Y0, None, ValueError,
     r"0 feature\(s\).*required for X"),
]


@pytest.mark.parametrize(
    "X, y, sample_weight, error, match",
    [case[1:] for case in BAD_DATA],
    ids=[case[0] for case in BAD_DATA],
)
def test_fit_refuses_bad_data(X, y, sample_weight, error, match):
    clf = rlhf.LogisticRegression()
    with pytest.raises(error, match=match):
        clf.fit(X, y, sample_weight=sample_weight)
    assert not hasattr(clf, "coef_") and not hasattr(clf, "classes_")


def _param_message(name):
    return f"The '{name}' parameter of LogisticRegression must be"


# (id, parameters, message pattern); all raise ValueError
BAD_PARAMS = [
    ("C zero", {"C": 0.0}, _param_message("C") + r" a float in \(0.0, inf\)"
     r"\. Got 0.0 instead"),
    ("C negative", {"C": -1}, _param_message("C") + ".*Got -1 instead"),
    ("C NaN", {"C": np.nan}, _param_message("C") + ".*Got nan instead"),
    ("C -inf", {"C": -np.inf}, _param_message("C")),
    ("C string", {"C": "1"}, _param_message("C") + ".*Got '1' instead"),
    ("C None", {"C": None}, _param_message("C")),
    ("tol zero", {"tol": 0.0}, _param_message("tol") + r" a float in \(0.0"),
    ("tol negative", {"tol": -1e-4}, _param_message("tol")),
    ("tol NaN", {"tol": np.nan}, _param_message("tol")),
    ("max_iter negative", {"max_iter": -1},
     _param_message("max_iter") + r" an int in \[0, inf\)"),
    ("max_iter float", {"max_iter": 100.0},
     _param_message("max_iter") + " an int.*Got 100.0 instead"),
    ("max_iter bool", {"max_iter": True}, _param_message("max_iter")),
    ("solver unknown", {"solver": "sag"},
     _param_message("solver") + " one of 'lbfgs', 'newton'. Got 'sag'"),
    ("penalty unknown", {"penalty": "l1"},
     _param_message("penalty") + " one of 'l2', None. Got 'l1'"),
    ("penalty string None", {"penalty": "none"}, _param_message("penalty")),
    ("compat unknown", {"compat": "1.3"},
     _param_message("compat") + " one of '1.2', '1.4', '1.7'. Got '1.3'"),
    ("compat float", {"compat": 1.2}, _param_message("compat")),
    ("fit_intercept int", {"fit_intercept": 1},
     _param_message("fit_intercept") + " an instance of bool. Got 1"),
    ("fit_intercept string", {"fit_intercept": "True"},
     _param_message("fit_intercept")),
    ("fit_intercept None", {"fit_intercept": None},
     _param_message("fit_intercept")),
    ("class_weight unknown string", {"class_weight": "auto"},
     _param_message("class_weight") + " a dict, 'balanced' or None"),
    ("class_weight list", {"class_weight": [1.0, 2.0]},
     _param_message("class_weight")),
    ("class_weight missing label", {"class_weight": {0: 1.0, 5: 2.0}},
     r"class_weight names labels that are not classes of y: \[5\]"),
    ("class_weight label of another type", {"class_weight": {"0": 1.0}},
     r"class_weight names labels that are not classes of y: \['0'\]"),
    ("class_weight negative", {"class_weight": {0: -1.0, 1: 1.0}},
     "class_weight values must be finite and non-negative"),
    ("class_weight NaN", {"class_weight": {0: np.nan}},
     "class_weight values must be finite and non-negative"),
    ("class_weight string value", {"class_weight": {0: "2"}},
     "class_weight values must be finite and non-negative"),
    ("class_weight all zero", {"class_weight": {0: 0.0, 1: 0.0}},
     "sample_weight \\(times class_weight\\) is zero for every sample"),
    ("verbose negative", {"verbose": -1}, _param_message("verbose")),
    ("n_jobs zero", {"n_jobs": 0}, _param_message("n_jobs")),
    ("n_jobs float", {"n_jobs": 2.0}, _param_message("n_jobs")),
]


@pytest.mark.parametrize(
    "params, match",
    [case[1:] for case in BAD_PARAMS],
    ids=[case[0] for case in BAD_PARAMS],
)
def test_fit_refuses_bad_parameters(params, match):
    clf = rlhf.LogisticRegression(**params)  # checked in fit, not here
    assert clf.get_params()[next(iter(params))] is next(iter(params.values()))
    with pytest.raises(ValueError, match=match):
        clf.fit(X0, Y0)
    assert not hasattr(clf, "coef_")


def test_balanced_class_weight_needs_weight_in_each_class():
    sample_weight = np.where(Y0 == 0, 0.0, 1.0)
    clf = rlhf.LogisticRegression(class_weight="balanced", compat="1.7")
    with pytest.raises(ValueError, match="class_weight='balanced'.*zero for "
                       "class 0.*sample_weight"):
        clf.fit(X0, Y0, sample_weight=sample_weight)
    labels = np.array(["bad", "good"], dtype=object)[Y0]
    with pytest.raises(ValueError, match="zero for class 'bad'"):
        clf.fit(X0, labels, sample_weight=sample_weight)
    # before 1.7, 'balanced' counted samples, not their weights
    rlhf.LogisticRegression(class_weight="balanced", compat="1.4").fit(
        X0, Y0, sample_weight=sample_weight)


def test_failed_refit_keeps_the_previous_fit():
    clf = rlhf.LogisticRegression().fit(X0, Y0)
    fitted = {k: copy.deepcopy(v) for k, v in vars(clf).items()
              if k.endswith("_")}
    for X, y, params in [
        (X0, np.arange(N) % 3, {}),
        (X0, Y0, {"class_weight": {7: 1.0}}),
        (X0, Y0, {"C": -1.0}),
        (_with(X0, (0, 0), np.nan), Y0, {}),
    ]:
        clf.set_params(**params)
        with pytest.raises(ValueError):
            clf.fit(X, y)
        clf.set_params(C=1.0, class_weight=None)
        assert {k for k in vars(clf) if k.endswith("_")} == set(fitted)
        for name, value in fitted.items():
            np.testing.assert_array_equal(getattr(clf, name), value)
        clf.predict(X0)


# -- refused input to prediction ----------------------------------------------

PREDICTIONS = ["decision_function", "predict", "predict_proba",
               "predict_log_proba"]


@pytest.mark.parametrize("method", PREDICTIONS + ["score"])
def test_predicting_before_fit_raises_not_fitted(method):
    clf = rlhf.LogisticRegression()
    args = (X0, Y0) if method == "score" else (X0,)
    with pytest.raises(rlhf.NotFittedError,
                       match="LogisticRegression instance is not fitted yet"):
        getattr(clf, method)(*args)
    with pytest.raises(ValueError):
        getattr(clf, method)(*args)
    with pytest.raises(AttributeError):
        getattr(clf, method)(*args)
    assert issubclass(rlhf.NotFittedError, ValueError)
    assert issubclass(rlhf.NotFittedError, AttributeError)


@pytest.fixture(scope="module")
def fitted():
    return rlhf.LogisticRegression().fit(X0, Y0)


BAD_PREDICT_X = [
    ("too few features", X0[:, :2], ValueError,
     "X has 2 features, but LogisticRegression is expecting 3 features"),
    ("too many features", np.c_[X0, X0], ValueError,
     "X has 6 features, but LogisticRegression is expecting 3 features"),
    ("sparse, too many features", sp.csr_matrix(np.c_[X0, X0[:, :1]]),
     ValueError, "X has 4 features, but LogisticRegression is expecting 3"),
    ("1-d", X0[0], ValueError, "2-dimensional array for X"),
    ("NaN", _with(X0, (2, 2), np.nan), ValueError, "X contains NaN"),
    ("inf", _with(X0, (2, 2), np.inf), ValueError, "X contains infinity"),
    ("strings", X0.astype(str), ValueError, "X must be numeric"),
    ("object dict", _object_X({}), TypeError, "X must hold numbers"),
    ("complex", X0 + 1j, ValueError, "Complex data not supported: X"),
    ("no rows", np.empty((0, D)), ValueError, r"0 sample\(s\).*for X"),
]


@pytest.mark.parametrize("method", PREDICTIONS)
@pytest.mark.parametrize(
    "X, error, match",
    [case[1:] for case in BAD_PREDICT_X],
    ids=[case[0] for case in BAD_PREDICT_X],
)
def test_prediction_refuses_bad_X(fitted, method, X, error, match):
    with pytest.raises(error, match=match):
        getattr(fitted, method)(X)


def test_score_refuses_bad_y_and_weights(fitted):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        fitted.score(X0, Y0[:-1])
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        fitted.score(X0, Y0, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        fitted.score(X0, Y0, sample_weight=_with(np.ones(N), 0, np.nan))


# -- accepted input ---------------------------------------------------------

def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


X_WIDE = np.random.default_rng(5).standard_normal((2 * N, 2 * D))
X_INT = np.random.default_rng(6).integers(-3, 4, (N, D))
X_BOOL = np.random.default_rng(7).random((N, D)) < 0.5
X_SPARSE = sp.csr_matrix(
    X0 * 2.0 * (np.random.default_rng(8).random((N, D)) < 0.5))


def _duplicated_csr():
    """CSR with a duplicate entry and unsorted indices (non-canonical)."""
    dense = X0.copy()
    rows, cols = np.nonzero(np.ones_like(dense))
    data = dense[rows, cols].copy()
    # split entry (0, 0) into two halves and reverse each row's order
    data[0] /= 2
    rows = np.r_[rows, 0]
    cols = np.r_[cols, 0]
    data = np.r_[data, dense[0, 0] / 2]
    order = np.lexsort((-cols, rows))
    matrix = sp.csr_matrix((data[order], cols[order],
                            np.r_[0, np.cumsum(np.bincount(rows))]),
                           shape=dense.shape)
    assert not matrix.has_canonical_format
    return matrix


# (id, X as passed, the C-contiguous float64 X it stands for)
ACCEPTED_X = [
    ("float64 C", X0, X0),
    ("list", X0.tolist(), X0),
    ("ints", X_INT, X_INT.astype(np.float64)),
    ("int32", X_INT.astype(np.int32), X_INT.astype(np.float64)),
    ("bools", X_BOOL, X_BOOL.astype(np.float64)),
    ("list of bools", X_BOOL.tolist(), X_BOOL.astype(np.float64)),
    ("float32", X0.astype(np.float32), X0.astype(np.float32).astype(float)),
    ("Fortran", np.asfortranarray(X0), X0),
    ("rows [::2]", X_WIDE[::2, :D], np.ascontiguousarray(X_WIDE[::2, :D])),
    ("columns [:, ::2]", X_WIDE[:N, ::2],
     np.ascontiguousarray(X_WIDE[:N, ::2])),
    ("transposed", np.ascontiguousarray(X0.T).T, X0),
    ("reversed", X0[::-1], np.ascontiguousarray(X0[::-1])),
    ("read-only", _read_only(X0), X0),
    ("read-only Fortran", _read_only(np.asfortranarray(X0)), X0),
    ("object of floats", X0.astype(object), X0),
    ("CSR", X_SPARSE, X_SPARSE.toarray()),
    ("CSC", X_SPARSE.tocsc(), X_SPARSE.toarray()),
    ("COO", X_SPARSE.tocoo(), X_SPARSE.toarray()),
    ("csr_array", sp.csr_array(X_SPARSE), X_SPARSE.toarray()),
    ("CSR float32", X_SPARSE.astype(np.float32),
     X_SPARSE.astype(np.float32).toarray().astype(float)),
    ("CSR int", sp.csr_matrix(X_INT), X_INT.astype(np.float64)),
    ("CSR non-canonical", _duplicated_csr(), X0),
    ("dense as CSR", sp.csr_matrix(X0), X0),
]


def _snapshot(value):
    """Everything about an input that fit/predict must leave alone."""
    if sp.issparse(value):
        return ("sparse", value.format, value.shape, value.dtype,
                value.data.copy(), value.data.flags.writeable,
                getattr(value, "indices", None) is not None
                and value.indices.copy(),
                getattr(value, "indptr", None) is not None
                and value.indptr.copy(),
                getattr(value, "coords", None) is not None
                and tuple(c.copy() for c in value.coords))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.copy(order="A"), value.dtype, value.shape,
                value.strides, value.flags.writeable,
                value.flags.c_contiguous, value.flags.f_contiguous)
    return ("other", copy.deepcopy(value))


def _assert_same_snapshot(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1:], after[1:]):
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        elif isinstance(a, tuple):
            for a_part, b_part in zip(a, b):
                np.testing.assert_array_equal(a_part, b_part)
        else:
            assert a == b


def _fit_summary(clf):
    return np.r_[clf.coef_.ravel(), clf.intercept_]


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize(
    "X, X_reference",
    [case[1:] for case in ACCEPTED_X],
    ids=[case[0] for case in ACCEPTED_X],
)
def test_accepted_X_fits_as_float64(X, X_reference, solver):
    assert X_reference.dtype == np.float64
    y = Y0
    reference = rlhf.LogisticRegression(solver=solver).fit(
        np.ascontiguousarray(X_reference), y)
    before = _snapshot(X)
    clf = rlhf.LogisticRegression(solver=solver).fit(X, y)
    np.testing.assert_allclose(_fit_summary(clf), _fit_summary(reference),
                               rtol=1e-12, atol=1e-14)
    assert clf.n_iter_[0] == reference.n_iter_[0]
    for method in PREDICTIONS:
        np.testing.assert_allclose(getattr(clf, method)(X),
                                   getattr(reference, method)(X_reference),
                                   rtol=1e-12, atol=1e-14)
    assert clf.score(X, y) == reference.score(X_reference, y)
    _assert_same_snapshot(before, _snapshot(X))


WEIGHTS = np.random.default_rng(9).uniform(0.5, 2.0, 2 * N)

# (id, y, sample_weight, the y and sample_weight they stand for)
ACCEPTED_Y_WEIGHTS = [
    ("list y", Y0.tolist(), None, Y0, None),
    ("float y", Y0.astype(float), None, Y0, None),
    ("int8 y", Y0.astype(np.int8), None, Y0, None),
    ("read-only y", _read_only(Y0), None, Y0, None),
    ("strided y", np.repeat(Y0, 2)[::2], None, Y0, None),
    ("list weights", Y0, WEIGHTS[:N].tolist(), Y0, WEIGHTS[:N]),
    ("float32 weights", Y0, WEIGHTS[:N].astype(np.float32), Y0,
     WEIGHTS[:N].astype(np.float32).astype(float)),
    ("int weights", Y0, np.arange(N) % 3 + 1, Y0,
     (np.arange(N) % 3 + 1).astype(float)),
    ("strided weights", Y0, WEIGHTS[::2], Y0,
     np.ascontiguousarray(WEIGHTS[::2])),
    ("read-only weights", Y0, _read_only(WEIGHTS[:N]), Y0, WEIGHTS[:N]),
    ("scalar weight", Y0, 2.5, Y0, np.full(N, 2.5)),
]


@pytest.mark.parametrize("compat", ["1.2", "1.7"])
@pytest.mark.parametrize(
    "y, sample_weight, y_reference, weight_reference",
    [case[1:] for case in ACCEPTED_Y_WEIGHTS],
    ids=[case[0] for case in ACCEPTED_Y_WEIGHTS],
)
def test_accepted_y_and_weights_fit_as_float64(y, sample_weight, y_reference,
                                               weight_reference, compat):
    reference = rlhf.LogisticRegression(compat=compat).fit(
        X0, y_reference, sample_weight=weight_reference)
    before = (_snapshot(y), _snapshot(sample_weight))
    clf = rlhf.LogisticRegression(compat=compat).fit(
        X0, y, sample_weight=sample_weight)
    np.testing.assert_allclose(_fit_summary(clf), _fit_summary(reference),
                               rtol=1e-12, atol=1e-14)
    assert clf.n_iter_[0] == reference.n_iter_[0]
    assert clf.score(X0, y, sample_weight) == pytest.approx(
        reference.score(X0, y_reference, weight_reference), abs=1e-15)
    after = (_snapshot(y), _snapshot(sample_weight))
    for a, b in zip(before, after):
        _assert_same_snapshot(a, b)


def test_column_vector_y_warns_and_fits_as_1d():
    reference = rlhf.LogisticRegression().fit(X0, Y0)
    with pytest.warns(rlhf.DataConversionWarning, match="column-vector y"):
        clf = rlhf.LogisticRegression().fit(X0, Y0[:, None])
    np.testing.assert_array_equal(_fit_summary(clf), _fit_summary(reference))


def test_labels_of_any_type():
    for labels in [("bad", "good"), (False, True), (-1.0, 1.0), (3, 10)]:
        y = np.array(labels)[Y0]
        clf = rlhf.LogisticRegression().fit(X0, y)
        np.testing.assert_array_equal(clf.classes_, labels)
        reference = rlhf.LogisticRegression().fit(X0, Y0)
        np.testing.assert_array_equal(_fit_summary(clf),
                                      _fit_summary(reference))
        np.testing.assert_array_equal(clf.predict(X0),
                                      np.array(labels)[reference.predict(X0)])


def test_fit_does_not_write_into_a_float64_c_array():
    """The no-copy path: the kernels see the caller's own buffer."""
    X, y = X0.copy(), Y0.copy()
    weights = WEIGHTS[:N].copy()
    assert X.flags.c_contiguous and X.flags.writeable
    for solver in ("lbfgs", "newton"):
        clf = rlhf.LogisticRegression(solver=solver,
                                      class_weight="balanced").fit(
            X, y, sample_weight=weights)
        for method in PREDICTIONS:
            getattr(clf, method)(X)
        clf.score(X, y, sample_weight=weights)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, Y0)
    np.testing.assert_array_equal(weights, WEIGHTS[:N])
    assert X.flags.writeable and y.flags.writeable and weights.flags.writeable


def test_dataframe_with_mixed_column_name_types_is_refused():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X0, columns=["a", "b", 2])
    with pytest.raises(TypeError, match=r"columns of X have the types "
                       r"\['int', 'str'\]"):
        rlhf.LogisticRegression().fit(frame, Y0)
    # no string names at all: fitted without names, as scikit-learn does
    clf = rlhf.LogisticRegression().fit(pd.DataFrame(X0), Y0)
    assert not hasattr(clf, "feature_names_in_")


def test_dataframe_input_unchanged():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X0, columns=["a", "b", "c"])
    series = pd.Series(Y0)
    frame_before, series_before = frame.copy(deep=True), series.copy(deep=True)
    clf = rlhf.LogisticRegression().fit(frame, series)
    clf.predict_proba(frame)
    pd.testing.assert_frame_equal(frame, frame_before)
    pd.testing.assert_series_equal(series, series_before)
    reference = rlhf.LogisticRegression().fit(X0, Y0)
    np.testing.assert_allclose(_fit_summary(clf), _fit_summary(reference),
                               rtol=1e-12, atol=1e-14)


# -- convergence ------------------------------------------------------------

@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_iteration_limit_warns(solver, sparse):
    X = sp.csr_matrix(X0) if sparse else X0
    with pytest.warns(rlhf.ConvergenceWarning,
                      match=f"{solver} failed to converge.*max_iter"):
        clf = rlhf.LogisticRegression(solver=solver, max_iter=1).fit(X, Y0)
    assert clf.n_iter_.tolist() == [1]
    assert clf.n_iter_.dtype == np.int32
    assert issubclass(rlhf.ConvergenceWarning, UserWarning)


def test_converged_fit_does_not_warn():
    # pytest turns every warning into an error here
    clf = rlhf.LogisticRegression(max_iter=1000).fit(X0, Y0)
    assert 0 < clf.n_iter_[0] < 1000
