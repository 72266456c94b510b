"""Shared fixtures: a tiny SynthCity export and hand-made real-format trees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhlib.config import load_profile
from dhlib.data import synthcity

TINY = dict(synthcity_train=6, synthcity_val=4, synthcity_negatives=8, synthcity_anomaly_test=4,
            synthcity_height=64, synthcity_width=128)


@pytest.fixture(scope="session")
def tiny_profile(tmp_path_factory):
    """The quick profile pointed at a tiny SynthCity export in a temporary folder."""
    root = tmp_path_factory.mktemp("synthcity")
    profile = load_profile("quick", cityscapes_root=str(root / "cityscapes"),
                           ade20k_root=str(root / "ade20k/ADEChallengeData2016"),
                           fishyscapes_root=str(root / "fishyscapes"),
                           figures_dir=str(root / "figures"), crop_size=48,
                           flow_sample_min_side=8, flow_sample_max_side=24, negative_crop=24, negative_resize=48, init_checkpoint=None, flow_init=None,
                           pretrain_init=None, **TINY)
    synthcity.export(root, profile, workers=1, progress=False)
    return profile


@pytest.fixture(scope="session")
def synthcity_root(tiny_profile) -> Path:
    return tiny_profile.path("cityscapes_root").parent


def write_png(path, array) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def handmade_cityscapes(tmp_path) -> Path:
    """A 2-image Cityscapes tree drawn by hand: label ids 7 (road), 26 (car), 1 (ego), 0."""
    root = tmp_path / "cityscapes"
    for split, city, n in (("train", "zurich", 2), ("val", "bern", 1)):
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            ids = np.full((8, 12), 7, np.uint8)
            ids[:3] = 26
            ids[-1] = 1
            ids[0, 0] = 0
            image = np.zeros((8, 12, 3), np.uint8) + 40 * (k + 1)
            write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return root
