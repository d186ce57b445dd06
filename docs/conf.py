"""Sphinx configuration for the rlhf documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``
from the repository root, after ``pip install -e '.[docs]'``.  The build
imports the installed package (autodoc), renders the notebooks from the
outputs stored in them (it never runs them) and needs no network.
"""
import importlib
import inspect
import re
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

import rlhf

project = "rlhf"
author = "the rlhf developers"
copyright = "the rlhf developers, BSD-3-Clause"
release = rlhf.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]

# The notebooks live in notebooks/ at the top of the repository; docs/notebooks
# is a symbolic link to it (kept in git), so the pages are built from the same
# files the tests execute, never from a copy.
exclude_patterns = [
    "_build",
    "jupyter_execute",
    "notebooks/README.md",   # summarised by notebooks.rst instead
    "**.ipynb_checkpoints",
]
templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}
root_doc = "index"

# -- notebooks (myst-nb) ---------------------------------------------------
# Stored outputs only: a docs build must not take minutes or need a kernel.
nb_execution_mode = "off"
nb_merge_streams = True          # the kernel sometimes splits one print in two
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# -- API reference (autodoc, autosummary, numpydoc) -------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False   # a submodule's page lists its __all__

# The public submodules, each on a page generated from its __all__ by
# _templates/autosummary/module.rst (api/index.rst lists them too).
PUBLIC_SUBMODULES = ["active", "annotate", "datasets", "evaluation", "plot",
                     "sequences", "text", "text_world"]


def _reexported():
    """Per submodule, the names also exported by ``rlhf`` itself.

    They are documented once, under ``rlhf.<name>``; the submodule's page
    links to them instead of documenting them a second time.
    """
    shared = {}
    for sub in PUBLIC_SUBMODULES:
        module = importlib.import_module(f"rlhf.{sub}")
        shared[module.__name__] = [
            name for name in getattr(module, "__all__", [])
            if name in rlhf.__all__
            and getattr(rlhf, name) is getattr(module, name)]
    return shared


autosummary_context = {"reexported": _reexported()}
autodoc_default_options = {"members": True}
autodoc_typehints = "none"       # the numpydoc sections carry the types
numpydoc_show_class_members = False   # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# Docstrings are checked for what makes them wrong or unreadable: unknown
# or misordered sections, parameters documented that the signature does not
# have or in another order, malformed parameter lines, a missing summary.
# Not (yet) for what they leave out (every parameter, Returns, See Also,
# Examples): many data classes document their fields as Attributes.
numpydoc_validation_checks = {
    "GL05", "GL06", "GL07", "GL09", "GL10",   # tabs, sections, directives
    "SS01", "SS03",                           # a summary, ending with a period
    "PR02", "PR03", "PR05", "PR10",           # parameters as in the signature
}

# -- HTML ------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"rlhf {release}"
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
# pages with no section to navigate get the full width
html_sidebars = {"index": [], "getting_started": []}

# MathJax is loaded by the reader's browser when a page with math is opened;
# the build itself fetches nothing.


# -- checks and cross-references ------------------------------------------
_logger = logging.getLogger("rlhf-docs")
_HERE = Path(__file__).parent


def _check_api_coverage(app):
    """Warn (an error under -W) about public names the reference misses.

    Every name in ``rlhf.__all__`` must be listed in api/index.rst (the
    submodules among them in its Submodules section), and every constant in
    a public submodule's ``__all__`` needs a docstring, without which
    autosummary leaves it out of the module's page.
    """
    listed = set(re.findall(r"^   ~?([A-Za-z_][\w.]*)\s*$",
                            (_HERE / "api" / "index.rst").read_text(),
                            flags=re.MULTILINE))
    for name in rlhf.__all__:
        if name not in listed:
            _logger.warning(
                f"rlhf.{name} is in rlhf.__all__ but not in the API "
                "reference: add it to an autosummary list in "
                "docs/api/index.rst")
    for sub in PUBLIC_SUBMODULES:
        module = importlib.import_module(f"rlhf.{sub}")
        documented = {attr for (scope, attr)
                      in ModuleAnalyzer.for_module(module.__name__)
                      .find_attr_docs() if not scope}
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if not (callable(value) or inspect.ismodule(value)
                    or name in documented):
                _logger.warning(
                    f"{module.__name__}.{name} is in __all__ but has no "
                    "docstring (a string literal on the line after it), "
                    "so the API reference cannot show it")


def _resolve_reexported(app, env, node, contnode):
    """Resolve ``:func:`soft_optimal_policy``` written inside a submodule.

    Docstrings refer to names by their short form; where that name is
    documented as ``rlhf.<name>`` (a re-export), link there.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module = node.get("py:module") or ""
    if module and target.startswith(module + "."):
        target = target[len(module) + 1:]
    if target.split(".")[0] not in rlhf.__all__:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder,
                               node["reftype"], f"rlhf.{target}", node,
                               contnode)


def setup(app):
    app.connect("builder-inited", _check_api_coverage)
    app.connect("missing-reference", _resolve_reexported)
