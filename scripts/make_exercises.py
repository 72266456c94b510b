"""Write the self-checking exercises of every master notebook with `otter assign`.

    python scripts/make_exercises.py [--out exercises] [notebooks/NN_*.ipynb ...]

A master notebook is a notebook of notebooks/ with a raw ``# ASSIGNMENT CONFIG`` cell (Otter
Assign's v1 format: questions ``nbNN_qK`` with ``# BEGIN SOLUTION`` and ``# BEGIN TESTS`` blocks).
For each one, `otter assign` runs into a temporary folder and the results are copied to

- ``<out>/student/``: the student notebook (solutions replaced by ``...``, outputs cleared,
  public tests in its metadata, so ``grader.check("nb00_q1")`` works offline), committed;
- ``<out>/autograder/``: the solutions notebook with the hidden tests too, git-ignored (a copy of
  the master with its outputs; regenerate it with this script).

The student notebook is normalised so that running this script twice gives identical files:
otter gives its new cells (init, check and answer cells) random ids and keeps the master's
execution timestamps in the cell metadata; ids become a hash of the cell's position and text,
and the timestamps are dropped.
"""
import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CONFIG_MARK = "# ASSIGNMENT CONFIG"


def is_master(path: Path) -> bool:
    """Whether ``path`` has a raw ``# ASSIGNMENT CONFIG`` cell."""
    nb = nbformat.read(path, as_version=4)
    return any(c.cell_type == "raw" and c.source.lstrip().startswith(CONFIG_MARK) for c in nb.cells)


def normalise(path: Path) -> None:
    """Rewrite the notebook at ``path`` without volatile metadata (random ids, timestamps)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        if "id" in cell:
            digest = hashlib.sha1(f"{i}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()
            cell["id"] = digest[:12]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


def assign(master: Path, out: Path) -> list[Path]:
    """Run `otter assign` on ``master`` and copy its outputs under ``out``; return the files."""
    from otter.assign import main as otter_assign   # imported here: `--help` works without otter

    written = []
    with tempfile.TemporaryDirectory() as tmp:
        # no_run_tests: otter's own check grades with the autograder zip, which the configs do
        # not generate (`generate: false`); tests/test_exercises.py checks the solutions instead
        otter_assign(str(master), str(Path(tmp) / "result"), no_pdfs=True, no_run_tests=True)
        for kind in ("student", "autograder"):
            src = Path(tmp) / "result" / kind
            for file in sorted(p for p in src.rglob("*") if p.is_file()):
                dst = out / kind / file.relative_to(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, dst)
                if kind == "student" and dst.suffix == ".ipynb":
                    normalise(dst)
                written.append(dst)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="master notebooks (default: every notebooks/*.ipynb with an "
                             "'# ASSIGNMENT CONFIG' cell)")
    parser.add_argument("--out", type=Path, default=ROOT / "exercises",
                        help="output folder (default: exercises/)")
    args = parser.parse_args(argv)
    masters = args.notebooks or [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
                                 if is_master(p)]
    if not masters:
        print("no master notebook (a raw '# ASSIGNMENT CONFIG' cell) found", file=sys.stderr)
        return 1
    for master in masters:
        for file in assign(master.resolve(), args.out.resolve()):
            print(f"{master.name} -> {file.relative_to(args.out.resolve().parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
