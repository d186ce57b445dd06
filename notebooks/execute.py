"""Re-execute notebooks in place, in full mode, as they are stored.

    python notebooks/execute.py                       # all of them
    python notebooks/execute.py 04_safety.ipynb ...   # some

Each notebook runs top to bottom in a fresh python3 kernel started in
notebooks/, with RLHF_NOTEBOOK_QUICK unset and the checkout's rlhf first on
the kernel's path.  Before saving, the progress bars of long fits are
removed: they go to stderr as lines redrawn with a carriage return, and
their timings differ on every run.  The script says which cells now print
other text than before (stdout and text results), so a change that was not
meant shows up before it is committed.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
# a live widget's output: its text/plain is a stand-in, as a figure's is
WIDGET = "application/vnd.jupyter.widget-view+json"


def strip_progress_bars(notebook):
    """Drop the stderr outputs that draw a progress bar, in place.

    A bar is drawn as stderr stream outputs that start with a carriage
    return, then one that ends its line ("\\n"); other stderr output (a
    warning) is kept.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept, in_bar = [], False
        for output in cell.outputs:
            is_stderr = (output.output_type == "stream"
                         and output.name == "stderr")
            if is_stderr and output.text.startswith("\r"):
                in_bar = True
                continue
            if is_stderr and in_bar and output.text == "\n":
                in_bar = False
                continue
            kept.append(output)
        cell.outputs = kept


def printed_text(notebook):
    """{cell index: stdout and text results}, to report what changed."""
    texts = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        parts = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                data = output.get("data", {})
                if not any(key.startswith("image/") or key == WIDGET
                           for key in data):
                    parts.append(data.get("text/plain", ""))
        texts[index] = "".join(parts)
    return texts


def execute(path):
    notebook = nbformat.read(path, as_version=4)
    before = printed_text(notebook)
    env = dict(os.environ)
    env.pop("RLHF_NOTEBOOK_QUICK", None)
    # no automatic progress bars (tqdm's widget or a line on stderr): they
    # appear or not with the machine's speed; a reader running the notebook
    # sees them
    env["RLHF_PROGRESS"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    client = NotebookClient(notebook, kernel_name="python3", timeout=1200,
                            record_timing=False,  # no timestamps in the metadata
                            resources={"metadata": {"path": str(HERE)}})
    start = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - start
    strip_progress_bars(notebook)
    nbformat.write(notebook, path)
    after = printed_text(notebook)
    changed = [index for index in after if after[index] != before.get(index)]
    status = (f"printed text changed in cells {changed}" if changed
              else "printed text unchanged")
    print(f"{path.name}: {seconds:.0f} s, {status}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help="notebook file names in notebooks/ (default: all)")
    names = parser.parse_args(argv).names
    paths = [HERE / name for name in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            sys.exit(f"error: no notebook {path}")
        execute(path)


if __name__ == "__main__":
    main()
