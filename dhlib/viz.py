"""Plotting helpers shared by the notebooks and ``python -m dhlib figures``.

Each function draws onto a matplotlib figure and returns it; ``save(fig, path)`` writes a
PNG atomically. Nothing here computes results: it only shows them.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .checkpointing import atomic_write
from .data.labels import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize


def to_numpy_image(image) -> np.ndarray:
    """``3×H×W`` float in [0, 1] (tensor) -> ``H×W×3`` array for imshow."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            image = image.float() / 255
        return image.permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def ood_overlay(ood_label) -> np.ndarray:
    """0/1/255 map -> colours: inlier dark grey, anomaly orange, void blue."""
    ood = np.asarray(ood_label)
    out = np.full(ood.shape + (3,), 0.25, np.float32)
    out[ood == 1] = (1.0, 0.55, 0.0)
    out[ood == 255] = (0.15, 0.3, 0.8)
    return out


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy()
    return np.asarray(values)


def show_heatmap(ax, values, *, image=None, outline=None, cmap: str = "inferno", title: str | None = None,
                 vmin=None, vmax=None, alpha: float = 0.6, label: str | None = None,
                 outline_color: str = "cyan"):
    """A score map on ``ax`` **with its colorbar**: alone, or over ``image`` at ``alpha``.

    ``outline`` (a boolean ``H×W`` mask, e.g. the labelled anomaly) is drawn as a contour;
    ``vmin``/``vmax`` fix the colour range (values outside it are clipped, and the colorbar
    says so with arrows). Returns the colorbar.
    """
    values = _array(values)
    if image is not None:
        ax.imshow(to_numpy_image(image))
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha if image is not None else None)
    if outline is not None and _array(outline).any():
        ax.contour(_array(outline).astype(np.float32), levels=[0.5], colors=outline_color, linewidths=0.8)
    low, high = np.nanmin(values), np.nanmax(values)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (vmin is not None and low < vmin, vmax is not None and high > vmax)]
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, extend=extend)
    bar.solids.set_alpha(1.0)  # the bar shows the colours themselves, not the blended overlay
    bar.ax.tick_params(labelsize=7)
    if label:
        bar.set_label(label, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    return bar


def shared_range(maps, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """One colour range for several maps of the same score: the ``low``-th and ``high``-th
    percentiles of all their values (a few extreme pixels would otherwise wash out the rest)."""
    values = np.concatenate([_array(m).ravel() for m in maps])
    return float(np.nanpercentile(values, low)), float(np.nanpercentile(values, high))


def save(fig, path) -> Path:
    """Write ``fig`` as PNG, atomically (no half-written figures)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight"))


def show_segmentation_pairs(samples, titles=None, ncols: int = 2):
    """Image next to its colour-coded train-id target, one row per ``(image, target)``."""
    n = len(samples)
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.1 * n), squeeze=False, dpi=90)
    for row, (image, target) in enumerate(samples):
        axes[row, 0].imshow(to_numpy_image(image))
        axes[row, 1].imshow(colorize(np.asarray(target)))
        if titles:
            axes[row, 0].set_title(titles[row], fontsize=8, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def legend_figure(present=None):
    """The Cityscapes colour legend (optionally only the train ids in ``present``)."""
    ids = [i for i in range(NUM_CLASSES) if present is None or i in present]
    fig, ax = plt.subplots(figsize=(8, 0.4 + 0.22 * ((len(ids) + 3) // 4)), dpi=90)
    for k, i in enumerate(ids):
        r, c = divmod(k, 4)
        ax.add_patch(plt.Rectangle((c * 2, -r), 0.3, 0.8, color=CLASS_COLORS[i] / 255))
        ax.text(c * 2 + 0.4, -r + 0.4, f"{i} {CLASS_NAMES[i]}", va="center", fontsize=8)
    ax.set_xlim(0, 8)
    ax.set_ylim(-((len(ids) - 1) // 4) - 0.2, 1)
    ax.axis("off")
    return fig


def class_frequency_figure(counts: np.ndarray, title: str = "pixel share per class"):
    """Seaborn bar plot of per-class pixel shares (train ids; classes never seen omitted)."""
    import seaborn as sns
    share = counts / max(counts.sum(), 1)
    ids = [i for i in range(NUM_CLASSES) if counts[i] > 0]
    fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
    sns.barplot(x=[CLASS_NAMES[i] for i in ids], y=[100 * share[i] for i in ids],
                palette=[tuple(CLASS_COLORS[i] / 255) for i in ids], hue=[CLASS_NAMES[i] for i in ids],
                legend=False, ax=ax)
    ax.set_ylabel("% of labelled pixels")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    return fig


def class_pixel_counts(dataset, limit: int | None = None) -> np.ndarray:
    """Per-train-id pixel counts over (the first ``limit`` items of) a segmentation dataset."""
    counts = np.zeros(NUM_CLASSES, np.int64)
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        target = np.asarray(dataset[i][1]).ravel()
        counts += np.bincount(target[target != IGNORE_INDEX], minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def show_ood_pairs(samples, titles=None):
    """Image next to its Fishyscapes label (orange anomaly, blue void), one row each."""
    n = len(samples)
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.1 * n), squeeze=False, dpi=90)
    for row, (image, label) in enumerate(samples):
        axes[row, 0].imshow(to_numpy_image(image))
        axes[row, 1].imshow(ood_overlay(label))
        if titles:
            axes[row, 0].set_title(titles[row], fontsize=8, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_negatives(samples, ncols: int = 4):
    """ADE20K-format negatives: each image above its class map (random colours per id)."""
    n = len(samples)
    nrows = 2 * ((n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.0 * nrows), squeeze=False, dpi=90)
    palette = np.random.default_rng(3).uniform(0.2, 1.0, (256, 3))
    palette[0] = 0
    for k, (image, classes) in enumerate(samples):
        r, c = divmod(k, ncols)
        axes[2 * r, c].imshow(to_numpy_image(image))
        axes[2 * r + 1, c].imshow(palette[np.asarray(classes)])
        present = sorted(set(np.unique(np.asarray(classes)).tolist()) - {0})
        axes[2 * r + 1, c].set_title(f"ids {present}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_pasting(image, seg_target, mixed, seg_mixed, ood_target, box=None, title=None):
    """The paste step in one row: scene, target, mixed scene, new target, OOD target."""
    fig, axes = plt.subplots(1, 5, figsize=(16, 2.3), dpi=90)
    panels = [(to_numpy_image(image), "scene"), (colorize(np.asarray(seg_target)), "segmentation target"),
              (to_numpy_image(mixed), "with negative"), (colorize(np.asarray(seg_mixed)), "target: pasted = ignore"),
              (ood_overlay(ood_target), "OOD target: 1 pasted, 255 void")]
    for ax, (pic, name) in zip(axes, panels):
        ax.imshow(pic)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if box is not None:
            ax.add_patch(plt.Rectangle((box.left - 0.5, box.top - 0.5), box.width, box.height,
                                       fill=False, edgecolor="white", linewidth=0.8, linestyle="--"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- training curves ----------------------------------------------------------------------

TRAINING_TERMS = {  # JSON-lines key -> panel title
    "loss": "total  L = L_d + β·L_x + 10β·L_cla",
    "L_d": "L_d  segmentation cross-entropy (inliers)",
    "L_x": "L_x  mean logsumexp on negatives (or its floor hinge)",
    "L_cla": "L_cla  OOD head cross-entropy",
    "L_mle": "L_mle  flow bits/dim on covered inliers",
    "L_jsd": "L_jsd  JSD(segmenter posterior on samples ‖ uniform)",
}


def read_training_log(path) -> list[dict]:
    """The records of a ``train_log.jsonl`` (one JSON object per step)."""
    import json
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def running_mean(values, window: int) -> np.ndarray:
    """Mean over the last ``window`` values (shorter at the start): smooths noisy curves."""
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    k = np.arange(1, len(values) + 1)
    start = np.maximum(0, k - window)
    return (cumulative[k] - cumulative[start]) / (k - start)


def training_curves(records, window: int = 20, title: str | None = None):
    """One panel per loss term: raw values per step (faint) and their running mean.

    ``records`` is a list of log dicts or the path of a ``train_log.jsonl``. Flow terms exist
    only on flow steps; a term that never appears gets no panel.
    """
    if isinstance(records, (str, os.PathLike)):
        records = read_training_log(records)
    terms = [t for t in TRAINING_TERMS if any(t in r for r in records)]
    ncols = 3
    nrows = max(1, -(-len(terms) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 3 * nrows), squeeze=False, dpi=90)
    for ax, term in zip(axes.flat, terms):
        steps = [r["step"] for r in records if term in r]
        values = [r[term] for r in records if term in r]
        ax.plot(steps, values, color="0.75", lw=0.8)
        ax.plot(steps, running_mean(values, window), color="C0", lw=1.6)
        ax.set_title(TRAINING_TERMS[term], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def flow_curves(records, title: str = "flow pre-training: L_mle on inlier crops"):
    """Bits/dim of the flow's pre-training (``flow_log.jsonl``) against the step."""
    if isinstance(records, (str, os.PathLike)):
        records = read_training_log(records)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=90)
    ax.plot([r["step"] for r in records], [r["bits_per_dim"] for r in records], color="C2")
    ax.axhline(8.0, color="0.5", ls="--", lw=0.8, label="uniform over 256 levels (8 bits/dim)")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---- the data figures of `python -m dhlib figures` ---------------------------------------------

def data_figures(data: dict, recipe, seed: int, runs_dir, out_dir, name: str) -> list[Path]:
    """Scenes, class shares, anomalies, negatives and one pasting of ``data`` (the dict of
    :func:`dhlib.data.datasets_from_profile`), and the curves of the runs in ``runs_dir``
    when their logs exist; written into ``out_dir``."""
    from .negatives import paste_real_negatives
    out, written = Path(out_dir), []

    def keep(fig, filename):
        written.append(save(fig, out / filename))
        plt.close(fig)

    val, fs = data["val"], data["anomalies"]
    keep(show_segmentation_pairs([val[i] for i in range(4)], [val.listing.images[i].split("/")[-1] for i in range(4)]),
         "data_scenes.png")
    keep(class_frequency_figure(class_pixel_counts(data["train"], limit=100),
                                f"{name}: class pixel share (100 train images)"), "data_class_frequencies.png")
    keep(show_ood_pairs([fs[i] for i in range(4)], [fs.name(i) for i in range(4)]), "data_anomalies.png")
    keep(show_negatives([data["negatives"][i] for i in range(8)]), "data_negatives.png")
    image, target = val[0]
    mixed, seg, ood, boxes = paste_real_negatives(image[None], target[None], data["negatives"], recipe,
                                                  torch.Generator().manual_seed(seed))
    keep(show_pasting(image, target, mixed[0], seg[0], ood[0], boxes[0],
                      "negative pasting (a released-code cut: rectangle or class union)"), "data_pasting.png")
    log, flow_log = Path(runs_dir) / "train_log.jsonl", Path(runs_dir) / "flow_log.jsonl"
    if log.exists():  # the curves of the last training run, when there is one
        keep(training_curves(log, title=f"{name}: training curves ({log})"), "training_curves.png")
    if flow_log.exists():
        keep(flow_curves(flow_log), "flow_pretraining.png")
    return written


# ---- evaluation figures: drawn from THKLOODEvaluation.results --------------------------------

def ood_curves_figure(streams: dict):
    """ROC (log false-positive axis, the 95 % TPR line dotted) and precision-recall curves of
    every score, from their pooled streaming statistics."""
    from .metrics import curves_from_streaming
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    for name, stream in streams.items():
        c, m = curves_from_streaming(stream), stream.compute()
        roc.plot(c["fpr"], c["tpr"], label=f"{name} (AUROC {100 * m['AUROC']:.1f})")
        pr.plot(c["recall"], c["precision"], label=f"{name} (AP {100 * m['AP']:.1f})")
    roc.axhline(0.95, color="grey", ls=":", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xscale="log", xlim=(1e-4, 1))
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    roc.legend(fontsize=7)
    pr.legend(fontsize=7)
    fig.tight_layout()
    return fig


def score_distribution_figure(samples: dict):
    """Per score, the density of its values on inlier and on anomaly pixels (a pixel sample)."""
    import seaborn as sns
    names = list(samples)
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(13, 5), dpi=90, squeeze=False)
    for ax, name in zip(axes.flat, names):
        for cls, label in ((0, "inlier"), (1, "anomaly")):
            if samples[name][cls].size:
                sns.kdeplot(samples[name][cls], ax=ax, fill=True, label=label, warn_singular=False)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def anomaly_heatmap_figure(kept: list, score: str = "hybrid"):
    """Each kept image beside its ``score`` map (over the image, ground-truth anomaly in cyan),
    all rows on one colour scale, shown by each row's colorbar."""
    vmin, vmax = shared_range([item["maps"][score] for item in kept])
    fig, axes = plt.subplots(len(kept), 2, figsize=(11, 2.4 * len(kept)), dpi=90, squeeze=False)
    for row, item in enumerate(kept):
        axes[row, 0].imshow(to_numpy_image(item["image"]))
        axes[row, 0].axis("off")
        show_heatmap(axes[row, 1], item["maps"][score], image=item["image"], outline=item["label"] == 1,
                     vmin=vmin, vmax=vmax, label=f"{score} score",
                     title=f"{score} score (shared colour scale), ground-truth anomaly in cyan")
    fig.tight_layout()
    return fig


