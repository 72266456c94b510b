import subprocess
import sys

import pytest

from dhlib.__main__ import main


def test_figures_command_writes_pngs(tiny_profile, monkeypatch, capsys):
    root = tiny_profile.path("cityscapes_root").parent
    args = ["figures", "--profile", "quick"]
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root", "figures_dir"):
        args += ["--set", f"{field}={getattr(tiny_profile, field)}"]
    for field, value in (("synthcity_height", 64), ("synthcity_width", 128), ("synthcity_train", 6),
                         ("synthcity_val", 4), ("synthcity_negatives", 8),
                         ("synthcity_anomaly_test", 4), ("negative_max_side", 24)):
        args += ["--set", f"{field}={value}"]
    main(args)
    out = capsys.readouterr().out
    names = {"data_scenes.png", "data_class_frequencies.png", "data_anomalies.png",
             "data_negatives.png", "data_pasting.png"}
    written = {p.name for p in (root / "figures").iterdir()}
    assert names <= written
    for name in names:
        assert (root / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in out


def test_make_data_on_the_paper_profile_explains_where_data_goes(capsys):
    with pytest.raises(SystemExit) as err:
        main(["make-data", "--profile", "paper"])
    assert "reads the real datasets" in str(err.value) and "leftImg8bit" in str(err.value)


def test_bad_override_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "dhlib", "make-data", "--set", "batch=3"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown profile field 'batch'" in result.stderr
