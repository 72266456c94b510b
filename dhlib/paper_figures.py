"""The papers' kind of figures, with their captions: ``python -m dhlib paper-figures``.

DenseHybrid's papers argue with a few recurring figures: a 2-D toy where neither cue alone
separates inliers from anomalies but their fusion does, qualitative score maps, the score
distributions of inlier and anomaly pixels, the cue ablation (discriminative vs generative vs
hybrid) and, in the TPAMI extension, the table of negative sources (real ADE20K patches,
synthetic flow samples, a mixture). This module draws each from one evaluation of one model
(:func:`dhlib.evaluation.evaluate_checkpoint`) and writes ``<name>.png`` with a caption
``<name>.md`` beside it: what the figure shows, the measured numbers it rests on, the model
file with its sha256 prefix and the command that wrote it.

The three cues are columns of :data:`dhlib.scores.SCORES`: the generative −ln p̂(x)
(``energy``), the discriminative ln P(out|x) and the hybrid, their sum.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import viz
from .checkpointing import atomic_write_text
from .metrics import ood_metrics

CUES = {  # score name -> how the papers write it
    "energy": "generative  −ln p̂(x)",
    "discriminative": "discriminative  ln P(out|x)",
    "hybrid": "hybrid  ln P(out|x) − ln p̂(x)",
}
ABLATION_ORDER = ("discriminative", "energy", "hybrid")  # the papers' order: each cue, then their fusion
NEGATIVE_SOURCES = {  # ablation variant -> where its pasted negatives come from
    "b=0": "real (ADE20K)",
    "b=1": "synthetic (flow)",
    "b=0.5": "mixed (b = 0.5)",
}
SHIPPED = "quick-densehybrid"
DPI = 100  # small PNGs: the gallery is tracked in git
QUALITATIVE_DPI = 90  # fifteen panels of texture: the largest figure
QUALITATIVE_ROWS = 3


@dataclass(frozen=True)
class ModelFile:
    """The weights a figure rests on, named in its caption by path and sha256 prefix."""

    path: Path
    sha256: str

    def cite(self) -> str:
        return f"`{shown(self.path)}` (sha256 {self.sha256[:12]}…)"


def shown(path) -> str:
    """``path`` relative to the project root when inside it: captions stay valid in any clone."""
    from .config import project_root
    path = Path(path).resolve()
    return str(path.relative_to(project_root())) if path.is_relative_to(project_root()) else str(path)


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def save_palette_png(fig, path) -> Path:
    """:func:`dhlib.viz.save` with a 256-colour palette: the fine texture of photos and score
    maps makes a full-colour PNG of the qualitative figure several times too large for git."""
    import io

    from PIL import Image

    from .checkpointing import atomic_write
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    image = Image.open(buffer).convert("RGB").quantize(256)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))


def write_figure(fig, caption: str, out_dir: Path, name: str, save=viz.save) -> list[Path]:
    """``<name>.png`` and its caption ``<name>.md`` in ``out_dir``, both written atomically."""
    png = save(fig, out_dir / f"{name}.png")
    plt.close(fig)
    return [png, atomic_write_text(caption.strip() + "\n", out_dir / f"{name}.md")]


# ---- which model, which data ---------------------------------------------------------------

def model_to_evaluate(profile, checkpoint=None):
    """A model of the right architecture and the file :func:`evaluate_checkpoint` loads into it:
    the shipped two-head model (hash-checked) unless ``checkpoint`` names another file."""
    from .devices import select_device
    from .models import build_model, load_checkpoint, weights
    if checkpoint is None:
        shipped = weights.get(SHIPPED)
        if profile.name != shipped.profile:
            raise SystemExit(f"paper-figures --profile {profile.name} needs --checkpoint FILE: the shipped "
                             f"{SHIPPED} model has the {shipped.profile} profile's architecture")
        model, source = weights.load_model(SHIPPED), ModelFile(shipped.verify(), shipped.sha256)
    else:
        model = build_model(profile)
        load_checkpoint(model, checkpoint)  # a missing or unfitting file is a message before any drawing
        source = ModelFile(Path(checkpoint), weights.sha256(checkpoint))
    return model.to(select_device(profile.device)), source


def anomaly_dataset(profile):
    """The profile's Fishyscapes-format test tree (SynthCity is written first when missing, and
    a finished export of another test tree is refused, never rewritten: the figures only read)."""
    from .data import Fishyscapes, synthcity
    synthcity.ensure(profile, rewrite=False)
    return Fishyscapes(profile.path("fishyscapes_root"), profile.fishyscapes_split)


# ---- figure 1: the 2-D toy ------------------------------------------------------------------

def toy_figure(out_dir: Path, command: str) -> list[Path]:
    """The 2-D toy of :mod:`dhlib.toy` (its own figure and caption), plus the command."""
    from . import toy  # no fallback: the toy is part of the gallery
    fig, caption = toy.paper_figure(seed=0)
    return write_figure(fig, f"{caption.strip().rstrip('.')}. Made by `{command}`.", out_dir, "toy_2d")


# ---- figure 2: qualitative maps -------------------------------------------------------------

def qualitative_figure(kept: list, names: list[str]):
    """One row per kept image: image, ground truth, then each cue's map with the labelled
    anomaly outlined; one colour range per cue column, so rows compare within a column."""
    ranges = {cue: viz.shared_range([item["maps"][cue] for item in kept]) for cue in CUES}
    ncols = 2 + len(CUES)
    fig, axes = plt.subplots(len(kept), ncols, figsize=(3.0 * ncols, 1.75 * len(kept)),
                             dpi=QUALITATIVE_DPI, squeeze=False)
    for row, item in enumerate(kept):
        anomaly = item["label"] == 1
        axes[row, 0].imshow(viz.to_numpy_image(item["image"]))
        axes[row, 0].set_title(names[row], fontsize=8)
        axes[row, 1].imshow(viz.ood_overlay(item["label"]))
        axes[row, 1].set_title("ground truth: anomaly orange, void blue", fontsize=8)
        for ax in axes[row, :2]:
            ax.axis("off")
        for col, cue in enumerate(CUES, start=2):
            viz.show_heatmap(axes[row, col], item["maps"][cue], outline=anomaly, vmin=ranges[cue][0],
                             vmax=ranges[cue][1], title=CUES[cue] if row == 0 else None)
    fig.tight_layout()
    return fig, ranges


def qualitative_caption(kept: list, names: list[str], ranges: dict, source: str) -> str:
    per_image = []
    for name, item in zip(names, kept):
        if not (item["label"] == 1).any():  # AP is undefined without anomaly pixels
            per_image.append(f"{name}: no labelled anomaly")
            continue
        aps = ", ".join(f"{cue} {percent(ood_metrics(item['maps'][cue], item['label'])['AP'])}" for cue in CUES)
        per_image.append(f"{name}: {aps}")
    scales = "; ".join(f"{cue} [{low:.2f}, {high:.2f}]" for cue, (low, high) in ranges.items())
    return (f"Qualitative maps of the three cues on the first {len(kept)} test images. Columns: the image, its "
            "Fishyscapes label (anomaly orange, void blue), then the generative cue −ln p̂(x) (energy), the "
            "discriminative cue ln P(out|x) and the hybrid score, brighter = more anomalous, the labelled anomaly "
            "outlined in cyan. Each cue column shares one colour scale (0.5th–99.5th percentile of its maps; "
            f"arrows on a colorbar mark clipped values): {scales}. Per-image AP (%) of each cue: "
            f"{'; '.join(per_image)}. Model {source}.")


# ---- figure 3: score distributions ----------------------------------------------------------

def distribution_figure(samples: dict):
    """Density of each cue on sampled inlier and anomaly pixels, one panel per cue."""
    import seaborn as sns
    fig, axes = plt.subplots(1, len(CUES), figsize=(4.2 * len(CUES), 3.0), dpi=DPI)
    for ax, cue in zip(axes, CUES):
        for cls, label in ((0, "inlier"), (1, "anomaly")):
            if samples[cue][cls].size:
                sns.kdeplot(samples[cue][cls], ax=ax, fill=True, label=label, warn_singular=False)
        ax.set_title(CUES[cue], fontsize=9)
        ax.set_xlabel("score (higher = more anomalous)", fontsize=8)
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def distribution_caption(samples: dict, scores: dict, source: str) -> str:
    parts = [f"{cue}: inlier median {np.median(samples[cue][0]):.2f} (n = {samples[cue][0].size}), anomaly "
             f"median {np.median(samples[cue][1]):.2f} (n = {samples[cue][1].size}), pooled AUROC "
             f"{percent(scores[cue]['AUROC'])} %" for cue in CUES if samples[cue][0].size and samples[cue][1].size]
    return ("Inlier vs anomaly score distributions of the three cues (kernel density estimates of a random "
            "pixel sample per image and class; the overlap is what costs AP and FPR95). "
            f"{'; '.join(parts)}. Model {source}.")


# ---- figure 4: the cue ablation -------------------------------------------------------------

def cue_ablation_figure(scores: dict):
    """AP (higher is better) and FPR95 (lower is better) of the three cues, as bars."""
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0), dpi=DPI)
    labels = [CUES[cue].split()[0] for cue in ABLATION_ORDER]
    for ax, metric, better in zip(axes, ("AP", "FPR95"), ("higher", "lower")):
        bars = ax.bar(labels, [100 * scores[cue][metric] for cue in ABLATION_ORDER], color=["C0", "C1", "C2"])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_title(f"{metric} (%, {better} is better)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    fig.tight_layout()
    return fig


def cue_ablation_caption(scores: dict, n_images: int, source: str) -> str:
    table = ["| cue | score | AP | AUROC | FPR95 |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {CUES[cue].split()[0]} | `{cue}` | {percent(scores[cue]['AP'])} | {percent(scores[cue]['AUROC'])} "
              f"| {percent(scores[cue]['FPR95'])} |" for cue in ABLATION_ORDER]
    best_ap = max(ABLATION_ORDER, key=lambda cue: scores[cue]["AP"])
    best_fpr = min(ABLATION_ORDER, key=lambda cue: scores[cue]["FPR95"])
    return (f"The cue ablation: the discriminative cue ln P(out|x), the generative cue −ln p̂(x) and their sum, the "
            f"hybrid score, of the same model on the {n_images} images of the test tree; AP, AUROC and FPR95 "
            f"(percent) pooled over all labelled pixels. Highest AP: {CUES[best_ap].split()[0]}; lowest FPR95: "
            f"{CUES[best_fpr].split()[0]}. Model {source}.\n\n" + "\n".join(table))


# ---- figure 5: real / synthetic / mixed negatives --------------------------------------------

def negatives_figure(rows: list[dict]):
    """The negatives table as a figure: val mIoU and the cues' AP / FPR95 per negative source."""
    header = ["negatives", "val mIoU", "hybrid AP", "hybrid FPR95", "generative AP", "discriminative AP"]
    cells = [[NEGATIVE_SOURCES[r["variant"]], percent(r["mIoU"]), percent(r["scores"]["hybrid"]["AP"]),
              percent(r["scores"]["hybrid"]["FPR95"]), percent(r["scores"]["energy"]["AP"]),
              percent(r["scores"]["discriminative"]["AP"])] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.3 * (len(rows) + 1) + 0.4), dpi=DPI)
    table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center",
                     colWidths=[0.2] + [0.16] * (len(header) - 1))
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.4)
    ax.axis("off")
    ax.set_title("negatives pasted during fine-tuning (percent)", fontsize=9)
    fig.tight_layout()
    return fig


