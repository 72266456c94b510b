"""The 2-D toy (dhlib.toy) against independent references: the loss and the three cues
written out by hand from the logits, AP from scikit-learn, the regions of the data
generator, determinism, and the claim notebook 00 makes about the default toy."""
import math

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from dhlib import toy


@pytest.fixture(scope="module")
def default():
    """The default toy, trained once for the whole file."""
    data = toy.toy_data(0)
    model, history = toy.train_toy(data)
    return data, model, history, toy.cue_metrics(model, data)


def hand_loss(seg, ood, labels, is_negative, beta, floor):
    """L_d + β·L_x + 10β·L_cla from N×K and N×2 logits with plain sums of exponentials."""
    seg, ood = seg.double(), ood.double()
    log_p_hat = torch.log(torch.exp(seg).sum(1))                     # ln Σ_k exp s_k
    inlier = ~is_negative
    l_d = (log_p_hat[inlier] - seg[inlier].gather(1, labels[inlier, None])[:, 0]).mean()
    l_x = log_p_hat[is_negative] if floor is None else torch.log1p(torch.exp(log_p_hat[is_negative] - floor))
    l_x = l_x.mean()
    target = is_negative.long()                                        # 1 = out on negatives
    l_cla = (torch.log(torch.exp(ood).sum(1)) - ood.gather(1, target[:, None])[:, 0]).mean()
    return l_d + beta * l_x + 10 * beta * l_cla, l_d, l_x, l_cla


@pytest.mark.parametrize("floor", [-5.0, None])
def test_toy_loss_is_the_hand_written_loss_on_a_tiny_batch(floor):
    data = toy.toy_data(3, n_per_class=2, n_negatives=3, n_anomalies=1)
    torch.manual_seed(0)
    model = toy.ToyTwoHead()
    batch = toy.toy_batch(data)
    terms = toy.toy_loss(model, batch, beta=0.1, likelihood_floor=floor)
    seg, ood = model(batch[0])
    is_negative = torch.arange(len(batch[0])) >= len(data["train_points"])
    labels = torch.cat([data["train_labels"], torch.zeros(3, dtype=torch.long)])   # unused on negatives
    expected = hand_loss(seg[:, :, 0, 0], ood[:, :, 0, 0], labels, is_negative, 0.1, floor)
    for got, want in zip((terms["loss"], terms["L_d"], terms["L_x"], terms["L_cla"]), expected):
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


def test_the_batch_follows_the_segmenters_label_conventions():
    data = toy.toy_data(0, n_per_class=2, n_negatives=3, n_anomalies=1)
    points, seg_target, ood_target = toy.toy_batch(data)
    assert points.shape == (9, 2) and seg_target.shape == ood_target.shape == (9, 1, 1)
    assert seg_target[:6, 0, 0].tolist() == data["train_labels"].tolist()
    assert seg_target[6:].eq(255).all() and ood_target[:6].eq(0).all() and ood_target[6:].eq(1).all()


def test_each_cue_is_its_definition_at_a_few_points(default):
    data, model, _, _ = default
    points = torch.tensor([[0.0, 0.0], [1.5, 0.0], [5.0, 0.1], [0.0, 3.0], [-2.0, -2.5]])
    cues = toy.cue_scores(model, points)
    with torch.no_grad():
        seg, ood = model(points)
    for i in range(len(points)):
        s = seg[i, :, 0, 0].double().tolist()
        o = ood[i, :, 0, 0].double().tolist()
        log_p_hat = math.log(sum(math.exp(v) for v in s))
        log_p_out = o[1] - math.log(math.exp(o[0]) + math.exp(o[1]))
        assert cues["generative"][i].item() == pytest.approx(-log_p_hat, abs=1e-4)
        assert cues["discriminative"][i].item() == pytest.approx(log_p_out, abs=1e-4)
        assert cues["hybrid"][i].item() == pytest.approx(log_p_out - log_p_hat, abs=1e-4)


