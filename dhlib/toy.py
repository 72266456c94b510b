"""The hybrid score in two dimensions: a toy that trains in a few seconds on a CPU.

Each "pixel" is a point x in the plane. Three inlier classes are Gaussian blobs on a row;
the training negatives come from one region (by default a band above the row); test
anomalies come from that region and from regions no negative ever covered: the gaps
between the classes, beyond the two ends of the row and the band below it.

A small two-head network (2 → hidden → features, then K class logits s(x) and 2 in/out
logits o(x)) is trained with the segmenter's own loss from :mod:`dhlib.losses`, the points
being a batch of 1×1 images:

    L = L_d + β·L_x + 10β·L_cla
    L_d   = mean over inliers of −ln softmax(s(x))_y
    L_x   = mean over negatives of ln p̂(x),  ln p̂(x) = logsumexp_k s_k(x)   (floored, as in the quick profile)
    L_cla = mean over all points of −ln softmax(o(x))_{in/out}

and the three cues are read with :data:`dhlib.scores.SCORES` (higher = more anomalous):

    generative      −ln p̂(x)                     ('energy')
    discriminative  ln P(out|x)                   ('discriminative')
    hybrid          ln P(out|x) − ln p̂(x)         ('hybrid')

The last hidden layer has a Gaussian activation exp(−t²/σ²): every feature fires on a
region of the plane and falls silent far from it, as a convolutional feature fires on the
patterns it was trained on. With ReLU features every logit grows linearly without end away
from the data, and both cues call the far side of the plane more "inlier" than the inliers
(``features='relu'``, the notebook's exercise).
"""
from __future__ import annotations

from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from .data.labels import IGNORE_INDEX, OOD_ANOMALY, OOD_INLIER
from .losses import densehybrid_loss
from .metrics import ood_metrics
from .scores import SCORES

CLASS_CENTERS = ((-3.0, 0.0), (0.0, 0.0), (3.0, 0.0))
CLASS_STD = 0.3
# Regions of the plane, each a list of boxes (x0, x1, y0, y1); points are uniform in a box
# drawn uniformly from the list. Training negatives come from one of them (or from all
# but 'between'), test anomalies from every one.
REGIONS = {
    "above": [(-4.5, 4.5, 2.0, 3.5)],
    "between": [(-2.0, -1.0, -0.5, 0.5), (1.0, 2.0, -0.5, 0.5)],
    "ends": [(-5.5, -4.3, -0.7, 0.7), (4.3, 5.5, -0.7, 0.7)],
    "below": [(-4.5, 4.5, -3.5, -2.0)],
}
NEGATIVE_REGIONS = {"above": ("above",), "below": ("below",), "ends": ("ends",),
                    "around": ("above", "ends", "below")}
# display name -> key of dhlib.scores.SCORES
CUES = {"generative": "energy", "discriminative": "discriminative", "hybrid": "hybrid"}
CUE_LABELS = {"generative": "generative: −ln p̂(x)", "discriminative": "discriminative: ln P(out|x)",
              "hybrid": "hybrid: ln P(out|x) − ln p̂(x)"}
EXTENT = (-6.5, 6.5, -4.5, 4.5)   # x0, x1, y0, y1 of the maps


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------

