import pytest
import torch

from dhlib.data import ADE20KNegatives
from dhlib.negatives import (Box, NegativeRecipe, class_union_mask, cut_negative, negative_window, paste,
                             paste_real_negatives, random_box, rectangle_in_window, rectangle_mask, sample_patch_size)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_smoke_patch_sizes_respect_bounds_and_multiples():
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


def test_random_box_with_an_overhang_covers_exactly_the_allowed_positions():
    """o = 0.5 on a 7×5 patch in 10×20: ⌊3.5⌋ = 3 rows and ⌊2.5⌋ = 2 columns may leave each edge,
    so tops run over −3…6 and lefts over −2…17, every one of them drawn."""
    g = gen()
    tops, lefts = set(), set()
    for _ in range(3000):
        b = random_box((10, 20), (7, 5), g, overhang=0.5)
        tops.add(b.top)
        lefts.add(b.left)
    assert tops == set(range(-3, 7)) and lefts == set(range(-2, 18))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overhang must be in"):
            random_box((10, 20), (7, 5), g, overhang=bad)


def test_overhang_zero_draws_the_released_codes_boxes():
    """The default keeps every draw of a run as it was: the same boxes from the same generator."""
    a, b = gen(5), gen(5)
    for _ in range(50):
        assert random_box((16, 20), (6, 9), a) == random_box((16, 20), (6, 9), b, overhang=0.0)


def test_paste_clips_a_box_that_leaves_the_image():
    """Hand-made reference: paste into a zero-padded canvas, where the box fits, pixel by pixel,
    then cut the image back out."""
    g = gen(7)
    image, seg = torch.rand(3, 6, 8, generator=g), torch.randint(0, 19, (6, 8), generator=g)
    seg[5] = 255
    patch, mask = torch.rand(3, 4, 5, generator=g), torch.rand(4, 5, generator=g) > 0.3
    for top, left in ((-2, -3), (3, 5), (-1, 6), (4, -4)):
        pad = 5
        ref_img = torch.zeros(3, 6 + 2 * pad, 8 + 2 * pad)
        ref_img[:, pad:pad + 6, pad:pad + 8] = image
        ref_ood = torch.full((6 + 2 * pad, 8 + 2 * pad), -1)
        ref_ood[pad:pad + 6, pad:pad + 8] = torch.where(seg == 255, 255, 0)
        ref_seg = torch.full_like(ref_ood, -1)
        ref_seg[pad:pad + 6, pad:pad + 8] = seg
        for y in range(4):
            for x in range(5):
                if mask[y, x]:
                    ref_img[:, pad + top + y, pad + left + x] = patch[:, y, x]
                    ref_seg[pad + top + y, pad + left + x] = 255
                    ref_ood[pad + top + y, pad + left + x] = 1
        mixed, seg_out, ood = paste(image, seg, patch, mask, Box(top, left, 4, 5))
        inside = (slice(pad, pad + 6), slice(pad, pad + 8))
        assert torch.equal(mixed, ref_img[(slice(None),) + inside])
        assert torch.equal(seg_out, ref_seg[inside]) and torch.equal(ood, ref_ood[inside])
    with pytest.raises(ValueError, match="lies outside"):
        paste(image, seg, patch, mask, Box(6, 0, 4, 5))


def test_class_union_draws_two_labels_with_replacement():
    classes = torch.zeros(6, 6, dtype=torch.long)  # 0 (unlabeled) may be drawn, as in the released code
    classes[:2] = 5
    classes[2:4] = 9
    classes[4:, :3] = 11
    g, sizes, seen = gen(), [], set()
    for _ in range(2000):
        mask = class_union_mask(classes, draws=2, generator=g)
        chosen = set(torch.unique(classes[mask]).tolist())
        assert torch.equal(mask, torch.isin(classes, torch.tensor(sorted(chosen))))
        sizes.append(len(chosen))
        seen |= chosen
    assert seen == {0, 5, 9, 11}
    # two draws among 4 present labels coincide with probability 1/4
    share_one = sizes.count(1) / len(sizes)
    assert abs(share_one - 0.25) < 4 * (0.25 * 0.75 / len(sizes)) ** 0.5


