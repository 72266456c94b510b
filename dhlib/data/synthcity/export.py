"""The exporter: writes the three SynthCity trees in their real formats under
``synthcity_root``, and never writes into, or removes from, a folder it did not make."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ...checkpointing import atomic_write_text
from .anomalies import render_anomaly_scene
from .negatives import render_negative
from .scene import render_scene
from .streams import GENERATOR_VERSION

# Cities of the Cityscapes-format tree (file names follow {city}_{seq:06d}_{frame:06d}).
CITIES = {"train": ("arcadia", "brickton", "cobbleford"), "val": ("dunmore",)}

# The folders an export creates directly under its root; the marker lists those it made.
TREES = ("cityscapes", "ade20k", "fishyscapes")
KINDS = ("train", "val", "negatives", "anomalies")


class SynthCityConflict(RuntimeError):
    """SynthCity would write into, or remove from, a folder it did not create, or rewrite an
    export that a command only reads."""


def cityscapes_stem(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of image ``index`` of a split: ``{city}_{seq:06d}_{frame:06d}``."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    k = index // len(cities)
    return city, f"{city}_{k // 30:06d}_{(k % 30) * 19 + 19:06d}"


# How each image file type is saved: lossless PNG for labels and street images, JPEG as
# ADE20K ships its images.
_IMAGE_FORMATS = {".png": ("PNG", {"compress_level": 1}), ".jpg": ("JPEG", {"quality": 92})}


def _atomic_save_image(array: np.ndarray, path: Path, fmt: str, **options) -> Path:
    """Save ``array`` as an image file through a temporary file and a rename, so that an
    interrupted export never leaves half an image under a real file name."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format=fmt, **options)
    os.replace(tmp, path)
    return path


def export_files(kind: str, index: int) -> list[str]:
    """The files (relative to the SynthCity root) that image ``index`` of ``kind`` is written to,
    in the order :func:`_export_one` writes them: the one naming rule for writing and removing."""
    if kind in ("train", "val"):
        city, stem = cityscapes_stem(kind, index)
        return [f"cityscapes/leftImg8bit/{kind}/{city}/{stem}_leftImg8bit.png",
                f"cityscapes/gtFine/{kind}/{city}/{stem}_gtFine_labelIds.png"]
    if kind == "negatives":
        name = f"ADE_train_{index + 1:08d}"
        return [f"ade20k/ADEChallengeData2016/images/training/{name}.jpg",
                f"ade20k/ADEChallengeData2016/annotations/training/{name}.png"]
    name = f"synthcity_{index:04d}"
    return [f"fishyscapes/Static/original/{name}.png", f"fishyscapes/Static/labels/{name}.png",
            f"fishyscapes/Static/semantic/{name}_gtFine_labelIds.png"]


def _export_one(job):
    kind, root, seed, index, h, w = job
    if kind in ("train", "val"):
        arrays = render_scene(seed, index, h, w, stream=kind)
    elif kind == "negatives":
        arrays = render_negative(seed, index)
    else:
        arrays = render_anomaly_scene(seed, index, h, w)
    for rel, array in zip(export_files(kind, index), arrays):
        fmt, options = _IMAGE_FORMATS[Path(rel).suffix]
        _atomic_save_image(array, Path(root) / rel, fmt, **options)


# The profile field behind each entry of the marker, beside the generator version.
MANIFEST_FIELDS = {"seed": "synthcity_seed", "height": "synthcity_height", "width": "synthcity_width",
                   "train": "synthcity_train", "val": "synthcity_val", "negatives": "synthcity_negatives",
                   "anomalies": "synthcity_anomaly_test"}


def export_manifest(prof) -> dict:
    """What an export of the profile's settings writes: the generator and every size."""
    return {"generator": GENERATOR_VERSION} | {key: getattr(prof, name) for key, name in MANIFEST_FIELDS.items()}


MARKER = "synthcity.json"  # under the root, written last: its presence means a finished export


def read_marker(root: Path) -> dict | None:
    """The settings of the finished export under ``root`` (with its ``made`` list), or None."""
    marker = root / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def owned_trees(root: Path, marker: dict | None) -> list[str]:
    """The trees under ``root`` this package may write into: those SynthCity made, or none yet.

    A tree folder that exists but is not in the marker's ``made`` list belongs to someone else:
    the export stops instead of mixing its files with theirs. (A marker without ``made`` comes
    from an exporter that did not record it; those exports always made all three trees.)
    """
    made = TREES if marker is not None and "made" not in marker else tuple((marker or {}).get("made", ()))
    foreign = [root / t for t in TREES if (root / t).exists() and t not in made]
    if foreign:
        raise SynthCityConflict(
            f"{foreign[0]} exists and was not written by SynthCity, so it is left as it is. Point "
            f"synthcity_root at a new or empty folder (--set synthcity_root=...), or move that folder away.")
    return [t for t in TREES if t in made]