def sample_region(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform in the boxes of ``REGIONS[name]`` (a box per point, uniformly)."""
    boxes = torch.tensor(REGIONS[name])
    box = boxes[torch.randint(len(boxes), (n,), generator=generator)]
    u = torch.rand(n, 2, generator=generator)
    return torch.stack([box[:, 0] + u[:, 0] * (box[:, 1] - box[:, 0]),
                        box[:, 2] + u[:, 1] * (box[:, 3] - box[:, 2])], 1).double()


def in_region(points: torch.Tensor, name: str) -> torch.Tensor:
    """Which of the ``N×2`` points lie inside a box of region ``name`` (bool, N)."""
    inside = torch.zeros(len(points), dtype=torch.bool)
    for x0, x1, y0, y1 in REGIONS[name]:
        inside |= (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
    return inside


def sample_inliers(n_per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of the K Gaussian blobs and their class labels 0..K−1."""
    centers = torch.tensor(CLASS_CENTERS)
    labels = torch.arange(len(centers)).repeat_interleave(n_per_class)
    points = centers[labels] + CLASS_STD * torch.randn(len(labels), 2, generator=generator)
    return points.double(), labels


def toy_data(seed: int = 0, negative_region: str = "above", n_per_class: int = 200,
             n_negatives: int = 300, n_anomalies: int = 150) -> dict:
    """The toy problem: training inliers and negatives, test inliers and test anomalies.

    Points are float64 (see :func:`train_toy`). Returns ``train_points`` N×2 and ``train_labels`` N, ``negatives`` M×2 (drawn from
    ``NEGATIVE_REGIONS[negative_region]``), ``test_points`` and ``test_labels``,
    ``anomalies`` {region: P×2} for every region of ``REGIONS``, and ``covered``, the regions
    the negatives came from; the others were never covered by a training negative.
    """
    if negative_region not in NEGATIVE_REGIONS:
        raise ValueError(f"negative_region must be one of {sorted(NEGATIVE_REGIONS)}, not {negative_region!r}")
    g = torch.Generator().manual_seed(seed)
    covered = NEGATIVE_REGIONS[negative_region]
    train_points, train_labels = sample_inliers(n_per_class, g)
    # an equal share of the negatives from each covered region
    which = torch.randint(len(covered), (n_negatives,), generator=g)
    negatives = torch.cat([sample_region(r, int((which == i).sum()), g) for i, r in enumerate(covered)])
    test_points, test_labels = sample_inliers(n_per_class, g)
    anomalies = {r: sample_region(r, n_anomalies, g) for r in REGIONS}
    return {"train_points": train_points, "train_labels": train_labels, "negatives": negatives,
            "test_points": test_points, "test_labels": test_labels, "anomalies": anomalies,
            "covered": covered, "negative_region": negative_region}


# ------------------------------------------------------------------------------------------
# Model and training
# ------------------------------------------------------------------------------------------

class ToyTwoHead(nn.Module):
    """2 → hidden → features, then the K class logits and the 2 in/out logits (channel 1 = out).

        t(x) = W₂ relu(W₁x + b₁) + b₂
        f(x) = exp(−t(x)² / σ²)      ('gaussian': in (0, 1], silent far from the data)
        f(x) = relu(t(x))            ('relu': grows linearly without end, for comparison)
        s(x) = S f(x) + c,   o(x) = O f(x) + d              the two linear heads

    ``forward`` takes ``N×2`` points (cast to the model's dtype) and returns
    ``(N×K×1×1, N×2×1×1)``, the segmenter's ``(seg_logits, ood_logits)`` for a batch of 1×1
    images.
    """

    def __init__(self, num_classes: int = len(CLASS_CENTERS), hidden: int = 64, sigma: float = 0.5,
                 features: str = "gaussian"):
        super().__init__()
        if features not in ("gaussian", "relu"):
            raise ValueError(f"features must be 'gaussian' or 'relu', not {features!r}")
        self.sigma, self.kind = sigma, features
        self.trunk = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.seg_head = nn.Linear(hidden, num_classes)
        self.ood_head = nn.Linear(hidden, 2)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        t = self.trunk(points)
        return torch.exp(-(t / self.sigma) ** 2) if self.kind == "gaussian" else torch.relu(t)

    def forward(self, points: torch.Tensor):
        f = self.features(points.to(self.seg_head.weight.dtype))
        return self.seg_head(f)[:, :, None, None], self.ood_head(f)[:, :, None, None]


@contextmanager
def _one_thread():
    # The matrices are tiny, so more threads gain nothing; one fixed thread count keeps the
    # order of every float sum, hence every number the toy prints, the same from run to run.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toy_batch(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inliers and negatives as one batch of 1×1 "pixels" with the segmenter's targets:
    ``seg_target`` = class id on inliers, 255 (ignored by L_d) on negatives;
    ``ood_target`` = 0 on inliers, 1 on negatives. Shapes N×2, N×1×1, N×1×1."""
    n, m = len(data["train_points"]), len(data["negatives"])
    points = torch.cat([data["train_points"], data["negatives"]])
    seg_target = torch.cat([data["train_labels"], torch.full((m,), IGNORE_INDEX)])
    ood_target = torch.cat([torch.full((n,), OOD_INLIER), torch.full((m,), OOD_ANOMALY)])
    return points, seg_target[:, None, None], ood_target[:, None, None]


def toy_loss(model: ToyTwoHead, batch, beta: float, likelihood_floor: float | None = -5.0) -> dict:
    """The segmenter's loss on a :func:`toy_batch`: {'L_d', 'L_x', 'L_cla', 'loss'}, where
    loss = L_d + β·L_x + 10β·L_cla (:func:`dhlib.losses.densehybrid_loss`, unchanged)."""
    points, seg_target, ood_target = batch
    seg_logits, ood_logits = model(points)
    return densehybrid_loss(seg_logits, ood_logits, seg_target, ood_target, beta,
                            likelihood_floor=likelihood_floor)


def train_toy(data: dict, *, beta: float = 0.03, steps: int = 500, lr: float = 1e-2, seed: int = 0,
              hidden: int = 64, features: str = "gaussian",
              likelihood_floor: float | None = -5.0) -> tuple[ToyTwoHead, dict]:
    """Full-batch Adam on L = L_d + β·L_x + 10β·L_cla, from a fresh model seeded by ``seed``.

    ``likelihood_floor`` is the quick profile's floor m = −5 on L_x (``None``: the papers'
    plain term, which falls without bound when trained from scratch, as here). Returns the
    model in eval mode and the history of every term, one value per step. The global random
    state is left as it was.
    """
    batch = toy_batch(data)
    history = {"loss": [], "L_d": [], "L_x": [], "L_cla": []}
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        # float64: a rounding difference between two CPUs then stays far below the printed digits
        model = ToyTwoHead(hidden=hidden, features=features).double()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            terms = toy_loss(model, batch, beta, likelihood_floor)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            for key in history:
                history[key].append(terms[key].item())
    return model.eval(), history


# ------------------------------------------------------------------------------------------
# The three cues and their metrics
# ------------------------------------------------------------------------------------------

@torch.no_grad()
def cue_scores(model: ToyTwoHead, points: torch.Tensor) -> dict:
    """{cue: N scores} for ``N×2`` points, read with ``dhlib.scores.SCORES`` from the two heads."""
    seg_logits, ood_logits = model(points)
    return {cue: SCORES[key](seg_logits, ood_logits)[:, 0, 0] for cue, key in CUES.items()}


def toy_grid(extent=EXTENT, resolution: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane as two H×W coordinate tensors (xx, yy), rows going up in y."""
    x0, x1, y0, y1 = extent
    ys = torch.linspace(y0, y1, int(resolution * (y1 - y0) / (x1 - x0)))
    return torch.meshgrid(torch.linspace(x0, x1, resolution), ys, indexing="xy")