def test_class_union_skips_excluded_labels_unless_nothing_else_is_there():
    classes = torch.full((6, 6), 1, dtype=torch.long)  # a room's wall (ADE 1) and floor (ADE 4)
    classes[4:] = 4
    classes[1:3, 1:4] = 23
    classes[3, 4:] = 40
    g, sizes, seen = gen(), [], set()
    for _ in range(2000):
        chosen = set(torch.unique(classes[class_union_mask(classes, 2, g, exclude=(1, 4))]).tolist())
        sizes.append(len(chosen))
        seen |= chosen
    assert seen == {23, 40}
    # two draws among the 2 allowed labels coincide with probability 1/2
    assert abs(sizes.count(1) / len(sizes) - 0.5) < 4 * (0.25 / len(sizes)) ** 0.5
    # a window of wall and floor alone still gives a negative, drawn among them as before
    only_room = torch.where(classes == 23, 1, torch.where(classes == 40, 4, classes))
    masks = [class_union_mask(only_room, 2, gen(), exclude=(1, 4)), class_union_mask(only_room, 2, gen())]
    assert masks[0].any() and torch.equal(masks[0], masks[1])


def test_negative_window_is_an_unresampled_crop():
    """At scale 1 and the source's own shorter side the window is a crop of the source, pixel for pixel."""
    image, classes = torch.rand(3, 40, 50), torch.randint(0, 5, (40, 50))
    patch, window_classes = negative_window(image, classes, resize=40, scale_range=(1.0, 1.0), crop=24,
                                            generator=gen())
    assert patch.shape == (3, 24, 24) and window_classes.shape == (24, 24)
    offsets = [(t, l) for t in range(40 - 24 + 1) for l in range(50 - 24 + 1)
               if torch.allclose(patch, image[:, t:t + 24, l:l + 24], atol=1e-6)]
    assert len(offsets) == 1
    t, l = offsets[0]
    assert torch.equal(window_classes, classes[t:t + 24, l:l + 24])
    with pytest.raises(ValueError, match="negative_resize"):
        negative_window(image, classes, resize=40, scale_range=(0.5, 2.0), crop=24)


def test_cut_negative_mixes_rectangles_and_class_unions():
    image = torch.rand(3, 60, 80)
    classes = torch.zeros(60, 80, dtype=torch.long)
    classes[10:40, 5:45] = 3
    g, rectangles, n = gen(), 0, 600
    for _ in range(n):
        patch, mask = cut_negative(image, classes, resize=96, scale_range=(0.5, 2.0), crop=48,
                                   rect_prob=0.5, generator=g)
        assert patch.shape == (3, 48, 48) and mask.shape == (48, 48)  # the whole window, never resized
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        if mask.sum() == h * w and h in (16, 24, 32, 40) and w in (16, 24, 32, 40):
            rectangles += 1  # sides from {16, 24, ...} below the 48 px window
    assert abs(rectangles / n - 0.5) < 0.1  # a class union is rarely an exact 16k × 16k box
    _, mask = cut_negative(image, classes, 96, (0.5, 2.0), 48, rect_prob=1.0, generator=g)
    assert mask.sum() == (mask.any(1).sum() * mask.any(0).sum())
    _, mask = cut_negative(image, classes, 96, (1.0, 1.0), 48, kind="class_union", generator=g)
    assert mask.any()
    with pytest.raises(ValueError, match="'rectangle' or 'class_union'"):
        cut_negative(image, classes, 96, (1.0, 1.0), 48, kind="flow")


def test_rectangle_sides_come_from_the_released_grid():
    g, sides = gen(), set()
    for _ in range(400):
        mask = rectangle_in_window(48, g)
        sides |= {int(mask.any(1).sum()), int(mask.any(0).sum())}
    assert sides == {16, 24, 32, 40}
    with pytest.raises(ValueError, match="negative_crop"):
        rectangle_in_window(16)


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
    mixed, seg, ood, boxes = paste_real_negatives(images, segs, negatives, NegativeRecipe.from_profile(tiny_profile), gen())
    for i, b in enumerate(boxes):
        assert (b.height, b.width) == (24, 24)  # the whole negative_crop window goes in
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
    mixed, seg, ood, boxes, synthetic = paste_negatives(images, segs, negatives, NegativeRecipe.from_profile(profile), gen(), flow=flow)
    share = sum(synthetic) / len(synthetic)
    assert share == b if b in (0.0, 1.0) else 0.2 < share < 0.8
    for i, (box, flow_sample) in enumerate(zip(boxes, synthetic)):
        if flow_sample:  # a flow sample covers its whole box, with sides multiple of 2^levels
            assert box.height % 4 == 0 and box.width % 4 == 0
            assert (ood[i] == 1).sum() == box.height * box.width
    assert not mixed.requires_grad  # the segmenter step samples without gradient


