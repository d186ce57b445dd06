"""Warnings and errors raised by rlhf."""


class ConvergenceWarning(UserWarning):
    """A solver stopped before its convergence test was met."""


class DataConversionWarning(UserWarning):
    """Input was converted to the shape or type an estimator needs."""


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before fit (a ValueError and an AttributeError,
    as scikit-learn's NotFittedError)."""