def cue_maps(model: ToyTwoHead, grid) -> dict:
    """{cue: H×W map} of the three cues on ``grid = (xx, yy)`` from :func:`toy_grid`."""
    xx, yy = grid
    scores = cue_scores(model, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
    return {cue: s.reshape(xx.shape) for cue, s in scores.items()}


def cue_metrics(model: ToyTwoHead, data: dict) -> dict:
    """{subset: {cue: {'AP', 'AUROC', 'FPR95'}}}: each subset of test anomalies (label 1)
    against all test inliers (label 0), with :func:`dhlib.metrics.ood_metrics`.

    Subsets: every region of ``REGIONS``, 'never covered' (the regions no negative came
    from) and 'all'.
    """
    inlier = cue_scores(model, data["test_points"])
    subsets = dict(data["anomalies"])
    never = [r for r in REGIONS if r not in data["covered"]]
    if never:
        subsets["never covered"] = torch.cat([data["anomalies"][r] for r in never])
    subsets["all"] = torch.cat(list(data["anomalies"].values()))
    results = {}
    for name, points in subsets.items():
        anomaly = cue_scores(model, points)
        labels = torch.cat([torch.zeros(len(data["test_points"])), torch.ones(len(points))])
        results[name] = {cue: ood_metrics(torch.cat([inlier[cue], anomaly[cue]]), labels) for cue in CUES}
    return results


def metrics_table(metrics: dict, subsets=None) -> str:
    """AP / FPR95 in percent, one decimal, a row per cue and a column per subset."""
    subsets = list(metrics) if subsets is None else list(subsets)
    width = max(15, *(len(s) + 2 for s in subsets))
    lines = ["AP / FPR95 (%)".ljust(16) + "".join(s.rjust(width) for s in subsets)]
    for cue in CUES:
        cells = [f"{100 * metrics[s][cue]['AP']:.1f} / {100 * metrics[s][cue]['FPR95']:.1f}" for s in subsets]
        lines.append(cue.ljust(16) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------

CLASS_COLORS = ("tab:blue", "tab:green", "tab:purple")
ANOMALY_MARKERS = {"above": "^", "between": "D", "ends": "s", "below": "v"}


def draw_points(ax, data: dict, every: int = 1, box_color: str = "white") -> None:
    """Overlay the data: inliers coloured by class, training negatives as cyan crosses, the
    test regions as dashed boxes with their anomalies as white markers, one shape per region.
    ``every`` > 1 draws only every ``every``-th point, so that the map underneath stays visible."""
    for k, color in enumerate(CLASS_COLORS[:len(CLASS_CENTERS)]):
        pts = data["train_points"][data["train_labels"] == k][::every]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, color=color, label=f"inlier class {k}")
    neg = data["negatives"][::every]
    ax.scatter(neg[:, 0], neg[:, 1], s=10, marker="x", color="cyan", linewidths=0.7,
               label=f"training negative ({data['negative_region']})")
    for region, pts in data["anomalies"].items():
        for x0, x1, y0, y1 in REGIONS[region]:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=0.6, ec=box_color))
        state = "near the negatives" if region in data["covered"] else "never covered"
        pts = pts[::every]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, marker=ANOMALY_MARKERS[region], facecolors="white",
                   edgecolors="black", linewidths=0.4, label=f"test anomaly: {region} ({state})")
    x0, x1, y0, y1 = EXTENT
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")


