"""The paper tier on a GPU: is the WRN38 model's training step fast enough, and does AMP pay?

On a CUDA machine, in a few minutes, this prints one table:

- training steps of the paper model (DeepWV3PlusTH, the `paper` profile's sizes) on 512 px
  crops at batch 8: the full DenseHybrid loss on a pasted batch, Adam; in float32, and in
  bfloat16 autocast with channels_last memory; images/s, peak GPU memory and the ratio;
- inference of one 1024×2048 Cityscapes-sized image (both cues), in both precisions;
- a check that every loss was finite.

The inputs are random (the timing of a step does not depend on the pixel values), so no
dataset or checkpoint is needed. Without CUDA it says so and exits 0; no test depends on it.

Run: ``python benchmarks/gpu_paper_tier.py [--steps 10] [--batch 8]``.
"""
from __future__ import annotations

import argparse
import sys
import time


def training_rate(model, batch: int, crop: int, steps: int, amp: bool) -> dict:
    """Images/s and peak memory of ``steps`` timed training steps (after two warm-up steps)."""
    import torch

    from dhlib.losses import densehybrid_loss
    device = torch.device("cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-6, eps=1e-7)
    x = torch.rand(batch, 3, crop, crop, device=device)
    seg_t = torch.randint(0, 19, (batch, crop, crop), device=device)
    ood_t = torch.zeros_like(seg_t)
    ood_t[:, :crop // 4, :crop // 4] = 1          # a pasted negative's pixels
    seg_t[ood_t == 1] = 255
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    finite = True
    torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):
        if step == 2:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            seg, ood = model(x)
        loss = densehybrid_loss(seg.float(), ood.float(), seg_t, ood_t, beta=0.03)["loss"]
        finite &= bool(torch.isfinite(loss))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"rate": steps * batch / seconds, "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "finite": finite}


def inference_time(model, amp: bool, repeats: int = 5) -> float:
    """Seconds per 1024×2048 image (both heads), after one warm-up."""
    import torch
    x = torch.rand(1, 3, 1024, 2048, device="cuda")
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        torch.cuda.synchronize()
    model.train()
    return (time.perf_counter() - start) / repeats


def measure(amp: bool, batch: int, steps: int) -> dict:
    """One precision: a fresh paper model, its training rate and its inference time."""
    import torch

    from dhlib.config import load_profile
    from dhlib.models import build_model
    torch.manual_seed(0)
    model = build_model(load_profile("paper")).cuda()
    if amp:
        model = model.to(memory_format=torch.channels_last)
    result = training_rate(model, batch, 512, steps, amp)
    result["infer_s"] = inference_time(model, amp)
    del model
    torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per precision")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("no CUDA device here: the paper-tier GPU benchmark needs one (nothing was measured)")
        return 0
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    fp32 = measure(False, args.batch, args.steps)
    amp = measure(True, args.batch, args.steps)
    print(f"{'':28s}{'fp32':>12s}{'bf16+CL':>12s}{'ratio':>8s}")
    print(f"{'train images/s (512 px, b' + str(args.batch) + ')':28s}{fp32['rate']:12.2f}{amp['rate']:12.2f}"
          f"{amp['rate'] / fp32['rate']:8.2f}")
    print(f"{'train peak memory (GiB)':28s}{fp32['peak_gb']:12.2f}{amp['peak_gb']:12.2f}"
          f"{amp['peak_gb'] / fp32['peak_gb']:8.2f}")
    print(f"{'inference 1024x2048 (s)':28s}{fp32['infer_s']:12.3f}{amp['infer_s']:12.3f}"
          f"{fp32['infer_s'] / amp['infer_s']:8.2f}")
    finite = fp32["finite"] and amp["finite"]
    print(f"losses finite: {finite}")
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
