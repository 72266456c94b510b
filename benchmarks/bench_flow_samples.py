"""The flow's share of a joint training step: a shape per sample against one shape per step.

Times what ``flow_update='joint'`` adds to a segmenter step: ``paste_negatives`` with the flow
sampling with gradient, then L_mle of the covered inlier patches (``covered_bits_per_dim``) and
one backward pass through both, for ``flow_shape_per_step`` False (a pass of the flow per
sample) and True (the released joint trainer: one shape and one batched pass per step). The
flow is the paper profile's (3 levels × 8 steps, 256 wide) unless ``--hidden``/``--steps-per-level``
shrink it; images are random, the flow's weights are fresh: the work, not the numbers, is what
is timed. Prints seconds per step for each setting and their ratio.

Run: ``python benchmarks/bench_flow_samples.py [--device cuda] [--batch 12] [--crop 512] [--reps 5]``.
On a CPU, a smaller setting keeps it short: ``--batch 4 --crop 256 --max-side 96 --hidden 64``.
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch


def _one_step(images, targets, recipe, flow, generator, setup):
    from dhlib.negatives import paste_negatives
    from dhlib.train import covered_bits_per_dim
    mixed, _, _, boxes, synthetic = paste_negatives(images, targets, None, recipe, generator, flow=flow,
                                                    synthetic_prob=1.0, flow_grad=True)
    flow_boxes = [(i, b) for i, (b, s) in enumerate(zip(boxes, synthetic)) if s]
    loss = mixed.mean() + covered_bits_per_dim(setup, images, flow_boxes)
    loss.backward()


def _measure(per_step: bool, args) -> float:
    from dhlib.config import load_profile
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import NegativeRecipe
    device = torch.device(args.device)
    profile = load_profile("paper", flow_shape_per_step=per_step, flow_sample_max_side=args.max_side,
                           crop_size=args.crop)
    recipe = NegativeRecipe.from_profile(profile)
    flow = MultiScaleFlow(3, levels=profile.flow_levels, steps=args.steps_per_level or profile.flow_steps,
                          hidden=args.hidden or profile.flow_hidden).to(device)
    setup = SimpleNamespace(profile=profile, flow=flow, generator=torch.Generator(device).manual_seed(0))
    images = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
    targets = torch.zeros(args.batch, args.crop, args.crop, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(0)   # the same draws of shapes in every setting's reps
    _one_step(images, targets, recipe, flow, generator, setup)   # warm-up: allocations, ActNorm init
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.reps):
        flow.zero_grad(set_to_none=True)
        _one_step(images, targets, recipe, flow, generator, setup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.reps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--max-side", type=int, default=216)
    parser.add_argument("--hidden", type=int, default=0, help="coupling width (0: the paper profile's)")
    parser.add_argument("--steps-per-level", type=int, default=0, help="flow steps per level (0: the paper's)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    rows = {mode: _measure(mode == "per_step", args) for mode in ("per_sample", "per_step")}
    print(f"{'flow shape':>12s}{'s/step':>10s}")
    for mode, seconds in rows.items():
        print(f"{mode:>12s}{seconds:10.3f}")
    print(f"per-step is {rows['per_sample'] / rows['per_step']:.2f}x faster "
          f"({args.device}, batch {args.batch}, every image with a flow sample)")
    print(json.dumps(rows | vars(args)))


if __name__ == "__main__":
    main()
