"""load_anomaly_dataset on tiny trees written in each benchmark's exact layout.

Every fixture is a few 8×12 images; the expected labels are written out by hand from the
kind's documented values (see dhlib/data/anomaly.py for the sources), not computed by the
code under test.
"""
import numpy as np
import pytest
import torch

from dhlib.__main__ import main
from dhlib.data import (ANOMALY_KINDS, AmbiguousDatasetError, DatasetNotFoundError, Fishyscapes,
                        LabelValueError, load_anomaly_dataset)

from conftest import write_png

H, W = 8, 12


def rgb(shade=90):
    return np.full((H, W, 3), shade, np.uint8)


def fishyscapes_raw(void=255):
    """0 inlier, a 2×3 anomaly (1), the bottom row void."""
    raw = np.zeros((H, W), np.uint8)
    raw[2:4, 3:6] = 1
    raw[-1] = void
    return raw


FISHYSCAPES_EXPECTED = fishyscapes_raw(void=255)


def check(dataset, kind, n, expected):
    assert dataset.kind == kind and len(dataset) == n
    image, label = dataset[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), expected)


# ---- one tree per layout ------------------------------------------------------------------

def test_fishyscapes_static_in_original_and_labels_folders(tmp_path):
    write_png(tmp_path / "Static/original/a.png", rgb())
    write_png(tmp_path / "Static/labels/a.png", fishyscapes_raw())
    ds = load_anomaly_dataset(tmp_path)
    check(ds, "fishyscapes-static", 1, FISHYSCAPES_EXPECTED)
    assert isinstance(ds, Fishyscapes) and "original/ + labels/" in ds.layout  # the existing reader


def test_fishyscapes_static_densehybrid_packaging(tmp_path):
    # DenseHybrid's fs_static: <name>_rgb.jpg beside <name>_labels.png, anywhere under the root
    write_png(tmp_path / "val/0000_frankfurt_000000_000294_rgb.jpg", rgb())
    write_png(tmp_path / "val/0000_frankfurt_000000_000294_labels.png", fishyscapes_raw())
    write_png(tmp_path / "val/0001_lindau_000000_000019_rgb.png", rgb(30))
    write_png(tmp_path / "val/0001_lindau_000000_000019_labels.png", np.zeros((H, W)))
    ds = load_anomaly_dataset(tmp_path)
    check(ds, "fishyscapes-static", 2, FISHYSCAPES_EXPECTED)
    assert "DenseHybrid" in ds.layout and ds.name(0) == "val/0000_frankfurt_000000_000294"


def test_fishyscapes_lost_and_found_reads_void_as_2_or_255(tmp_path):
    raw = fishyscapes_raw(void=2)
    raw[-1, :4] = 255  # both void values in one file
    write_png(tmp_path / "LostAndFound/original/0000_04_Maurener_Weg_8_000000_000030.png", rgb())
    write_png(tmp_path / "LostAndFound/labels/0000_04_Maurener_Weg_8_000000_000030.png", raw)
    check(load_anomaly_dataset(tmp_path), "fishyscapes-laf", 1, FISHYSCAPES_EXPECTED)


def test_fishyscapes_lost_and_found_densehybrid_packaging(tmp_path):
    # DenseHybrid's fs_lost_found: images under leftImg8bit/, labels (void = 2) under ood/
    frame = "04_Maurener_Weg_8_000000_000030"
    write_png(tmp_path / f"leftImg8bit/04_Maurener_Weg_8/{frame}_leftImg8bit.png", rgb())
    write_png(tmp_path / f"ood/04_Maurener_Weg_8/{frame}_ood_segmentation.png", fishyscapes_raw(void=2))
    ds = load_anomaly_dataset(tmp_path)
    check(ds, "fishyscapes-laf", 1, FISHYSCAPES_EXPECTED)
    assert "DenseHybrid" in ds.layout and ds.name(0) == frame


def smiyc_tree(root, suffix):
    """A SegmentMeIfYouCan tree: two labelled validation frames and a test frame without label."""
    raw = np.zeros((H, W), np.uint8)
    raw[1:3, 1:4] = 1
    raw[5:] = 255
    for name in ("validation_1", "validation_2"):
        write_png(root / f"images/{name}{suffix}", rgb())
        write_png(root / f"labels_masks/{name}_labels_semantic.png", raw)
    write_png(root / f"images/test_7{suffix}", rgb())  # test labels are not public: not read
    return raw


