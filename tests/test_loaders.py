"""Every loader on a real-format tree: SynthCity's export and small hand-made fixtures."""
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from dhlib.data import (ADE20KNegatives, CityscapesSegmentation, CorruptFileError, CustomImages,
                        DatasetNotFoundError, Fishyscapes, LabelValueError, datasets_from_profile)
from dhlib.data.labels import colorize

from conftest import write_png


def _official_train_ids(label_path):
    """Map label ids with cityscapesscripts' own id2label, pixel by pixel (the reference)."""
    ids = np.asarray(Image.open(label_path))
    out = np.vectorize(lambda i: id2label[i].trainId)(ids)
    return np.where((out < 0) | (out == 255), 255, out)


def test_cityscapes_on_synthcity(tiny_profile):
    ds = CityscapesSegmentation(tiny_profile.path("cityscapes_root"), "train")
    assert len(ds) == 6
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 64, 128)
        assert 0 <= image.min() and image.max() <= 1
        assert target.dtype == torch.int64 and target.shape == (64, 128)
        np.testing.assert_array_equal(target.numpy(), _official_train_ids(ds.listing.targets[i][0]))
        np.testing.assert_allclose(image.numpy(), np.asarray(Image.open(ds.listing.images[i]))
                                   .transpose(2, 0, 1) / 255, atol=1e-6)


@pytest.mark.parametrize("make", ["cityscapes", "ade20k"])
def test_a_decode_cache_changes_no_sample_and_keeps_to_its_budget(tiny_profile, make):
    from dhlib.data.transforms import train_transforms
    if make == "cityscapes":
        def build(cache):
            return CityscapesSegmentation(tiny_profile.path("cityscapes_root"), "train",
                                          train_transforms(32, (0.5, 2.0)), cache_bytes=cache)
        scene = 64 * 128 * 4  # uint8 RGB and train ids
    else:
        def build(cache):
            return ADE20KNegatives(tiny_profile.path("ade20k_root"), cache_bytes=cache)
        scene = None
    plain, cached = build(0), build(1 << 30)
    for index in [0, 1, 0, 2, 1, 0]:  # repeated reads come from the cache, with fresh randomness
        torch.manual_seed(index)
        expected = plain[index]
        torch.manual_seed(index)
        got = cached[index]
        for e, g in zip(expected, got):
            assert e.dtype == g.dtype and torch.equal(e, g)
        got[0].zero_()  # a caller that writes into its sample leaves the cache as it was
    assert sorted(cached.cache.items) == [0, 1, 2]
    if scene:
        assert cached.cache.used == 3 * scene
        small = build(scene)  # room for one scene: the first stays, the others are decoded each time
        for index in [0, 1, 2]:
            small[index]
        assert list(small.cache.items) == [0] and small.cache.used == scene
    assert plain.cache.items == {}


def test_cityscapes_on_handmade_tree(handmade_cityscapes):
    ds = CityscapesSegmentation(handmade_cityscapes, "train")
    image, target = ds[0]
    assert target[5, 5] == 0            # road: label id 7 -> train id 0
    assert target[1, 5] == 13           # car: label id 26 -> train id 13
    assert target[-1, 3] == 255         # ego vehicle: label id 1 -> ignore
    assert target[0, 0] == 255          # unlabeled
    assert len(CityscapesSegmentation(handmade_cityscapes, "val")) == 1


def test_ade20k_negatives(tiny_profile, tmp_path):
    ds = ADE20KNegatives(tiny_profile.path("ade20k_root"))
    assert len(ds) == 8
    image, classes = ds[0]
    assert image.shape[-2:] == classes.shape and classes.dtype == torch.int64
    assert int(classes.max()) <= 150
    root = tmp_path / "ADEChallengeData2016"
    write_png(root / "images/training/ADE_train_00000001.jpg", np.zeros((10, 14, 3)))
    write_png(root / "annotations/training/ADE_train_00000001.png", np.full((10, 14), 150))
    assert int(ADE20KNegatives(root)[0][1].max()) == 150


def test_fishyscapes_static_on_synthcity(tiny_profile):
    ds = Fishyscapes(tiny_profile.path("fishyscapes_root"), "Static")
    assert len(ds) == 4 and ds.has_labels
    image, label = ds[0]
    assert image.shape == (3, 64, 128) and label.shape == (64, 128)
    assert set(torch.unique(label).tolist()) <= {0, 1, 255}
    assert (label == 1).any()
    semantic = ds.semantic_target(0)
    assert (semantic[label == 1] == 255).all()


