"""An oracle for the OOD head: a linear probe on the decoder feature, fit with test labels.

The OOD head is a linear classifier (after BN and ReLU) on the decoder feature f(x), trained on
pasted negatives. Does f(x) hold a cue that the head missed? This module answers with an
oracle: a class-balanced logistic regression fit on pixels of some test images and scored on
the others (k folds by image, so every image is scored by a probe that never saw it). It
reports the probe alone and the hybrid with the probe in the OOD head's place,
ln σ(d) − ln p̂(x), beside the model's own cues on the same pixels. A probe hybrid that beats
energy where the model's hybrid does not says that f(x) holds a cue complementary to energy
that the head did not learn. A probe that fails proves little: the head's form (BN, ReLU, 1×1)
contains every linear probe, and the logistic loss is not the metrics.

The control fits the same probe on what L_cla sees instead, training scenes with pasted
negatives (:func:`pasted_scenes`). If the oracle's hybrid gains and the control's does not, the
negatives, rather than how the head was trained, keep the cue out of the head's reach.

The oracle is a diagnostic, never a detector: its labels come from the test set.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .evaluation import THKLOODEvaluation
from .metrics import StreamingOODMetrics
from .models.deeplabv3plus import upsample
from .negatives import paste_negatives
from .scores import discriminative, energy


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

    Minimises, over w and b, on standardised features z = (x − μ)/sd (sd: the per-channel
    standard deviation):

        ½‖w‖² + c · Σ_i s_i · ln(1 + exp(−t_i (wᵀz_i + b))),   t_i = 2y_i − 1,  s_i = N / (2 N_{y_i})

    (scikit-learn's ``LogisticRegression(C=c, class_weight="balanced")``): the class weights s_i
    give each class half of the loss, so the many inlier pixels do not drown the anomalies; the
    sigmoid of the fitted logit then estimates P(y = 1 | x) as if both classes were equally
    common. Returns ``(weight, bias)`` acting on the raw features, so a whole feature map is
    scored as ``weight · f + bias``.
    """
    x, y = x.double(), y.double()
    mu, sd = x.mean(0), x.std(0, correction=0).clamp_min(1e-12)
    z = (x - mu) / sd
    counts = torch.stack([(y == 0).sum(), (y == 1).sum()]).double()
    if (counts == 0).any():
        raise ValueError(f"need pixels of both classes; got {int(counts[0])} inlier and {int(counts[1])} anomaly")
    s = len(y) / (2 * counts[y.long()])
    t = 2 * y - 1
    w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    # The objective is smooth and strictly convex: one minimum, which L-BFGS approaches within
    # ``iterations`` steps.
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
    # wᵀz + b = (w/sd)ᵀx + (b − (w/sd)ᵀμ): the same logit on the raw features
    weight = w[:-1] / sd
    return weight, w[-1] - (weight * mu).sum()


def decision_map(feature: torch.Tensor, weight: torch.Tensor, bias, size) -> torch.Tensor:
    """The probe's logit ``weight · f + bias`` at every pixel, upsampled like the heads' logits."""
    logit = torch.einsum("c,nchw->nhw", weight.to(feature.dtype), feature)[:, None] + float(bias)
    return upsample(logit, size)[0, 0]


@torch.no_grad()
def _sample_fold(model, dataset, indices, per_image: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels (1 anomaly, 0 inlier) of up to ``per_image`` random anomaly pixels
    and up to ``per_image`` random inlier pixels of each image in ``indices`` (all of a class
    when it has fewer; void pixels are left out). The cap keeps the fit small; it also gives a
    large anomaly no more weight than ``per_image`` pixels, unlike the pooled metrics."""
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
    evaluation = THKLOODEvaluation(model, dataset, scores={"energy": energy, "discriminative": discriminative})
    device = next(model.parameters()).device
    for i in indices:
        image, label = dataset[i]
        label = torch.as_tensor(np.asarray(label))
        # The model's cues through the evaluation's own score_maps, so these rows equal
        # THKLOODEvaluation.run()'s; the probe reads the decoder feature, computed a second time.
        maps = evaluation.score_maps(image)[1]
        d = decision_map(model.decoder_feature(image[None].to(device)).float().cpu(), weight, bias, label.shape)
        # the hybrid ln P(out|x) − ln p̂(x) as scores.hybrid adds it, and the same sum with the
        # probe's ln σ(d) in place of the OOD head's ln P(out|x)
        maps |= {"hybrid": maps["discriminative"] + maps["energy"],
                 "probe": d, "probe hybrid": F.logsigmoid(d) + maps["energy"]}
        for name in SCORES:
            streams[name].update(maps[name], label)


def linear_probe(model, dataset, fit_on=None, folds: int = 2, per_image: int = 4000, c: float = 1.0,
                 seed: int = 0, progress: bool = True) -> dict:
    """AP, AUROC and FPR95 on ``dataset`` of a linear probe and of the model's cues, on the same
    pixels. Returns ``{score name: {"AP", "AUROC", "FPR95"}}`` for :data:`SCORES`.

    ``fit_on=None``, the oracle: image i of ``dataset`` belongs to fold i mod ``folds``, the
    probe scoring a fold is fit on the other folds' pixels (:func:`_sample_fold`), and the
    metrics pool every pixel of every image, each scored once (they mix the scores of ``folds``
    probes). ``fit_on`` a dataset of ``(image, label)`` (e.g. :func:`pasted_scenes`, what L_cla
    sees): one probe fit there scores every image of ``dataset``.
    """
    if fit_on is None and (folds < 2 or len(dataset) < folds):
        raise ValueError(f"need at least 2 folds and one image per fold; got {folds} folds, {len(dataset)} images")
    model.eval()
    rng = np.random.default_rng(seed)
    streams = {name: StreamingOODMetrics() for name in SCORES}
    everything = list(range(len(dataset)))
    plan = ([(fit_on, range(len(fit_on)), everything)] if fit_on is not None else
            [(dataset, [i for i in everything if i % folds != k], [i for i in everything if i % folds == k])
             for k in range(folds)])
    for fit_data, fit_indices, scored in tqdm(plan, desc="probe fits", disable=not progress):
        weight, bias = fit_logistic(*_sample_fold(model, fit_data, fit_indices, per_image, rng), c=c)
        _score_fold(model, dataset, scored, weight, bias, streams)
    return {name: stream.compute() for name, stream in streams.items()}


@torch.no_grad()
def pasted_scenes(scenes, negatives, recipe, count: int, seed: int = 0, flow=None,
                  synthetic_prob: float | None = None) -> list:
    """The first ``count`` scenes of ``scenes`` with one negative pasted in each, as the
    fine-tuning pastes them (:func:`~dhlib.negatives.paste_negatives`, ``recipe``; flow samples
    only with a ``flow``): a list of ``(image, ood_target)``, 1 on pasted pixels, 0 on inliers,
    255 where the scene was void."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        image, classes = scenes[i]
        classes = torch.as_tensor(np.asarray(classes)).long()
        mixed, _, ood, _, _ = paste_negatives(image[None], classes[None], negatives, recipe, generator,
                                              flow=flow, synthetic_prob=synthetic_prob)
        out.append((mixed[0], ood[0]))
    return out