@pytest.mark.parametrize("kind, suffix", [("smiyc-anomaly", ".jpg"), ("smiyc-obstacle", ".webp")])
def test_segment_me_if_you_can_tracks(tmp_path, kind, suffix):
    smiyc_tree(tmp_path, suffix)
    expected = np.zeros((H, W))
    expected[1:3, 1:4] = 1
    expected[5:] = 255
    ds = load_anomaly_dataset(tmp_path, kind)
    check(ds, kind, 2, expected)
    assert [ds.name(i) for i in range(2)] == ["validation_1", "validation_2"]


def test_segment_me_if_you_can_asks_which_track(tmp_path):
    smiyc_tree(tmp_path, ".jpg")
    with pytest.raises(AmbiguousDatasetError) as err:
        load_anomaly_dataset(tmp_path)
    message = str(err.value)
    assert "smiyc-anomaly" in message and "smiyc-obstacle" in message and "--kind" in message


def test_road_anomaly_maps_2_to_anomaly_and_road_to_inlier(tmp_path):
    raw = np.zeros((H, W), np.uint8)
    raw[4:, :] = 1      # road
    raw[3:6, 5:9] = 2   # the animal on it
    write_png(tmp_path / "frames/animals01_Guiguinto_railway_station_Calves.jpg", rgb())
    write_png(tmp_path / "frames/animals01_Guiguinto_railway_station_Calves.labels/labels_semantic.png", raw)
    (tmp_path / "frame_list.json").write_text('["animals01_Guiguinto_railway_station_Calves.jpg"]')
    expected = np.zeros((H, W))
    expected[3:6, 5:9] = 1  # no void: every pixel scored
    check(load_anomaly_dataset(tmp_path), "road-anomaly", 1, expected)


def test_folder_of_own_images(tmp_path):
    write_png(tmp_path / "images/street.png", rgb())
    write_png(tmp_path / "labels/street.png", fishyscapes_raw())
    check(load_anomaly_dataset(tmp_path), "folder", 1, FISHYSCAPES_EXPECTED)


# ---- the same number means different things: each kind reads only its own values -------------

def test_value_2_is_void_anomaly_or_an_error_depending_on_the_kind(tmp_path):
    two = np.full((H, W), 2, np.uint8)
    laf, road, smiyc, static = (tmp_path / k for k in ("laf", "road", "smiyc", "static"))
    write_png(laf / "LostAndFound/original/a.png", rgb())
    write_png(laf / "LostAndFound/labels/a.png", two)
    write_png(road / "frames/a.jpg", rgb())
    write_png(road / "frames/a.labels/labels_semantic.png", two)
    write_png(smiyc / "images/validation_1.jpg", rgb())
    write_png(smiyc / "labels_masks/validation_1_labels_semantic.png", two)
    write_png(static / "Static/original/a.png", rgb())
    write_png(static / "Static/labels/a.png", two)
    assert (load_anomaly_dataset(laf)[0][1] == 255).all()
    assert (load_anomaly_dataset(road)[0][1] == 1).all()
    for root, kind, allowed in ((smiyc, "smiyc-anomaly", r"\[0, 1, 255\]"), (static, None, r"\[0, 1, 255\]")):
        with pytest.raises(LabelValueError, match=r"values \[2\].*" + allowed) as err:
            load_anomaly_dataset(root, kind)[0]
        assert "labels" in str(err.value) and ".png" in str(err.value)  # names the file


def test_unknown_label_values_name_the_file_and_the_allowed_ones(tmp_path):
    raw = np.zeros((H, W), np.uint8)
    raw[0, :2] = (255, 7)
    write_png(tmp_path / "frames/a.webp", rgb())
    label = write_png(tmp_path / "frames/a.labels/labels_semantic.png", raw)
    with pytest.raises(LabelValueError) as err:
        load_anomaly_dataset(tmp_path, "road-anomaly")[0]
    message = str(err.value)
    assert str(label) in message and "values [7, 255]" in message and "[0, 1, 2]" in message


# ---- trees that are not there, or not what was asked for -----------------------------------

