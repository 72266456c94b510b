"""The public anomaly-segmentation validation sets behind one call: ``load_anomaly_dataset``.

``load_anomaly_dataset(root, kind=None)`` returns a torch Dataset of
``(image 3×H×W float in [0, 1], label H×W int64)`` in this package's OOD convention:
0 inlier, 1 anomaly, 255 void (not scored). With ``kind=None`` the tree under ``root`` decides;
a tree that fits no layout gets an error listing them all, and a tree that two kinds share
(the two SegmentMeIfYouCan tracks) gets an error asking for ``kind``. The returned dataset's
``kind`` and ``layout`` attributes say what was read.

=================== ====================================================== ==========================
kind                layout under ``root``                                  file values -> 0 / 1 / 255
=================== ====================================================== ==========================
fishyscapes-static  ``Static/{original,labels}/<name>.png`` (this package,  0, 1, 255
                    SynthCity, PEBAL); or ``**/<name>_rgb.jpg`` beside
                    ``<name>_labels.png`` (DenseHybrid)
fishyscapes-laf     ``LostAndFound/{original,labels}/<name>.png``; or       0, 1, void = 2 or 255
                    ``leftImg8bit/<city>/<id>_leftImg8bit.png`` +
                    ``ood/<city>/<id>_ood_segmentation.png`` (DenseHybrid)
smiyc-anomaly       ``images/validation*.{jpg,png,webp}`` +                 0, 1, 255
smiyc-obstacle      ``labels_masks/validation*_labels_semantic.png``        0 road, 1 obstacle,
                    (the same layout for both tracks)                       255 off the road
road-anomaly        ``frames/<name>.{jpg,webp,png}`` +                      0 and 1 inlier,
                    ``frames/<name>.labels/labels_semantic.png``            2 anomaly, no void
folder              ``images/<name>.{png,jpg,jpeg,webp}`` +                 0, 1, 255
                    ``labels/<name>.png`` (your own images)
=================== ====================================================== ==========================

Each kind reads the numbers its benchmark's documentation or released code gives (the sources
are cited beside each table) and nothing else. There is no generic remapping because the same
number means different things: 2 is void in DenseHybrid's Lost & Found files and the anomaly in
Road Anomaly. A label value outside the kind's table is an error naming the file.

SegmentMeIfYouCan publishes labels for the ``validation*`` frames only, so only those are read.
The benchmark's ``ObstacleTrack-validation`` split also leaves out a few validation frames
(``exclude_prefix`` in its ``tracks.py``); delete those files to match it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from .fishyscapes import (LOST_AND_FOUND_FORMAT, LOST_AND_FOUND_LABELS, STATIC_FORMAT, STATIC_LABELS,
                          CustomImages, Fishyscapes, LabelledImages)
from .io import DatasetNotFoundError
from .labels import OOD_ANOMALY, OOD_INLIER, OOD_VOID

KINDS = ("fishyscapes-static", "fishyscapes-laf", "smiyc-anomaly", "smiyc-obstacle", "road-anomaly", "folder")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# On-disk label value -> 0 inlier / 1 anomaly / 255 void. The Fishyscapes tables and their
# sources are in dhlib/data/fishyscapes.py (STATIC_LABELS, LOST_AND_FOUND_LABELS); `folder`
# uses this package's own convention, the Fishyscapes one (STATIC_LABELS).

# SegmentMeIfYouCan, both tracks: the benchmark's dataset classes DatasetAnomalyTrack and
# DatasetObstacleTrack (SegmentMeIfYouCan/road-anomaly-benchmark,
# road_anomaly_benchmark/datasets/tracks.py; the AnomalyTrack-validation split is configured in
# tracks_extra.py) read labels_masks/<frame>_labels_semantic.png with usual = 0, anomaly = 1,
# ignore = 255; in the obstacle track 0 is the road, 1 an obstacle on it, and 255 everything
# off the road.
SMIYC_LABELS = {0: OOD_INLIER, 1: OOD_ANOMALY, 255: OOD_VOID}
# Road Anomaly (Lis et al., ICCV 2019): the dataset's readme.md (in RoadAnomaly.zip,
# https://www.epfl.ch/labs/cvlab/data/road-anomaly/) gives background = 0 and anomaly = 2 in
# frames/<name>.labels/labels_semantic.png; the authors' loader (cvlab-epfl/detecting-the-unexpected,
# src/datasets/road_anomaly.py) counts values >= 2 as anomaly and everything below as not, so
# a 1 is an inlier too. Nothing is void: every pixel is scored.
ROAD_ANOMALY_LABELS = {0: OOD_INLIER, 1: OOD_INLIER, 2: OOD_ANOMALY}


class AmbiguousDatasetError(ValueError):
    """The tree fits more than one kind (the two SegmentMeIfYouCan tracks share a layout)."""


@dataclass(frozen=True)
class Layout:
    """One way a benchmark's files lie on disk, how to recognise it and how to read it."""

    kinds: tuple[str, ...]          # the kinds such a tree can hold
    name: str                       # shown in messages; kept as ``dataset.layout``
    tree: str                       # the expected tree, shown when nothing matches
    where: str                      # where the data comes from
    matches: Callable[[Path], bool]
    load: Callable[..., torch.utils.data.Dataset]   # (root, kind, transforms) -> dataset

    def describe(self) -> str:
        return f"  {' or '.join(self.kinds)}: {self.name}\n{self.tree}\n    ({self.where})"


