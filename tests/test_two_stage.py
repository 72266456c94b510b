"""The two-stage recipe: closed-set pretraining, then fine-tuning from ``init_checkpoint``;
the shipped-weights registry and its loader's errors."""
import json
import subprocess
import sys

import pytest
import torch

from dhlib.config import load_profile, parse_override
from dhlib.models import build_model, weights
from dhlib.models.checkpoints import CheckpointMismatchError
from dhlib.train_setup import (InitCheckpointError, initial_segmenter, optimiser_groups, resolve_init_checkpoint,
                               resolve_pretrain_init)

SMALL = dict(small_widths=(8, 8, 8, 8, 8), aspp_dim=8, fine_dim=4)


def _small_state(seed=5):
    torch.manual_seed(seed)
    return build_model(load_profile("quick", **SMALL)).state_dict()


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("DHLIB_WEIGHTS_DIR", str(folder))
    return folder


# --- the registry and its loader --------------------------------------------------------------

def test_shipped_file_round_trips_in_float16_and_its_card_holds_the_hash(weights_dir):
    state = _small_state()
    w = weights.get("quick-closed-set")
    card = weights.write_file_and_card(w, state, {"metrics": {"val_mIoU": 0.5}})
    import hashlib
    assert card["sha256"] == hashlib.sha256(w.path.read_bytes()).hexdigest()
    assert card["size_bytes"] == w.path.stat().st_size and card["dtype"] == "float16"
    loaded = w.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            assert loaded[key].dtype == torch.float32
            torch.testing.assert_close(loaded[key], value.half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(loaded[key], value)


@pytest.mark.parametrize("damage, message", [
    ("missing", "are missing"),
    ("truncated", "truncated"),
    ("lfs", "Git LFS pointer"),
    ("altered", "sha256"),
])
def test_loader_names_what_is_wrong_with_the_file(weights_dir, damage, message):
    w = weights.get("quick-closed-set")
    weights.write_file_and_card(w, _small_state(), {})
    data = w.path.read_bytes()
    if damage == "missing":
        w.path.unlink()
    elif damage == "truncated":
        w.path.write_bytes(data[: len(data) // 2])
    elif damage == "lfs":
        w.path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    else:  # same size, one byte flipped
        w.path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(weights.WeightsError, match=message) as err:
        w.verify()
    assert str(w.path) in str(err.value) and "make pretrain" in str(err.value)


def test_a_missing_card_says_how_to_rebuild(weights_dir):
    with pytest.raises(weights.WeightsError, match="make finetune"):
        weights.get("quick-densehybrid").verify()


def test_unknown_weights_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="quick-closed-set"):
        weights.get("imagenet")


# --- init_checkpoint layouts ---------------------------------------------------------------------

def _profile(init, **extra):
    return load_profile("quick", init_checkpoint=init, **SMALL, **extra)


def _fresh_reference():
    """The model ``initial_segmenter`` builds before loading: seeded with the profile's seed."""
    torch.manual_seed(0)
    return build_model(load_profile("quick", **SMALL)).state_dict()


@pytest.mark.parametrize("layout", ["nvidia", "two-head", "ours-training-checkpoint"])
def test_init_checkpoint_layouts_load_and_report_what_started_fresh(tmp_path, layout):
    source = _small_state(seed=7)
    if layout == "nvidia":  # one head, 'module.' prefix, nested under 'state_dict'
        obj = {"state_dict": {"module." + k: v for k, v in source.items() if not k.startswith("logits_ood.")}}
    elif layout == "two-head":
        obj = source
    else:
        obj = {"model": source, "step": 3}
    path = tmp_path / "init.pth"
    torch.save(obj, path)
    profile = _profile(str(path))
    model, init = initial_segmenter(profile, torch.device("cpu"), *resolve_init_checkpoint(profile))
    state, fresh_ref = model.state_dict(), _fresh_reference()
    ood_keys = [k for k in source if k.startswith("logits_ood.")]
    for key in source:
        expected = fresh_ref[key] if (layout == "nvidia" and key in ood_keys) else source[key]
        assert torch.equal(state[key], expected), key
    if layout == "nvidia":
        assert init["layout"] == "one-head (module. prefix)" and set(init["fresh"]) == set(ood_keys)
    else:
        assert init["fresh"] == []
    assert init["path"] == str(path) and len(init["sha256"]) == 64


def test_the_attention_ablation_fine_tunes_from_a_checkpoint_trained_with_attention(tmp_path):
    """`ablate`'s "no attention" variant starts from the shipped closed-set file, which has the
    attention block: its weights are dropped (and reported), everything else loads."""
    source = _small_state(seed=7)
    attention_keys = [k for k in source if k.startswith("attention.")]
    assert attention_keys, "the quick model should have an attention block by default"
    path = tmp_path / "with_attention.pth"
    torch.save(source, path)
    profile = _profile(str(path), attention=False)
    model, init = initial_segmenter(profile, torch.device("cpu"), *resolve_init_checkpoint(profile))
    state = model.state_dict()
    assert sorted(init["dropped"]) == sorted(attention_keys) and init["fresh"] == []
    assert set(state) == set(source) - set(attention_keys)
    for key in state:
        assert torch.equal(state[key], source[key]), key
    # any other key the model lacks is still an error: only an optional block may be dropped
    torch.save({**source, "decoder_extra.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointMismatchError, match="decoder_extra.weight"):
        initial_segmenter(profile, torch.device("cpu"), *resolve_init_checkpoint(profile))


def test_a_warm_start_across_skip_stride_leaves_only_the_reshaped_projection_fresh(tmp_path):
    """Stage 1 may start from a closed-set run of another skip_stride: the decoder's 1×1 skip
    projection changes shape (it reads mod1's channels instead of mod2's) and starts fresh."""
    source = build_model(load_profile("quick", skip_stride=4, small_widths=(8, 10, 12, 14, 16), aspp_dim=8,
                                      fine_dim=4)).state_dict()
    path = tmp_path / "stride4.pt"
    torch.save(source, path)
    profile = load_profile("quick", skip_stride=2, small_widths=(8, 10, 12, 14, 16), aspp_dim=8, fine_dim=4,
                           pretrain_init=str(path))
    torch.manual_seed(0)
    reference = build_model(profile).state_dict()         # the seeded fresh model initial_segmenter builds
    model, init = initial_segmenter(profile, torch.device("cpu"), *resolve_pretrain_init(profile), reshaped_fresh=True)
    assert init["fresh"] == ["bot_fine.weight"]
    assert tuple(source["bot_fine.weight"].shape) == (4, 10, 1, 1) and tuple(reference["bot_fine.weight"].shape) == (4, 8, 1, 1)
    state = model.state_dict()
    assert torch.equal(state["bot_fine.weight"], reference["bot_fine.weight"])
    assert all(torch.equal(state[k], source[k]) for k in state if k != "bot_fine.weight")
    # without the allowance a changed shape is an error that names the tensor
    with pytest.raises(CheckpointMismatchError, match="bot_fine.weight"):
        initial_segmenter(profile, torch.device("cpu"), *resolve_pretrain_init(profile))


def test_missing_pretrain_init_says_how_to_make_it(tmp_path):
    profile = load_profile("quick", pretrain_init=str(tmp_path / "stage1a" / "model.pt"))
    with pytest.raises(InitCheckpointError, match="make pretrain") as err:
        resolve_pretrain_init(profile)
    assert "pretrain_init=none" in str(err.value) and "stage1a" in str(err.value)
    assert resolve_pretrain_init(load_profile("quick", pretrain_init="none")) == (None, None)


def test_fresh_parameters_get_their_own_learning_rate():
    model = build_model(_profile(None))
    fresh = [k for k, _ in model.named_parameters() if k.startswith("logits_ood.")]
    groups = optimiser_groups(model, fresh, lr=1e-3, fresh_lr_mult=10.0)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    ids = {id(p) for p in groups[1]["params"]}
    assert ids == {id(p) for n, p in model.named_parameters() if n in fresh}
    assert len(optimiser_groups(model, [], 1e-3, 10.0)) == 1


def test_registered_name_resolves_to_the_hash_checked_file(weights_dir):
    w = weights.get("quick-closed-set")
    card = weights.write_file_and_card(w, _small_state(), {})
    path, digest = resolve_init_checkpoint(_profile("quick-closed-set"))
    assert path == w.path and digest == card["sha256"]
    w.path.write_bytes(w.path.read_bytes()[:-10])
    with pytest.raises(weights.WeightsError, match="truncated"):
        resolve_init_checkpoint(_profile("quick-closed-set"))


def test_none_means_random_weights():
    assert resolve_init_checkpoint(_profile(None)) == (None, None)
    assert resolve_init_checkpoint(_profile("none")) == (None, None)


def test_missing_init_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(InitCheckpointError, match="init_checkpoint=none"):
        resolve_init_checkpoint(_profile(str(tmp_path / "nope.pth")))
    paper = load_profile("paper", init_checkpoint=str(tmp_path / "cityscapes_cv0_wideresnet38_nosdcaug.pth"))
    with pytest.raises(InitCheckpointError, match="NVIDIA") as err:
        resolve_init_checkpoint(paper)
    assert "data/weights" in str(err.value)


def test_cli_reports_a_missing_init_checkpoint_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dhlib", "train", "--set", f"init_checkpoint={tmp_path / 'x.pt'}",
                             "--set", f"runs_dir={tmp_path / 'run'}", "--set", "use_synthcity=false",
                             "--set", f"cityscapes_root={tmp_path / 'missing'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "x.pt does not exist" in result.stderr and "Traceback" not in result.stderr


# --- stage 1 and stage 2 end to end on a tiny world ------------------------------------------------

TINY = ["--set", "synthcity_height=64", "--set", "synthcity_width=128", "--set", "synthcity_train=6",
        "--set", "synthcity_val=4", "--set", "synthcity_negatives=8", "--set", "synthcity_anomaly_test=4",
        "--set", "crop_size=48", "--set", "flow_sample_min_side=8", "--set", "flow_sample_max_side=24", "--set", "negative_crop=24", "--set", "negative_resize=48",
        "--set", "batch_size=2", "--set", "small_widths=8,8,8,8,8", "--set", "aspp_dim=8",
        "--set", "fine_dim=4", "--set", "synthetic_prob=0", "--set", "checkpoint_every=5",
        "--set", "pretrain_init=none", "--set", "pretrain_lr=1e-2"]


def _tiny_args(profile, tmp_path):
    args = list(TINY)
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root"):
        args += ["--set", f"{field}={getattr(profile, field)}"]
    return args + ["--set", f"pretrain_dir={tmp_path / 'pre'}", "--set", f"runs_dir={tmp_path / 'run'}"]


def test_pretrain_lowers_L_d_then_fine_tuning_starts_from_its_shipped_file(tiny_profile, tmp_path, weights_dir):
    from dhlib.__main__ import main
    args = _tiny_args(tiny_profile, tmp_path)
    main(["pretrain", *args, "--set", "pretrain_steps=30", "--set", "val_every=15"])
    log = [json.loads(line) for line in (tmp_path / "pre" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))
    assert set(log[0]) == {"step", "L_d", "loss", "time_s"}             # L_d only: no L_x, no L_cla
    first, last = [sum(r["L_d"] for r in part) / 5 for part in (log[:5], log[-5:])]
    assert last < 0.9 * first
    assert [r["step"] for r in log if "val_mIoU" in r] == [15, 30]
    pre_info = json.loads((tmp_path / "pre" / "run_info.json").read_text())
    assert pre_info["command"].startswith("python -m dhlib pretrain")
    from dhlib.devices import cpu_has_native_bf16
    assert pre_info["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")  # amp on, on the CPU

    main(["ship-weights", "quick-closed-set", *args])
    card = weights.get("quick-closed-set").card
    assert card["run"]["steps"] == 30 and card["run"]["seed"] == 0 and card["run"]["threads"] >= 1
    assert 0 < card["metrics"]["val_mIoU"] <= 1 and card["metrics"]["val_IoU"]
    stored = torch.load(weights.get("quick-closed-set").path, weights_only=True)
    assert not any(k.startswith("logits_ood.") for k in stored)      # a closed-set file has no OOD head

    elsewhere = tmp_path / "synthcity_root"       # the roots above point outside it
    main(["demo", *args, "--set", "train_steps=4", "--set", "init_checkpoint=quick-closed-set",
          "--set", f"figures_dir={tmp_path / 'figures'}", "--set", f"synthcity_root={elsewhere}"])
    assert not elsewhere.exists(), "the demo wrote a SynthCity the profile does not read"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["init_checkpoint"] == {"path": str(weights.get("quick-closed-set").path), "sha256": card["sha256"]}
    assert results["mIoU_init"] == pytest.approx(card["metrics"]["val_mIoU"], abs=1e-6)  # the same file, measured again
    fine = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    pre = weights.get("quick-closed-set").state_dict()
    moved = [k for k in pre if pre[k].is_floating_point() and not torch.allclose(pre[k], fine[k].float(), atol=1e-3)]
    assert moved, "fine-tuning changed nothing"
    # four steps at a small lr stay close to the start: the run began from the shipped file
    assert torch.allclose(pre["final.6.weight"], fine["final.6.weight"].float(), atol=0.05)


def test_poly_schedule_restarts_where_a_finished_run_is_extended():
    from dhlib.train_setup import lr_factor
    plain, restarted = lr_factor("poly", 10), lr_factor("poly", 10, (6,))
    # hand-computed: (1 - s/T)^0.9 with T = 6 up to the restart, T = 10 after it
    assert restarted(0) == 1.0
    assert restarted(5) == pytest.approx((1 / 6) ** 0.9)
    assert restarted(6) == pytest.approx((1 / 6) ** 0.9)   # the step at the restart ends the first cycle
    assert restarted(7) == pytest.approx(0.3 ** 0.9) == plain(7)
    assert restarted(9) == pytest.approx(0.1 ** 0.9)
    ignored = lr_factor("poly", 10, (10, 25))              # restarts the run never reaches
    assert [ignored(s) for s in range(10)] == [plain(s) for s in range(10)]


def test_an_extended_pretraining_equals_one_run_with_a_restart(tiny_profile, tmp_path):
    import dataclasses
    from dhlib.train import pretrain
    base = dataclasses.replace(tiny_profile, pretrain_lr=1e-2, val_every=0)
    pretrain(dataclasses.replace(base, pretrain_dir=str(tmp_path / "ext"), pretrain_steps=4), progress=False)
    pretrain(dataclasses.replace(base, pretrain_dir=str(tmp_path / "ext"), pretrain_steps=7), resume=True,
             progress=False)
    pretrain(dataclasses.replace(base, pretrain_dir=str(tmp_path / "one"), pretrain_steps=7, pretrain_restarts=(4,)),
             progress=False)
    extended, one = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("ext", "one"))
    assert all(torch.equal(extended[k], one[k]) for k in one)
    # and the restart mattered: a plain 7-step schedule ends elsewhere
    pretrain(dataclasses.replace(base, pretrain_dir=str(tmp_path / "plain"), pretrain_steps=7, pretrain_restarts=()),
             progress=False)
    plain = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)
    assert not all(torch.equal(plain[k], one[k]) for k in one)


def test_a_warm_started_pretraining_starts_where_its_init_run_ended(tiny_profile, tmp_path, weights_dir, capsys):
    """Stage 1 in two runs, as `make pretrain` makes the quick file: a run at skip_stride 4, then
    one at skip_stride 2 that starts from its model.pt. The second starts near the first's end,
    far below a run from scratch, and the shipped card records the run it started from."""
    from dhlib.__main__ import main
    args = _tiny_args(tiny_profile, tmp_path) + ["--set", "small_widths=8,12,12,12,12"]  # mod1 ≠ mod2 channels
    first = tmp_path / "stride4"
    main(["pretrain", *args, "--set", "skip_stride=4", "--set", "pretrain_steps=30", "--set", "val_every=0",
          "--set", f"pretrain_dir={first}"])
    warm = ["--set", "skip_stride=2", "--set", "pretrain_steps=5", "--set", "val_every=0"]
    main(["pretrain", *args, *warm, "--set", f"pretrain_init={first / 'model.pt'}"])
    assert "started fresh: bot_fine" in capsys.readouterr().out   # the reshaped projection
    main(["pretrain", *args, *warm, "--set", f"pretrain_dir={tmp_path / 'scratch'}"])

    def first_L_d(folder):
        return json.loads((folder / "train_log.jsonl").read_text().splitlines()[0])["L_d"]
    ended = sum(json.loads(line)["L_d"] for line in (first / "train_log.jsonl").read_text().splitlines()[-5:]) / 5
    # nearer where the first run ended than where a run from scratch begins
    assert first_L_d(tmp_path / "pre") - ended < 0.5 * (first_L_d(tmp_path / "scratch") - ended)

    main(["ship-weights", "quick-closed-set", *args, "--set", "skip_stride=2",
          "--set", f"pretrain_init={first / 'model.pt'}"])
    start = weights.get("quick-closed-set").card["run"]["warm_start"]
    assert start["file"] == str(first / "model.pt") and start["sha256"] == weights.sha256(first / "model.pt")
    assert start["run"]["steps"] == 30 and start["run"]["overrides"]["skip_stride"] == 4


# --- the shipped pre-trained flow (flow_init) -------------------------------------------------------

TINY_FLOW = ["--set", "flow_levels=2", "--set", "flow_steps=1", "--set", "flow_hidden=8", "--set", "flow_crop=16",
             "--set", "flow_batch=4", "--set", "flow_val_crops=4"]


def test_train_flow_ships_a_card_and_fine_tuning_starts_from_the_shipped_flow(tiny_profile, tmp_path, weights_dir):
    from dhlib.__main__ import main
    from dhlib.train_setup import setup_training
    args = _tiny_args(tiny_profile, tmp_path) + TINY_FLOW + ["--set", f"runs_dir={tmp_path / 'flow'}"]
    main(["train-flow", *args, "--set", "flow_pretrain_steps=4", "--set", "flow_init=none"])
    info = json.loads((tmp_path / "flow" / "flow_run_info.json").read_text())
    assert info["command"].startswith("python -m dhlib train-flow") and info["seed"] == 0
    assert info["precision"] == "float32"  # the flow trains without autocast, whatever the CPU

    main(["ship-weights", "quick-flow", *args])
    w = weights.get("quick-flow")
    card = w.card
    assert card["run"]["steps"] == 4 and card["stage"] == "flow" and card["dtype"] == "float16"
    assert card["sha256"] == weights.sha256(w.path) and card["size_bytes"] == w.path.stat().st_size
    # float16 storage moves the held-out bits/dim only a little from the float32 run's
    summary = json.loads((tmp_path / "flow" / "flow_summary.json").read_text())
    assert card["metrics"]["val_bits_per_dim"] == pytest.approx(summary["val_bits_per_dim"], abs=0.05)
    assert card["metrics"]["val_bits_per_dim_float32"] == summary["val_bits_per_dim"]

    run_dir = tmp_path / "fine"
    fields = [*_tiny_args(tiny_profile, tmp_path)[1::2], *TINY_FLOW[1::2], "synthetic_prob=1", "init_checkpoint=none",
              "flow_init=quick-flow", f"runs_dir={run_dir}", "device=cpu"]
    profile = load_profile("quick", **dict(parse_override(text) for text in fields))
    setup = setup_training(profile, progress=False)
    shipped = w.state_dict()
    assert all(torch.equal(setup.flow.state_dict()[k], shipped[k]) for k in shipped)
    assert not (run_dir / "flow.pt").exists()   # nothing was pre-trained in the run folder


def test_flow_init_errors_name_the_way_out(tmp_path, weights_dir):
    from dhlib.train_setup import resolve_flow_init
    assert resolve_flow_init(load_profile("quick", flow_init="none")) == (None, None)
    assert resolve_flow_init(load_profile("quick", flow_init=None)) == (None, None)
    assert load_profile("paper").flow_init is None          # the paper tier pre-trains its own flow
    with pytest.raises(InitCheckpointError, match="flow_init=none"):
        resolve_flow_init(load_profile("quick", flow_init=str(tmp_path / "nope.pt")))
    with pytest.raises(weights.WeightsError, match="make flow"):  # registered, but no file in weights/
        resolve_flow_init(load_profile("quick"))
