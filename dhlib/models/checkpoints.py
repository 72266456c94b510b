"""Loading checkpoints: the official DenseHybrid weights, NVIDIA's Cityscapes weights, ours.

Accepted layouts (all read with ``torch.load(..., weights_only=True)``, never unpickling code):

* a plain ``state_dict`` -- the official DenseHybrid two-head checkpoint, or ``model.pt``
  written by this package;
* a dict nesting it under ``'state_dict'`` (NVIDIA's ``cityscapes_cv0_wideresnet38_nosdcaug.pth``)
  or ``'model'`` (this package's training checkpoints);
* keys with the ``module.`` prefix of ``nn.DataParallel`` (NVIDIA) -- it is stripped.

Some parameters may legitimately be absent from a checkpoint and keep their fresh values:
the OOD head when the checkpoint is a one-head model (NVIDIA's, or a closed-set one), the attention block (it starts
as the identity), and BatchNorm's ``num_batches_tracked`` counters. Anything else missing,
any unexpected key and any wrongly shaped tensor is an error that lists them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

# The attention block is optional (the ablation turns it off), so it may be on one side only: a
# checkpoint without it leaves the model's block fresh, and a checkpoint with it fits a model built
# without it, whose forward pass never reads those weights, so they are dropped.
OPTIONAL_PREFIXES = ("attention.",)
ONE_HEAD_FRESH_PREFIXES = ("logits_ood.",)


class CheckpointError(Exception):
    """A checkpoint file the user has to fix: the message names it and says what to do."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointReadError(CheckpointError):
    """The file cannot be read as tensors: truncated, corrupt, or not a PyTorch checkpoint."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """The checkpoint's keys or shapes do not fit the model."""


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did: the layout it recognised, the keys left fresh, and the
    checkpoint's keys of an optional block the model was built without (``dropped``)."""
    layout: str
    loaded: int
    fresh: list = field(default_factory=list)
    dropped: list = field(default_factory=list)


def read_tensors(path: Path):
    """``torch.load`` of tensors only, with a message that says what is wrong with the file."""
    import pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of tensors at all
            raise CheckpointReadError(f"cannot read checkpoint {path}: it is truncated, corrupt or not a PyTorch "
                                      "file. Download or save it again.") from None
        # weights_only refuses to rebuild pickled objects: that would run code from the file
        raise CheckpointReadError(
            f"checkpoint {path} holds Python objects, not only tensors, and is not loaded (that would run "
            f"code from the file). Save its state_dict with torch.save(model.state_dict(), ...).") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # torn zip archives, other formats
        raise CheckpointReadError(
            f"cannot read checkpoint {path}: it is truncated, corrupt or not a PyTorch file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else '-'}). Download or save it again.") from None


def _unwrap(obj, path) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointMismatchError(f"{path} holds no state_dict: expected a dict of tensors, or one "
                                  f"nested under 'state_dict' or 'model' (found {type(obj).__name__} "
                                  f"with keys {list(obj)[:8] if isinstance(obj, dict) else '-'})")


def load_checkpoint(model: torch.nn.Module, path, *, strict: bool = True, reshaped_fresh: bool = False) -> LoadReport:
    """Load the weights in ``path`` into ``model`` and report what was loaded.

    ``strict=False`` loads every key that fits and leaves the rest fresh instead of raising.
    ``reshaped_fresh`` leaves only the tensors whose shape differs fresh (a warm start across a
    change of the model, such as the small model's ``skip_stride``); missing and unexpected
    keys still raise.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"checkpoint {path} does not exist: check the path (a model.pt of a run, "
                                     "NVIDIA's or the official DenseHybrid file)")
    state = _unwrap(read_tensors(path), path)
    prefixed = all(k.startswith("module.") for k in state)
    if prefixed:
        state = {k[len("module."):]: v for k, v in state.items()}
    expected = model.state_dict()
    one_head = not any(k.startswith("logits_ood.") for k in state)
    # one-head: no OOD head, as NVIDIA's Cityscapes file or a closed-set segmenter of ours
    layout = ("one-head" if one_head else "two-head") + (" (module. prefix)" if prefixed else "")

    allowed_fresh = OPTIONAL_PREFIXES + (ONE_HEAD_FRESH_PREFIXES if one_head else ())
    missing = [k for k in expected if k not in state]
    fresh = [k for k in missing if k.startswith(allowed_fresh) or k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in fresh]
    unexpected = [k for k in state if k not in expected]
    absent = tuple(p for p in OPTIONAL_PREFIXES if not any(k.startswith(p) for k in expected))
    dropped = [k for k in unexpected if k.startswith(absent)] if absent else []
    unexpected = [k for k in unexpected if k not in dropped]
    wrong = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in state
             if k in expected and state[k].shape != expected[k].shape]
    if reshaped_fresh:
        fresh, wrong = fresh + [k for k, _, _ in wrong], []
    if strict and (missing or unexpected or wrong):
        raise CheckpointMismatchError(_describe(path, model, missing, unexpected, wrong))
    usable = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(usable, strict=False)
    return LoadReport(layout, len(usable), fresh + missing, dropped)


def _describe(path, model, missing, unexpected, wrong) -> str:
    def listing(items, n=10):
        shown = ", ".join(map(str, items[:n]))
        return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")
    lines = [f"checkpoint {path} does not fit {type(model).__name__}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
    if wrong:
        lines.append(f"  wrong shapes ({len(wrong)}): " +
                     listing([f"{k} checkpoint {a} vs model {b}" for k, a, b in wrong]))
    lines.append("  Is it a checkpoint of this architecture (and number of classes)? "
                 "load_checkpoint(..., strict=False) loads what fits.")
    return "\n".join(lines)


def save_state_dict(model: torch.nn.Module, path) -> Path:
    """Write ``model.state_dict()`` atomically: a temporary file, then a rename."""
    from ..checkpointing import atomic_save
    return atomic_save(model.state_dict(), path)