@pytest.mark.parametrize("make", [lambda p: p / "nowhere", lambda p: p])
def test_nothing_found_lists_every_expected_layout(tmp_path, make):
    root = make(tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        load_anomaly_dataset(root)
    message = str(err.value)
    assert "does not exist" in message or "it is empty" in message
    for kind in ANOMALY_KINDS:
        assert kind in message
    for piece in ("Static/labels", "labels_masks/validation*_labels_semantic.png",
                  "frames/<name>.labels/labels_semantic.png", "ood/<city>/<id>_ood_segmentation.png"):
        assert piece in message


def test_explicit_kind_on_another_tree_says_what_the_tree_is(tmp_path):
    smiyc_tree(tmp_path, ".jpg")
    with pytest.raises(DatasetNotFoundError) as err:
        load_anomaly_dataset(tmp_path, "road-anomaly")
    message = str(err.value)
    assert "not a road-anomaly tree" in message and "smiyc-anomaly or smiyc-obstacle" in message
    assert "frames/<name>.labels" in message and "Static/labels" not in message  # only this kind's layout


def test_a_fishyscapes_split_folder_points_to_its_parent(tmp_path):
    write_png(tmp_path / "Static/original/a.png", rgb())
    write_png(tmp_path / "Static/labels/a.png", fishyscapes_raw())
    with pytest.raises(DatasetNotFoundError, match="pass the folder above it"):
        load_anomaly_dataset(tmp_path / "Static", "fishyscapes-static")


def test_both_fishyscapes_splits_in_one_root_need_a_kind(tmp_path):
    for split in ("Static", "LostAndFound"):
        write_png(tmp_path / f"{split}/original/a.png", rgb())
        write_png(tmp_path / f"{split}/labels/a.png", fishyscapes_raw())
    with pytest.raises(AmbiguousDatasetError, match="fishyscapes-static, fishyscapes-laf"):
        load_anomaly_dataset(tmp_path)
    assert load_anomaly_dataset(tmp_path, "fishyscapes-laf").kind == "fishyscapes-laf"


def test_unknown_kind_lists_the_kinds(tmp_path):
    with pytest.raises(ValueError, match="fishyscapes-static, fishyscapes-laf, smiyc-anomaly"):
        load_anomaly_dataset(tmp_path, "lost-and-found")


def test_a_validation_image_without_its_label_is_named(tmp_path):
    smiyc_tree(tmp_path, ".jpg")
    (tmp_path / "labels_masks/validation_2_labels_semantic.png").unlink()
    with pytest.raises(FileNotFoundError, match="validation_2_labels_semantic.png"):
        load_anomaly_dataset(tmp_path, "smiyc-anomaly")


# ---- python -m dhlib evaluate --dataset DIR [--kind K] ------------------------------------

def test_evaluate_command_on_a_benchmark_tree(tmp_path, capsys, monkeypatch):
    from dhlib.config import load_profile
    from dhlib.evaluation import THKLOODEvaluation
    from dhlib.models import build_model, save_state_dict
    # the figures are tested in test_evaluation.py; drawing them here would only cost seconds
    monkeypatch.setattr(THKLOODEvaluation, "figures", lambda self, out_dir, prefix="eval": [])
    torch.manual_seed(0)
    checkpoint = save_state_dict(build_model(load_profile("quick")), tmp_path / "model.pt")
    root = tmp_path / "dataset_ObstacleTrack"
    for k in range(2):  # 32×48: big enough for the model's strides; an 8×8 obstacle on the road
        raw = np.zeros((32, 48), np.uint8)
        raw[:10] = 255
        raw[16:24, 8 + 16 * k:16 + 16 * k] = 1
        write_png(root / f"images/validation_{k}.webp", np.random.default_rng(k).integers(0, 255, (32, 48, 3)))
        write_png(root / f"labels_masks/validation_{k}_labels_semantic.png", raw)
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(root),
            "--set", f"figures_dir={tmp_path / 'figs'}"]
    with pytest.raises(SystemExit, match="smiyc-anomaly.*smiyc-obstacle.*--kind"):
        main(args)
    main(args + ["--kind", "smiyc-obstacle"])
    out = capsys.readouterr().out
    assert "smiyc-obstacle (SegmentMeIfYouCan" in out and "on 2 images" in out
    assert "hybrid" in out and "AUROC" in out and "mean F1" in out
    assert "obstacle track" in out  # the dataset's track picks the component size limits
    with pytest.raises(SystemExit, match="Dataset not found"):
        main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "nowhere")])
    raw[0, 0] = 7  # a value the obstacle track does not have: a message naming the file, no traceback
    write_png(root / "labels_masks/validation_0_labels_semantic.png", raw)
    with pytest.raises(SystemExit, match=r"error: label .*validation_0_labels_semantic.png holds values \[7\]"):
        main(args + ["--kind", "smiyc-obstacle"])


def test_kind_without_a_dataset_folder_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "x.pt", "--kind", "road-anomaly"])
    assert "--kind goes with --dataset DIR" in capsys.readouterr().err


def test_help_lists_every_kind(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for kind in ANOMALY_KINDS:
        assert kind in help_text
