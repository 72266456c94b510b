"""Trainer step time of the quick profile: float32 against mixed precision, the decode cache,
flow samples of one shape per step, DataLoader workers.

Times the demo's own loop body (``next_batch``, ``segmenter_step`` and, every ``flow_every``
steps, ``flow_step``; quick profile, fine-tuning from the shipped closed-set weights and flow)
and prints, for each setting, steps/s, the mean time spent waiting for a batch and the ratio
to the first setting. Each setting runs in its own process, so the workers' start-up and memory
are its own.

Settings are ``precision/cache/workers/shapes``: ``fp32`` or ``amp`` (bf16 where this CPU has
it, ``devices.mixed_precision_dtype``); ``cache`` or ``nocache`` (decoded scenes kept in memory;
a cached setting reads every scene once before timing, the steady state of every epoch after
the first); the number of DataLoader workers (the cache is used only without workers); and
``shared`` or ``each`` (``flow_shape_per_step``: a step's flow samples share one shape and one
batched pass of the flow, or each has its own).

Run: ``python benchmarks/bench_train_step.py [--settings fp32/nocache/0/each amp/cache/0/shared] [--steps 48]
[--threads 2]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time

DEFAULT_SETTINGS = ["fp32/nocache/0/each", "amp/nocache/0/each", "amp/cache/0/each", "amp/cache/0/shared",
                    "amp/nocache/1/shared"]


def _measure(setting: str, steps: int, threads: int, queue):
    import torch

    from dhlib import train_data
    from dhlib.config import load_profile
    from dhlib.provenance import training_precision
    from dhlib.train import flow_step, flow_step_due, next_batch, segmenter_step, setup_training
    precision, cache, workers, shapes = setting.split("/")
    torch.set_num_threads(threads)
    if cache != "cache":
        train_data.TRAINING_CACHE_BYTES = 0
    with tempfile.TemporaryDirectory() as run_dir:
        profile = load_profile("quick", num_workers=int(workers), amp=precision == "amp", runs_dir=run_dir,
                               flow_shape_per_step=shapes == "shared", train_steps=steps + 5)
        setup = setup_training(profile, progress=False)
        for dataset in (setup.crops.dataset, setup.negatives) if cache == "cache" else ():
            for index in range(len(dataset)):  # the first epoch fills the cache
                dataset[index]
        waited = 0.0
        for step in range(steps + 5):
            if step == 5:  # after warm-up: the workers' start and the first allocations
                start, waited = time.perf_counter(), 0.0
            before = time.perf_counter()
            images, targets = next_batch(setup)
            waited += time.perf_counter() - before
            segmenter_step(setup, images, targets)
            if flow_step_due(setup):
                flow_step(setup, images, targets)
            setup.step += 1
        elapsed = time.perf_counter() - start
    queue.put({"setting": setting, "precision": training_precision(profile),
               "steps_per_s": steps / elapsed, "wait_ms": 1000 * waited / steps})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for setting in args.settings:
        queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_measure, args=(setting, args.steps, args.threads, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    base = rows[0]["steps_per_s"]
    print(f"{'setting':>22s}{'computes in':>13s}{'steps/s':>10s}{'s/step':>9s}{'batch wait (ms)':>17s}{'ratio':>8s}")
    for r in rows:
        print(f"{r['setting']:>22s}{r['precision']:>13s}{r['steps_per_s']:10.2f}{1 / r['steps_per_s']:9.3f}"
              f"{r['wait_ms']:17.1f}{r['steps_per_s'] / base:8.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