def test_fishyscapes_lost_and_found_with_suffixed_names(tmp_path):
    root = tmp_path / "fishyscapes"
    label = np.zeros((6, 9), np.uint8)
    label[2:4, 3:5] = 1
    label[-1] = 255
    write_png(root / "LostAndFound/original/0001_rgb.png", np.full((6, 9, 3), 90))
    write_png(root / "LostAndFound/labels/0001_labels.png", label)
    ds = Fishyscapes(root, "LostAndFound")
    np.testing.assert_array_equal(ds[0][1].numpy(), label)
    assert ds.name(0) == "0001"


def test_custom_images_with_and_without_labels(tmp_path):
    root = tmp_path / "custom_fs_static"
    write_png(root / "images/street.jpg", np.full((5, 7, 3), 128))
    ds = CustomImages(root)
    assert not ds.has_labels and (ds[0][1] == 255).all()  # unlabeled images: nothing scored
    write_png(root / "labels/street.png", np.eye(5, 7) * 1)
    ds = CustomImages(root)
    assert ds.has_labels and int(ds[0][1].sum()) == 5


def test_smoke_datasets_from_profile(tiny_profile):
    data = datasets_from_profile(tiny_profile)
    image, target = data["train"][0]
    assert image.shape == (3, 48, 48) and target.shape == (48, 48)  # the profile's crop
    assert set(data) == {"train", "val", "negatives", "anomalies"}


# --- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("make, needle", [
    (lambda p: CityscapesSegmentation(p), "leftImg8bit/{train,val}"),
    (lambda p: ADE20KNegatives(p), "annotations/training"),
    (lambda p: Fishyscapes(p), "Static/labels"),
    (lambda p: CustomImages(p), "images/<name>"),
])
def test_missing_root_prints_expected_tree(tmp_path, make, needle):
    with pytest.raises(DatasetNotFoundError) as err:
        make(tmp_path / "nowhere")
    message = str(err.value)
    assert "Expected layout" in message and needle in message
    assert "does not exist" in message and ("http" in message or "images/" in message)


def test_incomplete_root_names_the_missing_folder(handmade_cityscapes):
    import shutil
    shutil.rmtree(handmade_cityscapes / "gtFine/val")
    with pytest.raises(DatasetNotFoundError, match="lacks gtFine/val"):
        CityscapesSegmentation(handmade_cityscapes, "val")


def test_corrupt_image_names_the_file(handmade_cityscapes):
    ds = CityscapesSegmentation(handmade_cityscapes, "train")
    bad = ds.listing.images[1]
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(CorruptFileError, match=bad.split("/")[-1]):
        ds[1]


def test_label_values_outside_the_set_are_named(handmade_cityscapes, tmp_path):
    ds = CityscapesSegmentation(handmade_cityscapes, "train")
    ids = np.full((8, 12), 7, np.uint8)
    ids[0, :2] = (40, 200)
    write_png(ds.listing.targets[0][0], ids)
    with pytest.raises(LabelValueError, match=r"values \[40, 200\]") as err:
        ds[0]
    assert "gtFine_labelIds.png" in str(err.value)
    root = tmp_path / "fs"
    write_png(root / "Static/original/a.png", np.zeros((4, 4, 3)))
    write_png(root / "Static/labels/a.png", np.full((4, 4), 2))
    with pytest.raises(LabelValueError, match=r"values \[2\].*0, 1, 255"):
        Fishyscapes(root)[0]


def test_colour_label_maps_are_rejected(handmade_cityscapes):
    ds = CityscapesSegmentation(handmade_cityscapes, "train")
    write_png(ds.listing.targets[0][0], np.zeros((8, 12, 3)))
    with pytest.raises(LabelValueError, match="3 channels"):
        ds[0]


def test_size_mismatch_is_an_error(handmade_cityscapes):
    ds = CityscapesSegmentation(handmade_cityscapes, "train")
    write_png(ds.listing.targets[0][0], np.full((8, 10), 7))
    with pytest.raises(ValueError, match=r"\(8, 12\).*\(8, 10\)"):
        ds[0]


def test_labels_missing_for_some_images(tmp_path):
    root = tmp_path / "custom"
    write_png(root / "images/a.png", np.zeros((4, 4, 3)))
    write_png(root / "images/b.png", np.zeros((4, 4, 3)))
    write_png(root / "labels/a.png", np.zeros((4, 4)))
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\).*\['b'\]"):
        CustomImages(root)


def test_colorize_uses_cityscapes_colours():
    rgb = colorize(np.array([[0, 13, 255]]))
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[0, 2]) == (0, 0, 0)
