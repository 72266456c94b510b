import importlib
import json
import pkgutil

import numpy as np
import pytest
from PIL import Image

from dhlib.data import synthcity
from dhlib.data.labels import LABEL_ID, LABEL_TO_TRAIN, VALID_LABEL_IDS


def test_scene_is_a_pure_function_of_seed_and_index():
    a_img, a_ids = synthcity.render_scene(7, 3, 64, 128)
    synthcity.render_scene(7, 4, 64, 128)  # rendering another image in between changes nothing
    b_img, b_ids = synthcity.render_scene(7, 3, 64, 128)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_ids, b_ids)
    c_img, _ = synthcity.render_scene(7, 5, 64, 128)
    d_img, _ = synthcity.render_scene(8, 3, 64, 128)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_img, d_img)


def test_streams_are_independent():
    train, _ = synthcity.render_scene(0, 0, 64, 128, stream="train")
    val, _ = synthcity.render_scene(0, 0, 64, 128, stream="val")
    assert not np.array_equal(train, val)


def test_scenes_hold_street_classes_as_official_label_ids():
    seen = set()
    for i in range(12):
        image, ids = synthcity.render_scene(0, i, 128, 256)
        assert image.shape == (128, 256, 3) and image.dtype == np.uint8
        assert ids.shape == (128, 256) and ids.dtype == np.uint8
        assert set(np.unique(ids).tolist()) <= VALID_LABEL_IDS
        seen |= set(np.unique(ids).tolist())
    for name in ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole"):
        assert LABEL_ID[name] in seen, name
    # label ids are not train ids: road is id 7 on disk and train id 0 after mapping
    assert LABEL_TO_TRAIN[LABEL_ID["road"]] == 0 and LABEL_TO_TRAIN[LABEL_ID["ego vehicle"]] == 255


def test_objects_shrink_with_depth():
    """Painter's order and perspective: a person far away is smaller than one nearby."""
    cam = synthcity.Camera(horizon=100, vx=256, f=300, cam_h=1.5)
    near, far = [], []
    for Z, store in ((5.0, near), (20.0, far)):
        cv = synthcity.Canvas(256, 512, np.random.default_rng(0))
        synthcity._person(cam, 2.0, Z, np.random.default_rng(1))(cv)
        rows = np.flatnonzero((cv.ids == synthcity.PERSON).any(1))
        store.append(rows.max() - rows.min() + 1)
    assert near[0] / far[0] == pytest.approx(4.0, rel=0.1)


def test_anomaly_scene_labels():
    found_void = False
    for i in range(6):
        image, ood, ids = synthcity.render_anomaly_scene(0, i, 96, 192)
        assert set(np.unique(ood).tolist()) <= {0, 1, 255}
        assert (ood == 1).any(), "every test scene holds at least one anomaly"
        void = LABEL_TO_TRAIN[ids] == 255
        np.testing.assert_array_equal(ood == 255, void & (ood != 1))
        assert (ids[ood == 1] == 0).all()  # anomalies are 'unlabeled' in the semantic map
        found_void |= (ood == 255).any()
    assert found_void  # the bonnet (ego vehicle) is void in some scenes


def test_smoke_negative_images_use_ade_ids():
    for i in range(6):
        image, classes = synthcity.render_negative(0, i)
        assert image.shape[:2] == classes.shape and 192 <= image.shape[0] <= 320
        present = set(np.unique(classes).tolist())
        assert present <= set(range(151))
        assert present - {synthcity.ADE_WALL, synthcity.ADE_FLOOR}, "holds objects besides the room"


def test_training_data_never_touches_the_anomaly_family(monkeypatch):
    """Negatives and training scenes must be rendered without the evaluation anomalies."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the anomaly generator was used for training data")
    # Patch the name wherever the package holds it: each module looks it up in its own namespace.
    for info in pkgutil.iter_modules(synthcity.__path__):
        module = importlib.import_module(f"{synthcity.__name__}.{info.name}")
        if hasattr(module, "_anomaly_sprite"):
            monkeypatch.setattr(module, "_anomaly_sprite", forbidden)
    monkeypatch.setattr(synthcity, "_anomaly_sprite", forbidden)
    synthcity.render_negative(0, 0)
    synthcity.render_scene(0, 0, 64, 128, stream="train")
    with pytest.raises(AssertionError):
        synthcity.render_anomaly_scene(0, 0, 64, 128)


def _gradient_spread(field):
    """How far the gradients of a 2-D field are from all being parallel: the smaller
    eigenvalue over the larger of their structure tensor Σ ∇f ∇fᵀ (0 = one direction)."""
    gy, gx = np.gradient(np.asarray(field, np.float64))
    tensor = np.array([[(gx * gx).sum(), (gx * gy).sum()], [(gx * gy).sum(), (gy * gy).sum()]])
    low, high = np.linalg.eigvalsh(tensor)
    return low / high


def test_negative_lights_vary_along_one_direction_and_anomaly_shading_along_two():
    """The negatives' room light is a function of one coordinate (ramp or cylinder); the
    anomalies' dome shading varies in two directions, so the shading cue stays held out."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    kinds = set()
    for _ in range(30):
        light = synthcity._room_light(yy, xx, 32.0, 32.0, 30.0, rng)
        if np.ptp(light) == 0:
            kinds.add("flat")
            continue
        kinds.add("shaded")
        assert _gradient_spread(light) < 0.05  # measured ≤ 0.017 (finite differences at the rim)
    assert kinds == {"flat", "shaded"}
    for _ in range(10):
        rgb, alpha = synthcity._anomaly_sprite(rng, 64)
        inside = alpha >= 1
        luminance = np.where(inside, rgb.mean(2), rgb.mean(2)[inside].mean())
        assert _gradient_spread(luminance) > 0.05  # measured ≥ 0.33


