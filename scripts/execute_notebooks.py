"""Execute notebooks top to bottom in quick mode and store them with their outputs.

    python scripts/execute_notebooks.py notebooks/*.ipynb

Widget state is dropped (it is large and only a running kernel can use it); figures are
kept as PNG outputs. Each notebook is written back atomically.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 1200) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nb.metadata.pop("widgets", None)
    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    print(f"executed {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    os.environ.setdefault("DHLIB_PROFILE", "quick")
    for name in sys.argv[1:] or sorted(map(str, Path("notebooks").glob("*.ipynb"))):
        execute(Path(name))
