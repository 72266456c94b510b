"""The examples in dhlib's docstrings run, and print what they say they print.

Every module of the package is found on disk (a package that is a folder is found too) and
run through ``doctest``; ``make test`` collects this file with the rest of ``tests/``, so no
``--doctest-modules`` arrangement is needed. Importing every module must need neither a GPU
nor a dataset: the last test imports them all in a fresh interpreter that sees no GPU and
whose project root is an empty folder.
"""
import doctest
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(importlib.util.find_spec("dhlib").origin).parent


def _module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _module_names()


def _run_doctests(name: str) -> tuple[doctest.TestResults, str]:
    import matplotlib
    matplotlib.use("Agg")  # dhlib.viz imports pyplot
    module = importlib.import_module(name)
    finder, report = doctest.DocTestFinder(), []
    runner = doctest.DocTestRunner(verbose=False)
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    return runner.summarize(verbose=False), "".join(report)


def test_every_module_is_listed():
    assert "dhlib.config" in MODULES and "dhlib.train" in MODULES and "dhlib.__main__" in MODULES
    assert len(MODULES) >= 30, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name):
    result, report = _run_doctests(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed:\n{report}"


def test_config_doctests_actually_run():
    """A doctest runner that found nothing would pass everything: count the examples."""
    result, _ = _run_doctests("dhlib.config")
    assert result.attempted >= 6 and result.failed == 0  # load_profile, crop_hw, parse_override's four, ...


def test_a_wrong_example_fails():
    """The runner used above does report a failing example (it is not a test that cannot fail)."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    runner, report = doctest.DocTestRunner(verbose=False), []
    runner.run(test, out=report.append)
    assert runner.summarize(verbose=False) == doctest.TestResults(1, 1) and "Expected" in "".join(report)


def test_importing_every_module_needs_no_gpu_and_no_data(tmp_path):
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", DHLIB_ROOT=str(tmp_path), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    env.pop("DHLIB_PROFILE", None)
    result = subprocess.run([sys.executable, "-c", code, *MODULES], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(tmp_path.iterdir()), "importing a module wrote into the project root"
