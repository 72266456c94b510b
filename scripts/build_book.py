"""Build the course as a static HTML book (`make book`): book/_build/html/index.html.

    python scripts/build_book.py [--builder html]

1. A pinned MathJax (the npm registry's ``mathjax`` package) is installed once into
   book/_build/mathjax/ with npm, so that the pages render equations with no network.
2. The sources are staged into book/_build/src/: the pages of book/, the README, docs/, the
   figure gallery, data/README.md, the notebooks with their stored outputs, a page of the
   papers' figures and an API page listing every dhlib module. In the notebooks the otter-grader
   markers are removed and each exercise's solution, tests and written answer are folded.
3. ``sphinx-build -W`` (warnings are errors) writes book/_build/html/. Nothing is executed:
   the notebooks are read as they are stored (`make notebooks` re-executes them).

Staging only rewrites files that changed, so a second build is incremental.
"""
import argparse
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BUILD = BOOK / "_build"
STAGE = BUILD / "src"
MATHJAX_VERSION = "3.2.2"
MARKER = ".staged-by-build_book"    # build_book.py only ever removes files under a folder it made

# the gallery's figures in the order of the papers' argument, with their section titles
FIGURE_TITLES = {
    "toy_2d": "The idea on a 2-D toy",
    "qualitative_maps": "The three cues on test scenes",
    "score_distributions": "Inlier and anomaly scores per cue",
    "cue_ablation": "The cue ablation",
    "negatives_table": "Real, synthetic and mixed negatives",
}

# the raw cells of Otter Assign's format (see scripts/make_exercises.py)
OTTER_MARKS = ("# ASSIGNMENT CONFIG", "# BEGIN QUESTION", "# END QUESTION", "# BEGIN SOLUTION",
               "# END SOLUTION", "# BEGIN TESTS", "# END TESTS")


def mathjax_dir() -> Path:
    """The es5 folder of the pinned MathJax, installed with npm on first use."""
    prefix = BUILD / "mathjax"
    es5 = prefix / "node_modules" / "mathjax" / "es5"
    package = prefix / "node_modules" / "mathjax" / "package.json"
    if es5.is_dir() and json.loads(package.read_text())["version"] == MATHJAX_VERSION:
        return es5
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("error: npm is needed once to fetch MathJax for the book (the npm registry's "
                 f"'mathjax@{MATHJAX_VERSION}'). Install Node.js and npm "
                 "(Debian: apt-get install npm), then run `make book` again.")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
                    f"mathjax@{MATHJAX_VERSION}"], check=True)
    return es5


def fold(cell, label: str) -> None:
    """Hide a code cell's source behind a 'Show ...' toggle (myst-nb's hide-input tag)."""
    tags = cell.metadata.setdefault("tags", [])
    tags.append("hide-input")
    cell.metadata["mystnb"] = {"code_prompt_show": f"Show {label}", "code_prompt_hide": f"Hide {label}"}


def book_notebook(path: Path) -> str:
    """The notebook at ``path`` as the book shows it: otter's markers gone, answers folded."""
    nb = nbformat.read(path, as_version=4)
    cells, block = [], None
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0].strip()
        if cell.cell_type == "raw" and first in OTTER_MARKS:
            block = {"# BEGIN SOLUTION": "solution", "# BEGIN TESTS": "tests"}.get(first)
            continue
        if block == "solution" and cell.cell_type == "code":
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if line.strip() not in ("# BEGIN SOLUTION", "# END SOLUTION"))
            fold(cell, "the solution")
        elif block == "solution" and cell.cell_type == "markdown":
            # a written answer: an admonition that opens on a click (sphinx-togglebutton)
            answer = cell.source.strip().removeprefix("**Answer.**").strip()
            cell.source = f":::{{admonition}} Answer\n:class: dropdown\n\n{answer}\n:::"
        elif block == "tests" and cell.source.lstrip().startswith("# HIDDEN"):
            continue                      # the autograder's tests stay hidden, as for students
        elif block == "tests":
            fold(cell, "the tests")
        cells.append(cell)
    nb.cells = cells
    return nbformat.writes(nb)


