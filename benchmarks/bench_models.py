"""Model benchmark: parameter counts, CPU training-step and inference times, peak memory.

Prints, for the quick model (``SmallDeepLabTH``) and the paper model (``DeepWV3PlusTH``):
- parameters;
- forward+backward+Adam step of a batch of 8 at 128×256 (quick target: well under 1 s on
  2 cores) -- the paper model only with ``--paper-train``, it takes a long time on a CPU;
- inference of one 256×512 image;
- the peak resident memory of each measurement, run in its own process.

Run: ``python benchmarks/bench_models.py`` (``--threads`` sets torch's CPU threads, default 2).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time


def _measure(kind: str, what: str, threads: int, repeats: int, queue):
    import torch

    from dhlib.config import load_profile
    from dhlib.models import build_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(load_profile("quick" if kind == "quick" else "paper"))
    params = sum(p.numel() for p in model.parameters())
    times = []
    if what == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x, y = torch.rand(8, 3, 128, 256), torch.randint(0, 19, (8, 128, 256))
        for _ in range(repeats + 1):
            start = time.perf_counter()
            seg, ood = model(x)
            loss = torch.nn.functional.cross_entropy(seg, y) + ood.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
    else:
        model.eval()
        x = torch.rand(1, 3, 256, 512)
        with torch.inference_mode():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((params, statistics.median(times[1:]), peak_mb))  # the first run warms up


def measure(kind, what, threads, repeats):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, what, threads, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paper-train", action="store_true", help="also time a paper-model training step")
    args = parser.parse_args()
    print(f"torch CPU threads: {args.threads}")
    for kind in ("quick", "paper"):
        name = "SmallDeepLabTH (quick)" if kind == "quick" else "DeepWV3PlusTH (paper)"
        params, infer, infer_mb = measure(kind, "infer", args.threads, 2 if kind == "paper" else args.repeats)
        print(f"{name}: {params:,} parameters")
        print(f"  inference 1×3×256×512: {infer * 1000:.0f} ms, peak memory {infer_mb:.0f} MB")
        if kind == "quick" or args.paper_train:
            _, step, step_mb = measure(kind, "train", args.threads, args.repeats if kind == "quick" else 1)
            target = "  (target: well under 1 s)" if kind == "quick" else ""
            print(f"  train step 8×3×128×256 (fwd+bwd+Adam): {step * 1000:.0f} ms, "
                  f"peak memory {step_mb:.0f} MB{target}")


if __name__ == "__main__":
    main()