# ---- recognising a tree ---------------------------------------------------------------------

def _has_dirs(*names: str) -> Callable[[Path], bool]:
    return lambda root: all((root / name).is_dir() for name in names)


def _densehybrid_static_images(root: Path) -> Iterator[Path]:
    """Every ``<name>_rgb.<ext>`` image under ``root`` (DenseHybrid's fs_static walks the tree)."""
    return (p for p in root.rglob("*_rgb.*") if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def _densehybrid_static_label(image: Path) -> Path:
    return image.with_name(image.stem[: -len("_rgb")] + "_labels.png")


def _is_densehybrid_static(root: Path) -> bool:
    # the first image with its label beside it is enough; the walk stops there
    return any(_densehybrid_static_label(p).is_file() for p in _densehybrid_static_images(root))


def _is_road_anomaly(root: Path) -> bool:
    frames = root / "frames"
    return frames.is_dir() and any(p.is_dir() for p in frames.glob("*.labels"))


# ---- reading a tree ---------------------------------------------------------------------------

def _pair_up(triples: Iterable[tuple[str, Path, Path]], what: str) -> tuple[dict, dict]:
    """Split ``(name, image, label)`` triples into the two tables; a missing file is an error."""
    images, labels, missing = {}, {}, []
    for key, image, label in triples:
        if not image.is_file() or not label.is_file():
            missing.append(str(label if image.is_file() else image))
        elif key not in images:
            images[key], labels[key] = image, label
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} file(s) missing, e.g. {missing[:3]}; every "
                                "image needs its label and every label its image")
    if not images:
        raise DatasetNotFoundError(f"{what}: no image/label pairs found")
    return images, labels


def _fishyscapes_split(split: str):
    def load(root: Path, kind: str, transforms):
        return Fishyscapes(root, split, transforms)
    return load


def _load_densehybrid_static(root: Path, kind: str, transforms):
    triples = ((p.relative_to(root).with_name(p.stem[: -len("_rgb")]).as_posix(), p, _densehybrid_static_label(p))
               for p in _densehybrid_static_images(root))
    images, labels = _pair_up(triples, f"Fishyscapes Static (DenseHybrid packaging) in {root}")
    return LabelledImages(images, labels, transforms, label_values=STATIC_LABELS, label_format=STATIC_FORMAT)


def _load_densehybrid_laf(root: Path, kind: str, transforms):
    suffix = "_ood_segmentation.png"

    def triples():  # the labels list the frames, as in DenseHybrid's fs_lost_found loader
        for label in (root / "ood").rglob(f"*{suffix}"):
            frame = label.name[: -len(suffix)]
            city = label.parent.relative_to(root / "ood")
            yield frame, root / "leftImg8bit" / city / f"{frame}_leftImg8bit.png", label
    images, labels = _pair_up(triples(), f"Fishyscapes Lost & Found (DenseHybrid packaging) in {root}")
    return LabelledImages(images, labels, transforms, label_values=LOST_AND_FOUND_LABELS,
                          label_format=LOST_AND_FOUND_FORMAT)