def remove_export(root: Path, manifest: dict, trees) -> None:
    """Remove exactly the files an earlier export wrote, then the folders it made if they are
    empty: files someone else put among them survive, with the folders that hold them."""
    for kind in KINDS:
        for index in range(manifest.get(kind, 0)):
            for rel in export_files(kind, index):
                (root / rel).unlink(missing_ok=True)
    for tree in trees:
        for folder in sorted((p for p in (root / tree).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if (root / tree).is_dir() and not any((root / tree).iterdir()):
            (root / tree).rmdir()


def export(root=None, profile="quick", workers: int | None = None, progress: bool = True) -> Path:
    """Write the SynthCity trees under ``root`` (default: the profile's ``synthcity_root``).

    Layout (all formats as the real datasets ship them)::

        root/cityscapes/leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
        root/cityscapes/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
        root/ade20k/ADEChallengeData2016/images/training/ADE_train_XXXXXXXX.jpg
        root/ade20k/ADEChallengeData2016/annotations/training/ADE_train_XXXXXXXX.png
        root/fishyscapes/Static/original/synthcity_XXXX.png   RGB
        root/fishyscapes/Static/labels/synthcity_XXXX.png     0 inlier, 1 anomaly, 255 void
        root/fishyscapes/Static/semantic/synthcity_XXXX_gtFine_labelIds.png  (extra: the street)
        root/synthcity.json    the settings, and which of the three folders the export made

    A finished export is recognised by ``synthcity.json`` and not redone unless its settings
    (or the generator version) differ; then exactly the files the old export wrote are removed
    (:func:`export_files` names them) before the new ones are written. Nothing is written into,
    or removed from, a folder SynthCity did not make (:class:`SynthCityConflict`). The marker
    is written last, so an interrupted export is completed by the next call. Images are
    rendered in parallel (``workers`` processes).
    """
    from ...config import Profile, load_profile
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    root = Path(root) if root is not None else prof.path("synthcity_root")
    manifest, marker = export_manifest(prof), root / MARKER
    old = read_marker(root)
    if old is not None and {k: v for k, v in old.items() if k != "made"} == manifest:
        return root
    owned = owned_trees(root, old)
    made = sorted(set(owned) | {t for t in TREES if not (root / t).exists()})
    if old is not None:  # other settings or an older generator: take the old export away first
        marker.unlink()
        remove_export(root, old, owned)
    jobs = [(kind, str(root), prof.synthcity_seed, i, prof.synthcity_height, prof.synthcity_width)
            for kind in KINDS for i in range(manifest[kind])]
    print(f"SynthCity: writing {len(jobs)} images under {root}")  # a command wrote data: say where
    _render_all(jobs, workers or min(os.cpu_count() or 1, 8), progress, root)
    atomic_write_text(json.dumps(manifest | {"made": made}, indent=2), marker)
    return root


def _render_all(jobs, workers: int, progress: bool, root: Path) -> None:
    """Render and write every job, in ``workers`` processes, with a progress bar."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), desc=f"SynthCity -> {root}", disable=not progress, unit="img")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_export_one, jobs, chunksize=16):
                bar.update()
    else:
        for job in jobs:
            _export_one(job)
            bar.update()
    bar.close()


def uses_synthcity(profile) -> bool:
    """Whether the profile reads any of its three datasets from under ``synthcity_root``: only
    then does a command need SynthCity, and write it when it is missing."""
    if not profile.use_synthcity:
        return False
    root = profile.path("synthcity_root").resolve()
    return any(profile.path(name).resolve().is_relative_to(root)
               for name in ("cityscapes_root", "ade20k_root", "fishyscapes_root"))


# The manifest entries that decide the anomaly test tree's pixels: every scene is a pure
# function of the generator, the seed, its index and the image size, so an export that differs
# only in the training sizes holds the same test scenes.
TEST_TREE_SETTINGS = ("generator", "seed", "height", "width", "anomalies")


def ensure(profile, progress: bool = True, rewrite: bool = True) -> None:
    """Write SynthCity for a command that reads it (:func:`uses_synthcity`) and finds it missing
    or stale; a profile that reads only real datasets is left alone.

    ``rewrite=False`` is for commands that only read the test tree (``evaluate``, the paper
    figures). A finished export with the profile's test tree is read as it is, whatever its
    training sizes; one with another test tree is refused, not replaced, since replacing it
    would delete scenes someone made on purpose (a larger draw of the test family); a missing
    or unfinished one is written.
    """
    if not uses_synthcity(profile):
        return
    if rewrite or not _finished_test_tree(profile.path("synthcity_root"), export_manifest(profile)):
        export(profile=profile, progress=progress)


def _finished_test_tree(root: Path, manifest: dict) -> bool:
    """Whether ``root`` holds a finished export with the test tree ``manifest`` describes;
    :class:`SynthCityConflict` when it holds one with another test tree."""
    there = read_marker(root)
    if there is None:
        return False
    differ = [key for key in TEST_TREE_SETTINGS if there.get(key) != manifest[key]]
    if not differ:
        return True
    if "generator" in differ:
        raise SynthCityConflict(
            f"{root} was written by SynthCity generator {there.get('generator')}, and this package "
            f"writes version {manifest['generator']}: its scenes are stale. Rewrite them with "
            f"`python -m dhlib make-data` (with the same --set options as this command).")
    said = ", ".join(f"{MANIFEST_FIELDS[k]} is {there.get(k)} there and {manifest[k]} here" for k in differ)
    given = " ".join(f"--set {MANIFEST_FIELDS[k]}={there.get(k)}" for k in differ)
    raise SynthCityConflict(
        f"{root} holds a SynthCity test tree made with other settings ({said}). This command "
        f"reads it and does not rewrite it. To read it, add {given}; to replace it with this "
        f"profile's, run `python -m dhlib make-data` with this command's --set options.")
