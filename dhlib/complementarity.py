"""Do the hybrid's two cues see different anomalies? A test of the papers' premise.

DenseHybrid adds two cues with equal weight: s(x) = ln P(out|x) − ln p̂(x). The sum can beat
both only where they fail on different pixels: the toy of notebook 00 has anomalies that only
the discriminative cue sees and others that only the generative one sees. Whether a trained
model and a test set are like that is measured here, three ways:

* **a weight sweep**: the metrics of s_w(x) = ln P(out|x) − w · ln p̂(x) for w from 0 (the
  discriminative cue alone) through 1 (the hybrid) to ∞ (ranked as −ln p̂, energy alone: s_w / w
  orders the pixels as s_w does and tends to −ln p̂). If FPR95 is lowest at some finite w > 0,
  the cues complement each other at 95 % TPR; if it is lowest at w = ∞ among the weights tried,
  every amount of the discriminative cue tried costs more false alarms there than it saves;
* **rank correlations** of the two cues over the anomaly pixels and over the inlier pixels
  (Spearman, each pixel carrying both cues' values);
* **shared misses**: of the anomaly pixels energy misses at 95 % TPR (the 5 % below its
  threshold), the share the discriminative cue would miss even at 80 % TPR (its lowest 20 %).
  Complementary cues give a small share; with independent cues it would be 20 %.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from .evaluation import THKLOODEvaluation
from .metrics import StreamingOODMetrics, threshold_at_tpr
from .scores import discriminative, energy

# w in s_w = ln P(out|x) − w·ln p̂(x); inf ranks pixels by −ln p̂(x) alone (energy).
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)
# Energy's misses at 1 − MISSED = 95 % TPR, against the discriminative cue's at 1 − LOW = 80 %:
# the looser bar asks whether that cue finds those pixels weak too, not only whether it misses them.
MISSED, LOW = 0.05, 0.20


def cue_maps(model, dataset, progress: bool = True):
    """Yield ``(ln P(out|x), −ln p̂(x), label)`` maps (H×W tensors) of every image of
    ``dataset`` (items ``(image, ood_label)``), one forward pass of ``model`` each, through the
    evaluation's own :meth:`~dhlib.evaluation.THKLOODEvaluation.score_maps`."""
    evaluation = THKLOODEvaluation(model, dataset, scores={"discriminative": discriminative, "energy": energy})
    for i in tqdm(range(len(dataset)), desc="cue maps", disable=not progress):
        image, label = dataset[i]
        maps = evaluation.score_maps(image)[1]
        yield maps["discriminative"], maps["energy"], torch.as_tensor(label)


def weighted_score(disc: torch.Tensor, ener: torch.Tensor, w: float) -> torch.Tensor:
    """s_w = ln P(out|x) + w·(−ln p̂(x)); w = inf gives −ln p̂(x), which ranks as w → ∞ does."""
    return ener if math.isinf(w) else disc + w * ener


def cue_complementarity(maps, weights=WEIGHTS, inliers_per_image: int = 2000, seed: int = 0) -> dict:
    """The weight sweep, rank correlations and shared misses of the cue maps ``maps`` (an
    iterable of ``(ln P(out|x), −ln p̂(x), label)``; see :func:`cue_maps`).

    The sweep's metrics are pooled over every pixel (streamed, as the evaluation's). The rank
    statistics use every anomaly pixel and up to ``inliers_per_image`` random inlier pixels of
    each image; void pixels (255) are in neither.
    """
    # 20 bits, not the default 22: a stream per weight holds two int64 histograms of 2^bits bins
    # (16 MiB each at 20 bits). Bins are then 2^-11 of a value wide, so the rows at w = 0, 1 and
    # ∞ can differ from the evaluation's table in the second decimal.
    streams = {w: StreamingOODMetrics(bits=20) for w in weights}
    rng = np.random.default_rng(seed)
    samples = {0: [], 1: []}
    for disc, ener, label in maps:
        for w, stream in streams.items():
            stream.update(weighted_score(disc, ener, w), label)
        _sample_pixels(samples, disc, ener, label, inliers_per_image, rng)
    sweep = {w: stream.compute() for w, stream in streams.items()}
    out = {"weights": list(weights)} | {k: [sweep[w][k] for w in weights] for k in ("AP", "AUROC", "FPR95")}
    return out | _rank_statistics(samples)


