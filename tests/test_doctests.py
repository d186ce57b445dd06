"""Every docstring example runs, and every public function and class has
one.

The examples are what a reader copies first; doctest runs each module's,
so an example that no longer matches what the package prints fails here.
"""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import rlhf

SUBMODULES = ["rlhf.plot", "rlhf.datasets", "rlhf.sequences", "rlhf.text",
              "rlhf.text_world"]


def _modules():
    names = ["rlhf"] + [f"rlhf.{m.name}" for m in pkgutil.iter_modules(
        rlhf.__path__) if m.name not in ("__main__", "_core")]
    return sorted(set(names) | {"rlhf.datasets"})


def _public():
    """(qualified name, object) of every public function and class."""
    found = {}
    for module in [rlhf] + [importlib.import_module(m) for m in SUBMODULES]:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name == "rlhf.text_world"
    else name for name in _modules()])  # text_world's take seconds
def test_docstring_examples_run(name, monkeypatch, tmp_path):
    if name == "rlhf.plot":
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE
                             | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} examples failed in {name}"


def test_every_public_function_and_class_has_an_example():
    public = _public()
    assert len(public) > 40  # the walk found the API
    missing = sorted(name for name, obj in public.items()
                     if ">>>" not in (inspect.getdoc(obj) or ""))
    assert not missing, f"no example in the docstring of: {missing}"