def test_smoke_irregular_negative_finishes():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32) + 0.5
    a, b = np.array([0.8, 0.2, 0.2], np.float32), np.array([0.1, 0.1, 0.9], np.float32)
    for kind in ("fabric", "marble", "brushed"):
        tex = synthcity._irregular_texture(kind, yy[:, :1], xx[:1], rng, a, b)
        assert tex.shape == (48, 64, 3) and np.isfinite(tex).all()
        assert len(np.unique((tex * 255).astype(int).reshape(-1, 3), axis=0)) > 20, kind
    with pytest.raises(ValueError):
        synthcity._irregular_texture("velvet", yy[:, :1], xx[:1], rng, a, b)


def test_anomaly_and_negative_families_are_disjoint_in_shape():
    """The negatives' periodic patterns are flat two-colour textures; anomalies are shaded.

    Measured by the number of distinct colours inside an object: a flat two-colour
    texture has few, a shaded organic object many.
    """
    rng = np.random.default_rng(0)
    for _ in range(10):
        rgb, alpha = synthcity._anomaly_sprite(rng, 64)
        inside = rgb[alpha >= 1]
        assert len(np.unique((inside * 255).astype(int), axis=0)) > 50
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    a, b = np.array([1, 0, 0], np.float32), np.array([0, 0, 1], np.float32)
    for kind in ("stripes", "checks", "dots", "plaid", "planks", "flat"):
        tex = synthcity._periodic_texture(kind, yy, xx, rng, a, b)
        assert len(np.unique(tex.reshape(-1, 3), axis=0)) <= 2


def test_export_writes_the_real_formats(synthcity_root):
    root = synthcity_root
    city, stem = synthcity.cityscapes_stem("train", 0)
    image = root / "cityscapes/leftImg8bit/train" / city / f"{stem}_leftImg8bit.png"
    label = root / "cityscapes/gtFine/train" / city / f"{stem}_gtFine_labelIds.png"
    assert image.exists() and label.exists()
    assert stem.count("_") == 2 and all(len(p) == 6 for p in stem.split("_")[1:])
    assert Image.open(label).mode == "L" and Image.open(image).mode == "RGB"
    assert len(list((root / "cityscapes/leftImg8bit/val").rglob("*_leftImg8bit.png"))) == 4
    ade = root / "ade20k/ADEChallengeData2016"
    assert len(list((ade / "images/training").glob("ADE_train_*.jpg"))) == 8
    assert len(list((ade / "annotations/training").glob("ADE_train_*.png"))) == 8
    fs = root / "fishyscapes/Static"
    assert sorted(p.name for p in (fs / "original").iterdir()) == \
        sorted(p.name for p in (fs / "labels").iterdir())
    # the written pixels are exactly the rendered ones
    ids = np.asarray(Image.open(label))
    np.testing.assert_array_equal(ids, synthcity.render_scene(0, 0, 64, 128, "train")[1])


def test_export_is_skipped_when_complete(synthcity_root, tiny_profile):
    marker = synthcity_root / "synthcity.json"
    before = marker.stat().st_mtime_ns
    synthcity.export(synthcity_root, tiny_profile, workers=1, progress=False)
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["train"] == 6


def test_export_with_new_settings_replaces_the_old_one(tmp_path, tiny_profile):
    import dataclasses
    small = dataclasses.replace(tiny_profile, synthcity_train=3, synthcity_val=1,
                                synthcity_negatives=1, synthcity_anomaly_test=1)
    synthcity.export(tmp_path, small, workers=1, progress=False)
    fewer = dataclasses.replace(small, synthcity_train=2)
    synthcity.export(tmp_path, fewer, workers=1, progress=False)
    images = list((tmp_path / "cityscapes/leftImg8bit/train").rglob("*.png"))
    assert len(images) == 2  # nothing left over from the larger export
    assert json.loads((tmp_path / "synthcity.json").read_text())["train"] == 2


def test_the_training_seed_does_not_change_the_world(synthcity_root, tiny_profile):
    import dataclasses
    marker = synthcity_root / "synthcity.json"
    before = marker.stat().st_mtime_ns
    synthcity.export(synthcity_root, dataclasses.replace(tiny_profile, seed=7), workers=1, progress=False)
    assert marker.stat().st_mtime_ns == before      # same scenes, same test set for every training seed
    assert json.loads(marker.read_text())["seed"] == tiny_profile.synthcity_seed == 0
