"""SynthCity never writes into, or deletes from, a folder it did not make."""
import dataclasses
import json
from pathlib import Path

import pytest

from dhlib.__main__ import main
from dhlib.config import load_profile
from dhlib.data import synthcity

TINY = dict(synthcity_train=3, synthcity_val=1, synthcity_negatives=1, synthcity_anomaly_test=1,
            synthcity_height=64, synthcity_width=128)


def _user_files(root):
    """A folder of someone's own files, and a snapshot of its contents."""
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    (root / "sub" / "image.png").write_bytes(b"\x89PNG not really")
    return _snapshot(root)


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _overrides(profile_fields):
    args = []
    for key, value in profile_fields.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_user_folders_at_every_configured_root_survive(tmp_path, capsys):
    roots = {name: tmp_path / "mine" / name for name in ("cityscapes_root", "ade20k_root", "fishyscapes_root")}
    before = {name: _user_files(root) for name, root in roots.items()}
    fields = TINY | {name: str(root) for name, root in roots.items()} | {"synthcity_root": str(tmp_path / "sc")}
    profile = load_profile("quick", **fields)
    assert not synthcity.uses_synthcity(profile)  # every dataset is the user's: nothing to write
    synthcity.ensure(profile)
    assert not (tmp_path / "sc").exists()
    main(["make-data"] + _overrides(fields))  # asked for explicitly: written under synthcity_root only
    assert "writing 6 images under " + str(tmp_path / "sc") in capsys.readouterr().out
    assert (tmp_path / "sc" / "synthcity.json").exists()
    for name, root in roots.items():
        assert _snapshot(root) == before[name], f"{name} changed"


def test_a_folder_synthcity_did_not_make_stops_the_export(tmp_path):
    sc = tmp_path / "data"
    before = _user_files(sc / "cityscapes")  # e.g. a real Cityscapes download
    profile = load_profile("quick", synthcity_root=str(sc), **TINY)
    with pytest.raises(synthcity.SynthCityConflict, match=r"cityscapes exists and was not written by SynthCity"):
        synthcity.export(profile=profile, workers=1, progress=False)
    with pytest.raises(SystemExit, match="error: .*cityscapes exists and was not written by SynthCity"):
        main(["make-data", "--set", f"synthcity_root={sc}"] + _overrides(TINY))
    assert _snapshot(sc / "cityscapes") == before
    assert not (sc / "ade20k").exists() and not (sc / "synthcity.json").exists()


def test_new_settings_remove_only_the_files_the_old_export_wrote(tmp_path):
    profile = load_profile("quick", synthcity_root=str(tmp_path), **TINY)
    synthcity.export(profile=profile, workers=1, progress=False)
    assert json.loads((tmp_path / "synthcity.json").read_text())["made"] == ["ade20k", "cityscapes", "fishyscapes"]
    city_dir = next((tmp_path / "cityscapes/leftImg8bit/train").iterdir())
    (city_dir / "my_own_leftImg8bit_notes.txt").write_text("mine")  # a user file among SynthCity's
    (tmp_path / "fishyscapes" / "README.txt").write_text("mine too")
    fewer = dataclasses.replace(profile, synthcity_train=2, synthcity_anomaly_test=2)
    synthcity.export(profile=fewer, workers=1, progress=False)
    trains = sorted(p.name for p in (tmp_path / "cityscapes/leftImg8bit/train").rglob("*.png"))
    assert len(trains) == 2  # the third scene of the old export is gone
    assert (city_dir / "my_own_leftImg8bit_notes.txt").read_text() == "mine"
    assert (tmp_path / "fishyscapes" / "README.txt").read_text() == "mine too"
    assert len(list((tmp_path / "fishyscapes/Static/original").iterdir())) == 2


def test_a_marker_from_before_the_made_list_still_owns_its_trees(tmp_path):
    profile = load_profile("quick", synthcity_root=str(tmp_path), **TINY)
    synthcity.export(profile=profile, workers=1, progress=False)
    marker = tmp_path / "synthcity.json"
    old = json.loads(marker.read_text())
    del old["made"]
    marker.write_text(json.dumps(old))
    synthcity.export(profile=profile, workers=1, progress=False)  # the same settings: nothing to do
    synthcity.export(profile=dataclasses.replace(profile, synthcity_val=2), workers=1, progress=False)
    assert len(list((tmp_path / "cityscapes/gtFine/val").rglob("*.png"))) == 2


