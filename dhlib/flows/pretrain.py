"""Pre-training the flow on inlier crops: minimise L_mle (bits/dim), checkpoint, resume.

Before the joint training of the TPAMI recipe, the flow learns what inlier image patches
look like: maximum likelihood on random ``flow_crop``×``flow_crop`` crops of the Cityscapes
training images (SynthCity in the quick tier), optimised with Adamax.

Crops come from a pool of decoded images held in memory; each step one pool slot is
refilled with a new random image, so the pool sweeps the training set without decoding a
whole batch of files every step. All draws use one ``torch.Generator`` whose state is saved,
so a resumed run continues exactly where the interrupted one stopped.

Files in ``profile.runs_dir``: ``flow_checkpoint.pt`` (everything needed to resume, written
every ``flow_checkpoint_every`` steps), ``flow.pt`` (the final flow's state_dict),
``flow_log.jsonl`` (one line per logged step), ``flow_summary.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..devices import select_device
from ..checkpointing import atomic_save, atomic_write_text, restore_rng_state, rng_state
from ..data.cityscapes import CityscapesSegmentation
from . import build_flow


class CropPool:
    """``size`` decoded images to cut random crops from; one slot is refreshed per draw."""

    def __init__(self, dataset, size: int, generator: torch.Generator, indices=None):
        self.dataset, self.generator = dataset, generator
        if indices is None:
            indices = torch.randperm(len(dataset), generator=generator)[:size].tolist()
        self.indices = list(indices)
        self.images = [self._load(i) for i in self.indices]

    def _load(self, index):
        return (self.dataset[index][0] * 255).round().to(torch.uint8)

    def crops(self, n: int, side: int) -> torch.Tensor:
        """``n`` random ``side``×``side`` crops as float images in [0, 1]."""
        slot = int(torch.randint(len(self.images), (1,), generator=self.generator))
        self.indices[slot] = int(torch.randint(len(self.dataset), (1,), generator=self.generator))
        self.images[slot] = self._load(self.indices[slot])
        out = []
        for _ in range(n):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=self.generator))]
            h, w = image.shape[-2:]
            top = int(torch.randint(h - side + 1, (1,), generator=self.generator))
            left = int(torch.randint(w - side + 1, (1,), generator=self.generator))
            out.append(image[:, top:top + side, left:left + side])
        return torch.stack(out).float() / 255


def fixed_crops(dataset, n: int, side: int, seed: int = 1234) -> torch.Tensor:
    """A fixed set of crops (the held-out set for bits/dim): the same for every run."""
    g = torch.Generator().manual_seed(seed)
    pool = CropPool(dataset, min(len(dataset), 32), g)
    return torch.cat([pool.crops(min(64, n - k), side) for k in range(0, n, 64)])


@torch.no_grad()
def held_out_bits_per_dim(flow, crops: torch.Tensor, batch: int = 128) -> float:
    """Mean bits/dim over ``crops`` with fixed dequantisation noise."""
    g = torch.Generator().manual_seed(0)
    device = next(flow.parameters()).device
    total = 0.0
    for k in range(0, len(crops), batch):
        chunk = crops[k:k + batch].to(device)
        total += flow.bits_per_dim(chunk, g.manual_seed(k)).item() * len(chunk)
    return total / len(crops)


def pretrain_flow(profile, resume: bool = False, steps: int | None = None, progress: bool = True,
                  device: str | None = None) -> dict:
    """Train ``build_flow(profile)`` on inlier crops; returns a summary dict (also saved)."""
    from ..data import synthcity
    synthcity.ensure(profile, progress)
    device = select_device(device or profile.device)
    run_dir = Path(profile.path("runs_dir"))
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(profile.seed)
    generator = torch.Generator().manual_seed(profile.seed)
    train = CityscapesSegmentation(profile.path("cityscapes_root"), "train")
    flow = build_flow(profile).to(device)
    optimizer = torch.optim.Adamax(flow.parameters(), lr=profile.flow_lr)
    step, elapsed, pool_indices = resume_flow_state(run_dir, resume, flow, optimizer, generator)
    run = FlowRun(flow, optimizer, CropPool(train, min(len(train), 256), generator, pool_indices), generator,
                  run_dir, step, elapsed)
    run.train(steps or profile.flow_pretrain_steps, profile.flow_batch, profile.flow_crop,
              profile.flow_checkpoint_every, progress)
    flow.eval()
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    val_bpd = held_out_bits_per_dim(flow, fixed_crops(val, profile.flow_val_crops, profile.flow_crop))
    atomic_save(flow.state_dict(), run_dir / "flow.pt")
    summary = {"profile": profile.name, "steps": run.step, "train_time_s": round(run.elapsed, 1),
               "val_bits_per_dim": round(val_bpd, 4), "crop": profile.flow_crop,
               "parameters": sum(p.numel() for p in flow.parameters())}
    atomic_write_text(json.dumps(summary, indent=2), run_dir / "flow_summary.json")
    return summary


def resume_flow_state(run_dir: Path, resume: bool, flow, optimizer, generator) -> tuple[int, float, list | None]:
    """Load ``flow_checkpoint.pt`` into the flow, optimiser and generator when resuming; returns
    ``(step, elapsed seconds, pool indices)``. A fresh run starts a fresh log."""
    checkpoint_path = run_dir / "flow_checkpoint.pt"
    if resume and checkpoint_path.exists():
        device = next(flow.parameters()).device
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        flow.load_state_dict(state["flow"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"], generator)
        return state["step"], state["elapsed"], state["pool"]
    if not resume:
        (run_dir / "flow_log.jsonl").unlink(missing_ok=True)
    return 0, 0.0, None


class FlowRun:
    """The flow's maximum-likelihood steps, with the log and the checkpoints a resume needs."""

    def __init__(self, flow, optimizer, pool: CropPool, generator, run_dir: Path, step: int, elapsed: float):
        self.flow, self.optimizer, self.pool, self.generator = flow, optimizer, pool, generator
        self.run_dir, self.step, self.elapsed = run_dir, step, elapsed

    def save_checkpoint(self) -> None:
        atomic_save({"flow": self.flow.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                     "elapsed": self.elapsed, "pool": self.pool.indices, "rng": rng_state(self.generator)},
                    self.run_dir / "flow_checkpoint.pt")

    def train(self, total_steps: int, batch: int, crop: int, checkpoint_every: int, progress: bool) -> None:
        device = next(self.flow.parameters()).device
        noise = self.generator  # seeded on every device (flows.layers.draw_noise)
        bar = tqdm(total=total_steps, initial=self.step, desc="flow pre-training", disable=not progress)
        start = time.perf_counter() - self.elapsed
        with open(self.run_dir / "flow_log.jsonl", "a") as log:
            while self.step < total_steps:
                loss = self.flow.bits_per_dim(self.pool.crops(batch, crop).to(device), noise)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 100.0)
                self.optimizer.step()
                self.step += 1
                self.elapsed = time.perf_counter() - start
                bar.update()
                if self.step % 25 == 0 or self.step == total_steps:
                    bar.set_postfix(bpd=f"{loss.item():.3f}")
                    log.write(json.dumps({"step": self.step, "bits_per_dim": loss.item(), "time_s": self.elapsed}) + "\n")
                    log.flush()
                if self.step % checkpoint_every == 0 or self.step == total_steps:
                    self.save_checkpoint()
        bar.close()
