"""Scoring your own images: ``python -m dhlib score PATH... [--checkpoint FILE] [--out DIR]``.

For every image the shipped DenseHybrid model (``quick-densehybrid``, see
:mod:`dhlib.models.weights`) computes, per pixel, the *hybrid* anomaly score of
:mod:`dhlib.scores`

    s(x) = ln P(out|x) − ln p̂(x),

the OOD head's log-probability that the pixel is an outlier minus the segmenter's unnormalised
log-likelihood (logsumexp of the class logits). Higher means more anomalous; the value itself
has no absolute unit, only its order matters.

Two files are written per image:

* ``<stem>_hybrid.png``: the image, the hybrid score as a heatmap with a colorbar (the threshold
  is the white line on the colorbar), and the image with the flagged pixels tinted;
* ``<stem>_mask.png``: a binary mask of the image's size, 255 where s(x) ≥ threshold, else 0.

The threshold is not chosen on your images. It is the value at which the hybrid score detects
95 % of the anomaly pixels (95 % TPR) of a held-out anomaly split, measured on the shipped
weights when they were stored; the model card (``weights/quick-densehybrid.json``,
``card["threshold"]``) names that split. The quick model is trained on procedural SynthCity
street scenes, so on real photographs both the scores and the threshold are a teaching device,
not a calibrated detector.

The functions below do one thing each: collect the input files, read one image, score it, turn
the score into a mask, write the two PNGs; :func:`score_paths` strings them together and keeps
going past bad inputs, reporting each one by name.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpointing import atomic_write
from .models import weights
from .models.checkpoints import CheckpointError
from .scores import SCORES

WEIGHTS = "quick-densehybrid"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE = 32  # below this a street-scene model sees a few blurred pixels: refuse rather than guess
MODE_NAMES = {"L": "grayscale", "LA": "grayscale + alpha", "1": "black-and-white", "P": "palette",
              "PA": "palette + alpha", "RGBA": "RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr",
              "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale",
              "I": "32-bit integer grayscale", "F": "floating-point grayscale"}


def fmt(threshold: float) -> str:
    """A threshold as printed everywhere (4 significant digits)."""
    return f"{threshold:.4g}"


class ImageError(ValueError):
    """One input cannot be scored; the message names the file and what is wrong with it."""


class ScoringError(RuntimeError):
    """The run cannot start (unusable checkpoint or threshold, output folder not writable)."""


@dataclass(frozen=True)
class Threshold:
    value: float
    origin: str  # where the value comes from, printed so users know it was not fitted to their images


# ---- inputs -------------------------------------------------------------------------------

def collect_inputs(paths) -> list:
    """Each PATH in order: a file as given, a folder as the image files directly inside it
    (sorted). Missing paths and empty folders become :class:`ImageError` items in place, so
    they are reported in order with the rest; a file named twice is scored once."""
    items, seen = [], set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _images_in(path)
            if isinstance(found, ImageError) or not found:
                items.append(found or ImageError(
                    f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                    "sub-folders are not searched"))
                continue
        elif path.is_file():
            found = [path]
        else:
            what = "not a file or folder" if path.exists() else "does not exist"
            items.append(ImageError(f"{path}: {what}"))
            continue
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                items.append(file)
    return items


def _images_in(folder: Path):
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        return ImageError(f"{folder}: cannot list the folder ({err.strerror or err})")
    # hidden files (macOS "._x.png" resource forks, editors' backups) are not images
    return [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            and p.is_file()]


def output_stems(files, out: Path) -> dict:
    """A distinct output stem per file: ``street``, then ``street-2``, ``street-3`` for further
    files with the same stem (another folder, or ``street.jpg`` beside ``street.png``).
    Compared case-insensitively, as on macOS and Windows file systems. A stem whose outputs
    would land on one of the input files (``--out`` = the input folder) is skipped too."""
    inputs = {file.resolve() for file in files}

    def taken(stem):
        return stem.casefold() in used or any((out / f"{stem}_{kind}.png").resolve() in inputs
                                               for kind in ("hybrid", "mask"))
    stems, used = {}, set()
    for file in files:
        stem, k = file.stem, 2
        while taken(stem):
            stem, k = f"{file.stem}-{k}", k + 1
        used.add(stem.casefold())
        stems[file] = stem
    return stems


# ---- one image ----------------------------------------------------------------------------

def read_rgb(path) -> tuple[torch.Tensor, str | None]:
    """The image as a ``3×H×W`` float tensor, RGB in [0, 1], and a note when it was converted
    (grayscale, alpha, palette, 16-bit, EXIF rotation) or ``None``."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            oriented = ImageOps.exif_transpose(im)  # the mask must line up with the picture viewers show
            array, note = _to_rgb(oriented)
            if im.getexif().get(0x0112, 1) not in (0, 1):  # 0x0112: the EXIF orientation tag
                note = "; ".join(filter(None, [note, "rotated as its EXIF orientation says"]))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (Pillow cannot identify its format)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to decode safely ({err})") from None
    except Exception as err:  # Pillow's decoders raise many types (OSError, SyntaxError, zlib.error...)
        raise ImageError(f"{path}: corrupt or truncated image ({type(err).__name__}: {err})") from None
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{path}: {width}×{height} is too small; the model needs at least "
                         f"{MIN_SIDE} px on each side")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), note


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, str | None]:
    """``H×W×3`` float32 in [0, 1] from any Pillow mode."""
    if im.mode == "RGB":
        return np.asarray(im, np.float32) / 255, None
    note = f"{MODE_NAMES.get(im.mode, im.mode)} image converted to RGB"
    if im.mode.startswith("I"):  # 16-bit grey: Image.convert('RGB') would clip everything above 255
        grey = np.clip(np.asarray(im, np.float32) / 65535, 0, 1)
        return np.repeat(grey[..., None], 3, axis=2), note
    if "A" in im.mode:
        note += " (alpha channel ignored)"
    return np.asarray(im.convert("RGB"), np.float32) / 255, note


