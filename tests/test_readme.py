"""The README's Python examples run, and print what the README says.

Each ```python block is executed in a fresh namespace; a comment line
``# ...`` right after a line that calls print() is the output that call
must produce.
"""
import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # seconds for the larger examples

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _expected_output(code):
    lines = code.splitlines()
    expected = []
    for before, line in zip(lines, lines[1:]):
        if "print(" in before and line.startswith("# "):
            expected.append(line[2:])
    return expected


def test_readme_has_examples():
    blocks = _blocks()
    assert len(blocks) >= 2
    assert all(_expected_output(code) for code in blocks)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_prints_what_it_says(index):
    code = _blocks()[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md block {index}", "exec"), {})
    assert out.getvalue().splitlines() == _expected_output(code)
