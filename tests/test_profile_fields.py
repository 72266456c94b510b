"""Every profile field does something: library code reads it, and a test sees its effect.

The field-by-field tests below cover the fields no other test exercised; the first test keeps
it that way for fields added later.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dhlib.config import Profile, load_profile

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("dhlib/config.py", "dhlib/profile_checks.py")  # where fields are defined and checked


def _sources(folder: str, skip=()) -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / folder).rglob("*.py"))
                     if str(p.relative_to(ROOT)) not in skip)


def test_every_field_is_read_by_the_library_and_named_by_a_test():
    library = _sources("dhlib", skip=SETTINGS)
    tests = _sources("tests", skip=("tests/test_profile_fields.py",)) + "\n" + Path(__file__).read_text().split(
        "def test_every_field", 1)[1].split("\n", 1)[1]
    unread = [f.name for f in dataclasses.fields(Profile) if not re.search(rf"\b{f.name}\b", library)]
    untested = [f.name for f in dataclasses.fields(Profile) if not re.search(rf"\b{f.name}\b", tests)]
    assert unread == [], f"profile fields no library code reads: {unread}"
    assert untested == [], f"profile fields no test names: {untested}"


def test_removed_fields_are_gone():
    names = {f.name for f in dataclasses.fields(Profile)}
    assert not names & {"extra", "custom_root"}
    with pytest.raises(ValueError, match="unknown profile field"):
        load_profile("quick", extra={})


def _setup(tiny_profile, tmp_path, **overrides):
    from dhlib.train_setup import setup_training
    profile = dataclasses.replace(tiny_profile, runs_dir=str(tmp_path / "run"), batch_size=2, **overrides)
    return setup_training(profile, progress=False)


def test_weight_decay_reaches_the_segmenter_optimiser(tiny_profile, tmp_path):
    setup = _setup(tiny_profile, tmp_path, weight_decay=0.125)
    assert {g["weight_decay"] for g in setup.seg_opt.param_groups} == {0.125}


def test_class_balance_weights_follow_median_frequency_balancing(tiny_profile, tmp_path):
    from dhlib.train_data import train_pixel_counts
    assert _setup(tiny_profile, tmp_path, class_balance=0.0, synthetic_prob=0.0).class_weights is None
    setup = _setup(tiny_profile, tmp_path, class_balance=0.5, synthetic_prob=0.0)
    counts = train_pixel_counts(setup.crops.dataset, tiny_profile.num_classes).astype(float)
    present = counts > 0
    frequency = counts / counts.sum()
    # by hand: (median frequency / frequency)^0.5, 0 for absent classes; the median of an even
    # count is the lower middle value, as the docstring of losses.class_balance_weights says
    median = np.sort(frequency[present])[(present.sum() - 1) // 2]
    expected = np.zeros_like(frequency)
    expected[present] = (median / frequency[present]) ** 0.5
    np.testing.assert_allclose(setup.class_weights.cpu().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_amp_on_the_cpu_is_bf16_only_where_the_cpu_has_it(tiny_profile, tmp_path, monkeypatch, native_bf16):
    from dhlib import devices
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)
    setup = _setup(tiny_profile, tmp_path, amp=True, synthetic_prob=0.0)
    assert setup.device.type == "cpu" and not setup.scaler.is_enabled()  # bf16 needs no loss scaling
    assert setup.amp_dtype == (torch.bfloat16 if native_bf16 else None)
    assert _setup(tiny_profile, tmp_path, amp=False, synthetic_prob=0.0).amp_dtype is None


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU flags Linux reports")
def test_native_bf16_agrees_with_the_cpu_flags():
    from dhlib.devices import cpu_has_native_bf16
    flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split())
    assert cpu_has_native_bf16() == bool({"amx_tile", "avx512_bf16"} & flags)


class RecordingFlow:
    """A stand-in flow that records the temperature it is sampled at."""
    factor = 8

    def __init__(self):
        self.temperatures = []

    def sample(self, n, height, width, temperature, generator=None):
        self.temperatures.append(temperature)
        return torch.zeros(n, 3, height, width)


def test_flow_temperature_reaches_the_flow_sampler(tiny_profile):
    from dhlib.negatives import NegativeRecipe, paste_negatives
    flow = RecordingFlow()
    recipe = NegativeRecipe.from_profile(dataclasses.replace(tiny_profile, flow_temperature=0.37))
    images, targets = torch.rand(3, 3, 48, 48), torch.zeros(3, 48, 48, dtype=torch.long)
    paste_negatives(images, targets, None, recipe, torch.Generator().manual_seed(0), flow=flow, synthetic_prob=1.0)
    assert flow.temperatures == [0.37] * 3


def test_flow_lr_is_the_pretraining_learning_rate(tiny_profile, tmp_path):
    from dhlib.flows.pretrain import pretrain_flow
    profile = dataclasses.replace(tiny_profile, runs_dir=str(tmp_path / "flow"), flow_lr=0.0025,
                                  flow_batch=2, flow_crop=16, flow_val_crops=2)
    pretrain_flow(profile, steps=1, progress=False)
    state = torch.load(tmp_path / "flow" / "flow_checkpoint.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.0025]


def _flow_after_one_step(tiny_profile, tmp_path, weight):
    from dhlib.train import flow_step, next_batch
    setup = _setup(tiny_profile, tmp_path / f"w{weight}", synthetic_prob=0.5, flow_jsd_weight=weight)
    images, targets = next_batch(setup)
    flow_step(setup, images, targets)
    return torch.cat([p.detach().flatten() for p in setup.flow.parameters()])


def test_flow_jsd_weight_changes_the_flow_update(tiny_profile, tmp_path):
    without = _flow_after_one_step(tiny_profile, tmp_path, 0.0)
    again = _flow_after_one_step(tiny_profile, tmp_path, 0.0)
    weighted = _flow_after_one_step(tiny_profile, tmp_path, 5.0)
    assert torch.equal(without, again)          # the same seeds give the same step
    assert not torch.equal(without, weighted)   # so the difference is λ's
