"""``dhlib.report``: results.json -> Markdown entries of docs/RESULTS.md, appended once."""
from __future__ import annotations

import datetime
import json
import os
import shutil

import pytest

from dhlib.report import HEADER, ReportError, append_report, render_entry, report

# a hand-made run: what `python -m dhlib demo` writes, with round numbers
RESULTS = {"profile": "quick", "wall_time_s": 477.5, "peak_memory_mb": 1930,
           "init_checkpoint": {"path": "weights/quick-closed-set.pt", "sha256": "ab" * 32},
           "mIoU_init": 0.7744, "mIoU": 0.7619, "open_mIoU": 0.5124,
           "scores": {"msp": {"AP": 0.1241, "AUROC": 0.9035, "FPR95": 0.2792},
                      "hybrid": {"AP": 0.4472, "AUROC": 0.9493, "FPR95": 0.2360},
                      "max_logit": {"AP": 0.4587, "AUROC": 0.9542, "FPR95": 0.2119}},
           "train_steps": 900, "flow_steps_skipped": 0}
RUN_INFO = {"command": "python -m dhlib demo --profile quick", "profile": "quick", "overrides": {},
            "commit": "1f071f9c0ffee0000000000000000000000000ab+dirty", "seed": 0, "threads": 2,
            "torch": "2.14.1", "python": "3.11.7", "machine": "x86_64"}
WRITTEN = datetime.datetime(2024, 3, 5, 12, 34, tzinfo=datetime.timezone.utc).timestamp()

EXPECTED = """\
## 2024-03-05 12:34 UTC · commit 1f071f9+dirty · x86_64, 2 threads

<!-- dhlib-report {key} -->

- results: `runs/demo/results.json`
- command: `python -m dhlib demo --profile quick`
- profile: quick; torch 2.14.1, python 3.11.7
- 900 training steps, wall time 477.5 s, peak memory 1930 MB
- val mIoU 76.19 % (before fine-tuning 77.44 %); open-mIoU 51.24 %

Anomaly scores on the profile's Fishyscapes split, percent:

| score | AP | AUROC | FPR95 |
| --- | --- | --- | --- |
| max_logit | 45.87 | 95.42 | 21.19 |
| hybrid | 44.72 | 94.93 | 23.60 |
| msp | 12.41 | 90.35 | 27.92 |
"""


def write_run(folder, results=RESULTS, run_info=RUN_INFO):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(results, indent=2))
    if run_info is not None:
        (folder / "run_info.json").write_text(json.dumps(run_info, indent=2))
    os.utime(path, (WRITTEN, WRITTEN))
    return path


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root of its own, so entries name their files relative to it."""
    monkeypatch.setenv("DHLIB_ROOT", str(tmp_path))
    return tmp_path


def test_entry_is_the_hand_written_markdown(root):
    import hashlib
    path = write_run(root / "runs" / "demo")
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert render_entry(path) == EXPECTED.format(key=key)


def test_only_the_metrics_present_get_columns_and_ablation_variants_name_their_change(root):
    folder = root / "runs" / "quick" / "ablation" / "b0"
    write_run(folder, {"variant": "b=0", "change": {"synthetic_prob": 0.0}, "mIoU": 0.5,
                       "scores": {"energy": {"AP": 0.25}, "hybrid": {"AP": 0.5}}}, run_info=None)
    (folder / "recipe.json").write_text(json.dumps({"name": "quick", "seed": 0}))
    lines = render_entry(folder / "results.json").splitlines()
    assert lines[0] == "## 2024-03-05 12:34 UTC · commit unknown · machine unknown"
    assert "- ablation variant: b=0 (synthetic_prob=0.0)" in lines
    assert "- profile: quick" in lines
    assert "- val mIoU 50.00 %" in lines
    assert lines[-4:] == ["| score | AP |", "| --- | --- |", "| hybrid | 50.00 |", "| energy | 25.00 |"]


def test_reporting_twice_appends_once(root):
    path = write_run(root / "runs" / "demo")
    out = root / "docs" / "RESULTS.md"
    assert append_report([path, path], out) == [path]
    first = out.read_text()
    assert first.startswith(HEADER) and first.count("<!-- dhlib-report ") == 1
    assert append_report([path], out) == []
    copy = root / "elsewhere" / "results.json"  # the same results copied: the same entry
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    assert append_report([copy], out) == []
    assert out.read_text() == first


def test_new_results_go_below_the_existing_text(root):
    out = root / "RESULTS.md"
    out.write_text("# Measurement history\n\n## Earlier runs\n\nold table\n")
    one = write_run(root / "runs" / "one")
    two = write_run(root / "runs" / "two", {**RESULTS, "mIoU": 0.70})
    assert append_report([one, two], out) == [one, two]
    text = out.read_text()
    assert text.startswith("# Measurement history\n\n## Earlier runs\n\nold table\n\n## 2024-03-05")
    assert text.index("`runs/one/results.json`") < text.index("`runs/two/results.json`")
    assert "- val mIoU 70.00 %" in text


def test_a_missing_file_is_named(root):
    missing = root / "runs" / "nothing" / "results.json"
    with pytest.raises(ReportError, match="no such results file") as err:
        append_report([missing], root / "RESULTS.md")
    assert str(missing) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_file_without_the_fields_is_named_and_nothing_is_written(root):
    good = write_run(root / "runs" / "good")
    broken = write_run(root / "runs" / "broken", {"profile": "quick", "mIoU": 0.5})
    out = root / "RESULTS.md"
    with pytest.raises(ReportError) as err:
        append_report([good, broken], out)
    assert str(err.value) == (f"{broken}: lacks the field(s) scores (a results.json written by "
                              "`python -m dhlib demo` has them)")
    assert not out.exists()
    (root / "runs" / "broken" / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match="not a readable JSON results file"):
        render_entry(broken)


def test_report_without_paths_takes_every_run_folder(root, capsys):
    with pytest.raises(ReportError, match=r"no runs/\*/results.json"):
        report()
    path = write_run(root / "runs" / "quick")
    assert report() == [path]
    assert (root / "docs" / "RESULTS.md").read_text().count("`runs/quick/results.json`") == 1
    assert report() == []
    assert capsys.readouterr().out.splitlines()[-1] == "runs/quick/results.json: already in docs/RESULTS.md"
