"""Binary logistic regression, a drop-in for scikit-learn's.

``rlhf.LogisticRegression`` fits the same objective with the same solver
rules as ``sklearn.linear_model.LogisticRegression(solver='lbfgs')`` so that
its coefficients, intercept and iteration count are scikit-learn's, digit
for digit; the work is done by C kernels on the caller's NumPy buffers.
"""
import numbers
import warnings
from collections.abc import Mapping
from typing import Any, Optional, Union

import numpy as np

from . import _core
from ._base import ParamsMixin
from ._typing import ArrayLike, FloatArray, NDArray
from ._validation import (
    _feature_names,
    _is_sparse,
    check_array,
    check_finite_values,
    check_is_fitted,
    check_labels,
    check_n_threads,
    check_option,
    check_sample_weight,
    check_scalar,
    format_value,
    kernel_max_iter,
    max_threads,
)
from .exceptions import ConvergenceWarning, sklearn_twin

__all__ = ["LogisticRegression"]

_EPS = np.finfo(np.float64).eps

# What each scikit-learn generation passes to SciPy's L-BFGS-B (see DESIGN.md).
_COMPAT = {
    # the objective is a sum; ftol and maxls are SciPy's defaults
    "1.2": {"mean": False, "ftol": 2.220446049250313e-09, "maxls": 20,
            "weighted_balance": False},
    # the objective is divided by the sum of sample weights
    "1.4": {"mean": True, "ftol": 64 * _EPS, "maxls": 50,
            "weighted_balance": False},
    # as 1.4; class_weight='balanced' counts samples by their sample_weight
    "1.7": {"mean": True, "ftol": 64 * _EPS, "maxls": 50,
            "weighted_balance": True},
}

_NEWTON_GTOL = 1e-10
_NEWTON_MAX_PARAMS = 4096

_STOPS = {
    0: "the largest gradient component fell below tol",
    1: "the relative decrease of the objective fell below ftol",
    2: "the iteration limit max_iter was reached",
    3: "the line search found no acceptable step",
}


def _as_kernel_matrix(X):
    """The kernel's view of X: the ndarray, or a CSR tuple."""
    if _is_sparse(X):
        return (X.data, X.indices.astype(np.int64, copy=False),
                X.indptr.astype(np.int64, copy=False), X.shape[1])
    return X


def _encode_labels(y):
    """np.unique(y, return_inverse=True), in O(n) for the common case of
    numeric labels taking exactly two values (no sort of y)."""
    if y.dtype.kind in "biuf" and y.size:
        lo, hi = y.min(), y.max()
        if lo != hi:
            positive = y == hi
            n_positive = np.count_nonzero(positive)
            if n_positive + np.count_nonzero(y == lo) == y.size:
                return np.array([lo, hi], dtype=y.dtype), positive.astype(np.intp)
    classes, y_index = np.unique(y, return_inverse=True)
    return classes, y_index.ravel()


def _is_continuous(classes):
    """True when the labels are numbers that are not all whole (a
    regression target), as scikit-learn's type_of_target 'continuous'."""
    if classes.dtype.kind == "f":
        return bool((classes != np.round(classes)).any())
    if classes.dtype.kind == "O":
        return any(
            isinstance(c, numbers.Real) and not isinstance(c, numbers.Integral)
            and c != np.round(c)
            for c in classes
        )
    return False


def _log_expit(z):
    """log(1 / (1 + exp(-z))) without overflow or cancellation."""
    return -np.logaddexp(0.0, -z)


