"""A ceiling for the OOD head: the best linear head on the decoder feature, with test labels.

The OOD head is a linear classifier (after BN and ReLU) on the decoder feature f(x), trained
on pasted negatives. Could *any* linear head on the same feature flag the test anomalies much
better? This module answers with an oracle: a logistic regression fit on the anomaly and inlier
pixels of some test images and scored on the others (k folds by image, so every image is scored
by a probe that never saw it). If even this probe, which knows the test family, barely beats
energy, the limit lies in what f(x) encodes, not in the head, the negatives or the score.

It is a diagnostic, never a detector: its labels come from the test set.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .evaluation import THKLOODEvaluation
from .metrics import StreamingOODMetrics
from .models.deeplabv3plus import upsample
from .scores import discriminative, energy, hybrid


def features_at(feature: torch.Tensor, size, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``upsample(feature, size)[0, :, rows, cols].T`` (N×C) without building the full-size map.

    ``upsample`` is bilinear with ``align_corners=True``: output pixel i of H lies at input
    coordinate i·(h − 1)/(H − 1), which ``grid_sample`` reaches at the normalised 2i/(H − 1) − 1.
    """
    H, W = size
    y = 2 * rows.double() / max(H - 1, 1) - 1
    x = 2 * cols.double() / max(W - 1, 1) - 1
    grid = torch.stack([x, y], -1).to(feature.dtype).view(1, 1, -1, 2)
    return F.grid_sample(feature, grid, mode="bilinear", align_corners=True)[0, :, 0].T


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, iterations: int = 200):
    """Class-balanced, L2-regularised logistic regression of ``y`` (0/1) on ``x`` (N×C).

    Minimises, over w and b, on standardised features z = (x − μ)/σ:

        ½‖w‖² + c · Σ_i s_i · ln(1 + exp(−t_i (wᵀz_i + b))),   t_i = 2y_i − 1,  s_i = N / (2 N_{y_i})

    (scikit-learn's ``LogisticRegression(C=c, class_weight="balanced")``): the class weights s_i
    stop the many inlier pixels from drowning the anomalies. Returns ``(weight, bias)`` acting on
    the raw features, so a whole feature map is scored as ``weight · f + bias``.
    """
    x, y = x.double(), y.double()
    mu, sigma = x.mean(0), x.std(0, correction=0).clamp_min(1e-12)
    z = (x - mu) / sigma
    counts = torch.stack([(y == 0).sum(), (y == 1).sum()]).double()
    if (counts == 0).any():
        raise ValueError(f"need pixels of both classes; got {int(counts[0])} inlier and {int(counts[1])} anomaly")
    s = len(y) / (2 * counts[y.long()])
    t = 2 * y - 1
    w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    # The objective is smooth and strictly convex, so L-BFGS reaches the unique minimum.
    optimizer = torch.optim.LBFGS([w], max_iter=iterations, tolerance_grad=1e-10, tolerance_change=1e-14,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        margin = t * (z @ w[:-1] + w[-1])
        loss = 0.5 * w[:-1].square().sum() + c * (s * F.softplus(-margin)).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    w = w.detach()
    weight = w[:-1] / sigma
    return weight, w[-1] - (weight * mu).sum()


def decision_map(feature: torch.Tensor, weight: torch.Tensor, bias, size) -> torch.Tensor:
    """The probe's logit ``weight · f + bias`` at every pixel, upsampled like the heads' logits."""
    logit = torch.einsum("c,nchw->nhw", weight.to(feature.dtype), feature)[:, None] + float(bias)
    return upsample(logit, size)[0, 0]


@torch.no_grad()
def _sample_fold(model, dataset, indices, per_image: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every anomaly pixel (up to ``per_image``) and as many random inlier pixels
    (up to ``per_image``) of each image in ``indices``."""
    xs, ys = [], []
    device = next(model.parameters()).device
    for i in indices:
        image, label = dataset[i]
        label = torch.as_tensor(np.asarray(label))
        f = model.decoder_feature(image[None].to(device)).float().cpu()
        for cls in (0, 1):
            idx = torch.from_numpy(np.flatnonzero(label.flatten().numpy() == cls))
            if idx.numel() > per_image:
                idx = idx[torch.from_numpy(rng.choice(idx.numel(), per_image, replace=False))]
            if idx.numel():
                xs.append(features_at(f, label.shape, idx // label.shape[1], idx % label.shape[1]))
                ys.append(torch.full((idx.numel(),), cls))
    return torch.cat(xs), torch.cat(ys)


SCORES = ("probe", "probe hybrid", "hybrid", "energy", "discriminative")


@torch.no_grad()
def _score_fold(model, dataset, indices, weight, bias, streams: dict) -> None:
    """Stream every pixel of ``indices`` into ``streams``: the probe's logit d, the hybrid with
    the probe in place of the OOD head (ln σ(d) − ln p̂(x)), and the model's own cues."""
    evaluation = THKLOODEvaluation(model, dataset, scores={"hybrid": hybrid, "energy": energy,
                                                           "discriminative": discriminative})
    device = next(model.parameters()).device
    for i in indices:
        image, label = dataset[i]
        label = torch.as_tensor(np.asarray(label))
        maps = evaluation.score_maps(image)[1]
        d = decision_map(model.decoder_feature(image[None].to(device)).float().cpu(), weight, bias, label.shape)
        maps |= {"probe": d, "probe hybrid": F.logsigmoid(d) + maps["energy"]}
        for name in SCORES:
            streams[name].update(maps[name], label)


def linear_probe_ceiling(model, dataset, folds: int = 2, per_image: int = 4000, c: float = 1.0,
                         seed: int = 0, progress: bool = True) -> dict:
    """AP, AUROC and FPR95 of the oracle probe and of the model's cues on the same pixels.

    Image i belongs to fold i mod ``folds``; the probe scoring a fold is fit on the others'
    pixels (:func:`_sample_fold`), and the metrics pool every pixel of every image, each scored
    once. Returns ``{score name: {"AP", "AUROC", "FPR95"}}`` for :data:`SCORES`.
    """
    if folds < 2 or len(dataset) < folds:
        raise ValueError(f"need at least 2 folds and one image per fold; got {folds} folds, {len(dataset)} images")
    model.eval()
    rng = np.random.default_rng(seed)
    streams = {name: StreamingOODMetrics() for name in SCORES}
    for k in tqdm(range(folds), desc="probe folds", disable=not progress):
        held_out = [i for i in range(len(dataset)) if i % folds == k]
        train = [i for i in range(len(dataset)) if i % folds != k]
        weight, bias = fit_logistic(*_sample_fold(model, dataset, train, per_image, rng), c=c)
        _score_fold(model, dataset, held_out, weight, bias, streams)
    return {name: stream.compute() for name, stream in streams.items()}
