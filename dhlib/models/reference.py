"""The golden reference of the WideResNet38 DeepLabV3+ and its deterministic weight rule.

``dhlib/models/reference_data/wrn38_deeplabv3plus`` (package data, see :func:`reference_dir`)
holds the checkpoint key manifests and golden input/output tensors computed by the original
implementation with weights filled by a fixed rule. Filling ``DeepWV3PlusTH`` by the same rule
and comparing outputs (relative error ≤ 1e-6 in float64) proves that it computes the same
function, hence that the official checkpoints load into it faithfully.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import torch


def reference_dir() -> Path:
    """``reference_data/wrn38_deeplabv3plus`` inside this package (shipped as package data).

    It holds ``DeepWV3PlusTH.state_dict_shapes.json``, ``DeepWV3Plus.state_dict_shapes.json``
    and ``golden_io_2x3x64x96.pt``; nothing outside the repository or the installed package is read.
    """
    folder = Path(__file__).resolve().parent / "reference_data" / "wrn38_deeplabv3plus"
    if not folder.is_dir():
        raise FileNotFoundError(f"the reference data folder {folder} is missing: it is package data "
                                "of dhlib.models; reinstall the package (pip install -e .)")
    return folder


def fill_by_reference_rule(model: torch.nn.Module) -> None:
    """Fill every tensor of ``model.state_dict()`` by the reference's rule.

    Each tensor draws from ``torch.Generator().manual_seed(crc32(name))`` in float64:
    running_var ~ 0.5 + U(0,1); running_mean ~ 0.1·N(0,1); ≥2-D weights ~ N(0,1)·fan_in^-½;
    other weights ~ 1 + 0.1·N(0,1); everything else ~ 0.1·N(0,1); counters untouched.
    Convert the model to float64 first to keep every drawn digit.
    """
    new = {}
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            new[name] = t
            continue
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        if name.endswith("running_var"):
            value = 0.5 + torch.rand(t.shape, generator=g, dtype=torch.float64)
        elif name.endswith("running_mean"):
            value = 0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64)
        elif t.dim() >= 2:
            value = torch.randn(t.shape, generator=g, dtype=torch.float64) * (1 / t[0].numel()) ** 0.5
        elif name.endswith("weight"):
            value = 1 + 0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64)
        else:
            value = 0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64)
        new[name] = value.to(t.dtype)
    model.load_state_dict(new)


def golden_relative_errors(model: torch.nn.Module, golden: dict) -> tuple[float, float]:
    """‖ours − reference‖ / ‖reference‖ for the class logits and the OOD logits."""
    with torch.no_grad():
        seg, ood = model(golden["input"])
    return tuple(float((a - b).norm() / b.norm()) for a, b in
                 ((seg, golden["seg_logits"]), (ood, golden["ood_logits"])))
