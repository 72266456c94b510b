"""OOD-metric benchmark: exact metrics vs scikit-learn, streaming metrics vs exact.

1. 2e7 pixels, 2 % anomalies, float32 scores: time of ``dhlib.metrics.ood_metrics`` (AP,
   AUROC, FPR95 in one pass) against scikit-learn's ``average_precision_score`` +
   ``roc_auc_score`` + ``roc_curve`` on the same data; the values must be identical.
   Peak memory (tracemalloc: numpy allocations) of each.
2. 1e8 pixels streamed in batches of 1e7 through ``StreamingOODMetrics``: its largest
   deviation from the exact metrics on the same pixels, and its throughput.

Run: ``python benchmarks/bench_metrics.py`` (scikit-learn from the dev extra).
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dhlib.metrics import StreamingOODMetrics, ood_metrics


def timed(fn):
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return result, seconds, peak


def sklearn_all(s, y):
    fpr, tpr, _ = roc_curve(y, s)
    return {"AP": average_precision_score(y, s), "AUROC": roc_auc_score(y, s),
            "FPR95": float(fpr[np.argmax(tpr >= 0.95)])}


def data(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.02).astype(np.uint8)
    s = (rng.standard_normal(n, dtype=np.float32) * 1.5 + 2.5 * y - 4.0)  # unbounded, like DenseHybrid's
    return s, y


def main():
    s, y = data(20_000_000, 0)
    ours, t_ours, m_ours = timed(lambda: ood_metrics(s, y))
    ref, t_ref, m_ref = timed(lambda: sklearn_all(s, y))
    diff = max(abs(ours[k] - ref[k]) for k in ours)
    print(f"2e7 pixels: dhlib {t_ours:.2f} s (peak {m_ours:.0f} MiB), scikit-learn {t_ref:.2f} s "
          f"(peak {m_ref:.0f} MiB): {t_ref / t_ours:.1f}x faster; largest difference {diff:.1e}")
    print("  " + ", ".join(f"{k} {v:.6f}" for k, v in ours.items()))

    stream = StreamingOODMetrics()
    batches, seconds = [], 0.0
    for b in range(10):
        sb, yb = data(10_000_000, 100 + b)
        start = time.perf_counter()
        stream.update(sb, yb)
        seconds += time.perf_counter() - start
        batches.append((sb, yb))
    start = time.perf_counter()
    approx = stream.compute()
    seconds += time.perf_counter() - start
    exact = ood_metrics(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    errors = {k: abs(approx[k] - exact[k]) for k in exact}
    print(f"1e8 streamed pixels: {1e8 / seconds / 1e6:.0f} M pixels/s; |streaming − exact|: " +
          ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) +
          f"; state {2 * stream.pos.nbytes / 2 ** 20:.0f} MiB")


if __name__ == "__main__":
    main()