def _load_smiyc(root: Path, kind: str, transforms):
    frames = [p for p in sorted((root / "images").iterdir())
              if p.name.startswith("validation") and p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise DatasetNotFoundError(
            f"no validation*.jpg|png|webp images in {root / 'images'}: SegmentMeIfYouCan publishes "
            "labels for its validation frames only (the test labels stay on the benchmark server)")
    triples = ((p.stem, p, root / "labels_masks" / f"{p.stem}_labels_semantic.png") for p in frames)
    track = "anomaly track" if kind == "smiyc-anomaly" else "obstacle track"
    images, labels = _pair_up(triples, f"SegmentMeIfYouCan {track} in {root}")
    return LabelledImages(images, labels, transforms, label_values=SMIYC_LABELS,
                          label_format=f"SegmentMeIfYouCan {track} (0/1/255)")


def _load_road_anomaly(root: Path, kind: str, transforms):
    frames = [p for p in sorted((root / "frames").iterdir()) if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    triples = ((p.stem, p, root / "frames" / f"{p.stem}.labels" / "labels_semantic.png") for p in frames)
    images, labels = _pair_up(triples, f"Road Anomaly in {root}")
    return LabelledImages(images, labels, transforms, label_values=ROAD_ANOMALY_LABELS,
                          label_format="Road Anomaly (0 background, 1 road, 2 anomaly)")


def _load_folder(root: Path, kind: str, transforms):
    return CustomImages(root, transforms)


FISHYSCAPES_WHERE = "https://fishyscapes.com/dataset"
LAYOUTS = (
    Layout(("fishyscapes-static",), "Fishyscapes Static in original/ + labels/ (this package, SynthCity, PEBAL)",
           "    <root>/Static/original/<name>.png       RGB image\n"
           "    <root>/Static/labels/<name>.png         0 inlier, 1 anomaly, 255 void",
           FISHYSCAPES_WHERE, _has_dirs("Static/original", "Static/labels"), _fishyscapes_split("Static")),
    Layout(("fishyscapes-static",), "Fishyscapes Static, DenseHybrid packaging",
           "    <root>/**/<name>_rgb.jpg                RGB image (.jpg or .png)\n"
           "    <root>/**/<name>_labels.png             beside it: 0 inlier, 1 anomaly, 255 void",
           FISHYSCAPES_WHERE, _is_densehybrid_static, _load_densehybrid_static),
    Layout(("fishyscapes-laf",), "Fishyscapes Lost & Found in original/ + labels/ (this package, PEBAL)",
           "    <root>/LostAndFound/original/<name>.png RGB image\n"
           "    <root>/LostAndFound/labels/<name>.png   0 inlier, 1 anomaly, 2 or 255 void",
           FISHYSCAPES_WHERE, _has_dirs("LostAndFound/original", "LostAndFound/labels"),
           _fishyscapes_split("LostAndFound")),
    Layout(("fishyscapes-laf",), "Fishyscapes Lost & Found, DenseHybrid packaging",
           "    <root>/leftImg8bit/<city>/<id>_leftImg8bit.png    RGB image\n"
           "    <root>/ood/<city>/<id>_ood_segmentation.png       0 inlier, 1 anomaly, 2 or 255 void",
           FISHYSCAPES_WHERE, _has_dirs("leftImg8bit", "ood"), _load_densehybrid_laf),
    Layout(("smiyc-anomaly", "smiyc-obstacle"), "SegmentMeIfYouCan, the same layout for both tracks",
           "    <root>/images/validation*.jpg|png|webp                 RGB image\n"
           "    <root>/labels_masks/validation*_labels_semantic.png    0 inlier (road), 1 anomaly "
           "(obstacle), 255 void",
           "https://segmentmeifyoucan.com/datasets: dataset_AnomalyTrack, dataset_ObstacleTrack",
           _has_dirs("images", "labels_masks"), _load_smiyc),
    Layout(("road-anomaly",), "Road Anomaly (Lis et al., ICCV 2019)",
           "    <root>/frames/<name>.jpg|webp|png                  RGB image\n"
           "    <root>/frames/<name>.labels/labels_semantic.png    0 background, 2 anomaly",
           "https://www.epfl.ch/labs/cvlab/data/road-anomaly/", _is_road_anomaly, _load_road_anomaly),
    Layout(("folder",), "a folder of your own labelled images",
           "    <root>/images/<name>.png|jpg|jpeg|webp  RGB image\n"
           "    <root>/labels/<name>.png                0 inlier, 1 anomaly, 255 void (same name)",
           "your own data", _has_dirs("images", "labels"), _load_folder),
)


# ---- the entry point ------------------------------------------------------------------------

def load_anomaly_dataset(root, kind: str | None = None, transforms=None) -> torch.utils.data.Dataset:
    """The anomaly dataset under ``root``: items ``(image 3×H×W in [0, 1], label H×W int64)``,
    label 0 inlier, 1 anomaly, 255 void.

    ``kind`` is one of :data:`KINDS` (see the module docstring for each layout and its label
    values); ``None`` recognises the tree. Raises :class:`DatasetNotFoundError` (listing the
    expected layouts) when the tree fits no layout of ``kind``, and
    :class:`AmbiguousDatasetError` when ``kind=None`` and the tree fits several kinds.
    ``transforms`` defaults to :func:`~dhlib.data.transforms.eval_transforms`. The dataset's
    ``kind`` and ``layout`` attributes say what was found.
    """
    root = Path(root)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown anomaly dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    layout, kind = _choose_layout(root, kind)
    dataset = layout.load(root, kind, transforms)
    dataset.kind, dataset.layout = kind, layout.name
    return dataset


def detect_kinds(root) -> list[tuple[Layout, str]]:
    """Every ``(layout, kind)`` whose tree ``root`` holds, in the order of :data:`LAYOUTS`."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [(layout, kind) for layout in LAYOUTS if layout.matches(root) for kind in layout.kinds]


def _choose_layout(root: Path, kind: str | None) -> tuple[Layout, str]:
    found = detect_kinds(root)
    if kind is not None:
        for layout, found_kind in found:
            if found_kind == kind:
                return layout, kind
        raise DatasetNotFoundError(_not_found_message(root, kind, found))
    kinds = sorted({k for _, k in found}, key=KINDS.index)
    if not kinds:
        raise DatasetNotFoundError(_not_found_message(root, None, found))
    if len(kinds) > 1:
        raise AmbiguousDatasetError(_ambiguous_message(root, kinds, found))
    return found[0]


def _listing(root: Path, limit: int = 6) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return "it is empty"
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return "it holds " + ", ".join(entries[:limit]) + more


def _not_found_message(root: Path, kind: str | None, found) -> str:
    layouts = [layout for layout in LAYOUTS if kind is None or kind in layout.kinds]
    what = _listing(root) if root.is_dir() else "the folder does not exist"
    lines = [f"Dataset not found: {root} is not {'a ' + kind if kind else 'an anomaly dataset'} tree ({what})."]
    others = sorted({k for _, k in found}, key=KINDS.index)
    if others:
        lines.append(f"It looks like {' or '.join(others)}: pass that kind instead.")
    if (root / "original").is_dir() and (root / "labels").is_dir():
        lines.append(f"It holds original/ and labels/ itself, like one Fishyscapes split: pass the folder "
                     f"above it ({root.parent}), which holds Static/ or LostAndFound/.")
    lines.append("\nExpected layout" + ("s:" if len(layouts) > 1 else ":"))
    lines += [layout.describe() for layout in layouts]
    return "\n".join(lines)


def _ambiguous_message(root: Path, kinds: list[str], found) -> str:
    names = list(dict.fromkeys(layout.name for layout, _ in found))
    choices = " or ".join(f"kind={k!r}" for k in kinds)
    return (f"{root} fits more than one kind of anomaly dataset: {', '.join(kinds)} "
            f"({'; '.join(names)}). The files cannot tell them apart: pass {choices} "
            f"(command line: {' or '.join('--kind ' + k for k in kinds)}).")
