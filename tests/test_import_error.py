"""The ImportError of a package without its compiled module says what to do.

Each case imports a copy of rlhf's Python files (no compiled module) as a
source checkout would, in a fresh interpreter without site-packages (-S), so
the installed rlhf of the test environment plays no part.  .ci/wheel checks
the shadowing case once more against a real wheel installed in a venv.
"""
import importlib.machinery
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import rlhf

PACKAGE = pathlib.Path(rlhf.__file__).parent


def make_checkout(root):
    """A source checkout: rlhf's Python files, no compiled module."""
    package = root / "rlhf"
    package.mkdir(parents=True)
    for source in PACKAGE.glob("*.py"):
        shutil.copy(source, package / source.name)
    assert not [p for p in package.iterdir() if p.name.startswith("_core.")]
    return root


def make_install(site, compiled=True):
    """An installed rlhf in the directory site: Python files and, if
    compiled, a file named as the extension module would be (never loaded)."""
    make_checkout(site)
    if compiled:
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        (site / "rlhf" / ("_core" + suffix)).write_bytes(b"")
    (site / "rlhf_lab-0.1.0.dist-info").mkdir()
    return site / "rlhf"


def import_error(cwd, extra_path=None):
    """stderr of `import rlhf` run in cwd, with extra_path appended to
    sys.path; the import must fail."""
    code = "import sys\n"
    if extra_path is not None:
        code += f"sys.path.append({str(extra_path)!r})\n"
    code += "import rlhf\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd,
                            env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0, result.stdout
    assert "ImportError" in result.stderr
    return result.stderr


def test_missing_module_says_how_to_build_it(tmp_path):
    checkout = make_checkout(tmp_path / "checkout")
    message = import_error(checkout)
    assert "rlhf._core is missing" in message
    assert "Build it with `pip install .`" in message
    assert "shadows" not in message


def test_checkout_shadowing_an_install_says_so(tmp_path):
    checkout = make_checkout(tmp_path / "checkout")
    installed = make_install(tmp_path / "site")
    message = import_error(checkout, extra_path=installed.parent)
    assert (f"you are importing rlhf from the source checkout at "
            f"{os.path.realpath(checkout)}, which shadows the installed "
            f"rlhf-lab at {os.path.realpath(installed)}") in message
    assert "`pip install -e .`" in message
    assert "Build it with" not in message


def test_install_without_compiled_module_is_not_blamed(tmp_path):
    # another package named rlhf (the name on PyPI is not ours), or one
    # that failed to build: the checkout's module is simply missing
    checkout = make_checkout(tmp_path / "checkout")
    other = make_install(tmp_path / "site", compiled=False)
    message = import_error(checkout, extra_path=other.parent)
    assert "Build it with `pip install .`" in message
    assert "shadows" not in message


@pytest.mark.parametrize("entry", ["", "."])
def test_checkout_is_not_taken_for_its_own_install(tmp_path, entry):
    # the checkout reached through the current directory under another
    # spelling of sys.path is still the checkout, not an install
    checkout = make_checkout(tmp_path / "checkout")
    message = import_error(checkout, extra_path=entry)
    assert "Build it with `pip install .`" in message
    assert "shadows" not in message