def hybrid_map(model, image: torch.Tensor) -> np.ndarray:
    """The ``H×W`` hybrid score of one ``3×H×W`` image (equation in :mod:`dhlib.scores`)."""
    with torch.inference_mode():
        seg_logits, ood_logits = model(image[None])
        return SCORES["hybrid"](seg_logits, ood_logits)[0].float().numpy()


def anomaly_mask(score: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask: 255 where score ≥ threshold (flagged anomalous), 0 elsewhere."""
    return np.where(score >= threshold, 255, 0).astype(np.uint8)


# ---- outputs ------------------------------------------------------------------------------

def write_mask(mask: np.ndarray, path) -> Path:
    """The mask as a single-channel PNG, atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(mask, mode="L").save(tmp, format="PNG"))


def write_heatmap(image: torch.Tensor, score: np.ndarray, mask: np.ndarray, threshold: float,
                  path, title: str) -> Path:
    """Image | hybrid heatmap with colorbar (threshold marked) | flagged pixels tinted."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    from . import viz
    rgb = viz.to_numpy_image(image)
    height, width = score.shape
    side = 4.0 / max(height, width)  # each panel fits a 4-inch square, whatever the aspect ratio
    panel_w, panel_h = max(2.0, width * side), max(1.0, height * side)
    fig = Figure(figsize=(3 * panel_w + 3.0, panel_h + 1.0), dpi=100)
    # wspace leaves room for the colorbar's ticks; top keeps 0.8 inch for the titles
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.5, "top": 1 - 0.8 / (panel_h + 1.0), "bottom": 0.02})
    axes[0].imshow(rgb)
    axes[0].set_title("image\n", fontsize=9)
    # the colour scale always reaches the threshold, so the line on the colorbar is visible
    low, high = min(float(score.min()), threshold), max(float(score.max()), threshold)
    shown = axes[1].imshow(score, cmap="magma", vmin=low, vmax=high if high > low else low + 1)
    axes[1].set_title("hybrid score\nln P(out|x) − ln p̂(x)", fontsize=9)
    bar = fig.colorbar(shown, cax=axes[1].inset_axes([1.03, 0, 0.05, 1]))  # as tall as the picture
    bar.ax.axhline(threshold, color="white", linewidth=2)
    bar.set_label("white line: threshold", fontsize=8)
    tinted = np.where(mask[..., None] == 255, 0.45 * rgb + 0.55 * np.array([1.0, 0.55, 0.0]), rgb)
    axes[2].imshow(tinted)
    axes[2].set_title(f"flagged: hybrid ≥ {fmt(threshold)}\n({100 * np.count_nonzero(mask) / mask.size:.2f} %)",
                      fontsize=9)
    for ax in axes:
        ax.axis("off")
        ax.set_anchor("N")  # pictures hang under the title; the spare space falls below and is cropped
    fig.suptitle(title, fontsize=10)
    return viz.save(fig, path)


def score_one(model, path: Path, stem: str, out: Path, threshold: float, echo) -> None:
    """Read, score, threshold and write one image; print its line (and a note if converted)."""
    image, note = read_rgb(path)
    if note:
        echo(f"note: {path}: {note}")
    try:
        score = hybrid_map(model, image)
    except RuntimeError as err:  # e.g. not enough memory for a huge image on this machine
        size = f"{image.shape[2]}×{image.shape[1]}"
        raise ImageError(f"{path}: the model failed on this {size} image ({err})") from None
    mask = anomaly_mask(score, threshold)
    try:
        write_mask(mask, out / f"{stem}_mask.png")
        title = f"{path.name}: DenseHybrid anomaly score (higher = more anomalous), threshold {fmt(threshold)}"
        write_heatmap(image, score, mask, threshold, out / f"{stem}_hybrid.png", title)
    except OSError as err:
        raise ImageError(f"{path}: cannot write its outputs in {out} ({err})") from None
    height, width = mask.shape
    renamed = f" [written as {stem}_*.png]" if stem != path.stem else ""
    echo(f"{path} {width}×{height}: {100 * np.count_nonzero(mask) / mask.size:.2f} % of pixels flagged "
         f"anomalous (hybrid ≥ {fmt(threshold)}){renamed}")


# ---- model and threshold -------------------------------------------------------------------

def load_scorer(checkpoint=None) -> tuple[torch.nn.Module, str]:
    """The shipped model (hash-checked), or ``checkpoint`` loaded into its architecture; and a
    description of the weights for the header line."""
    shipped = weights.get(WEIGHTS)
    if checkpoint is None:
        model = weights.load_model(WEIGHTS)
        return model, f"the shipped {WEIGHTS} weights ({shipped.path}, sha256 {shipped.sha256[:12]}…)"
    try:
        model = weights.load_model(WEIGHTS, path=checkpoint)
    except (FileNotFoundError, CheckpointError) as err:  # missing, unreadable, foreign: the message says what to do
        detail = str(err)
    else:
        return model, f"{checkpoint} in the {WEIGHTS} architecture (not the shipped weights)"
    raise ScoringError(f"cannot load --checkpoint {checkpoint} into the {WEIGHTS} model "
                       f"({shipped.profile} profile): {detail}")


def load_threshold(override: float | None = None, checkpoint=None) -> Threshold:
    """``override`` if given, else ``card["threshold"]`` of the shipped weights' model card."""
    if override is not None:
        if not math.isfinite(override):
            raise ScoringError(f"--threshold must be a finite number, got {override}")
        return Threshold(float(override), "given with --threshold")
    shipped = weights.get(WEIGHTS)
    try:
        entry = shipped.card.get("threshold")
    except weights.WeightsError as err:
        raise weights.WeightsError(f"{err}; or pass --threshold VALUE") from None
    if not isinstance(entry, dict) or entry.get("score") != "hybrid" or \
            not isinstance(entry.get("value"), (int, float)) or not math.isfinite(entry["value"]):
        raise weights.WeightsError(f"the model card {shipped.card_path} has no usable hybrid threshold "
                                   f"(card['threshold'] = {entry!r}): rebuild it with "
                                   f"`make {shipped.make_target}`, or pass --threshold VALUE")
    tpr = entry.get("tpr", 0.95)
    origin = (f"from the {WEIGHTS} model card: {100 * tpr:.0f} % TPR of the hybrid score on "
              f"{entry.get('split', 'an unnamed split')}, never on your images")
    if checkpoint is not None:
        origin += f"; calibrated for the shipped weights, not for {checkpoint}"
    return Threshold(float(entry["value"]), origin)