def test_the_profile_keeps_a_rooms_wall_and_floor_out_of_class_union_negatives():
    """Each ADE id is painted in its own grey, so the pasted pixels tell which classes were drawn."""
    from dhlib.config import load_profile
    from dhlib.negatives import paste_real_negatives
    classes = torch.ones(48, 48, dtype=torch.long)      # wall
    classes[32:] = 4                                     # floor
    classes[:, ::6], classes[:, 3::6] = 23, 40           # two objects in every window
    negatives = [(classes.float().div(255).expand(3, -1, -1), classes)]
    images, segs = torch.zeros(8, 3, 40, 40), torch.zeros(8, 40, 40, dtype=torch.long)

    def pasted_ids(exclude):
        profile = load_profile("quick", negative_exclude_classes=exclude, negative_resize=48,
                               negative_scale_range=(1.0, 1.0), negative_crop=32)
        mixed, _, ood, _ = paste_real_negatives(images, segs, negatives, NegativeRecipe.from_profile(profile),
                                                gen(), kind="class_union")
        return set(torch.round(mixed[:, 0][ood == 1] * 255).long().tolist())
    assert pasted_ids((1, 4)) <= {23, 40} and pasted_ids(()) & {1, 4}


def test_smoke_mixing_with_flow_gradient():
    from dhlib.config import load_profile
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import paste_negatives
    profile = load_profile("quick", synthetic_prob=1.0, flow_sample_min_side=8, flow_sample_max_side=16)
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    mixed, *_ = paste_negatives(torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long),
                                None, NegativeRecipe.from_profile(profile), gen(), flow=flow, flow_grad=True)
    mixed.sum().backward()
    assert flow.top_mean.grad is not None


def test_flow_shape_per_step_draws_one_shape_and_samples_the_batch_in_one_pass():
    """The released joint trainer's draw, replayed by hand with a copy of the generator: a
    Bernoulli draw per image, one shape, one batched flow.sample, then the real negatives and
    the boxes in image order."""
    from dhlib.config import load_profile
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import paste_negatives
    profile = load_profile("quick", synthetic_prob=0.5, flow_sample_min_side=8, flow_sample_max_side=24,
                           negative_crop=24, negative_resize=48, flow_shape_per_step=True)
    recipe = NegativeRecipe.from_profile(profile)
    negatives = [(torch.rand(3, 40, 56), torch.randint(0, 4, (40, 56))) for _ in range(3)]
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    calls = []
    sample = flow.sample
    flow.sample = lambda n, *size, **kw: calls.append((n, *size)) or sample(n, *size, **kw)
    images, targets = torch.rand(8, 3, 48, 48), torch.zeros(8, 48, 48, dtype=torch.long)
    mixed, _, ood, boxes, synthetic = paste_negatives(images, targets, negatives, recipe, gen(3), flow=flow)

    g = gen(3)
    expected_flags = [float(torch.rand((), generator=g)) < 0.5 for _ in range(8)]
    size = sample_patch_size(8, 24, (48, 48), multiple=flow.factor, generator=g)
    samples = sample(sum(expected_flags), *size, temperature=recipe.flow_temperature, generator=g)
    assert synthetic == expected_flags and 0 < sum(synthetic) < 8
    assert calls == [(sum(synthetic), *size)]                    # one pass for the whole batch
    flow_boxes = [b for b, s in zip(boxes, synthetic) if s]
    assert {(b.height, b.width) for b in flow_boxes} == {size}
    for k, (i, b) in enumerate((i, b) for i, (b, s) in enumerate(zip(boxes, synthetic)) if s):
        window = mixed[i, :, b.top:b.top + b.height, b.left:b.left + b.width]
        assert torch.equal(window, samples[k]) and (ood[i, b.top:b.top + b.height, b.left:b.left + b.width] == 1).all()


def test_flow_shape_per_image_is_the_default_and_draws_a_shape_per_sample():
    from dhlib.config import load_profile
    from dhlib.flows import MultiScaleFlow
    from dhlib.negatives import paste_negatives
    assert not load_profile("quick").flow_shape_per_step and load_profile("paper").flow_shape_per_step
    recipe = NegativeRecipe.from_profile(load_profile("quick", synthetic_prob=1.0, flow_sample_min_side=8,
                                                      flow_sample_max_side=24))
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    _, _, _, boxes, _ = paste_negatives(torch.rand(8, 3, 48, 48), torch.zeros(8, 48, 48, dtype=torch.long),
                                        None, recipe, gen(1), flow=flow)
    assert len({(b.height, b.width) for b in boxes}) > 1
