"""The otter-grader exercises (`make exercises`): the committed student notebooks are what the
masters generate, and every question's tests pass on the master's solution and fail on the
student's stub.

Each question runs in a fresh namespace holding only the master's first code cell (the imports)
and the question's own code cells, so no notebook is executed here.
"""
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("otter", reason="otter-grader (the dev extra) is not installed")
import yaml  # noqa: E402  (a dependency of otter-grader)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_exercises  # noqa: E402

MASTERS = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if make_exercises.is_master(p)]
STUDENT = ROOT / "exercises" / "student"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`otter assign` of every master into a temporary folder (about 3 s a notebook)."""
    out = tmp_path_factory.mktemp("exercises")
    for master in MASTERS:
        make_exercises.assign(master, out)
    return out


def questions(nb):
    """``{name: {"config": dict, "solution": [code], "tests": [code]}}`` of a master notebook."""
    found, name, block = {}, None, None
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0].strip() if cell.cell_type == "raw" else ""
        if first == "# BEGIN QUESTION":
            config = yaml.safe_load(cell.source.split("\n", 1)[1])
            name = config["name"]
            found[name] = {"config": config, "solution": [], "tests": []}
        elif first == "# END QUESTION":
            name = None
        elif first in ("# BEGIN SOLUTION", "# BEGIN TESTS"):
            block = first.split()[-1].lower()
        elif first in ("# END SOLUTION", "# END TESTS"):
            block = None
        elif name and block and cell.cell_type == "code":
            found[name]["solution" if block == "solution" else "tests"].append(cell.source)
    return found


def stubs(nb):
    """``{name: [code]}``: the student's answer cells before each ``grader.check(name)`` cell."""
    found, pending = {}, []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.source.startswith("grader.check("):
            found[cell.source.split('"')[1]] = pending
            pending = []
        elif "otter_answer_cell" in cell.metadata.get("tags", []):
            pending.append(cell.source)
    return found


def imports_cell(nb):
    return next(c.source for c in nb.cells if c.cell_type == "code")


def namespace(setup, cells):
    """A fresh namespace after running ``setup`` and ``cells`` (a stub may print, or fail)."""
    env = {"__name__": "__main__"}
    exec(compile(setup, "<imports>", "exec"), env)
    for source in cells:
        exec(compile(source, "<question cell>", "exec"), env)
    return env


def check(notebook, question, env, tmp_path):
    """``grader.check(question)`` of otter on a copy of ``notebook`` (its metadata tests)."""
    import otter

    shutil.copy(notebook, tmp_path / notebook.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)   # otter reads the notebook and writes its .OTTER_LOG here
        result = otter.Notebook(notebook.name).check(question, global_env=env)
    return result


CASES = [(m, q) for m in MASTERS
         for q, spec in questions(nbformat.read(m, as_version=4)).items() if spec["tests"]]


def test_a_master_exists():
    assert MASTERS, "no notebook with an '# ASSIGNMENT CONFIG' cell"
    names = [q for m in MASTERS for q in questions(nbformat.read(m, as_version=4))]
    assert len(names) == len(set(names)), "question names must be unique across the course"
    for master in MASTERS:
        prefix = f"nb{master.name[:2]}_q"
        assert all(q.startswith(prefix) for q in questions(nbformat.read(master, as_version=4)))


def test_every_notebook_has_two_coded_questions():
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert notebook in MASTERS, f"{notebook.name} has no '# ASSIGNMENT CONFIG' cell"
        coded = [q for q, spec in questions(nbformat.read(notebook, as_version=4)).items() if spec["tests"]]
        assert len(coded) >= 2, f"{notebook.name} has {len(coded)} coded question(s): {coded}"


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_committed_student_notebook_is_regenerated_identically(master, generated):
    committed = STUDENT / master.name
    assert committed.exists(), f"run `make exercises`: {committed} is missing"
    fresh = generated / "student" / master.name
    assert fresh.read_bytes() == committed.read_bytes(), f"run `make exercises`: {committed} is stale"


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_student_notebook_has_check_cells_and_no_solutions(master):
    master_nb = nbformat.read(master, as_version=4)
    student = nbformat.read(STUDENT / master.name, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert 'grader = otter.Notebook("' + master.name + '")' in text
    assert not any(c.cell_type == "raw" for c in student.cells), "otter markers left over"
    assert "SOLUTION" not in text and "# HIDDEN" not in text, "otter markers left over"
    for name, spec in questions(master_nb).items():
        if spec["tests"]:
            assert f'grader.check("{name}")' in text
    # no line of a solution block survives: every BEGIN SOLUTION ... END SOLUTION body is gone
    for spec in questions(master_nb).values():
        for source in spec["solution"]:
            body, inside = [], False
            for line in source.splitlines():
                if line.strip() == "# END SOLUTION":
                    inside = False
                elif inside:
                    body.append(line.strip())
                elif line.strip() == "# BEGIN SOLUTION":
                    inside = True
                elif line.rstrip().endswith("# SOLUTION"):
                    body.append(line.split("# SOLUTION")[0].strip())
            for line in body:
                if line and not line.startswith("#"):
                    assert line not in text, f"solution line in the student notebook: {line}"
    # written answers (manual questions) are replaced by an empty answer cell
    for spec in questions(master_nb).values():
        if spec["config"].get("manual"):
            assert "_Type your answer here, replacing this text._" in text
    assert "**Answer.**" not in text


@pytest.mark.parametrize("master,question", CASES, ids=lambda x: getattr(x, "stem", x))
def test_solution_passes_every_test(master, question, generated, tmp_path):
    master_nb = nbformat.read(master, as_version=4)
    spec = questions(master_nb)[question]
    env = namespace(imports_cell(master_nb), spec["solution"])
    # the autograder notebook holds the hidden tests too
    result = check(generated / "autograder" / master.name, question, env, tmp_path)
    assert len(result.test_cases) == len(spec["tests"]), "the autograder lacks some test cells"
    assert result.passed_all, str(result)
    # the master's own test cells, run as they are in the notebook
    for source in spec["tests"]:
        exec(compile(source, f"<{question} test>", "exec"), env)


@pytest.mark.parametrize("master,question", CASES, ids=lambda x: getattr(x, "stem", x))
def test_student_stub_fails_the_public_tests(master, question, tmp_path):
    master_nb = nbformat.read(master, as_version=4)
    student_nb = STUDENT / master.name
    cells = stubs(nbformat.read(student_nb, as_version=4))[question]
    assert cells, f"no answer cell before grader.check({question!r})"
    env = namespace(imports_cell(master_nb), cells)
    result = check(student_nb, question, env, tmp_path)
    assert not result.passed_all, f"the stub of {question} passes its tests"
    assert result.grade == 0, f"the stub of {question} passes some test cases:\n{result}"
