import pytest
import torch

from dhlib.data import ADE20KNegatives
from dhlib.negatives import (Box, class_union_mask, cut_negative, paste, paste_real_negatives,
                             random_box, rectangle_mask, sample_patch_size)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_patch_sizes_respect_bounds_and_multiples():
    g = gen()
    for _ in range(200):
        h, w = sample_patch_size(16, 216, generator=g)
        assert 16 <= h <= 216 and 16 <= w <= 216
        h, w = sample_patch_size(16, 216, multiple=8, generator=g)
        assert h % 8 == 0 and w % 8 == 0 and 16 <= h <= 216
        h, w = sample_patch_size(16, 216, image_size=(40, 30), generator=g)
        assert h <= 40 and w <= 30
    with pytest.raises(ValueError, match="min_side"):
        sample_patch_size(4, 16, multiple=8)


def test_random_box_fits_and_covers_all_positions():
    g = gen()
    tops = set()
    for _ in range(300):
        b = random_box((10, 20), (7, 5), g)
        assert 0 <= b.top <= 3 and 0 <= b.left <= 15 and (b.height, b.width) == (7, 5)
        tops.add(b.top)
    assert tops == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="does not fit"):
        random_box((10, 20), (11, 5))


def test_class_union_picks_one_or_two_labelled_classes():
    classes = torch.zeros(6, 6, dtype=torch.long)
    classes[:2] = 5
    classes[2:4] = 9
    classes[4:, :3] = 11
    g, counts = gen(), set()
    for _ in range(100):
        mask = class_union_mask(classes, max_classes=2, generator=g)
        chosen = set(torch.unique(classes[mask]).tolist())
        assert 1 <= len(chosen) <= 2 and 0 not in chosen
        assert torch.equal(mask, torch.isin(classes, torch.tensor(sorted(chosen))))
        counts.add(len(chosen))
    assert counts == {1, 2}
    assert not class_union_mask(torch.zeros(3, 3, dtype=torch.long)).any()


def test_cut_negative_outline_follows_the_classes():
    image = torch.rand(3, 40, 40)
    classes = torch.zeros(40, 40, dtype=torch.long)
    classes[10:30, 5:15] = 3  # one object, 20×10 px
    patch, mask = cut_negative(image, classes, (20, 10), "class_union", generator=gen())
    assert patch.shape == (3, 20, 10) and mask.all()  # the box is the object's bounding box
    torch.testing.assert_close(patch, image[:, 10:30, 5:15], atol=1e-5, rtol=0)
    patch, mask = cut_negative(image, classes, (16, 24), "rectangle", generator=gen())
    assert patch.shape == (3, 16, 24) and mask.all()
    patch, mask = cut_negative(image, torch.zeros_like(classes), (8, 8), "class_union", generator=gen())
    assert mask.all()  # nothing labelled: falls back to a rectangle
    with pytest.raises(ValueError, match="'rectangle' or 'class_union'"):
        cut_negative(image, classes, (8, 8), "flow")


def test_paste_sets_both_targets():
    image = torch.zeros(3, 8, 10)
    seg = torch.full((8, 10), 4, dtype=torch.long)
    seg[0] = 255                                   # a void row in the scene
    patch = torch.ones(3, 3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    box = Box(top=0, left=2, height=3, width=4)
    mixed, seg_out, ood = paste(image, seg, patch, mask, box)
    pasted = torch.zeros(8, 10, dtype=torch.bool)
    pasted[0:3, 2:6] = mask
    assert torch.equal(mixed[0] == 1, pasted) and (mixed[:, ~pasted] == 0).all()
    assert (seg_out[pasted] == 255).all() and torch.equal(seg_out[~pasted], seg[~pasted])
    assert (ood[pasted] == 1).all()
    assert (ood[~pasted & (seg == 255)] == 255).all()
    assert (ood[~pasted & (seg != 255)] == 0).all()
    assert (seg[0] == 255).all() and (seg[1:] == 4).all()  # the inputs are untouched


def test_batched_paste_equals_single_pastes():
    g = gen(3)
    images, segs = torch.rand(3, 3, 16, 20), torch.randint(0, 19, (3, 16, 20), generator=g)
    patches = [torch.rand(3, h, w) for h, w in ((4, 5), (6, 3), (16, 20))]
    masks = [torch.rand(p.shape[-2:]) > 0.3 for p in patches]
    boxes = [random_box((16, 20), p.shape[-2:], g) for p in patches]
    batch = paste(images, segs, patches, masks, boxes)
    for i in range(3):
        single = paste(images[i], segs[i], patches[i], masks[i], boxes[i])
        for b, s in zip(batch, single):
            assert torch.equal(b[i], s)
    with pytest.raises(ValueError, match="one patch, mask and box per image"):
        paste(images, segs, patches[:2], masks, boxes)


def test_paste_is_differentiable_in_the_patch():
    """The flow is trained through the pasted pixels, so gradients must reach the patch."""
    patch = torch.rand(3, 4, 4, requires_grad=True)
    mask = rectangle_mask(4, 4)
    mask[0, 0] = False
    mixed, _, _ = paste(torch.zeros(3, 6, 6), torch.zeros(6, 6, dtype=torch.long), patch, mask,
                        Box(1, 1, 4, 4))
    mixed.sum().backward()
    assert torch.equal(patch.grad, mask.float().expand(3, 4, 4))


def test_paste_real_negatives_on_synthcity(tiny_profile):
    negatives = ADE20KNegatives(tiny_profile.path("ade20k_root"))
    images, segs = torch.rand(2, 3, 48, 48), torch.zeros(2, 48, 48, dtype=torch.long)
    mixed, seg, ood, boxes = paste_real_negatives(images, segs, negatives, tiny_profile, gen())
    for i, b in enumerate(boxes):
        assert 8 <= b.height <= 24 and 8 <= b.width <= 24
        assert (ood[i] == 1).sum() > 0 and torch.equal(ood[i] == 1, seg[i] == 255)
        outside = torch.ones(48, 48, dtype=torch.bool)
        outside[b.top:b.top + b.height, b.left:b.left + b.width] = False
        assert torch.equal(mixed[i][:, outside], images[i][:, outside])


@pytest.mark.parametrize("b", [0.0, 0.5, 1.0])
def test_mixing_real_and_synthetic_negatives(tiny_profile, b):
    import dataclasses
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import paste_negatives
    profile = dataclasses.replace(tiny_profile, synthetic_prob=b)
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    negatives = ADE20KNegatives(tiny_profile.path("ade20k_root"))
    images, segs = torch.rand(16, 3, 48, 48), torch.zeros(16, 48, 48, dtype=torch.long)
    mixed, seg, ood, boxes, synthetic = paste_negatives(images, segs, negatives, profile, gen(), flow=flow)
    share = sum(synthetic) / len(synthetic)
    assert share == b if b in (0.0, 1.0) else 0.2 < share < 0.8
    for i, (box, flow_sample) in enumerate(zip(boxes, synthetic)):
        if flow_sample:  # a flow sample covers its whole box, with sides multiple of 2^levels
            assert box.height % 4 == 0 and box.width % 4 == 0
            assert (ood[i] == 1).sum() == box.height * box.width
    assert not mixed.requires_grad  # the segmenter step samples without gradient


def test_mixing_with_flow_gradient():
    from dhlib.config import load_profile
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import paste_negatives
    profile = load_profile("quick", synthetic_prob=1.0, negative_min_side=8, negative_max_side=16)
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    mixed, *_ = paste_negatives(torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long),
                                None, profile, gen(), flow=flow, flow_grad=True)
    mixed.sum().backward()
    assert flow.top_mean.grad is not None
