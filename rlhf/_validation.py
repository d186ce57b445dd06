"""Input checks shared by every estimator and function of rlhf.

Messages follow scikit-learn's shape: they name the argument, say what was
expected and what arrived.
"""
import math
import numbers
import warnings

import numpy as np

from .exceptions import DataConversionWarning, NotFittedError, sklearn_twin


def _is_sparse(x):
    """True for scipy.sparse matrices and arrays, without importing SciPy."""
    return hasattr(x, "tocsr") and hasattr(x, "nnz") and hasattr(x, "format")


def _feature_names(X):
    """Column names of a DataFrame when they are all strings, else None."""
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(list(columns), dtype=object)
    is_str = [isinstance(n, str) for n in names]
    if len(names) and all(is_str):
        return names
    if any(is_str):
        kinds = sorted({type(n).__name__ for n in names})
        raise TypeError(
            "Feature names are only supported if all input features have "
            f"string names, but the columns of X have the types {kinds}. "
            "Convert them all to strings (X.columns = X.columns.astype(str)) "
            "or none of them."
        )
    return None


def _check_finite(values, name):
    # one pass and no temporary: NaN and infinity make the sum non-finite;
    # only then (or when finite values overflow it) look element by element
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(values)
    if np.isfinite(total):
        return
    if not np.isfinite(values).all():
        what = "NaN" if np.isnan(values).any() else "infinity"
        raise ValueError(
            f"Input {name} contains {what}; every value must be finite."
        )


def check_finite_values(X, name="X"):
    """Raise the ValueError of check_array when X (dense or sparse) holds a
    NaN or an infinity; return None otherwise."""
    _check_finite(X.data if _is_sparse(X) else X, name)


