"""Trainer step time of the quick profile, by number of DataLoader workers.

Times ``next_batch`` + ``segmenter_step`` of the real trainer (quick profile, fine-tuning from
the shipped closed-set weights, b = 0 so that the flow does not enter) and prints, for each
``num_workers``, steps/s, the mean time spent waiting for a batch and the ratio to the first
setting. Each setting runs in its own process, so the workers' start-up and memory are its own.

Run: ``python benchmarks/bench_train_step.py [--workers 0 1 2] [--steps 60] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time


def _measure(workers: int, steps: int, threads: int, queue):
    import torch

    from dhlib.config import load_profile
    from dhlib.train import next_batch, segmenter_step, setup_training
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as run_dir:
        profile = load_profile("quick", num_workers=workers, synthetic_prob=0.0, runs_dir=run_dir,
                               train_steps=steps + 5)
        setup = setup_training(profile, progress=False)
        waited = 0.0
        for step in range(steps + 5):
            if step == 5:  # after warm-up: the workers' start and the first allocations
                start, waited = time.perf_counter(), 0.0
            before = time.perf_counter()
            images, targets = next_batch(setup)
            waited += time.perf_counter() - before
            segmenter_step(setup, images, targets)
            setup.step += 1
        elapsed = time.perf_counter() - start
    queue.put({"workers": workers, "steps_per_s": steps / elapsed, "wait_ms": 1000 * waited / steps})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for workers in args.workers:
        queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_measure, args=(workers, args.steps, args.threads, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    base = rows[0]["steps_per_s"]
    print(f"{'num_workers':>12s}{'steps/s':>10s}{'batch wait (ms)':>17s}{'ratio':>8s}")
    for r in rows:
        print(f"{r['workers']:12d}{r['steps_per_s']:10.2f}{r['wait_ms']:17.1f}{r['steps_per_s'] / base:8.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