def data_figure(data: dict):
    """The toy problem alone: classes, training negatives and the test anomalies."""
    fig, ax = plt.subplots(figsize=(7, 5.2), dpi=80)
    draw_points(ax, data, box_color="0.5")
    ax.set_title("three classes, negatives from one region, test anomalies in four", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, markerscale=1.6, frameon=False)
    fig.tight_layout()
    return fig


def history_figure(history: dict):
    """The loss terms of :func:`train_toy`, one panel each, against the step."""
    keys = ("L_d", "L_x", "L_cla", "loss")
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 2.4), dpi=80)
    for ax, key in zip(axes, keys):
        ax.plot(history[key], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def colour_ranges(model: ToyTwoHead, data: dict) -> dict:
    """{cue: (low, high)}: the 1st and 99th percentile of the cue on the test inliers and the
    never-covered anomalies. The anomalies next to the negatives score far higher than
    anything else; a range that included them would wash out the structure near the data
    (they saturate at the top of the colour bar instead)."""
    never = [data["anomalies"][r] for r in REGIONS if r not in data["covered"]]
    scores = cue_scores(model, torch.cat([data["test_points"], *never]))
    return {cue: tuple(np.percentile(s.numpy(), [1, 99])) for cue, s in scores.items()}


def cues_figure(model: ToyTwoHead, data: dict, metrics: dict | None = None, resolution: int = 160):
    """The three cues over the plane (bright = anomalous), with the data overlaid (every 5th
    point), each in its own colour range (:func:`colour_ranges`). With ``metrics`` (from
    :func:`cue_metrics`), each title carries the AP on the never-covered anomalies."""
    maps = cue_maps(model, toy_grid(resolution=resolution))
    ranges = colour_ranges(model, data)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.1), dpi=80)
    for ax, (cue, values) in zip(axes, maps.items()):
        # 32 colour levels: the bands read like contour lines, and the PNG stays small
        im = ax.imshow(values.numpy(), origin="lower", extent=EXTENT, cmap=plt.get_cmap("inferno", 32),
                       vmin=ranges[cue][0], vmax=ranges[cue][1], interpolation="nearest")
        bar = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02, extend="both")
        bar.ax.tick_params(labelsize=7)
        bar.set_label(f"{CUES[cue]} score (higher = more anomalous)", fontsize=7)
        draw_points(ax, data, every=5)
        title = CUE_LABELS[cue]
        if metrics is not None and "never covered" in metrics:
            title += f"\nAP on never-covered anomalies {100 * metrics['never covered'][cue]['AP']:.1f} %"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, markerscale=1.6, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def explore(beta: float = 0.03, negative_region: str = "above", seed: int = 0):
    """Train the toy with ``beta`` and negatives from ``negative_region``, draw its three
    cues and print the AP / FPR95 table (for the notebook's interactive control)."""
    data = toy_data(seed, negative_region)
    model, _ = train_toy(data, beta=beta, seed=seed)
    metrics = cue_metrics(model, data)
    fig = cues_figure(model, data, metrics)
    print(metrics_table(metrics))
    return fig