def api_page() -> str:
    """A page with one autodoc section per module of dhlib, in import-path order."""
    import dhlib

    names = sorted(m.name for m in pkgutil.walk_packages(dhlib.__path__, "dhlib."))
    lines = ["# API reference", "",
             "The `dhlib` package, from its docstrings: one section per module.", ""]
    for name in ["dhlib", *names]:
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    return "\n".join(lines)


def figures_page() -> str:
    """A page of the committed gallery figures/paper/: every PNG with its caption file."""
    gallery = ROOT / "figures" / "paper"
    lines = ["# Figures of the papers", "",
             "Made by `python -m dhlib paper-figures` from the shipped model "
             "(see [the gallery's README](figures/paper/README.md)). Each caption holds the "
             "numbers measured for its figure.", ""]
    order = list(FIGURE_TITLES)
    rank = lambda png: (order.index(png.stem) if png.stem in order else len(order), png.stem)
    for png in sorted(gallery.glob("*.png"), key=rank):
        caption = png.with_suffix(".md")
        text = caption.read_text().strip() if caption.exists() else ""
        title = FIGURE_TITLES.get(png.stem, png.stem.replace("_", " ").capitalize())
        lines += [f"## {title}", "",
                  f"```{{figure}} figures/paper/{png.name}", f":alt: {png.stem}", "",
                  text, "```", ""]
    return "\n".join(lines)


def orphan(text: str) -> str:
    """A Markdown page that is linked to but in no table of contents."""
    return "---\norphan: true\n---\n\n" + text


def staged_sources() -> dict:
    """``{path in the staging folder: bytes or source Path}`` of every file of the book."""
    files = {p.relative_to(BOOK): p for p in BOOK.glob("*.md")}
    # the README's links into book/ point at the book's own pages, which sit at its root
    files[Path("README.md")] = (ROOT / "README.md").read_text().replace("](book/", "](").encode()
    files.update({p.relative_to(ROOT): p for p in (ROOT / "docs").glob("*.md")})
    files[Path("data/README.md")] = orphan((ROOT / "data" / "README.md").read_text()).encode()
    for path in sorted((ROOT / "figures" / "paper").iterdir()):
        rel = path.relative_to(ROOT)
        files[rel] = orphan(path.read_text()).encode() if path.suffix == ".md" else path
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files[path.relative_to(ROOT)] = book_notebook(path).encode()
    files[Path("paper_figures.md")] = figures_page().encode()
    files[Path("api.md")] = api_page().encode()
    return files


def sync(files: dict, es5: Path) -> None:
    """Write ``files`` and MathJax under STAGE, touching only what changed; drop stale files."""
    if STAGE.exists() and not (STAGE / MARKER).exists():
        sys.exit(f"error: {STAGE} exists but was not made by this script; move it away first.")
    STAGE.mkdir(parents=True, exist_ok=True)
    (STAGE / MARKER).touch()
    for rel, source in files.items():
        data = source.read_bytes() if isinstance(source, Path) else source
        dst = STAGE / rel
        if not dst.exists() or dst.read_bytes() != data:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
    mathjax, stamp = STAGE / "_static" / "mathjax", STAGE / "_static" / "mathjax.version"
    if not stamp.exists() or stamp.read_text() != MATHJAX_VERSION:   # a new pin replaces the copy
        shutil.rmtree(mathjax, ignore_errors=True)
        shutil.copytree(es5, mathjax)
        stamp.write_text(MATHJAX_VERSION)
    keep = {STAGE / rel for rel in files} | {STAGE / MARKER, stamp}
    for path in STAGE.rglob("*"):
        if path.is_file() and path not in keep and mathjax not in path.parents:
            path.unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builder", default="html", help="Sphinx builder (default: html)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sync(staged_sources(), mathjax_dir())
    out = BUILD / args.builder
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", args.builder,
               "-c", str(BOOK), str(STAGE), str(out)]
    result = subprocess.run(command)
    if result.returncode == 0:
        print(f"book written to {out / 'index.html'} "
              f"(open it with: python -m http.server -d {out.relative_to(ROOT)})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
