"""Where a run came from: the command, the profile overrides, the commit, the machine.

A training command writes ``run_info.json`` into its run folder when it starts (a resumed run
keeps the first one), and ``ship-weights`` copies it into the model card, so that every
shipped file says how to make it again.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
import platform
import subprocess
import sys
from pathlib import Path

import torch

from .checkpointing import atomic_write_text


def git_commit(folder) -> str:
    """The checkout's HEAD commit, with ``+dirty`` when the package's sources differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "dhlib")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def profile_overrides(profile) -> dict:
    """The fields of ``profile`` that differ from its named profile's defaults."""
    from .config import load_profile
    base = load_profile(profile.name)
    return {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile)
            if getattr(profile, f.name) != getattr(base, f.name)}


def training_precision(profile) -> str:
    """The dtype a training step of ``profile`` computes in here: float32, or autocast's dtype."""
    from .devices import mixed_precision_dtype, select_device
    try:
        dtype = mixed_precision_dtype(select_device(profile.device)) if profile.amp else None
    except (ValueError, RuntimeError):  # a device this machine lacks: the run itself will say so
        return "unknown"
    return str(dtype or torch.float32).removeprefix("torch.")


def run_info(profile, command: str, precision: str | None = None) -> dict:
    from .config import project_root
    return {"command": command, "profile": profile.name, "overrides": profile_overrides(profile),
            "commit": git_commit(project_root()), "seed": profile.seed, "threads": torch.get_num_threads(),
            "precision": precision or training_precision(profile),
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "host": platform.node(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def record_run_info(run_dir, profile, command: str | None = None, resume: bool = False,
                    name: str = "run_info.json", checkpoint: str = "checkpoint.pt",
                    precision: str | None = None) -> dict:
    """Write ``run_dir/<name>``. A resumed run (``resume`` and a ``checkpoint`` to resume from)
    keeps the one written when it started, since that is the command to reproduce it, and adds
    where it was resumed and with which commit. (The flow's pre-training shares its run folder
    with the segmenter's, so it keeps its own ``flow_run_info.json`` beside its checkpoint.)
    ``precision``: what the run computes in, where that is not the segmenter step's precision."""
    path = Path(run_dir) / name
    command = command or "python -m dhlib " + " ".join(sys.argv[1:])
    checkpoint = Path(run_dir) / checkpoint
    if resume and path.exists() and checkpoint.exists():  # the origin stays; each resume is listed
        info = json.loads(path.read_text())
        step = torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]
        resumed = run_info(profile, command, precision)
        info.setdefault("resumes", []).append({"at_step": step, "command": command, "commit": resumed["commit"],
                                               "threads": resumed["threads"]})
        atomic_write_text(json.dumps(info, indent=2, default=list) + "\n", path)
        return info
    info = run_info(profile, command, precision)
    atomic_write_text(json.dumps(info, indent=2, default=list) + "\n", path)
    return info


def wall_time_from_log(log_path) -> float:
    """Seconds of training in a JSON-lines log, summed over the processes of a resumed run.

    Each process logs ``time_s`` since its own start, so a drop in ``time_s`` marks a resume.
    """
    total = last = 0.0
    with open(log_path) as f:
        for line in f:
            t = json.loads(line).get("time_s")
            if t is None:
                continue
            if t < last:
                total += last
            last = t
    return round(total + last, 1)
