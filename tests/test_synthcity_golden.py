"""Golden pixels: SynthCity renders exactly the same bytes it always did.

Every image is a pure function of ``(seed, stream, index)`` and exports are recognised by
their settings alone, so a change to any pixel must come with a new ``GENERATOR_VERSION``.
These digests pin the streets (camera, canvas, ground, facades, street objects, bonnet),
the ADE20K-format negatives (periodic patterns and every irregular finish) and the
anomaly sprites (every kind), so that restructuring the code cannot change the data.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from dhlib.config import load_profile
from dhlib.data import synthcity


def _sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# (seed, index, stream) at 96×192 -> (image, label ids); scene 1 of seed 3 has the bonnet.
SCENES = {
    (0, 0, "train"): ("986e129b449fa16653f81420412b1ef6156388c68db289bb15bace2d516dbf70",
                      "e30af67a1ef83850c4ee3fc2ce90db8277e93aad2efd4a7c755c5882135c31e7"),
    (3, 1, "val"): ("9d2cc8f618303d41e0a097bb1da5a890b8736d74b8867a2a6d73d81939e6e66f",
                    "0948e6d2ec0cfc427ac6e30375590bfd86ba6595d6c91dba608a7dae0a4fdd4d"),
}

# index (seed 0) -> (image, classes); together they use fabric, marble, brushed, stripes,
# dots, planks and the flat wall.
NEGATIVES = {
    0: ("b961619f470ead59d14b4307818c521742af1b42d22edcbd1c39a245aee86ca4",
        "988ce297119d0cf515ea0a93fd0ba6cb0dda0ab1fdd1e3c960478e4811a37ed1"),
    1: ("f842ac173f24936e938f47b08ed1ecd9b60c502ba3195a9069182e408c6ec301",
        "92c376b891319017e40e853e55e918eaf549255be1ba2c0d919485892125b81d"),
}

# index (seed 0) at 96×192 -> (image, ood label, label ids); 0 holds a stone and a
# creature, 4 a spotted ball.
ANOMALIES = {
    0: ("5cb4d8dcaacde93d7b40f1a9e4319de0d47e2d442d05cb79131691a12be920f7",
        "dce38b48203d2b19b2163860cfe0c7d2fd848b37e5c0a179574e4e6fb91b5173",
        "80b6b9b8529d8055dcd64fd6bb3bbf8663db34a2ff73e8bfb5a7c1b40eaae7fb"),
    4: ("0cee0fc2b7cf7c4ce1c8d01e932d4318f325988d483ce2398b21acb1b4ecc165",
        "6472e5de2d4f65b6d3669af1c1c5fadf400c3bc9f9ed5fadcbabd736a9016626",
        "b7a5fa3f37c2449feec95c8e4cf4a3200dd9a195f516f3c05ab9f1fda74066c0"),
}


@pytest.mark.parametrize("key", list(SCENES))
def test_street_scenes_are_unchanged(key):
    seed, index, stream = key
    image, ids = synthcity.render_scene(seed, index, 96, 192, stream=stream)
    assert (_sha(image), _sha(ids)) == SCENES[key]


@pytest.mark.parametrize("index", list(NEGATIVES))
def test_negatives_are_unchanged(index):
    image, classes = synthcity.render_negative(0, index)
    assert (_sha(image), _sha(classes)) == NEGATIVES[index]


@pytest.mark.parametrize("index", list(ANOMALIES))
def test_anomaly_scenes_are_unchanged(index):
    arrays = synthcity.render_anomaly_scene(0, index, 96, 192)
    assert tuple(_sha(a) for a in arrays) == ANOMALIES[index]


def test_export_writes_the_same_files_with_the_same_pixels(tmp_path):
    """The exporter's file names, marker and lossless (PNG) contents stay the same."""
    profile = load_profile("quick", synthcity_train=2, synthcity_val=1, synthcity_negatives=1,
                           synthcity_anomaly_test=1, synthcity_height=96, synthcity_width=192)
    synthcity.export(tmp_path, profile, workers=1, progress=False)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(["synthcity.json"] + [f for kind, n in (("train", 2), ("val", 1),
                                                                   ("negatives", 1), ("anomalies", 1))
                                                 for i in range(n) for f in synthcity.export_files(kind, i)])
    assert synthcity.export_files("train", 31) == [
        "cityscapes/leftImg8bit/train/brickton/brickton_000000_000209_leftImg8bit.png",
        "cityscapes/gtFine/train/brickton/brickton_000000_000209_gtFine_labelIds.png"]
    assert synthcity.export_files("negatives", 31) == [
        "ade20k/ADEChallengeData2016/images/training/ADE_train_00000032.jpg",
        "ade20k/ADEChallengeData2016/annotations/training/ADE_train_00000032.png"]
    assert synthcity.export_files("anomalies", 31) == [
        "fishyscapes/Static/original/synthcity_0031.png", "fishyscapes/Static/labels/synthcity_0031.png",
        "fishyscapes/Static/semantic/synthcity_0031_gtFine_labelIds.png"]
    marker = json.loads((tmp_path / "synthcity.json").read_text())
    assert marker == {"generator": synthcity.GENERATOR_VERSION, "seed": 0, "height": 96, "width": 192,
                      "train": 2, "val": 1, "negatives": 1, "anomalies": 1,
                      "made": ["ade20k", "cityscapes", "fishyscapes"]}

    def pixels(rel):
        return np.asarray(Image.open(tmp_path / rel))

    image, ids = (pixels(f) for f in synthcity.export_files("train", 0))
    assert (_sha(image), _sha(ids)) == SCENES[(0, 0, "train")]
    assert _sha(pixels(synthcity.export_files("negatives", 0)[1])) == NEGATIVES[0][1]
    assert tuple(_sha(pixels(f)) for f in synthcity.export_files("anomalies", 0)) == ANOMALIES[0]