class LogisticRegression(ParamsMixin):
    """Binary logistic regression with scikit-learn's lbfgs, in C.

    Minimises, with ``l(z, y) = log(1 + exp(z)) - y z`` and ``z = x.w + b``,

    - ``compat='1.2'`` (default): ``sum_i s_i l(z_i, y_i) + ||w||^2 / (2C)``,
      stopped as scikit-learn 1.2 stops (SciPy's L-BFGS-B defaults:
      ``ftol = 2.22e-9``, at most 20 evaluations per line search). These
      are the numbers most published notebooks print.
    - ``compat='1.4'``: the same divided by ``S = sum_i s_i``, with
      ``ftol = 64 eps`` and 50 evaluations per line search, as
      scikit-learn 1.4 to 1.6.
    - ``compat='1.7'``: as ``'1.4'``, except that ``class_weight='balanced'``
      counts each sample with its ``sample_weight``, as scikit-learn 1.7 and
      later.

    The intercept ``b`` is not penalised; ``s_i`` is the sample weight times
    the class weight.

    Parameters
    ----------
    penalty : {'l2', None}, default='l2'
        ``None`` drops the ``||w||^2`` term (same as ``C=inf``).
    C : float in (0, inf], default=1.0
        Inverse of the regularisation strength.
    tol : float > 0, default=1e-4
        lbfgs stops when the largest gradient component is at most ``tol``.
        Ignored by ``solver='newton'``, which goes to the optimum.
    fit_intercept : bool, default=True
    class_weight : dict, 'balanced' or None, default=None
        Weights by class label, multiplied into ``sample_weight``;
        ``'balanced'`` uses ``n_samples / (2 * count(class))``.
    max_iter : int >= 0, default=100
        Any int is accepted; the kernel counts at most ``2**31 - 1``
        iterations (``n_iter_`` says how many ran), as scikit-learn accepts
        ``max_iter=2**31``.
    solver : {'lbfgs', 'newton'}, default='lbfgs'
        ``'lbfgs'``: limited-memory BFGS exactly as scikit-learn runs it.
        ``'newton'``: Newton's method with a Cholesky factorisation of the
        ``(n_features + 1)^2`` Hessian and a backtracking line search, to
        the exact optimum (largest gradient component below ``1e-10`` times
        its size at the start).
    verbose : int, default=0
        When positive, print how the solver stopped.
    n_jobs : int or None, default=None
        Threads for the dense kernels (``None`` or ``-1``: all), at most
        ``max(16, 4 * cores)``; results do not depend on it.
    compat : {'1.2', '1.4', '1.7'}, default='1.2'
        Which scikit-learn's lbfgs to reproduce.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    n_iter_ : ndarray of shape (1,), int32
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Only when X was a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> import rlhf
    >>> X = np.array([[0.8, 0.4], [-0.8, -0.4], [0.1, 0.7], [-0.1, -0.7]])
    >>> clf = rlhf.LogisticRegression().fit(X, [1, 0, 1, 0])
    >>> clf.predict([[1.0, 1.0]])
    array([1])
    """

    def __init__(self, penalty: Optional[str] = "l2", *, C: float = 1.0,
                 tol: float = 1e-4, fit_intercept: bool = True,
                 class_weight: Union[str, Mapping[Any, float], None] = None,
                 max_iter: int = 100, solver: str = "lbfgs", verbose: int = 0,
                 n_jobs: Optional[int] = None, compat: str = "1.2") -> None:
        self.penalty = penalty
        self.C = C
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.solver = solver
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.compat = compat

    # -- scikit-learn integration ------------------------------------------

    _estimator_type = "classifier"

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=ClassifierTags(multi_class=False),
            input_tags=InputTags(sparse=True),
        )

    def _more_tags(self):
        return {"binary_only": True}

    # -- fitting -----------------------------------------------------------

    def _validate_params(self):
        owner = type(self).__name__
        check_option(self.penalty, "penalty", owner, ["l2", None])
        check_scalar(self.C, "C", owner, low=0.0, low_open=True)
        check_scalar(self.tol, "tol", owner, low=0.0, low_open=True)
        check_scalar(self.max_iter, "max_iter", owner, kind="int", low=0)
        check_scalar(self.verbose, "verbose", owner, kind="int", low=0)
        check_option(self.solver, "solver", owner, ["lbfgs", "newton"])
        check_option(self.compat, "compat", owner, list(_COMPAT))
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(
                f"The 'fit_intercept' parameter of {owner} must be an "
                "instance of bool. Got "
                f"{format_value(self.fit_intercept)} instead."
            )
        cw = self.class_weight
        if not (cw is None or isinstance(cw, dict)
                or (isinstance(cw, str) and cw == "balanced")):
            raise ValueError(
                f"The 'class_weight' parameter of {owner} must be a dict, "
                f"'balanced' or None. Got {format_value(cw)} instead."
            )
        self._n_threads()

    def _n_threads(self):
        """n_jobs as the kernel's thread count (0: the OpenMP default)."""
        n_jobs = self.n_jobs
        if n_jobs is None or (isinstance(n_jobs, numbers.Integral)
                              and not isinstance(n_jobs, bool)
                              and n_jobs == -1):
            return 0
        try:
            return check_n_threads(n_jobs, "n_jobs", type(self).__name__)
        except ValueError:
            raise ValueError(
                f"The 'n_jobs' parameter of {type(self).__name__} must be "
                f"None, -1 or an int in [1, {max_threads()}] (at most four "
                f"threads per core). Got {format_value(n_jobs)} instead."
            ) from None

    def _class_weights(self, classes, y_index, sample_weight, user_weight):
        """Per-class weights (length 2, in the order of classes),
        scikit-learn's rules."""
        cw = self.class_weight
        weights = np.ones(2)
        if cw is None:
            return weights
        if isinstance(cw, str):
            if _COMPAT[self.compat]["weighted_balance"] and user_weight:
                counts = np.bincount(y_index, weights=sample_weight,
                                     minlength=2)
                total = sample_weight.sum()
            else:
                counts = np.bincount(y_index, minlength=2).astype(float)
                total = float(len(y_index))
            if not (counts > 0).all():
                empty = classes.tolist()[np.flatnonzero(~(counts > 0))[0]]
                raise ValueError(
                    "class_weight='balanced' divides by the summed "
                    "sample_weight of each class, which is zero for class "
                    f"{format_value(empty)}; give its samples a positive "
                    "sample_weight or pass class_weight as a dict."
                )
            return total / (2 * counts)
        missing = []
        for label, weight in cw.items():
            where = np.flatnonzero(classes == label)
            if len(where) == 0:
                missing.append(label)
            elif isinstance(weight, numbers.Real):
                weights[where[0]] = weight
            else:
                weights[where[0]] = np.nan  # reported below
        if missing:
            raise ValueError(
                f"class_weight names labels that are not classes of y: "
                f"{missing}. The classes of y are {classes.tolist()}."
            )
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(
                "class_weight values must be finite and non-negative; got "
                f"{format_value(cw)}."
            )
        return weights

    def fit(self, X: Any, y: ArrayLike,
            sample_weight: Optional[ArrayLike] = None) -> "LogisticRegression":
        """Fit the model.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Two distinct labels of any type; the larger (in sorted order) is
            the positive class.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        self._validate_params()
        names = _feature_names(X)
        # NaN and infinity in X are caught by the solver's first evaluation,
        # which reads X anyway (from w = 0 every non-finite entry makes the
        # objective NaN); the message then comes from the usual check
        X = check_array(X, check_finite=False)
        n_samples, n_features = X.shape
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the "
                "target y is None."
            )
        y = check_labels(y, n_samples)
        classes, y_index = _encode_labels(y)
        if _is_continuous(classes):
            raise ValueError(
                "Unknown label type: continuous. y holds non-integer "
                "floats; a classifier needs class labels."
            )
        if len(classes) < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the "
                "data, but y contains only one class: "
                f"{format_value(classes.tolist()[0])}." if len(classes) else
                "y contains no class at all."
            )
        if len(classes) > 2:
            raise ValueError(
                "Only binary classification is supported. The type of the "
                f"target is multiclass: y has {len(classes)} classes, "
                f"{classes[:5].tolist()}{' ...' if len(classes) > 5 else ''}. "
                "Use one model per class (one-vs-rest) for more."
            )
        user_weight = sample_weight is not None
        sample_weight = check_sample_weight(sample_weight, n_samples)
        # fitted attributes are set only once the fit has succeeded, so a
        # failed refit leaves the previous fit whole
        sample_weight = sample_weight * self._class_weights(
            classes, y_index, sample_weight, user_weight)[y_index]

        # a fit without data is no fit (and divides by zero for compat
        # '1.4' and later), whatever scikit-learn generation is imitated
        total = sample_weight.sum()
        if not total > 0:
            raise ValueError(
                "sample_weight (times class_weight) is zero for every "
                "sample; at least one sample needs a positive weight."
            )
        compat = _COMPAT[self.compat]
        C = float(self.C)
        no_penalty = self.penalty is None or C == np.inf
        alpha = 0.0 if no_penalty else 1.0 / C
        scale = 1.0
        if compat["mean"]:
            scale = 1.0 / total
            alpha = alpha / total
        n_params = n_features + (1 if self.fit_intercept else 0)
        if self.solver == "newton" and n_params > _NEWTON_MAX_PARAMS:
            raise ValueError(
                f"solver='newton' forms a dense ({n_params} x {n_params}) "
                f"Hessian; with more than {_NEWTON_MAX_PARAMS - 1} features "
                "use solver='lbfgs'."
            )
        n_threads = self._n_threads()
        gtol = _NEWTON_GTOL if self.solver == "newton" else float(self.tol)
        try:
            w, loss, grad, n_iter, n_fev, status = _core.logistic_fit(
                _as_kernel_matrix(X),
                (y_index == 1).astype(np.float64),
                sample_weight,
                bool(self.fit_intercept),
                scale,
                alpha,
                self.solver,
                gtol,
                compat["ftol"],
                kernel_max_iter(self.max_iter),
                compat["maxls"],
                n_threads=n_threads,
            )
        except ValueError:
            check_finite_values(X, "X")
            raise
        self.classes_ = classes
        self.coef_ = w[:n_features].reshape(1, n_features)
        self.intercept_ = (w[n_features:] if self.fit_intercept
                           else np.zeros(1))
        # the iterations that ran: at most max_iter, and at most the
        # kernel's limit when max_iter is beyond it
        self.n_iter_ = np.array([min(n_iter, kernel_max_iter(self.max_iter))],
                                dtype=np.int32)
        self.n_features_in_ = n_features
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if self.verbose:
            print(f"{type(self).__name__}: {self.solver} stopped after "
                  f"{n_iter} iterations and {n_fev} evaluations: "
                  f"{_STOPS[status]} (objective {loss:.10g}).")
        if status >= 2:
            warnings.warn(
                f"{self.solver} failed to converge: {_STOPS[status]} after "
                f"{n_iter} iterations. Increase max_iter, scale the data, or "
                "use solver='newton'.",
                sklearn_twin(ConvergenceWarning),
                stacklevel=2,
            )
        return self

    # -- prediction --------------------------------------------------------

    def _check_X(self, X):
        check_is_fitted(self, "coef_")
        names = _feature_names(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if fitted_names is not None and names is not None:
            if len(names) != len(fitted_names) or (names != fitted_names).any():
                raise ValueError(
                    "The feature names should match those that were passed "
                    "during fit: X has columns "
                    f"{list(names)}, fit saw {list(fitted_names)}."
                )
        elif fitted_names is not None and names is None:
            warnings.warn(
                f"X does not have valid feature names, but "
                f"{type(self).__name__} was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )
        elif fitted_names is None and names is not None:
            warnings.warn(
                f"X has feature names, but {type(self).__name__} was fitted "
                "without feature names",
                UserWarning,
                stacklevel=3,
            )
        X = check_array(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input."
            )
        return X

    def decision_function(self, X: Any) -> FloatArray:
        """Scores ``X @ coef_.T + intercept_``, shape (n_samples,).

        Positive scores predict ``classes_[1]``.
        """
        X = self._check_X(X)
        if _is_sparse(X):
            scores = X @ self.coef_.T + self.intercept_
        else:
            # einsum, not BLAS: the same bits for any number of threads
            scores = np.einsum("ij,kj->ik", X, self.coef_) + self.intercept_
        return np.asarray(scores).ravel()

    def predict(self, X: Any) -> NDArray[Any]:
        """Predicted labels, shape (n_samples,)."""
        # scores first: an unfitted model must raise NotFittedError, not
        # the AttributeError of a missing classes_
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(np.intp)]

    def predict_proba(self, X: Any) -> FloatArray:
        """Class probabilities, shape (n_samples, 2), in ``classes_`` order."""
        positive = np.exp(_log_expit(self.decision_function(X)))
        return np.column_stack([1.0 - positive, positive])

    def predict_log_proba(self, X: Any) -> FloatArray:
        """Log class probabilities, computed without underflow."""
        z = self.decision_function(X)
        return np.column_stack([_log_expit(-z), _log_expit(z)])

    def score(self, X: Any, y: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Mean accuracy on (X, y), weighted by sample_weight."""
        predicted = self.predict(X)
        y = check_labels(y, len(predicted))
        weight = check_sample_weight(sample_weight, len(predicted))
        return float(np.average(predicted == y, weights=weight))
