"""The joint trainer: a killed run resumes to exactly the weights of an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch


def _args(profile, run_dir, steps):
    args = [sys.executable, "-m", "dhlib", "train", "--profile", "quick"]
    settings = {"cityscapes_root": profile.cityscapes_root, "ade20k_root": profile.ade20k_root,
                "fishyscapes_root": profile.fishyscapes_root, "synthcity_height": 64, "synthcity_width": 128,
                "synthcity_train": 6, "synthcity_val": 4, "synthcity_negatives": 8, "synthcity_anomaly_test": 4,
                "crop_size": 48, "flow_sample_min_side": 8, "flow_sample_max_side": 24, "negative_crop": 24, "negative_resize": 48, "batch_size": 2,
                "flow_levels": 2, "flow_steps": 1, "flow_hidden": 8, "small_widths": "8,8,8,8,8",
                "aspp_dim": 8, "fine_dim": 4, "train_steps": steps, "checkpoint_every": 5, "init_checkpoint": "none",
                "num_workers": 2,  # worker processes must not change a single number
                "runs_dir": str(run_dir)}
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


def test_sigkilled_run_resumes_to_identical_weights(tiny_profile, tmp_path):
    steps = 40
    straight = subprocess.run(_args(tiny_profile, tmp_path / "straight", steps), env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(_args(tiny_profile, killed_dir, steps), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run ended before its first checkpoint"
    at_kill = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < at_kill < steps, "the kill must land mid-way"
    assert not (killed_dir / "model.pt").exists()

    resumed = subprocess.run(_args(tiny_profile, killed_dir, steps) + ["--resume"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("model.pt", "flow_joint.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)
        b = torch.load(killed_dir / name, weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resuming at step {at_kill}"
    lines = (killed_dir / "train_log.jsonl").read_text().splitlines()
    assert len(lines) >= steps  # every step was logged (steps after the checkpoint twice)
    records = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    flow_steps = [r for r in records if "L_mle" in r]     # every flow_every-th step; each says if skipped
    every = __import__("dhlib.config", fromlist=["x"]).load_profile("quick").flow_every
    assert [r["step"] for r in flow_steps] == list(range(every, steps + 1, every))
    assert all(r["flow_skipped"] in (0, 1) for r in flow_steps)


DDP_SCRIPT = """
import dataclasses, json, os, sys, torch
from dhlib.config import load_profile
from dhlib.train import train
settings = json.loads(sys.argv[1])
profile = load_profile("quick", **settings)
out = train(profile, progress=False, return_models=True)
rank = out["rank"]
params = {k: v.detach().clone() for k, v in out["model"].named_parameters()}
params |= {"flow." + k: v.detach().clone() for k, v in out["flow"].named_parameters()}
torch.save(params, os.path.join(settings["runs_dir"], f"params_rank{rank}.pt"))
torch.distributed.destroy_process_group()
"""


def test_ddp_with_gloo_keeps_ranks_identical(tiny_profile, tmp_path):
    import json
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    settings = {"cityscapes_root": tiny_profile.cityscapes_root, "ade20k_root": tiny_profile.ade20k_root,
                "fishyscapes_root": tiny_profile.fishyscapes_root, "synthcity_height": 64,
                "synthcity_width": 128, "synthcity_train": 6, "synthcity_val": 4, "synthcity_negatives": 8,
                "synthcity_anomaly_test": 4, "crop_size": 48, "flow_sample_min_side": 8, "flow_sample_max_side": 24, "negative_crop": 24, "negative_resize": 48,
                "batch_size": 2, "flow_levels": 2, "flow_steps": 1, "flow_hidden": 8,
                "small_widths": [8, 8, 8, 8, 8], "aspp_dim": 8, "fine_dim": 4, "train_steps": 4, "flow_every": 2, "init_checkpoint": None,
                "num_workers": 1,
                "checkpoint_every": 2, "runs_dir": str(tmp_path / "ddp"), "device": "cpu"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), json.dumps(settings)],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    a = torch.load(tmp_path / "ddp/params_rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp/params_rank1.pt", weights_only=True)
    torch.manual_seed(0)  # the trainer's seed: the weights every rank starts from
    start = dict(__import__("dhlib.models", fromlist=["x"]).SmallDeepLabTH(
        19, widths=(8, 8, 8, 8, 8), aspp_dim=8, fine_dim=4).named_parameters())
    changed = 0
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between ranks"
        if not key.startswith("flow."):
            changed += int(not torch.equal(a[key], start[key].detach()))
    assert changed > 0, "training changed the weights"
    assert any(k.startswith("flow.") for k in a)  # the flow (two flow steps, gradients reduced by hand) too
    assert (tmp_path / "ddp/model.pt").exists() and (tmp_path / "ddp/train_log.jsonl").exists()


def test_loss_grid_subsamples_labels_to_the_models_input_scale():
    """Nearest subsampling: the label at grid cell (i, j) is the label of pixel (2i, 2j) + its
    nearest-exact neighbour, values never blend, and scale 1 is the identity."""
    from dhlib.train import loss_grid
    targets = torch.randint(0, 19, (2, 64, 128), generator=torch.Generator().manual_seed(0))
    targets[:, :8] = 255
    small = loss_grid(targets, 0.5)
    assert small.shape == (2, 32, 64) and small.dtype == torch.long
    assert set(small.unique().tolist()) <= set(targets.unique().tolist())
    assert torch.equal(small, targets[:, ::2, ::2]) or torch.equal(small, targets[:, 1::2, 1::2])
    assert (small[:, :4] == 255).all()
    assert loss_grid(targets, 1.0) is targets


def test_model_returns_logits_at_the_requested_size():
    from dhlib.config import load_profile
    from dhlib.models import build_model
    model = build_model(load_profile("quick")).eval()
    x = torch.rand(1, 3, 64, 128)
    seg, ood = model(x, size=(32, 64))
    assert seg.shape == (1, 19, 32, 64) and ood.shape == (1, 2, 32, 64)
    full, _ = model(x)
    assert full.shape == (1, 19, 64, 128)


def _joint_profile(tiny_profile, run_dir, **overrides):
    from dhlib.config import load_profile
    settings = {"cityscapes_root": tiny_profile.cityscapes_root, "ade20k_root": tiny_profile.ade20k_root,
                "fishyscapes_root": tiny_profile.fishyscapes_root, "synthcity_height": 64,
                "synthcity_width": 128, "synthcity_train": 6, "synthcity_val": 4, "synthcity_negatives": 8,
                "synthcity_anomaly_test": 4, "crop_size": 48, "flow_sample_min_side": 8,
                "flow_sample_max_side": 24, "negative_crop": 24, "negative_resize": 48, "batch_size": 2,
                "flow_levels": 2, "flow_steps": 1, "flow_hidden": 8, "small_widths": (8, 8, 8, 8, 8),
                "aspp_dim": 8, "fine_dim": 4, "init_checkpoint": None, "checkpoint_every": 3,
                "flow_update": "joint", "synthetic_prob": 1.0, "runs_dir": str(run_dir), "device": "cpu",
                "lr_schedule": "constant"}  # so that a 3-step run is the first half of a 6-step one
    return load_profile("quick", **(settings | overrides))


def test_joint_flow_update_trains_both_in_one_pass_and_resumes_exactly(tiny_profile, tmp_path):
    """flow_update='joint': every step logs the flow's terms, both models move, and a run
    stopped at a checkpoint and resumed ends with the weights of a straight run."""
    from dhlib.train import train
    torch.set_num_threads(1)
    straight = train(_joint_profile(tiny_profile, tmp_path / "straight", train_steps=6), progress=False,
                     return_models=True)
    records = [json.loads(x) for x in (tmp_path / "straight/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all({"L_jsd", "L_mle", "flow_skipped"} <= r.keys() for r in records)  # b = 1: a flow sample every step
    from dhlib.train import setup_training
    start = setup_training(_joint_profile(tiny_profile, tmp_path / "start", train_steps=6), progress=False)
    for name in ("model", "flow"):  # both moved away from where training starts
        before, after = getattr(start, name).state_dict(), straight[name].state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point()), name

    train(_joint_profile(tiny_profile, tmp_path / "resumed", train_steps=3), progress=False)
    resumed = train(_joint_profile(tiny_profile, tmp_path / "resumed", train_steps=6), resume=True,
                    progress=False, return_models=True)
    for name in ("model", "flow"):
        a, b = straight[name].state_dict(), resumed[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resuming"


def test_void_pixels_are_inliers_of_l_cla_only_when_asked(tiny_profile, tmp_path):
    from dhlib.train import setup_training, training_inputs
    for as_inlier in (False, True):
        setup = setup_training(_joint_profile(tiny_profile, tmp_path / str(as_inlier), synthetic_prob=0.0,
                                              ood_void_as_inlier=as_inlier, train_steps=1), progress=False)
        images = torch.rand(2, 3, 48, 48)
        targets = torch.full((2, 48, 48), 3, dtype=torch.long)
        targets[:, :10] = 255  # a void band at the top (ego vehicle, out of ROI)
        _, seg_t, ood_t, boxes, _ = training_inputs(setup, images, targets)
        void = (seg_t == 255) & (ood_t != 1)
        assert void.any()
        assert set(ood_t[void].unique().tolist()) == ({0} if as_inlier else {255})


def test_step_batches_resume_anywhere_in_the_epoch_order():
    from dhlib.train import StepBatches, epoch_batches
    sampler = StepBatches(10, 3, seed=4)
    expected = [[(e, i) for i in b] for e in range(4) for b in epoch_batches(10, 3, 4, e)]  # brute force
    for start in (0, 2, 3, 7):
        sampler.start = start
        got = [b for _, b in zip(range(len(expected) - start), iter(sampler))]
        assert got == expected[start:]


def test_worker_processes_deliver_the_single_process_batches(tiny_profile, tmp_path):
    from dhlib.train import next_batch, setup_training
    runs = []
    for workers in (0, 2):
        setup = setup_training(_joint_profile(tiny_profile, tmp_path / str(workers), num_workers=workers,
                                              synthetic_prob=0.0, train_steps=8), progress=False)
        batches = []
        for step in (0, 1, 2, 3, 5):  # consecutive reads, then a jump as a resume makes
            setup.step = step
            batches.append(next_batch(setup))
        runs.append(batches)
    for (a_img, a_tgt), (b_img, b_tgt) in zip(*runs):
        assert torch.equal(a_img, b_img) and torch.equal(a_tgt, b_tgt)