# ---- the command --------------------------------------------------------------------------

def _print_error(text: str) -> None:
    sys.stdout.flush()  # keep errors in order with the per-image lines when both go to one file
    print(text, file=sys.stderr, flush=True)


def score_paths(paths, out, checkpoint=None, threshold: float | None = None,
                echo=print, echo_error=None) -> tuple[int, int]:
    """Score every image in ``paths`` into ``out``; return ``(scored, failed)``.

    Bad inputs are reported one line each and skipped; problems that stop the whole run
    (weights, checkpoint, threshold, output folder) raise before any image is read.
    """
    echo_error = echo_error or _print_error
    model, described = load_scorer(checkpoint)
    cut = load_threshold(threshold, checkpoint)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ScoringError(f"cannot create the output folder {out} ({err})") from None
    echo(f"scoring with {described}; threshold hybrid ≥ {fmt(cut.value)} ({cut.origin}); "
         f"outputs in {out}")
    items = collect_inputs(paths)
    stems = output_stems([item for item in items if isinstance(item, Path)], out)
    scored = failed = 0
    for item in items:
        if isinstance(item, ImageError):  # a missing path or an empty folder
            echo_error(f"error: {item}")
            failed += 1
            continue
        try:
            score_one(model, item, stems[item], out, cut.value, echo)
            scored += 1
        except ImageError as err:
            echo_error(f"error: {err}")
            failed += 1
    echo(f"{scored} scored, {failed} failed; outputs in {out}")
    return scored, failed