def negatives_caption(rows: list[dict], models: dict, ablation_json: Path, command: str) -> str:
    from .models.weights import sha256
    table = ["| negatives | variant | val mIoU | hybrid AP | hybrid AUROC | hybrid FPR95 | generative AP | "
             "discriminative AP |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {NEGATIVE_SOURCES[r['variant']]} | `{r['variant']}` | {percent(r['mIoU'])} | "
              f"{percent(r['scores']['hybrid']['AP'])} | {percent(r['scores']['hybrid']['AUROC'])} | "
              f"{percent(r['scores']['hybrid']['FPR95'])} | {percent(r['scores']['energy']['AP'])} | "
              f"{percent(r['scores']['discriminative']['AP'])} |" for r in rows]
    files = "; ".join(f"{r['variant']}: " + (ModelFile(models[r['variant']], sha256(models[r['variant']])).cite()
                                             if models[r["variant"]].is_file() else "no model file")
                      for r in rows)
    return (f"Real vs synthetic vs mixed negatives: the same recipe fine-tuned with ADE20K patches only (b = 0), flow "
            f"samples only (b = 1) or a mixture (b = 0.5), each evaluated on the test tree (percent), as recorded in "
            f"`{shown(ablation_json)}` by `python -m dhlib ablate`. Models {files}. Made by `{command}`.\n\n"
            + "\n".join(table))


