"""Shipped weights: a small registry in the spirit of torchvision's ``WeightsEnum``.

Each entry names a file in ``weights/`` and its model card ``weights/<name>.json``: the
command that produced it, the commit, seed, steps, wall time and thread count, the metrics
measured *on the file as stored*, and its sha256. Loading always checks the hash, so a
truncated download, a Git LFS pointer or a file from another run never loads silently.

* ``quick-closed-set``: stage 1 of the quick tier, the closed-set segmenter trained by
  ``python -m dhlib pretrain`` (the quick counterpart of NVIDIA's Cityscapes checkpoint);
* ``quick-flow``: the normalizing flow pre-trained on inlier crops by ``python -m dhlib
  train-flow``, which stage 2 starts its joint phase from (the profile's ``flow_init``);
* ``quick-densehybrid``: stage 2, DenseHybrid fine-tuned from both by ``python -m dhlib train``;
  its card also holds the ``score`` threshold and the split that calibrated it.

``make pretrain``, ``make flow`` and ``make finetune`` rebuild them; ``python -m dhlib ship-weights NAME``
turns a finished run into the shipped file and its card.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def weights_dir() -> Path:
    """``weights/`` of the checkout this package lives in (shipped with the repository);
    ``DHLIB_WEIGHTS_DIR`` points elsewhere (the tests write their own files there)."""
    if os.environ.get("DHLIB_WEIGHTS_DIR"):
        return Path(os.environ["DHLIB_WEIGHTS_DIR"])
    return Path(__file__).resolve().parents[2] / "weights"


class WeightsError(RuntimeError):
    """A shipped weights file is missing, incomplete or not the file its card describes."""


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Weights:
    """One shipped file: ``weights/<name>.pt`` and its card ``weights/<name>.json``."""

    name: str
    profile: str      # the profile whose model the file fits
    stage: str        # 'closed-set' (stage 1), 'flow' (its flow) or 'densehybrid' (stage 2)
    make_target: str  # the make target that rebuilds it

    @property
    def path(self) -> Path:
        return weights_dir() / f"{self.name}.pt"

    @property
    def card_path(self) -> Path:
        return weights_dir() / f"{self.name}.json"

    @property
    def card(self) -> dict:
        if not self.card_path.is_file():
            raise WeightsError(f"the model card {self.card_path} is missing: rebuild the weights with "
                               f"`make {self.make_target}`, or restore weights/ from the repository")
        return json.loads(self.card_path.read_text())

    @property
    def sha256(self) -> str:
        return self.card["sha256"]

    def verify(self) -> Path:
        """The file's path once it is present and its sha256 matches the card; else a clear error."""
        path, card = self.path, self.card
        fix = (f"restore it with `git checkout -- weights/` (with `git lfs pull` if your clone uses LFS), "
               f"or rebuild it with `make {self.make_target}`")
        if not path.is_file():
            raise WeightsError(f"shipped weights {path} are missing: {fix}")
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
        if head == LFS_POINTER:
            raise WeightsError(f"{path} is a Git LFS pointer, not the weights: run `git lfs pull`, or {fix}")
        size = path.stat().st_size
        if size != card["size_bytes"]:
            raise WeightsError(f"{path} has {size} bytes, its card says {card['size_bytes']}: the file is "
                               f"truncated or was replaced; {fix}")
        digest = sha256(path)
        if digest != card["sha256"]:
            raise WeightsError(f"{path} has sha256 {digest[:12]}…, its card says {card['sha256'][:12]}…: "
                               f"the file is corrupt or comes from another run; {fix}")
        return path

    def state_dict(self) -> dict:
        """The hash-checked state_dict, in float32 (the file may store float16)."""
        state = torch.load(self.verify(), map_location="cpu", weights_only=True)
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


REGISTRY = {w.name: w for w in (
    Weights("quick-closed-set", profile="quick", stage="closed-set", make_target="pretrain"),
    Weights("quick-flow", profile="quick", stage="flow", make_target="flow"),
    Weights("quick-densehybrid", profile="quick", stage="densehybrid", make_target="finetune"),
)}


def get(name: str) -> Weights:
    """The registered weights called ``name``."""
    if name not in REGISTRY:
        raise KeyError(f"no shipped weights called {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def resolve(name_or_path) -> tuple[Path, str | None]:
    """A registered name → its verified path and sha256; anything else → ``(Path, None)``."""
    if str(name_or_path) in REGISTRY:
        weights = REGISTRY[str(name_or_path)]
        return weights.verify(), weights.sha256
    return Path(name_or_path), None


def write_file_and_card(weights: Weights, state_dict: dict, card: dict) -> dict:
    """Store ``state_dict`` in float16 as ``weights.path`` and ``card`` (+ size, sha256) beside it.

    float16 halves the file; metrics in the card must be measured on the float16 weights,
    which :meth:`Weights.state_dict` returns as float32 again.
    """
    from ..checkpointing import atomic_save, atomic_write_text
    half = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    atomic_save(half, weights.path)
    card = {"name": weights.name, "file": f"weights/{weights.path.name}", "profile": weights.profile,
            "stage": weights.stage, "dtype": "float16", "size_bytes": weights.path.stat().st_size,
            "sha256": sha256(weights.path)} | card
    atomic_write_text(json.dumps(card, indent=2) + "\n", weights.card_path)
    return card


def load_model(name: str = "quick-densehybrid", path=None, profile=None):
    """The model with the shipped weights ``name`` loaded (hash-checked), in eval mode.

    ``path`` loads another file into the same architecture instead (e.g. your own
    ``runs/quick/model.pt``); ``profile`` builds the architecture of a profile with overrides
    instead of the registered one.
    """
    from ..config import load_profile
    from . import build_model, load_checkpoint
    weights = get(name)
    model = build_model(profile or load_profile(weights.profile))
    load_checkpoint(model, weights.verify() if path is None else path)
    return model.eval()
