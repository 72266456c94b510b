"""DeepWV3PlusTH computes the reference function; checkpoints of every layout load."""
import json
from pathlib import Path

import pytest
import torch

from dhlib.config import load_profile
from dhlib.models import (CheckpointMismatchError, DeepWV3PlusTH, SmallDeepLabTH, build_model,
                          load_checkpoint, save_state_dict)

from dhlib.models.reference import fill_by_reference_rule, golden_relative_errors, reference_dir

# The golden reference data, shipped inside the package: dhlib/models/reference_data/wrn38_deeplabv3plus
REF = reference_dir()


@pytest.fixture(scope="module")
def golden():
    return torch.load(REF / "golden_io_2x3x64x96.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference_model():
    model = DeepWV3PlusTH(19).double().eval()
    fill_by_reference_rule(model)
    return model


def test_state_dict_matches_the_reference_manifest():
    shapes = json.loads((REF / "DeepWV3PlusTH.state_dict_shapes.json").read_text())
    model = DeepWV3PlusTH(19)
    sd = model.state_dict()
    assert list(sd) == list(shapes)
    assert {k: list(v.shape) for k, v in sd.items()} == shapes
    assert sum(p.numel() for p in model.parameters()) == 137_105_154


def test_attention_parameters_live_under_their_own_prefix():
    plain = set(DeepWV3PlusTH(19).state_dict())
    with_attention = set(DeepWV3PlusTH(19, attention=True).state_dict())
    assert plain < with_attention
    assert all(k.startswith("attention.") for k in with_attention - plain)


def test_golden_outputs(reference_model, golden):
    """Relative error ‖ours − reference‖ / ‖reference‖ ≤ 1e-6 for both outputs (float64)."""
    for rel in golden_relative_errors(reference_model, golden):
        assert rel <= 1e-6, f"relative error {rel:.2e}: the computation differs from the reference"


def test_zero_initialised_attention_keeps_official_outputs(reference_model, golden, tmp_path):
    """A loaded official checkpoint gives exactly the original outputs until γ moves."""
    path = save_state_dict(reference_model, tmp_path / "official.pt")
    model = DeepWV3PlusTH(19, attention=True).double().eval()
    report = load_checkpoint(model, path)
    assert report.layout == "two-head" and all(k.startswith("attention.") for k in report.fresh)
    x = golden["input"][:1, :, :40, :56]
    with torch.no_grad():
        a, b = model(x), reference_model(x)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        model.attention.gamma.fill_(0.5)
        assert not torch.allclose(model(x)[0], b[0])


def test_nvidia_one_head_checkpoint_loads_with_a_fresh_ood_head(reference_model, tmp_path):
    one_head = json.loads((REF / "DeepWV3Plus.state_dict_shapes.json").read_text())
    state = {"module." + k: v.float() for k, v in reference_model.state_dict().items() if k in one_head}
    assert len(state) == len(one_head)  # the two-head model is the one-head model plus logits_ood
    path = tmp_path / "cityscapes_cv0_wideresnet38_nosdcaug.pth"
    torch.save({"state_dict": state, "epoch": 175, "mean_iu": 0.81}, path)
    model = DeepWV3PlusTH(19)
    head_before = model.logits_ood.conv.weight.clone()
    report = load_checkpoint(model, path)
    assert report.layout == "one-head (module. prefix)"
    assert sorted(report.fresh) == sorted(k for k in model.state_dict() if k.startswith("logits_ood."))
    assert torch.equal(model.logits_ood.conv.weight, head_before)
    assert torch.equal(model.final[6].weight, reference_model.final[6].weight.float())


def test_our_training_checkpoint_layout(tmp_path):
    torch.manual_seed(0)
    model = SmallDeepLabTH(19)
    torch.save({"model": model.state_dict(), "step": 12, "rng": torch.get_rng_state()}, tmp_path / "ckpt.pt")
    fresh = SmallDeepLabTH(19)
    report = load_checkpoint(fresh, tmp_path / "ckpt.pt")
    assert report.fresh == [] and report.loaded == len(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_mismatch_lists_missing_unexpected_and_wrong_shapes(tmp_path):
    state = SmallDeepLabTH(5).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["mod3.block1.bn1.0.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(SmallDeepLabTH(19), tmp_path / "bad.pt")
    message = str(err.value)
    assert "missing keys (1): mod3.block1.bn1.0.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "final.6.weight checkpoint (5, 64, 1, 1) vs model (19, 64, 1, 1)" in message
    report = load_checkpoint(SmallDeepLabTH(19), tmp_path / "bad.pt", strict=False)
    assert "final.6.weight" not in report.fresh and "mod3.block1.bn1.0.weight" in report.fresh


def test_checkpoints_are_read_without_unpickling_code(tmp_path):
    torch.save({"model": SmallDeepLabTH(19).state_dict(), "note": Path("x")}, tmp_path / "pickled.pt")
    from dhlib.models.checkpoints import CheckpointReadError
    with pytest.raises(CheckpointReadError, match="pickled.pt holds Python objects"):
        load_checkpoint(SmallDeepLabTH(19), tmp_path / "pickled.pt")


@pytest.mark.parametrize("size", [(37, 53), (64, 96), (17, 130)])
def test_smoke_any_input_size_gives_logits_at_that_size(size):
    torch.manual_seed(0)
    model = SmallDeepLabTH(19).eval()
    seg, ood = model(torch.rand(2, 3, *size))
    assert seg.shape == (2, 19, *size) and ood.shape == (2, 2, *size)


def test_smoke_wrn38_on_odd_sizes():
    model = DeepWV3PlusTH(19).eval()
    with torch.no_grad():
        seg, ood = model(torch.rand(1, 3, 33, 45))
    assert seg.shape == (1, 19, 33, 45) and ood.shape == (1, 2, 33, 45)


def test_smoke_attention_maps():
    model = SmallDeepLabTH(19, attention=True).eval()
    maps = model.attention_maps(torch.rand(2, 3, 64, 128))
    assert maps["spatial"].shape == (2, 1, 16, 32) and maps["channel"].shape == (2, 80, 1, 1)
    assert 0 < maps["spatial"].min() and maps["spatial"].max() < 1
    with pytest.raises(RuntimeError, match="attention=False"):
        SmallDeepLabTH(19, attention=False).attention_maps(torch.rand(1, 3, 32, 32))


def test_build_model_follows_the_profile():
    assert isinstance(build_model(load_profile("quick")), SmallDeepLabTH)
    paper = build_model(load_profile("paper"))
    assert isinstance(paper, DeepWV3PlusTH) and paper.attention is None
    assert build_model(load_profile("quick", attention=False)).attention is None


@pytest.mark.parametrize("skip_stride", [2, 4])
def test_smoke_small_model_decodes_at_its_skip_stride(skip_stride):
    torch.manual_seed(0)
    model = SmallDeepLabTH(19, skip_stride=skip_stride).eval()
    maps = model.attention_maps(torch.rand(1, 3, 64, 128))
    assert maps["spatial"].shape == (1, 1, 64 // skip_stride, 128 // skip_stride)
    seg, ood = model(torch.rand(1, 3, 37, 53))
    assert seg.shape == (1, 19, 37, 53) and ood.shape == (1, 2, 37, 53)
    assert build_model(load_profile("quick", skip_stride=skip_stride)).skip_stride == skip_stride
    with pytest.raises(ValueError, match="skip_stride must be 2"):
        SmallDeepLabTH(19, skip_stride=8)


def test_small_model_input_scale_looks_at_a_resized_scene():
    """input_scale=0.5 halves the decoder's grid, keeps the output at the input size, and
    equals running the full-resolution model on the image resized by hand."""
    torch.manual_seed(0)
    half = SmallDeepLabTH(19, input_scale=0.5).eval()
    x = torch.rand(2, 3, 64, 128)
    assert half.attention_maps(x)["spatial"].shape == (2, 1, 64 // 8, 128 // 8)
    seg, ood = half(x)
    assert seg.shape == (2, 19, 64, 128) and ood.shape == (2, 2, 64, 128)
    full = SmallDeepLabTH(19, input_scale=1.0).eval()
    full.load_state_dict(half.state_dict())  # same parameters: the scale is not a weight
    small = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    torch.testing.assert_close(half.decoder_feature(x), full.decoder_feature(small), atol=1e-5, rtol=1e-4)
    assert build_model(load_profile("quick")).input_scale == load_profile("quick").input_scale
    with pytest.raises(ValueError, match="input_scale must be in"):
        SmallDeepLabTH(19, input_scale=0)
    with pytest.raises(ValueError, match="input_scale applies to the small model only"):
        load_profile("paper", input_scale=0.5)


def test_paper_model_reads_its_profile_and_the_released_head():
    """build_model honours aspp_dim / fine_dim / aspp_rates for wrn38, and the OOD head's
    BatchNorm has the released model's momentum (models/deeplabv3/deeplabv3.py: 0.01)."""
    from dhlib.config import load_profile
    from dhlib.models import build_model
    model = build_model(load_profile("paper", aspp_dim=64, fine_dim=16, aspp_rates=(6, 12, 18)))
    assert model.bot_fine.out_channels == 16 and model.bot_aspp.out_channels == 64
    assert [branch[0].dilation[0] for branch in model.aspp.features[1:]] == [6, 12, 18]
    assert model.logits_ood.norm.num_features == 64 + 16 and model.logits_ood.norm.momentum == 0.01
    assert build_model(load_profile("paper")).logits_ood.norm.num_features == 256 + 48