def negatives_table(ablation_json: Path, models: dict, out_dir: Path, command: str) -> list[Path]:
    """The negatives figure from an ablation run, or a printed note why it was skipped."""
    rows = []
    if ablation_json.is_file():
        by_variant = {r["variant"]: r for r in json.loads(ablation_json.read_text())}
        rows = [by_variant[name] for name in NEGATIVE_SOURCES if name in by_variant]
    if not rows:
        found = "has none of the variants b=0, b=0.5, b=1" if ablation_json.is_file() else "does not exist"
        print(f"skipped negatives_table.png: {shown(ablation_json)} {found}; make it with `python -m dhlib ablate` "
              "(or `--variant b=0 --variant b=0.5 --variant b=1`) and run paper-figures again")
        return []
    return write_figure(negatives_figure(rows), negatives_caption(rows, models, ablation_json, command),
                        out_dir, "negatives_table")


# ---- the command ----------------------------------------------------------------------------

def paper_figures(profile, out=None, checkpoint=None, command: str = "python -m dhlib paper-figures",
                  progress: bool = True) -> list[Path]:
    """Write every figure and caption into ``out`` (default ``<figures_dir>/paper``); returns the paths.

    The model is the shipped ``quick-densehybrid`` unless ``checkpoint`` is given; the negatives
    table needs ``<runs_dir>/ablation/ablation.json`` and is skipped, with a note, without it.
    """
    import matplotlib
    matplotlib.use("Agg")
    from .ablation import variant_profile
    from .evaluation import evaluate_checkpoint, summary
    out = Path(out) if out else profile.path("figures_dir") / "paper"
    model, model_file = model_to_evaluate(profile, checkpoint)
    written = toy_figure(out, command)  # before the long evaluation: a missing toy module fails fast
    dataset = anomaly_dataset(profile)
    results = evaluate_checkpoint(model, model_file.path, dataset, components=False, progress=progress).results
    scores = summary(results)["scores"]
    source = f"{model_file.cite()}, made by `{command}`"
    kept = results["kept"][:QUALITATIVE_ROWS]
    names = [dataset.name(i) for i in range(len(kept))]  # kept maps are the first images, in order
    fig, ranges = qualitative_figure(kept, names)
    written += write_figure(fig, qualitative_caption(kept, names, ranges, source), out, "qualitative_maps",
                            save=save_palette_png)
    written += write_figure(distribution_figure(results["samples"]),
                            distribution_caption(results["samples"], scores, source), out, "score_distributions")
    written += write_figure(cue_ablation_figure(scores), cue_ablation_caption(scores, len(dataset), source),
                            out, "cue_ablation")
    ablation_json = profile.path("runs_dir") / "ablation" / "ablation.json"
    models = {name: variant_profile(profile, name).path("runs_dir") / "model.pt" for name in NEGATIVE_SOURCES}
    return written + negatives_table(ablation_json, models, out, command)
