"""Parameter handling compatible with scikit-learn, without importing it.

An estimator's parameters are exactly the keyword arguments of its
``__init__``, stored unchanged under the same names; ``get_params`` and
``set_params`` read and write them, which is all ``sklearn.base.clone``,
``Pipeline`` and ``GridSearchCV`` need.

What ``fit`` learns is stored under public names ending in ``_``; asking
for one of them before ``fit`` raises ``NotFittedError`` (an
``AttributeError`` too, so ``hasattr`` and ``getattr(est, name, default)``
work as before).
"""
import inspect
from typing import Any, Dict

from .exceptions import NotFittedError, sklearn_twin


class ParamsMixin:
    def __getattr__(self, name):
        # only called when normal lookup failed.  Private and special
        # names (copy, pickle and IPython probe __setstate__,
        # __deepcopy__, _repr_html_ ...) get the plain AttributeError;
        # a public name ending in "_" is a fitted attribute, missing
        # because fit has not run -- or, once it has, because this fit
        # does not set it (feature_names_in_ without a DataFrame)
        if name.startswith("_") or not name.endswith("_"):
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}")
        fitted = any(key.endswith("_") and not key.startswith("__")
                     for key in self.__dict__)
        if fitted:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}: "
                "this fit did not set it.")
        raise sklearn_twin(NotFittedError)(
            f"This {type(self).__name__} instance is not fitted yet: "
            f"{name!r} is set by fit. Call 'fit' with appropriate arguments "
            "before using this estimator.")

    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind != p.VAR_KEYWORD
        )

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """Parameters of this estimator, as a dict name -> value."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "ParamsMixin":
        """Set parameters by name; returns self."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator "
                    f"{type(self).__name__}. Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            same = value is default
            if not same:
                try:
                    same = bool(value == default) and type(value) is type(
                        default)
                except Exception:
                    same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"