def test_cue_maps_are_the_cues_at_the_grid_points(default):
    _, model, _, _ = default
    xx, yy = toy.toy_grid(resolution=13)
    maps = toy.cue_maps(model, (xx, yy))
    assert xx[0, 0] == toy.EXTENT[0] and yy[0, 0] == toy.EXTENT[2]     # row 0 is the bottom
    assert xx[-1, -1] == toy.EXTENT[1] and yy[-1, -1] == toy.EXTENT[3]
    for r, c in ((0, 0), (4, 7), (8, 12)):
        at = toy.cue_scores(model, torch.tensor([[xx[r, c].item(), yy[r, c].item()]]))
        for cue in toy.CUES:
            assert maps[cue].shape == xx.shape
            assert maps[cue][r, c].item() == pytest.approx(at[cue][0].item(), abs=1e-5)


@pytest.mark.parametrize("region", sorted(toy.NEGATIVE_REGIONS))
def test_negatives_come_only_from_the_covered_regions(region):
    data = toy.toy_data(1, negative_region=region)
    neg = data["negatives"]
    covered = torch.zeros(len(neg), dtype=torch.bool)
    for name in toy.REGIONS:
        inside = toy.in_region(neg, name)
        if name in data["covered"]:
            covered |= inside
        else:
            assert not inside.any(), f"a negative lies in the never-covered region {name!r}"
    assert covered.all() and set(data["covered"]) == set(toy.NEGATIVE_REGIONS[region])
    for name, pts in data["anomalies"].items():
        assert toy.in_region(pts, name).all()


def test_anomaly_regions_keep_clear_of_the_classes():
    # every box is at least 3 class standard deviations from every class centre
    for boxes in toy.REGIONS.values():
        for x0, x1, y0, y1 in boxes:
            for cx, cy in toy.CLASS_CENTERS:
                dx, dy = max(x0 - cx, 0, cx - x1), max(y0 - cy, 0, cy - y1)
                assert math.hypot(dx, dy) >= 3 * toy.CLASS_STD
    data = toy.toy_data(0)
    assert torch.bincount(data["test_labels"]).tolist() == [200, 200, 200]


def test_metrics_are_scikit_learns_ap(default):
    data, model, _, metrics = default
    inl = toy.cue_scores(model, data["test_points"])["hybrid"].numpy()
    out = toy.cue_scores(model, data["anomalies"]["between"])["hybrid"].numpy()
    labels = np.r_[np.zeros(len(inl)), np.ones(len(out))]
    assert metrics["between"]["hybrid"]["AP"] == pytest.approx(
        average_precision_score(labels, np.r_[inl, out]), abs=1e-9)
    assert set(metrics) == {"above", "between", "ends", "below", "never covered", "all"}


def test_training_is_deterministic_and_leaves_the_global_rng_alone(default):
    data, _, history, metrics = default
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                 # the caller's thread count does not matter
    try:
        model, again = toy.train_toy(data)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.rand(3), before)
    assert again == history
    assert toy.cue_metrics(model, data) == metrics
    assert history["L_d"][-1] < history["L_d"][0] and history["L_cla"][-1] < history["L_cla"][0]


def test_the_hybrid_covers_each_cues_blind_spot(default):
    """The claim of notebook 00, on the default toy: each single cue has a blind spot among
    the never-covered anomalies, and the hybrid beats the blind cue there and both cues on
    all never-covered anomalies together."""
    ap = {s: {c: m["AP"] for c, m in cues.items()} for s, cues in default[3].items()}
    assert ap["between"]["discriminative"] < 0.5 < ap["between"]["generative"]     # OOD head blind between the classes
    assert ap["ends"]["generative"] < 0.5 < ap["ends"]["discriminative"]           # ln p̂ blind beyond the ends
    assert ap["between"]["hybrid"] > ap["between"]["discriminative"] + 0.2
    assert ap["ends"]["hybrid"] > ap["ends"]["generative"] + 0.2
    assert ap["below"]["hybrid"] > ap["below"]["generative"]
    never = ap["never covered"]
    assert never["hybrid"] > never["discriminative"] and never["hybrid"] > never["generative"]
    assert ap["all"]["hybrid"] == max(ap["all"].values())


def test_paper_figure_is_the_default_toy_with_a_measured_caption(default):
    metrics = default[3]
    fig, caption = toy.paper_figure(0)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 6      # 3 maps, 3 colour bars
    for subset in ("between", "ends", "never covered", "all"):
        for cue in toy.CUES:
            m = metrics[subset][cue]
            assert f"{cue} {100 * m['AP']:.1f} / {100 * m['FPR95']:.1f}" in caption
    assert "\n" not in caption
    matplotlib.pyplot.close(fig)
