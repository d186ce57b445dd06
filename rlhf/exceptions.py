"""Warnings and errors raised by rlhf.

rlhf never imports scikit-learn, so these classes cannot derive from
scikit-learn's statically. Where scikit-learn is loaded anyway, code written
for it filters or catches scikit-learn's classes
(``warnings.filterwarnings('ignore', category=sklearn.exceptions.
ConvergenceWarning)``, ``except sklearn.exceptions.NotFittedError``); rlhf
then raises ``sklearn_twin(cls)``, a subclass of both, so that such code and
scikit-learn's own checks treat rlhf's estimators as its own.
"""
import functools
import sys


class ConvergenceWarning(UserWarning):
    """A solver stopped before its convergence test was met.

    Examples
    --------
    >>> import warnings, rlhf
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = rlhf.LogisticRegression(max_iter=1).fit(
    ...         [[0.0], [1.0], [2.0], [3.0]], [0, 1, 0, 1])
    >>> [w.category.__name__ for w in caught]
    ['ConvergenceWarning']
    """


class DataConversionWarning(UserWarning):
    """Input was converted to the shape or type an estimator needs.

    Examples
    --------
    Labels as a column vector are read as a flat one, with a warning:

    >>> import warnings, rlhf
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = rlhf.LogisticRegression().fit(
    ...         [[0.0], [1.0], [2.0], [3.0]], [[0], [1], [0], [1]])
    >>> [w.category.__name__ for w in caught]
    ['DataConversionWarning']
    """


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before fit (a ValueError and an AttributeError,
    as scikit-learn's NotFittedError).

    Examples
    --------
    >>> import rlhf
    >>> try:
    ...     rlhf.RewardModel().predict([[1.0, 0.0]])
    ... except rlhf.NotFittedError as error:
    ...     print(error)
    This RewardModel instance is not fitted yet. Call 'fit' with \
appropriate arguments before using this estimator.
    """


_TWINNED = (ConvergenceWarning, DataConversionWarning, NotFittedError)


@functools.cache
def _joint_class(cls, sklearn_cls):
    # named _Sklearn<Name> in this module, where __getattr__ finds it again
    # for pickle; shown as <Name>, as both parents are
    return type(
        cls.__name__,
        (cls, sklearn_cls),
        {
            "__module__": __name__,
            "__qualname__": "_Sklearn" + cls.__name__,
            "__doc__": cls.__doc__,
        },
    )


def sklearn_twin(cls):
    """cls, or a subclass of cls and of scikit-learn's class of the same
    name when scikit-learn is already imported (it is not imported here)."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    sklearn_cls = getattr(sklearn_exceptions, cls.__name__, None)
    if sklearn_cls is None:
        return cls
    return _joint_class(cls, sklearn_cls)


def __getattr__(name):
    # lets pickle load a twin in a process that has not made it yet
    for cls in _TWINNED:
        if name == "_Sklearn" + cls.__name__:
            import sklearn.exceptions

            return _joint_class(cls, getattr(sklearn.exceptions, cls.__name__))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
