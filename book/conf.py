"""Sphinx configuration of the DenseHybrid Lab book (`make book`).

scripts/build_book.py stages the sources (this folder, the README, docs/, the notebooks with
their stored outputs, the figure gallery and an API page) into book/_build/src/ and builds them
with this file. Everything the pages load is local: the book must open with no network at all.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # autodoc imports dhlib from this checkout

project = "DenseHybrid Lab"
author = "DenseHybrid Lab"
copyright = "DenseHybrid Lab contributors"

extensions = [
    "myst_nb",                    # the notebooks and Markdown pages
    "sphinx.ext.autodoc",         # the API reference from dhlib's docstrings
    "sphinx.ext.mathjax",
    "sphinx_togglebutton",        # folded solutions and answers
]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks are read with the outputs they were stored with (`make notebooks` executes
# them); the book never runs a kernel.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
# A package's __all__ re-exports members that its own module documents: list each object once.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
# torchvision's docstrings of overridden transform methods point into torchvision's own docs.
autodoc_inherit_docstrings = False
autodoc_typehints = "description"

# MathJax from the pinned npm copy that build_book.py puts in _static/mathjax, not from a CDN
mathjax_path = "mathjax/tex-chtml.js"
html_static_path = [str(ROOT / "book" / "_build" / "src" / "_static")]

html_theme = "sphinx_book_theme"
html_title = "DenseHybrid Lab"
html_theme_options = {
    # no launch buttons (Binder, Colab, Thebe): they need a network the book must not assume
    "launch_buttons": {},
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 2,
}
html_last_updated_fmt = None
# the theme's colour mode must be named (an empty one is a console error); a favicon of our
# own spares the browser a request for /favicon.ico that a static server answers with 404
html_context = {"default_mode": "light"}
html_favicon = "favicon.svg"
