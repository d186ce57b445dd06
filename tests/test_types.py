"""The public API is annotated, and mypy agrees with the annotations.

Every function, class constructor and public method reachable from
``rlhf.__all__`` and the public submodules carries a type for each of its
parameters and for its return value; ``py.typed`` ships, so these
annotations are what a user's type checker and editor see.
"""
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rlhf

ROOT = Path(__file__).resolve().parents[1]
SUBMODULES = ["rlhf.plot", "rlhf.datasets", "rlhf.sequences", "rlhf.text",
              "rlhf.text_world"]


def _public_objects():
    """(qualified name, object) of every public function, class and
    method of the public API."""
    seen, found = set(), []
    modules = [rlhf] + [importlib.import_module(m) for m in SUBMODULES]
    for module in modules:
        names = getattr(module, "__all__", None) or [
            n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            if not getattr(obj, "__module__", "").startswith("rlhf"):
                continue  # re-exported from elsewhere (typing, numpy)
            seen.add(id(obj))
            if inspect.isfunction(obj):
                found.append((f"{obj.__module__}.{name}", obj))
            elif inspect.isclass(obj):
                if issubclass(obj, (Exception, Warning)):
                    continue
                found.extend(_methods(obj))
    return found


def _methods(cls):
    out = []
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        elif isinstance(attr, property):
            attr = attr.fget
        if inspect.isfunction(attr):
            out.append((f"{cls.__module__}.{cls.__name__}.{name}", attr))
    return out


def _missing(func):
    """Parameters (and 'return') without an annotation."""
    signature = inspect.signature(func)
    missing = [p.name for i, p in enumerate(signature.parameters.values())
               if p.annotation is inspect.Parameter.empty
               and not (i == 0 and p.name in ("self", "cls"))]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_the_public_api_is_found():
    names = {name for name, _ in _public_objects()}
    # a few that must be there, so that the walk itself is checked
    for expected in ["rlhf.reward.RewardModel.fit", "rlhf.policy.reweight",
                     "rlhf.tinylm.TinyLM.generate",
                     "rlhf.optimize.PPO.__init__", "rlhf.plot.policy_bars"]:
        assert expected in names
    assert len(names) > 100


def test_every_public_signature_is_annotated():
    unannotated = {name: _missing(func) for name, func in _public_objects()
                   if _missing(func)}
    assert not unannotated, (
        f"{len(unannotated)} public callables lack annotations: "
        + "; ".join(f"{k} ({', '.join(v)})"
                    for k, v in sorted(unannotated.items())))


def test_py_typed_ships():
    assert (ROOT / "rlhf" / "py.typed").exists()
    assert (ROOT / "rlhf" / "_core.pyi").exists()


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_mypy_passes_on_the_package():
    if shutil.which("mypy") is None and importlib.util.find_spec(
            "mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "rlhf"], cwd=ROOT,
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
