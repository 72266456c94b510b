"""Checkpoints that survive interruption: atomic writes and the RNG states a resume needs.

A training run killed at any moment must leave either the previous checkpoint or the new
one on disk, never half a file: we write to a temporary file beside it and ``os.replace`` it, which is
atomic on POSIX file systems. Resuming bit-for-bit also needs the random generators' states;
dhlib's training code draws only from torch generators, so those are the ones saved.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    The one way dhlib writes a file: a reader (or a resumed run) sees the old file or the
    new one, never a half-written one. The temporary name keeps the suffix, so writers that
    pick a format from it (PIL, matplotlib) still do; a failed write leaves no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_save(obj, path) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path) -> Path:
    """Write ``text`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


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