def _sample_pixels(samples: dict, disc, ener, label, inliers_per_image: int, rng) -> None:
    """Append ``(ln P(out|x), −ln p̂)`` of every anomaly pixel and of up to ``inliers_per_image``
    random inlier pixels."""
    # Every anomaly pixel: a cap per image would over-weight the small anomalies, and energy's
    # misses must be the pooled pixels its 95 %-TPR threshold leaves out.
    label = torch.as_tensor(label).flatten().numpy()
    d, e = disc.flatten().numpy(), ener.flatten().numpy()
    for cls, cap in ((0, inliers_per_image), (1, None)):
        idx = np.flatnonzero(label == cls)
        if cap is not None and idx.size > cap:
            idx = rng.choice(idx, cap, replace=False)
        if idx.size:
            samples[cls].append(np.stack([d[idx], e[idx]], 1))


def _rank_statistics(samples: dict) -> dict:
    """Spearman's ρ of the cues on each label's pixels, and the shared misses; the pixels
    themselves (``samples``: label → N×2 array of (ln P(out|x), −ln p̂)) and the two quantiles
    for figures."""
    inl, ano = (np.concatenate(samples[c]) if samples[c] else np.zeros((0, 2)) for c in (0, 1))
    if len(ano) < 1 / MISSED or len(inl) < 2:  # below 1/MISSED anomaly pixels energy misses none
        raise ValueError(f"need anomaly and inlier pixels; got {len(ano)} anomaly and {len(inl)} sampled inlier pixels")
    # shared misses = |H ∩ D| / |H|,  H = {anomaly: −ln p̂ < τ_E},  D = {anomaly: ln P(out|x) < τ_D}
    # with τ_E, τ_D the thresholds at 95 % and 80 % TPR (metrics.threshold_at_tpr, the ⌈tpr·P⌉-th
    # largest score). Independent cues give LOW in expectation, cues that rank alike 1.
    every = np.ones(len(ano), np.int64)
    energy_miss = threshold_at_tpr(ano[:, 1], every, 1 - MISSED)
    disc_low = threshold_at_tpr(ano[:, 0], every, 1 - LOW)
    missed = ano[:, 1] < energy_miss
    return {"samples": {0: inl, 1: ano}, "energy_miss": float(energy_miss), "disc_low": float(disc_low),
            "spearman_anomaly": float(spearmanr(ano[:, 0], ano[:, 1])[0]),
            "spearman_inlier": float(spearmanr(inl[:, 0], inl[:, 1])[0]),
            "shared_misses": float((ano[missed, 0] < disc_low).mean())}


def format_sweep(result: dict) -> str:
    """The sweep as aligned text, one row per weight, then the rank statistics."""
    rows = [f"{'AP':>6s} {'AUROC':>6s} {'FPR95':>6s}  weight of −ln p̂"]
    for w, ap, auroc, fpr in zip(result["weights"], result["AP"], result["AUROC"], result["FPR95"]):
        name = "∞ (energy)" if math.isinf(w) else f"{w:g}" + (" (disc.)" if w == 0 else " (hybrid)" if w == 1 else "")
        rows.append(f"{100 * ap:6.2f} {100 * auroc:6.2f} {100 * fpr:6.2f}  w = {name}")
    rows.append(f"Spearman ρ(ln P(out|x), −ln p̂): anomaly pixels {result['spearman_anomaly']:.2f}, "
                f"inlier pixels {result['spearman_inlier']:.2f}; shared misses {100 * result['shared_misses']:.0f} %")
    return "\n".join(rows)