def _ranked(metrics: dict, subset: str) -> str:
    """'hybrid 95.0 / 27.3, discriminative ..., generative ...': AP / FPR95 (%) by AP, best first."""
    order = sorted(CUES, key=lambda cue: -metrics[subset][cue]["AP"])
    return ", ".join(f"{cue} {100 * metrics[subset][cue]['AP']:.1f} / {100 * metrics[subset][cue]['FPR95']:.1f}"
                     for cue in order)


def paper_figure(seed: int = 0):
    """The papers' 2-D argument, measured: the default toy's three-cue figure and a caption
    paragraph with the AP / FPR95 of each cue (computed here, from ``seed``)."""
    data = toy_data(seed)
    model, _ = train_toy(data, seed=seed)
    metrics = cue_metrics(model, data)
    fig = cues_figure(model, data, metrics)
    caption = (
        f"DenseHybrid's two cues on a 2-D toy (seed {seed}). Three inlier classes lie on a row; a "
        "small two-head network is trained with DenseHybrid's loss L_d + βL_x + 10βL_cla (β = 0.03), "
        "the training negatives drawn only from the band above the row. Panels: the generative cue "
        "−ln p̂(x) = −logsumexp of the class logits, the discriminative cue ln P(out|x) of the OOD "
        "head, and their sum, the hybrid score (bright = anomalous; each panel has its own colour "
        "range). No negative was ever between the classes, beyond the ends of the row or below it: "
        "there each cue generalises in its own way, the OOD head from where the negatives were, "
        "−ln p̂(x) from where the classes compete. AP / FPR95 (%) of each subset of test anomalies "
        "against the test inliers, best AP first: between the classes "
        f"{_ranked(metrics, 'between')}; beyond the ends {_ranked(metrics, 'ends')}; below the row "
        f"{_ranked(metrics, 'below')}; all never-covered anomalies {_ranked(metrics, 'never covered')}; "
        f"all anomalies {_ranked(metrics, 'all')}.")
    return fig, caption