def confidence_figure(kept: list):
    """The segmenter's max softmax probability on each kept image, the anomaly outlined in red."""
    fig, axes = plt.subplots(1, len(kept), figsize=(4 * len(kept), 2.2), dpi=90, squeeze=False)
    for ax, item in zip(axes[0], kept):
        im = ax.imshow(item["confidence"].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.contour((item["label"] == 1).numpy(), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title("max softmax confidence", fontsize=8)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02)
    return fig


def evaluation_figures(results: dict, out_dir, prefix: str = "eval") -> list[Path]:
    """The four figures of an evaluation's ``results``, written as ``<prefix>_<name>.png``."""
    out_dir = Path(out_dir)
    written = []
    for name, draw in (("curves", lambda: ood_curves_figure(results["streams"])),
                       ("score_distributions", lambda: score_distribution_figure(results["samples"])),
                       ("heatmaps", lambda: anomaly_heatmap_figure(results["kept"])),
                       ("confidence", lambda: confidence_figure(results["kept"]))):
        fig = draw()
        written.append(save(fig, out_dir / f"{prefix}_{name}.png"))
        plt.close(fig)
    return written


def cue_sweep_figure(result: dict):
    """Left: FPR95 and AP of ln P(out|x) − w·ln p̂ along the weight sweep. Right: the two cues
    on the anomaly pixels, those energy misses at 95 % TPR in red, and the line under the
    discriminative cue's lowest fifth. See :mod:`dhlib.complementarity`."""
    weights = result["weights"]
    names = ["∞\n(energy)" if np.isinf(w) else f"{w:g}" + ("\n(disc.)" if w == 0 else "\n(hybrid)" if w == 1 else "")
             for w in weights]
    fig, (sweep, scatter) = plt.subplots(1, 2, figsize=(11, 4), dpi=90)
    x = np.arange(len(weights))
    sweep.plot(x, 100 * np.asarray(result["FPR95"]), "o-", color="k", label="FPR95 (lower is better)")
    sweep.set(xticks=x, xticklabels=names, xlabel="w, the weight of −ln p̂", ylabel="FPR95 (%)")
    ap = sweep.twinx()
    ap.plot(x, 100 * np.asarray(result["AP"]), "s--", color="C0", label="AP (higher is better)")
    ap.set_ylabel("AP (%; note its own, narrower scale)", color="C0")
    sweep.legend(handles=sweep.get_lines() + ap.get_lines(), fontsize=8, loc="upper center",
                 bbox_to_anchor=(0.5, -0.25), ncol=2)
    sweep.set_title("ln P(out|x) − w · ln p̂(x)", fontsize=10)
    ano = result["samples"][1]
    missed = ano[:, 1] < result["energy_miss"]
    scatter.hexbin(ano[:, 1], ano[:, 0], gridsize=60, bins="log", cmap="Greys", mincnt=1)
    scatter.scatter(ano[missed, 1], ano[missed, 0], s=2, color="C3", label="missed by energy at 95 % TPR")
    scatter.axhline(result["disc_low"], color="C0", ls=":", lw=1.2,
                    label="below: the discriminative cue's lowest 20 %")
    scatter.set(xlabel="−ln p̂(x) (energy)", ylabel="ln P(out|x) (discriminative)",
                title=f"anomaly pixels (grey: count, log scale): Spearman ρ = {result['spearman_anomaly']:.2f}")
    scatter.title.set_fontsize(10)
    scatter.legend(fontsize=8, markerscale=4, loc="lower right")
    fig.tight_layout()
    return fig
