"""Checkpoints that survive interruption: atomic writes and the RNG states a resume needs.

A training run killed at any moment must leave either the previous checkpoint or the new
one on disk, never half a file: we write to ``<name>.tmp`` and ``os.replace`` it, which is
atomic on POSIX file systems. Resuming bit-for-bit also needs the random generators' states;
dhlib's training code draws only from torch generators, so those are the ones saved.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_save(obj, path) -> Path:
    """``torch.save(obj, path)`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def rng_state(generator: torch.Generator | None = None) -> dict:
    """torch's global CPU generator state, and that of ``generator`` if given."""
    state = {"torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def atomic_write_text(text: str, path) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