def test_evaluate_reads_a_test_tree_of_other_settings_and_never_rewrites_it(tmp_path):
    """A larger draw of the test family (more anomaly scenes) is refused by name, not replaced
    by the profile's smaller one; training sizes do not matter, since the test scenes are the same."""
    sc = tmp_path / "sc"
    made = TINY | {"synthcity_anomaly_test": 2}
    synthcity.export(sc, load_profile("quick", synthcity_root=str(sc), **made), workers=1, progress=False)
    before = _snapshot(sc)
    shipped = Path(__file__).resolve().parents[1] / "weights" / "quick-densehybrid.pt"
    evaluate = ["evaluate", "--checkpoint", str(shipped), "--set", f"synthcity_root={sc}"]
    with pytest.raises(SystemExit, match=r"synthcity_anomaly_test is 2 there and 1 here.*"
                                         r"add --set synthcity_anomaly_test=2"):
        main(evaluate + _overrides(TINY))
    assert _snapshot(sc) == before
    # other training sizes: the same test scenes, so nothing to refuse and nothing rewritten
    synthcity.ensure(load_profile("quick", synthcity_root=str(sc), **made | {"synthcity_train": 5}), rewrite=False)
    assert _snapshot(sc) == before
    # another generator version: stale scenes, and make-data is the way to rewrite them
    marker = json.loads((sc / "synthcity.json").read_text())
    (sc / "synthcity.json").write_text(json.dumps(marker | {"generator": "0-old"}))
    with pytest.raises(synthcity.SynthCityConflict, match=r"generator 0-old.*stale.*make-data"):
        synthcity.ensure(load_profile("quick", synthcity_root=str(sc), **made), rewrite=False)
    assert (sc / "fishyscapes").exists()


def test_the_quick_roots_follow_synthcity_root(tmp_path):
    profile = load_profile("quick", synthcity_root=str(tmp_path / "sc"))
    assert profile.path("cityscapes_root") == tmp_path / "sc" / "cityscapes"
    assert profile.path("ade20k_root") == tmp_path / "sc" / "ade20k" / "ADEChallengeData2016"
    assert profile.path("fishyscapes_root") == tmp_path / "sc" / "fishyscapes"
    assert synthcity.uses_synthcity(profile)
    assert not synthcity.uses_synthcity(load_profile("paper"))


# ---- errors a user can act on: one message naming the file, no traceback ---------------------

def _evaluate(checkpoint, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(checkpoint), "--set", f"figures_dir={tmp_path / 'figs'}"])
    return str(exit_info.value.code)


def test_evaluate_reports_missing_truncated_and_foreign_checkpoints(tmp_path):
    import torch

    from dhlib.models import build_model
    missing = _evaluate(tmp_path / "absent.pt", tmp_path)
    assert missing.startswith("error: checkpoint") and "absent.pt does not exist" in missing
    good = tmp_path / "model.pt"
    torch.save(build_model(load_profile("quick")).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    message = _evaluate(truncated, tmp_path)
    assert "truncated.pt" in message and "truncated, corrupt or not a PyTorch file" in message
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    assert "notes.pt" in _evaluate(text, tmp_path) and "not a PyTorch file" in _evaluate(text, tmp_path)
    pickled = tmp_path / "object.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a whole module: code, not tensors
    assert "holds Python objects" in _evaluate(pickled, tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    message = _evaluate(foreign, tmp_path)
    assert "foreign.pt does not fit" in message and "unexpected keys" in message


def test_a_dataset_folder_in_the_wrong_layout_is_a_message(tmp_path):
    (tmp_path / "cityscapes" / "images").mkdir(parents=True)  # not leftImg8bit/ + gtFine/
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--profile", "paper", "--set", f"cityscapes_root={tmp_path / 'cityscapes'}",
              "--set", "init_checkpoint=none", "--set", f"runs_dir={tmp_path / 'run'}", "--set", "device=cpu"])
    message = str(exit_info.value.code)
    assert message.startswith("error:") and "cityscapes" in message and "leftImg8bit" in message
