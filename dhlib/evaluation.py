"""THKLOODEvaluation: a two-head model × a Fishyscapes-format dataset → metrics, maps, figures.

One pass over the dataset runs the model once per image and computes all six anomaly scores
of :mod:`dhlib.scores` from the same logits. Pooled AP / AUROC / FPR95 come from
:class:`~dhlib.metrics.StreamingOODMetrics` (constant memory, any number of images);
per-image metrics (exact) are kept on request. When the dataset also has the scenes'
semantic labels (SynthCity writes them), closed mIoU and open-set mIoU are computed too,
with the hybrid score's threshold at 95 % TPR chosen on a calibration part of the dataset.
``component_metrics()`` adds SegmentMeIfYouCan's component-level sIoU / PPV / mean F1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import (ComponentMetrics, OpenSetConfusion, StreamingOODMetrics, best_f1_threshold,
                      curves_from_streaming, ood_metrics, threshold_at_tpr)
from .scores import SCORES


def _device(model):
    return next(model.parameters()).device


class THKLOODEvaluation:
    """Evaluate ``model`` on ``dataset`` (items ``(image 3×H×W in [0,1], ood_label H×W)``).

    ``keep_maps`` images keep their score maps for figures; ``per_image=True`` also records
    exact per-image metrics; ``calibration_fraction`` of the images (the first ones) choose
    the open-set threshold when the dataset has ``semantic_target``.
    """

    def __init__(self, model, dataset, scores=None, keep_maps: int = 4, per_image: bool = False,
                 calibration_fraction: float = 0.5, sample_pixels: int = 400, seed: int = 0):
        self.model, self.dataset = model, dataset
        self.score_fns = dict(scores or SCORES)
        self.keep_maps, self.per_image = keep_maps, per_image
        self.calibration_fraction, self.sample_pixels, self.seed = calibration_fraction, sample_pixels, seed
        self.results = None

    @torch.no_grad()
    def _logits(self, image):
        self.model.eval()
        seg, ood = self.model(image[None].to(_device(self.model)))
        return seg.float().cpu(), ood.float().cpu()

    @torch.no_grad()
    def run(self, progress: bool = True) -> dict:
        """Evaluate; returns a tidy table ``{'score': [...], 'AP': [...], 'AUROC': [...], 'FPR95': [...]}``
        and stores everything else in ``self.results``."""
        streams = {name: StreamingOODMetrics() for name in self.score_fns}
        per_image = {name: [] for name in self.score_fns}
        samples = {name: {0: [], 1: []} for name in self.score_fns}
        kept = []
        rng = np.random.default_rng(self.seed)
        has_semantic = getattr(self.dataset, "semantic_dir", None) is not None
        n_calib = int(len(self.dataset) * self.calibration_fraction) if has_semantic else 0
        calib_scores, calib_labels, open_set = [], [], None
        for i in tqdm(range(len(self.dataset)), desc="evaluating", disable=not progress):
            image, label = self.dataset[i]
            seg, ood = self._logits(image)
            maps = {name: fn(seg, ood)[0] for name, fn in self.score_fns.items()}
            scored = label != 255
            for name, m in maps.items():
                if scored.any():
                    streams[name].update(m, label)
                if self.per_image and (label == 1).any() and (label == 0).any():
                    per_image[name].append(ood_metrics(m, label))
                for cls in (0, 1):  # a small random sample of pixels for the histograms
                    idx = torch.nonzero(label.flatten() == cls).flatten().numpy()
                    if idx.size:
                        pick = rng.choice(idx, min(self.sample_pixels, idx.size), replace=False)
                        samples[name][cls].append(m.flatten()[pick].numpy())
            if has_semantic:
                prediction = seg[0].argmax(0)
                if i < n_calib:
                    calib_scores.append(maps["hybrid"].flatten())
                    calib_labels.append(label.flatten())
                else:
                    if open_set is None:
                        tau = threshold_at_tpr(torch.cat(calib_scores), torch.cat(calib_labels))
                        open_set = OpenSetConfusion(seg.shape[1], tau)
                    open_set.update(prediction, maps["hybrid"], self.dataset.semantic_target(i), label)
            if len(kept) < self.keep_maps:
                kept.append({"image": image, "label": label, "prediction": seg[0].argmax(0),
                             "confidence": torch.softmax(seg[0], 0).amax(0), "maps": maps})
        table = {"score": [], "AP": [], "AUROC": [], "FPR95": []}
        for name, stream in streams.items():
            m = stream.compute()
            table["score"].append(name)
            for key in ("AP", "AUROC", "FPR95"):
                table[key].append(m[key])
        self.results = {"table": table, "streams": streams, "kept": kept,
                        "per_image": per_image if self.per_image else None,
                        "samples": {n: {c: np.concatenate(v) if v else np.zeros(0) for c, v in d.items()}
                                    for n, d in samples.items()},
                        "open_set": open_set.compute() | {"threshold": open_set.threshold}
                        if open_set is not None else None}
        return table

    @torch.no_grad()
    def component_metrics(self, score: str = "hybrid", min_gt_size: int | None = None, progress: bool = True,
                          track: str | None = None, min_pred_size: int | None = None) -> dict:
        """SegmentMeIfYouCan component metrics of one score (a second pass over the data).

        The map is thresholded at the pooled best pixel-F1 threshold of ``run()``'s statistics.
        ``track`` ('anomaly' / 'obstacle') takes the benchmark's size limits; explicit sizes
        override them (see :class:`~dhlib.metrics.ComponentMetrics`).
        """
        if self.results is None:
            raise RuntimeError("call run() before component_metrics()")
        threshold = best_f1_threshold(self.results["streams"][score])
        components = ComponentMetrics(threshold, min_gt_size=min_gt_size, min_pred_size=min_pred_size, track=track)
        for i in tqdm(range(len(self.dataset)), desc=f"components ({score})", disable=not progress):
            image, label = self.dataset[i]
            seg, ood = self._logits(image)
            components.update(self.score_fns[score](seg, ood)[0], label)
        result = components.compute() | {"threshold": threshold, "score": score}
        self.results["components"] = result
        return result

    def format_table(self) -> str:
        """The pooled metrics as aligned text, best AP first."""
        t = self.results["table"]
        order = np.argsort(t["AP"])[::-1]
        lines = [f"{'score':15s} {'AP':>7s} {'AUROC':>7s} {'FPR95':>7s}"]
        lines += [f"{t['score'][i]:15s} {100 * t['AP'][i]:7.2f} {100 * t['AUROC'][i]:7.2f} "
                  f"{100 * t['FPR95'][i]:7.2f}" for i in order]
        if self.results["open_set"]:
            o = self.results["open_set"]
            lines.append(f"closed mIoU {100 * o['mIoU']:.2f}, open-mIoU {100 * o['open_mIoU']:.2f} "
                         f"(hybrid threshold at 95% TPR: {o['threshold']:.3f})")
        if self.results.get("components"):
            c = self.results["components"]
            track = f", {c['track']} track" if c.get("track") else ""
            lines.append(f"components ({c['score']}{track}, pixel-F1 threshold {c['threshold']:.3f}): sIoU "
                         f"{100 * c['sIoU_gt']:.2f}, PPV {100 * c['PPV']:.2f}, mean F1 {100 * c['mean_F1']:.2f}")
        return "\n".join(lines)

    # --- figures -------------------------------------------------------------------------

    def figures(self, out_dir="figures", prefix: str = "eval") -> list[Path]:
        """Write ROC/PR curves, score distributions, anomaly heatmaps and confidence maps."""
        import matplotlib.pyplot as plt

        from . import viz
        if self.results is None:
            raise RuntimeError("call run() before figures()")
        out_dir = Path(out_dir)
        written = []
        for name, fig in (("curves", self.curves_figure()), ("score_distributions", self.distribution_figure()),
                          ("heatmaps", self.heatmap_figure()), ("confidence", self.confidence_figure())):
            written.append(viz.save(fig, out_dir / f"{prefix}_{name}.png"))
            plt.close(fig)
        return written

    def curves_figure(self):
        import matplotlib.pyplot as plt
        fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
        for name, stream in self.results["streams"].items():
            c = curves_from_streaming(stream)
            m = stream.compute()
            roc.plot(c["fpr"], c["tpr"], label=f"{name} (AUROC {100 * m['AUROC']:.1f})")
            pr.plot(c["recall"], c["precision"], label=f"{name} (AP {100 * m['AP']:.1f})")
        roc.axhline(0.95, color="grey", ls=":", lw=0.8)
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xscale="log", xlim=(1e-4, 1))
        pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
        roc.legend(fontsize=7)
        pr.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def distribution_figure(self):
        import matplotlib.pyplot as plt
        import seaborn as sns
        names = list(self.results["samples"])
        fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(13, 5), dpi=90, squeeze=False)
        for ax, name in zip(axes.flat, names):
            s = self.results["samples"][name]
            for cls, label in ((0, "inlier"), (1, "anomaly")):
                if s[cls].size:
                    sns.kdeplot(s[cls], ax=ax, fill=True, label=label, warn_singular=False)
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("")
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def heatmap_figure(self, score: str = "hybrid"):
        """Each kept image beside its ``score`` map (over the image, ground-truth anomaly in cyan),
        all rows on one colour scale, shown by each row's colorbar."""
        import matplotlib.pyplot as plt

        from . import viz
        kept = self.results["kept"]
        vmin, vmax = viz.shared_range([item["maps"][score] for item in kept])
        fig, axes = plt.subplots(len(kept), 2, figsize=(11, 2.4 * len(kept)), dpi=90, squeeze=False)
        for row, item in enumerate(kept):
            axes[row, 0].imshow(viz.to_numpy_image(item["image"]))
            axes[row, 0].axis("off")
            viz.show_heatmap(axes[row, 1], item["maps"][score], image=item["image"], outline=item["label"] == 1,
                             vmin=vmin, vmax=vmax, label=f"{score} score",
                             title=f"{score} score (shared colour scale), ground-truth anomaly in cyan")
        fig.tight_layout()
        return fig

    def confidence_figure(self):
        import matplotlib.pyplot as plt
        kept = self.results["kept"]
        fig, axes = plt.subplots(1, len(kept), figsize=(4 * len(kept), 2.2), dpi=90, squeeze=False)
        for ax, item in zip(axes[0], kept):
            im = ax.imshow(item["confidence"].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.contour((item["label"] == 1).numpy(), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title("max softmax confidence", fontsize=8)
            ax.axis("off")
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02)
        return fig
