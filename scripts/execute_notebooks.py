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


def execute(path: Path, timeout: int = 600, attempts: int = 3) -> None:
    """Run ``path`` in a fresh kernel; a cell that hangs past ``timeout`` seconds (a lost
    kernel reply, seen now and then with nbclient) restarts the notebook, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            break
        except TimeoutError as err:
            if attempt == attempts:
                raise
            print(f"{path}: {err}; running it again ({attempt + 1}/{attempts})", flush=True)
    nb.metadata.pop("widgets", None)
    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    print(f"executed {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    os.environ.setdefault("DHLIB_PROFILE", "quick")
    for name in sys.argv[1:] or sorted(map(str, Path("notebooks").glob("*.ipynb"))):
        execute(Path(name))
