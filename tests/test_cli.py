import json
import subprocess
import sys

import pytest

from dhlib.__main__ import main


def test_figures_command_writes_pngs(tiny_profile, tmp_path, capsys):
    root = tiny_profile.path("cityscapes_root").parent
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "train_log.jsonl").write_text("".join(
        json.dumps({"step": k, "L_d": 1.0 / k, "L_x": 0.5, "L_cla": 0.1, "loss": 1.0 / k + 0.05}) + "\n"
        for k in range(1, 11)))
    (runs / "flow_log.jsonl").write_text("".join(
        json.dumps({"step": 25 * k, "bits_per_dim": 6.0 - 0.1 * k, "time_s": k}) + "\n" for k in range(1, 5)))
    args = ["figures", "--profile", "quick", "--set", f"runs_dir={runs}"]
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root", "figures_dir"):
        args += ["--set", f"{field}={getattr(tiny_profile, field)}"]
    for field, value in (("synthcity_height", 64), ("synthcity_width", 128), ("synthcity_train", 6),
                         ("synthcity_val", 4), ("synthcity_negatives", 8),
                         ("synthcity_anomaly_test", 4), ("flow_sample_max_side", 24),
                         ("negative_crop", 24), ("negative_resize", 48)):
        args += ["--set", f"{field}={value}"]
    main(args)
    out = capsys.readouterr().out
    names = {"data_scenes.png", "data_class_frequencies.png", "data_anomalies.png",
             "data_negatives.png", "data_pasting.png", "training_curves.png", "flow_pretraining.png"}
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


TINY_TRAINING = {"synthcity_height": 64, "synthcity_width": 128, "synthcity_train": 6, "synthcity_val": 4,
                 "synthcity_negatives": 8, "synthcity_anomaly_test": 4, "crop_size": 48,
                 "flow_sample_min_side": 8, "flow_sample_max_side": 24, "negative_crop": 24, "negative_resize": 48, "batch_size": 2, "flow_levels": 2,
                 "flow_steps": 1, "flow_hidden": 8, "flow_crop": 16, "flow_batch": 4, "flow_pretrain_steps": 3,
                 "flow_val_crops": 4, "small_widths": "8,8,8,8,8", "aspp_dim": 8, "fine_dim": 4,
                 "train_steps": 3, "checkpoint_every": 2, "init_checkpoint": "none", "flow_init": "none"}


def test_ablate_writes_a_table_and_reuses_finished_variants(tiny_profile, tmp_path, capsys):
    args = ["ablate", "--profile", "quick", "--variant", "b=0", "--variant", "b=1"]
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root"):
        args += ["--set", f"{field}={getattr(tiny_profile, field)}"]
    for field, value in TINY_TRAINING.items():
        args += ["--set", f"{field}={value}"]
    args += ["--set", f"runs_dir={tmp_path}"]
    main(args)
    table = (tmp_path / "ablation" / "ablation.md").read_text().splitlines()
    assert table[0].startswith("| variant | val mIoU | hybrid AP")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["b=0", "b=1"]
    assert (tmp_path / "flow.pt").exists()                     # one shared pre-trained flow
    assert not (tmp_path / "ablation" / "b0" / "flow_joint.pt").exists()   # b = 0 has no flow
    assert (tmp_path / "ablation" / "b1" / "flow_joint.pt").exists()
    weights = tmp_path / "ablation" / "b1" / "model.pt"
    stamp = weights.stat().st_mtime_ns
    main(args)                                                 # finished variants are not retrained
    assert weights.stat().st_mtime_ns == stamp
    out = capsys.readouterr().out
    assert "| b=1 |" in out and "recipe changed" not in out
    main(args + ["--set", "beta=0.02"])                        # a new recipe:
    out = capsys.readouterr().out                                # stale results are trained again
    assert "ablation b=1: the recipe changed" in out and "ablation b=0: the recipe changed" in out
    assert weights.stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / "ablation" / "b1" / "recipe.json").read_text())["beta"] == 0.02


def test_ablate_rejects_unknown_variants(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--variant", "b=2"])
    assert "choose from ['default', 'b=0', 'b=0.5', 'b=1', 'no attention']" in capsys.readouterr().err


def test_demo_leaves_model_and_results_json_as_the_design_specifies(tiny_profile, tmp_path, capsys):
    args = ["demo", "--profile", "quick"]
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root"):
        args += ["--set", f"{field}={getattr(tiny_profile, field)}"]
    for field, value in TINY_TRAINING.items():
        args += ["--set", f"{field}={value}"]
    args += ["--set", f"runs_dir={tmp_path}", "--set", f"figures_dir={tmp_path / 'figures'}",
             "--set", "flow_every=1"]
    main(args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["profile"] == "quick" and results["wall_time_s"] > 0 and results["peak_memory_mb"] > 0
    assert set(results["scores"]) == {"msp", "max_logit", "entropy", "energy", "discriminative", "hybrid"}
    assert all(set(v) == {"AP", "AUROC", "FPR95"} for v in results["scores"].values())
    assert 0 <= results["mIoU"] <= 1 and 0 <= results["open_mIoU"] <= 1
    assert results["train_steps"] == 3 and 0 <= results["flow_steps_skipped"] <= 3
    # explicitly from random weights: nothing to measure before fine-tuning
    assert results["init_checkpoint"] == {"path": None, "sha256": None} and results["mIoU_init"] is None
    from dhlib.config import load_profile
    from dhlib.models import build_model, load_checkpoint
    settings = dict(TINY_TRAINING, small_widths=(8, 8, 8, 8, 8))
    load_checkpoint(build_model(load_profile("quick", **settings)), tmp_path / "model.pt")
    out = capsys.readouterr().out
    assert "3 training steps" in out and "hybrid" in out and "peak memory" in out
