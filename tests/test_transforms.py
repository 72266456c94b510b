import pytest
import torch
from torchvision import tv_tensors

from dhlib.data.labels import CLASS_COLORS
from dhlib.data.transforms import ClassUniformCrop, RandomScale, eval_transforms, train_transforms


def _blocky_pair(h=60, w=90, block=10):
    """A label map of square blocks and an image that paints each block in its class colour."""
    blocks = torch.randint(0, 19, (h // block, w // block), generator=torch.Generator().manual_seed(0))
    target = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.from_numpy(CLASS_COLORS[target.numpy()]).permute(2, 0, 1)
    return tv_tensors.Image(image), tv_tensors.Mask(target)


def test_train_transforms_keep_image_and_mask_aligned():
    """Each pixel's colour must be nearest to the colour of its own label after scale/crop/flip."""
    torch.manual_seed(0)
    tf = train_transforms(crop_size=64, scale_range=(0.5, 2.0))
    colours = torch.from_numpy(CLASS_COLORS).float() / 255
    for _ in range(20):
        image, target = tf(*_blocky_pair(120, 180, block=30))
        assert image.shape == (3, 64, 64) and target.shape == (64, 64)
        assert image.dtype == torch.float32 and target.dtype == torch.int64
        valid = target != 255
        distance = ((image.permute(1, 2, 0)[..., None, :] - colours) ** 2).sum(-1)
        nearest = distance.argmin(-1)
        # bilinear edges blend two blocks; everywhere else the label must match the colour
        assert (nearest == target)[valid].float().mean() > 0.9


def test_crop_pads_masks_with_ignore_and_images_with_zero():
    torch.manual_seed(1)
    tf = train_transforms(crop_size=80, scale_range=(1.0, 1.0), flip=False)
    image, target = tf(*_blocky_pair(40, 50))
    assert (target == 255).sum() == 80 * 80 - 40 * 50
    assert (image[:, target == 255] == 0).all()


def test_smoke_random_scale_range_and_mask_values():
    torch.manual_seed(2)
    image, target = _blocky_pair()
    sizes = set()
    for _ in range(30):
        im, m = RandomScale(0.5, 2.0)(image, target)
        assert im.shape[-2:] == m.shape[-2:]
        assert 30 <= m.shape[-2] <= 120
        assert set(torch.unique(m).tolist()) <= set(torch.unique(target).tolist())  # nearest: no new ids
        sizes.add(m.shape[-2])
    assert len(sizes) > 10
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomScale(2.0, 1.0)


def test_eval_transforms_only_convert():
    image, target = _blocky_pair()
    out_image, out_target = eval_transforms()(image, target)
    torch.testing.assert_close(out_image, image.float() / 255)
    assert torch.equal(out_target, target)


def _rare_pixel_pair(h=200, w=300):
    """Road everywhere and one 2×2 'traffic light' (train id 6) in a corner."""
    target = torch.zeros(h, w, dtype=torch.int64)
    target[5:7, 280:282] = 6
    image = torch.from_numpy(CLASS_COLORS[target.numpy()]).permute(2, 0, 1)
    return tv_tensors.Image(image), tv_tensors.Mask(target)


def test_class_uniform_crops_find_the_rare_class():
    """With p = 1 half of the crops are centred on the light (2 classes present: road, light);
    with p = 0 a 64 px crop holds it about (64·64 area overlap) / positions ≈ 2 % of the time."""
    image, target = _rare_pixel_pair()

    def share_with_light(p, n=200):
        torch.manual_seed(3)
        crop = ClassUniformCrop(64, p)
        hits = 0
        for _ in range(n):
            im, m = crop(image, target)
            assert im.shape == (3, 64, 64) and m.shape == (64, 64)
            hits += bool((m == 6).any())
        return hits / n

    assert share_with_light(1.0) > 0.4      # every class-uniform crop that picks class 6 holds it
    assert share_with_light(0.0) < 0.1
    with pytest.raises(ValueError, match="probability"):
        ClassUniformCrop(64, 1.5)


def test_class_uniform_crop_keeps_alignment_and_pads():
    torch.manual_seed(4)
    crop = ClassUniformCrop(80, 1.0)
    image, target = _blocky_pair(40, 50)
    im, m = crop(image, target)
    assert (m == 255).sum() == 80 * 80 - 40 * 50 and (im[:, m == 255] == 0).all()
    torch.testing.assert_close(m[:40, :50], target)


def test_rectangular_crop_takes_height_and_width():
    """crop_size=(h, w) crops h×w; a crop as large as the image returns the image itself."""
    torch.manual_seed(3)
    image, target = _blocky_pair(60, 90)
    out_image, out_target = train_transforms(crop_size=(60, 90), scale_range=(1.0, 1.0), flip=False)(image, target)
    torch.testing.assert_close(out_image, image.float() / 255)
    assert torch.equal(out_target, target)
    out_image, out_target = train_transforms(crop_size=(30, 70), scale_range=(1.0, 1.0))(image, target)
    assert out_image.shape == (3, 30, 70) and out_target.shape == (30, 70)