def _as_float_array(values, name):
    """float64 ndarray of numeric input; a clear error for anything else."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return np.asarray(arr, dtype=np.float64)
    if arr.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {name} must be real, got "
            f"{arr.dtype} values."
        )
    if arr.dtype.kind in "USV":
        raise ValueError(
            f"{name} must be numeric, got an array of dtype {arr.dtype}."
        )
    # object arrays (lists of mixed values, DataFrames of objects) are
    # converted element by element; numpy's message names the culprit
    # value and ours the argument, and the type of error is numpy's
    # (TypeError for a dict, ValueError for a string), as scikit-learn's
    try:
        return np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{name} must hold numbers; converting it to float64 failed: "
            f"{error}"
        ) from error


def check_array(X, name="X", *, accept_sparse=True, ensure_2d=True,
                min_samples=1, check_finite=True):
    """Validate a design matrix.

    With check_finite=False the caller takes over the NaN/infinity check
    (a kernel that reads X anyway and reports non-finite results, followed
    by check_finite_values for the message).

    Returns a C-contiguous float64 ndarray (the input itself when it already
    is one; never a view that is then written to) or, for scipy.sparse
    input, a canonical CSR matrix of float64 with int64 indices.
    """
    if _is_sparse(X):
        if not accept_sparse:
            raise TypeError(f"{name} must be dense; got a sparse matrix.")
        X = X.tocsr()
        if X.dtype.kind == "c":
            raise ValueError(
                f"Complex data not supported: {name} must be real, got "
                f"{X.dtype} values."
            )
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {X.dtype}.")
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional.")
        X = X.astype(np.float64, copy=False)
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        if check_finite:
            _check_finite(X.data, name)
        n_samples, n_features = X.shape
    else:
        X = _as_float_array(X, name)
        if ensure_2d:
            if X.ndim == 0:
                raise ValueError(
                    f"Expected a 2-dimensional array for {name}, got a scalar."
                )
            if X.ndim == 1:
                raise ValueError(
                    f"Expected a 2-dimensional array for {name}, got a "
                    f"1-dimensional array of shape {X.shape}. Reshape your "
                    "data with X.reshape(-1, 1) if it has a single feature "
                    "or X.reshape(1, -1) if it is a single sample."
                )
            if X.ndim > 2:
                raise ValueError(
                    f"Expected a 2-dimensional array for {name}, got "
                    f"{X.ndim} dimensions."
                )
        if check_finite:
            _check_finite(X, name)
        X = np.ascontiguousarray(X)
        n_samples = X.shape[0]
        n_features = X.shape[1] if X.ndim == 2 else 1
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while "
            f"a minimum of {min_samples} is required for {name}."
        )
    if ensure_2d and n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum "
            f"of 1 is required for {name}."
        )
    return X


def check_labels(y, n_samples):
    """A 1-d label array of length n_samples (a column vector is accepted
    with a DataConversionWarning)."""
    if y is None:
        raise ValueError("y must be given; got None.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. "
            "Please change the shape of y to (n_samples,), for example "
            "using ravel().",
            sklearn_twin(DataConversionWarning),
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(
            f"y must be 1-dimensional, got an array of shape {y.shape}."
        )
    if y.shape[0] != n_samples:
        raise ValueError(
            f"X and y have inconsistent numbers of samples: X has "
            f"{n_samples}, y has {y.shape[0]}."
        )
    if y.dtype.kind == "f":
        _check_finite(y, "y")
    if y.dtype.kind == "c":
        raise ValueError(
            "Complex data not supported: y must hold class labels, got "
            f"{y.dtype} values."
        )
    if y.dtype.kind == "O":
        kinds = {type(v) for v in y}
        if len(kinds) > 1 and not all(
            issubclass(k, numbers.Real) for k in kinds
        ):
            raise TypeError(
                "y mixes label types "
                f"({', '.join(sorted(k.__name__ for k in kinds))}); use "
                "labels of one type."
            )
        if any(isinstance(v, float) and not np.isfinite(v) for v in y):
            raise ValueError("Input y contains NaN or infinity.")
    return y


def check_sample_weight(sample_weight, n_samples):
    """float64 weights of length n_samples, finite and non-negative."""
    if sample_weight is None:
        return np.ones(n_samples)
    if isinstance(sample_weight, numbers.Number) and not isinstance(
            sample_weight, bool):
        sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
    else:
        sample_weight = _as_float_array(sample_weight, "sample_weight")
    if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), got "
            f"{sample_weight.shape}."
        )
    _check_finite(sample_weight, "sample_weight")
    if (sample_weight < 0).any():
        raise ValueError(
            "sample_weight must be non-negative; got a minimum of "
            f"{format_value(sample_weight.min())}."
        )
    return sample_weight


def format_value(value):
    """repr(value) for a message, with a NumPy scalar shown as the Python
    number it holds: NumPy 2 writes np.float64(-0.1) where a user wrote
    -0.1."""
    if isinstance(value, np.generic):
        return repr(value.item())
    if type(value) is dict:
        return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}"
                               for k, v in value.items()) + "}"
    if type(value) in (list, tuple):
        items = [format_value(v) for v in value]
        if type(value) is list:
            return "[" + ", ".join(items) + "]"
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return repr(value)


def check_scalar(value, name, owner, *, kind="float", low=None, high=None,
                 low_open=False, high_open=False):
    """A number within bounds, with a scikit-learn style message; returns
    it as a Python float (kind='float') or int (kind='int').

    One rule for every scalar parameter: a float is any numbers.Real but
    bool (int, float, fractions.Fraction, NumPy's integer and floating
    scalars); an int is any numbers.Integral but bool.  decimal.Decimal is
    not a numbers.Real (it does not mix with float arithmetic) and is
    refused, as scikit-learn refuses it.  The bounds apply to the float
    the value converts to, which is what the computation uses, so a
    Fraction too small for a float is not taken for a positive number.
    Infinity passes only when high is None and closed: pass high=np.inf,
    high_open=True to require a finite float.
    """
    number = None
    if kind == "int":
        what = "an int"
        if isinstance(value, numbers.Integral) and not isinstance(
                value, bool):
            number = int(value)
    else:
        what = "a float"
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int or a Fraction beyond float range
                number = None
            if number is not None and not math.isfinite(number) and not (
                    number == math.inf and high is None and not high_open):
                number = None
    ok = number is not None
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        lo = "-inf" if low is None else format_value(low)
        hi = "inf" if high is None else format_value(high)
        left = "(" if (low is None or low_open) else "["
        right = ")" if (high is None or high_open) else "]"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be {what} in "
            f"{left}{lo}, {hi}{right}. Got {format_value(value)} instead."
        )
    return number


def check_option(value, name, owner, options):
    if not any(value is o or (o is not None and isinstance(value, str)
                              and value == o) for o in options):
        shown = ", ".join(repr(o) for o in options)
        raise ValueError(
            f"The '{name}' parameter of {owner} must be one of {shown}. "
            f"Got {format_value(value)} instead."
        )
    return value


def check_is_fitted(estimator, attribute):
    if not hasattr(estimator, attribute):
        raise sklearn_twin(NotFittedError)(
            f"This {type(estimator).__name__} instance is not fitted yet. "
            "Call 'fit' with appropriate arguments before using this "
            "estimator."
        )


#: The most entries of an array whose size a parameter sets (16 GiB of
#: float64): the policy table of SFT, the samples PPO draws per iteration,
#: the features of a world.  Beyond it a size is far more likely a mistake
#: than a request, and refusing it names the parameter instead of failing
#: in the allocation (or, for sizes beyond 2**63, in NumPy's conversion).
MAX_TABLE_ENTRIES = 2**31


#: The most iterations a kernel counts (its counters are C ints).  A larger
#: max_iter means "no limit" in practice and is clamped to this, as
#: scikit-learn accepts max_iter=2**31 for LogisticRegression.
MAX_KERNEL_ITER = 2**31 - 1


def kernel_max_iter(max_iter):
    """max_iter as the C int a kernel takes: clamped to MAX_KERNEL_ITER."""
    return min(int(max_iter), MAX_KERNEL_ITER)


def max_threads():
    """The most threads a kernel may be asked for: four per core and at
    least 16.  More only slows the work down, and asking the OpenMP
    runtime for thousands can kill the process when thread creation
    fails (libgomp exits instead of reporting an error)."""
    import os
    return max(16, 4 * (os.cpu_count() or 1))


def check_n_threads(value, name, owner, *, low=1):
    """A thread count in [low, max_threads()] (None is left to the
    caller): a ValueError naming the limit otherwise."""
    return check_scalar(value, name, owner, kind="int", low=low,
                        high=max_threads())
