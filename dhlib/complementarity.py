"""Do the hybrid's two cues see different anomalies? A test of the papers' premise.

DenseHybrid adds two cues with equal weight: s(x) = ln P(out|x) − ln p̂(x). The sum can beat
both only where they fail on different pixels: the toy of notebook 00 has anomalies that only
the discriminative cue sees and others that only the generative one sees. Whether a trained
model and a test set are like that is measured here, three ways:

* **a weight sweep**: the metrics of s_w(x) = ln P(out|x) − w · ln p̂(x) for w from 0 (the
  discriminative cue alone) through 1 (the hybrid) to ∞ (ranked as −ln p̂, energy alone). If
  FPR95 is lowest at some finite w > 0, the cues complement each other at 95 % TPR; if it
  falls all the way to w = ∞, the discriminative cue only adds false positives there;
* **rank correlations** of the two cues over the anomaly pixels and over the inlier pixels
  (Spearman, on the same sampled pixels for both cues);
* **shared misses**: of the anomaly pixels energy ranks lowest (its bottom 5 %, the ones that
  set its 95 %-TPR threshold), the share the discriminative cue also ranks in its bottom 20 %.
  Complementary cues give a small share; with independent cues it would be 20 %.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from .metrics import StreamingOODMetrics
from .scores import discriminative, energy

# w in s_w = ln P(out|x) − w·ln p̂(x); inf ranks pixels by −ln p̂(x) alone (energy).
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)


@torch.no_grad()
def cue_maps(model, dataset, progress: bool = True):
    """Yield ``(ln P(out|x), −ln p̂(x), label)`` maps (H×W tensors) of every image of
    ``dataset`` (items ``(image, ood_label)``), one forward pass of ``model`` each."""
    model.eval()
    device = next(model.parameters()).device
    for i in tqdm(range(len(dataset)), desc="cue maps", disable=not progress):
        image, label = dataset[i]
        seg, ood = model(image[None].to(device))
        seg, ood = seg.float().cpu(), ood.float().cpu()
        yield discriminative(seg, ood)[0], energy(seg)[0], torch.as_tensor(label)


def weighted_score(disc: torch.Tensor, ener: torch.Tensor, w: float) -> torch.Tensor:
    """s_w = ln P(out|x) + w·(−ln p̂(x)); w = inf gives −ln p̂(x), which ranks as w → ∞ does."""
    return ener if math.isinf(w) else disc + w * ener


def cue_complementarity(maps, weights=WEIGHTS, pairs_per_image: int = 2000, seed: int = 0) -> dict:
    """The weight sweep, rank correlations and shared misses of the cue maps ``maps`` (an
    iterable of ``(ln P(out|x), −ln p̂(x), label)``; see :func:`cue_maps`).

    The sweep's metrics are pooled over every pixel (streamed, as the evaluation's). The rank
    statistics use up to ``pairs_per_image`` anomaly and as many inlier pixels per image, the
    same pixels for both cues.
    """
    # 20 bits: 16 MiB of histograms per weight, bins 2^-11 of a value wide
    streams = {w: StreamingOODMetrics(bits=20) for w in weights}
    rng = np.random.default_rng(seed)
    pairs = {0: [], 1: []}
    for disc, ener, label in maps:
        for w, stream in streams.items():
            stream.update(weighted_score(disc, ener, w), label)
        _sample_pairs(pairs, disc, ener, label, pairs_per_image, rng)
    sweep = {w: stream.compute() for w, stream in streams.items()}
    out = {"weights": list(weights)} | {k: [sweep[w][k] for w in weights] for k in ("AP", "AUROC", "FPR95")}
    return out | _rank_statistics(pairs)


def _sample_pairs(pairs: dict, disc, ener, label, per_image: int, rng) -> None:
    """Append ``(disc, energy)`` at up to ``per_image`` random pixels of each label (0, 1)."""
    label = torch.as_tensor(label).flatten().numpy()
    d, e = disc.flatten().numpy(), ener.flatten().numpy()
    for cls in (0, 1):
        idx = np.flatnonzero(label == cls)
        if idx.size:
            pick = rng.choice(idx, min(per_image, idx.size), replace=False)
            pairs[cls].append(np.stack([d[pick], e[pick]], 1))


def _rank_statistics(pairs: dict) -> dict:
    """Spearman's ρ of the cues on each label's sampled pixels, and the shared misses; the
    samples themselves (``pairs``: label → N×2 array of (ln P(out|x), −ln p̂)) for figures."""
    inl, ano = (np.concatenate(pairs[c]) if pairs[c] else np.zeros((0, 2)) for c in (0, 1))
    if len(ano) < 20 or len(inl) < 2:
        raise ValueError(f"need anomaly and inlier pixels; sampled {len(ano)} anomaly and {len(inl)} inlier pixels")
    # Energy's hardest anomalies: below its 5th percentile, the pixels that set its threshold at
    # 95 % TPR. Of these, how many does the discriminative cue also put in its lowest fifth?
    hard = ano[:, 1] < np.quantile(ano[:, 1], 0.05)
    disc_low = ano[:, 0] < np.quantile(ano[:, 0], 0.20)
    return {"pairs": {0: inl, 1: ano},
            "spearman_anomaly": float(spearmanr(ano[:, 0], ano[:, 1])[0]),
            "spearman_inlier": float(spearmanr(inl[:, 0], inl[:, 1])[0]),
            "shared_misses": float(disc_low[hard].mean()) if hard.any() else float("nan")}


def format_sweep(result: dict) -> str:
    """The sweep as aligned text, one row per weight, then the rank statistics."""
    rows = [f"{'AP':>6s} {'AUROC':>6s} {'FPR95':>6s}  weight of −ln p̂"]
    for w, ap, auroc, fpr in zip(result["weights"], result["AP"], result["AUROC"], result["FPR95"]):
        name = "energy" if math.isinf(w) else f"{w:g}" + (" (disc.)" if w == 0 else " (hybrid)" if w == 1 else "")
        rows.append(f"{100 * ap:6.2f} {100 * auroc:6.2f} {100 * fpr:6.2f}  w = {name}")
    rows.append(f"Spearman ρ(ln P(out|x), −ln p̂): anomaly pixels {result['spearman_anomaly']:.2f}, "
                f"inlier pixels {result['spearman_inlier']:.2f}; shared misses {100 * result['shared_misses']:.0f} %")
    return "\n".join(rows)
