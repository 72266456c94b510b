import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion, jaccard_score

from dhlib.metrics import confusion_matrix, iou_per_class, mean_iou


def test_confusion_and_miou_match_sklearn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (4, 30, 40))
    prediction = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
    target[:, :3] = 255
    keep = target != 255
    cm = confusion_matrix(prediction, target, 19)
    np.testing.assert_array_equal(cm[:5, :5], sk_confusion(target[keep], prediction[keep], labels=range(5)))
    assert cm[5:].sum() == 0 and cm[:, 5:].sum() == 0
    expected = jaccard_score(target[keep], prediction[keep], average=None, labels=range(5))
    np.testing.assert_allclose(iou_per_class(cm)[:5], expected, rtol=1e-12)
    assert np.isnan(iou_per_class(cm)[5:]).all()  # absent classes do not count
    assert mean_iou(cm) == pytest.approx(expected.mean(), rel=1e-12)


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros(3), np.zeros(4), 19)
    with pytest.raises(ValueError, match=r"\[0, 19\)"):
        confusion_matrix(np.array([19]), np.array([0]), 19)


def test_threshold_at_tpr():
    from dhlib.metrics import threshold_at_tpr
    scores = np.arange(100, dtype=float)
    labels = np.zeros(100, int)
    labels[80:] = 1                      # 20 anomalies with scores 80..99
    tau = threshold_at_tpr(scores, labels, 0.95)
    assert tau == 81.0                   # 19 of 20 anomalies score >= 81: TPR 0.95
    assert ((scores >= tau) & (labels == 1)).sum() / 20 >= 0.95


def test_open_set_iou_counts_anomalies_and_rejections():
    from dhlib.metrics import OpenSetConfusion
    # 8 pixels, classes 0/1, one anomaly, one void
    target = np.array([0, 0, 0, 1, 1, 1, 255, 255])
    ood = np.array([0, 0, 0, 0, 0, 0, 1, 255])
    pred = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    scores = np.array([0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.2, 0.9])
    m = OpenSetConfusion(2, threshold=0.5)
    m.update(pred, scores, target, ood)
    out = m.compute()
    # closed set (inliers only): class 0 TP 2, FP 1, FN 1 -> 0.5; class 1 TP 2, FP 1, FN 1 -> 0.5
    assert out["mIoU"] == pytest.approx(0.5)
    # open set: pixel 1 is rejected (FN for class 0); the anomaly is predicted 0 (FP for class 0)
    # class 0: TP 1, FP 1 (pixel 5) + 1 (anomaly), FN 1 (pixel 2) + 1 (rejected) -> 1/5
    # class 1: TP 2, FP 1 (pixel 2), FN 1 (pixel 5) -> 2/4
    assert out["open_IoU"] == pytest.approx([0.2, 0.5])
    assert out["open_mIoU"] == pytest.approx(0.35)


def _blobs():
    y = np.zeros((5, 12), np.uint8)
    y[1:4, 1:4] = 1        # k1: 9 px
    y[1:4, 7:10] = 1       # k2: 9 px
    return y


def test_component_metrics_perfect_prediction():
    from dhlib.component_metrics import ComponentMetrics
    y = _blobs()
    m = ComponentMetrics(threshold=0.5, min_gt_size=1)
    m.update(y.astype(float), y)
    out = m.compute()
    assert out["sIoU_gt"] == 1 and out["PPV"] == 1 and out["mean_F1"] == 1
    assert out["components_gt"] == 2 and out["components_pred"] == 2


def test_component_metrics_adjusted_iou_for_one_blob_over_two_objects():
    from dhlib.component_metrics import ComponentMetrics
    y = _blobs()
    score = np.zeros(y.shape)
    score[1:4, 1:10] = 1   # one predicted blob of 27 px covering both objects and the gap
    m = ComponentMetrics(threshold=0.5, min_gt_size=1)
    m.update(score, y)
    out = m.compute()
    # sIoU(k1) = 9 / (27 + 9 − 9 − 9) = 0.5: k2's pixels are not counted against k1
    assert out["sIoU_gt"] == pytest.approx(0.5) and out["PPV"] == pytest.approx(18 / 27)
    assert out["F1"][0.5] == 1.0                    # TP 2, FN 0, FP 0
    assert out["F1"][0.55] == 0.0                   # TP 0, FN 2, FP 0
    assert out["F1"][0.7] == 0.0                    # TP 0, FN 2, FP 1 (PPV 0.67 < 0.7)


def test_component_metrics_void_small_objects_and_false_positives():
    from dhlib.component_metrics import ComponentMetrics
    y = np.zeros((8, 8), np.uint8)
    y[0:2, 0:2] = 1            # a 4-px object: below min_gt_size, becomes void
    y[5:8, 5:8] = 1            # a 9-px object
    y[:, 3] = 255              # a void column
    score = np.zeros(y.shape)
    score[0:2, 0:2] = 1        # predicted on the tiny object (void after filtering)
    score[:, 3] = 1            # predicted on void: removed
    score[5:8, 0:2] = 1        # a false positive blob
    m = ComponentMetrics(threshold=0.5, min_gt_size=5)
    m.update(score, y)
    out = m.compute()
    assert out["components_gt"] == 1 and out["sIoU_gt"] == 0.0   # the 9-px object is missed
    assert out["components_pred"] == 1 and out["PPV"] == 0.0     # only the false positive remains
    assert out["mean_F1"] == 0.0


def test_best_f1_threshold_from_streaming_state():
    from dhlib.metrics import StreamingOODMetrics, best_f1_threshold
    rng = np.random.default_rng(0)
    labels = (rng.random(10_000) < 0.1).astype(np.uint8)
    scores = np.where(labels == 1, 5.0 + rng.random(10_000), rng.random(10_000) - 3.0)
    stream = StreamingOODMetrics()
    stream.update(scores, labels)
    t = best_f1_threshold(stream)
    assert scores[labels == 0].max() < t <= scores[labels == 1].min()


def _smiyc_fixture():
    """A 40×40 scene for SegmentMeIfYouCan's counting rules; scores 1 = predicted, 0 = not.

    Ground truth (label 1), void (255), the rest inlier (0):
      A  rows 2-9,   cols 2-9    8×8 = 64 px
      B  rows 2-9,   cols 12-17  8×6 = 48 px  (cols 10-11 of inliers between A and B)
      C  rows 20-25, cols 2-7  and rows 26-31, cols 8-13: two 6×6 squares meeting only at a
         corner, (25, 7)-(26, 8): one 8-connected object of 72 px (two of 36 with 4-connectivity)
      D  rows 34-36, cols 34-36  3×3 = 9 px  -> under the obstacle track's 10 px: void
      void rows 0-9, cols 30-39  (100 px)
    Predictions (score 1):
      P1 rows 3-9, cols 5-15   7×11 = 77 px: 35 on A (cols 5-9), 14 inlier (cols 10-11), 28 on B (cols 12-15)
      P2 exactly C             72 px as one 8-connected blob (two 36 px blobs, each < 50, with 4-connectivity)
      P3 rows 14-17, cols 30-34  20 px < 50: dropped
      P4 rows 20-26, cols 30-37  56 px of inliers: a false positive
      P5 rows 32-38, cols 31-38  56 px, 9 of them on D: sized before D is voided, so kept (56 ≥ 50);
                                 47 px remain in the region of interest, all inliers
      P6 rows 0-9,  cols 26-39   140 px, but the 100 on void are removed before labelling: the
                                 40 px left (cols 26-29) are < 50: dropped
      E  rows 12-17, cols 18-27  score exactly 0.5 = the threshold: not predicted (score > threshold)
    """
    y = np.zeros((40, 40), np.uint8)
    y[2:10, 2:10] = 1
    y[2:10, 12:18] = 1
    y[20:26, 2:8] = 1
    y[26:32, 8:14] = 1
    y[34:37, 34:37] = 1
    y[0:10, 30:40] = 255
    s = np.zeros((40, 40))
    s[3:10, 5:16] = 1
    s[20:26, 2:8] = 1
    s[26:32, 8:14] = 1
    s[14:18, 30:35] = 1
    s[20:27, 30:38] = 1
    s[32:39, 31:39] = 1
    s[0:10, 26:40] = 1
    s[12:18, 18:28] = 0.5
    return s, y


# Hand computation for _smiyc_fixture with the obstacle preset (predicted ≥ 50 px, objects ≥ 10 px).
# Objects in the region of interest: A, B, C (D is void). Predicted components: P1, P2, P4, P5.
#   sIoU(A) = |A ∩ P1| / (|A| + |P1| − |A ∩ P1| − |P1 ∩ B|) = 35 / (64 + 77 − 35 − 28) = 35/78 ≈ 0.4487
#   sIoU(B) = |B ∩ P1| / (|B| + |P1| − |B ∩ P1| − |P1 ∩ A|) = 28 / (48 + 77 − 28 − 35) = 28/62 ≈ 0.4516
#   sIoU(C) = 72 / (72 + 72 − 72 − 0) = 1
#   PPV(P1) = (35 + 28) / 77 = 9/11 ≈ 0.818,  PPV(P2) = 1,  PPV(P4) = 0/56 = 0,  PPV(P5) = 0/47 = 0
#   predicted sIoU: P1 63 / (77 + 64 + 48 − 63 − 0) = 0.5, P2 1, P4 0, P5 0
#   τ = 0.25 … 0.40 (4 values): TP 3 (A, B, C), FN 0, FP 2 (P4, P5)  F1 = 6/8 = 3/4
#   τ = 0.45:                   TP 2 (B, C),    FN 1 (A: 0.4487 < 0.45), FP 2  F1 = 4/7
#   τ = 0.50 … 0.75 (6 values): TP 1 (C),       FN 2, FP 2            F1 = 2/6 = 1/3
#   (P1's PPV 0.818 is ≥ every τ: never a false positive)
#   mean F1 = (4·3/4 + 4/7 + 6·1/3) / 11 = (39/7) / 11 = 39/77
#   mean sIoU = (35/78 + 28/62 + 1) / 3, mean PPV = (9/11 + 1 + 0 + 0) / 4 = 5/11
SMIYC_TP = [3, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1]
SMIYC_FN = [0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2]


def _check_smiyc_fixture_counts(m):
    out = m.compute()
    counts = m.counts()
    assert out["components_gt"] == 3 and out["components_pred"] == 4   # C and P2 are one each
    assert counts["TP"].tolist() == SMIYC_TP and counts["FN"].tolist() == SMIYC_FN
    assert counts["FP"].tolist() == [2] * 11
    assert out["F1"][0.25] == pytest.approx(3 / 4) and out["F1"][0.45] == pytest.approx(4 / 7)
    assert out["F1"][0.75] == pytest.approx(1 / 3)
    assert out["mean_F1"] == pytest.approx(39 / 77)
    assert out["sIoU_gt"] == pytest.approx((35 / 78 + 28 / 62 + 1) / 3)
    assert out["PPV"] == pytest.approx(5 / 11)
    assert out["sIoU_pred"] == pytest.approx((0.5 + 1) / 4)


def test_component_metrics_count_like_smiyc_on_a_hand_made_scene():
    from dhlib.component_metrics import ComponentMetrics
    s, y = _smiyc_fixture()
    m = ComponentMetrics(threshold=0.5, track="obstacle")
    assert (m.min_pred_size, m.min_gt_size) == (50, 10)
    m.update(s, y)
    _check_smiyc_fixture_counts(m)


def test_component_metrics_anomaly_track_on_the_scene_scaled_three_times():
    # Every area ×9: A 576, B 432, C 648 (each square 324), D 81 < 100: void; P1 693, P2 648,
    # P3 180 < 500: dropped, P4 504, P5 504 ≥ 500 (423 after voiding D), P6 360 < 500: dropped;
    # the anomaly preset (500 / 100) keeps and drops the same components, and all ratios are
    # unchanged, so every count and mean is the obstacle one above.
    from dhlib.component_metrics import ComponentMetrics
    s, y = (np.kron(a, np.ones((3, 3), a.dtype)) for a in _smiyc_fixture())
    m = ComponentMetrics(threshold=0.5, track="anomaly")
    assert (m.min_pred_size, m.min_gt_size) == (500, 100)
    m.update(torch.from_numpy(s), torch.from_numpy(y))
    _check_smiyc_fixture_counts(m)


def test_component_metrics_explicit_sizes_override_the_preset():
    from dhlib.component_metrics import ComponentMetrics
    s, y = _smiyc_fixture()
    # min_pred_size=0 overrides the obstacle track's 50: P3 (20 px) and what is left of P6
    # (40 px) come back as two more false positives (PPV 0) at every τ; TP and FN unchanged.
    #   τ ≤ 0.40: F1 = 6/(6+0+4) = 3/5;  τ = 0.45: 4/(4+1+4) = 4/9;  τ ≥ 0.50: 2/(2+2+4) = 1/4
    m = ComponentMetrics(threshold=0.5, track="obstacle", min_pred_size=0)
    assert (m.min_pred_size, m.min_gt_size) == (0, 10)
    m.update(s, y)
    out = m.compute()
    assert out["components_pred"] == 6 and m.counts()["FP"].tolist() == [4] * 11
    assert m.counts()["TP"].tolist() == SMIYC_TP
    assert out["mean_F1"] == pytest.approx((4 * 3 / 5 + 4 / 9 + 6 * 1 / 4) / 11)
    # min_gt_size=5 overrides the 10: D (9 px) is an object; P5 covers it,
    #   sIoU(D) = 9 / (9 + 56 − 9) = 9/56 ≈ 0.16 < 0.25: one more FN at every τ;
    #   PPV(P5) = 9/56 < 0.25: still a false positive.
    m = ComponentMetrics(threshold=0.5, track="obstacle", min_gt_size=5)
    assert (m.min_pred_size, m.min_gt_size) == (50, 5)
    m.update(s, y)
    counts = m.counts()
    assert counts["FN"].tolist() == [n + 1 for n in SMIYC_FN] and counts["FP"].tolist() == [2] * 11
    assert m.compute()["components_gt"] == 4


def test_component_metrics_presets_and_defaults():
    from dhlib.component_metrics import TRACK_SIZES, ComponentMetrics
    assert TRACK_SIZES == {"anomaly": {"min_pred_size": 500, "min_gt_size": 100},
                           "obstacle": {"min_pred_size": 50, "min_gt_size": 10}}
    m = ComponentMetrics(0.5)                         # no track: the earlier defaults
    assert (m.min_pred_size, m.min_gt_size, m.track) == (0, 10, None)
    m = ComponentMetrics(0.5, track="anomaly", min_gt_size=7)
    assert (m.min_pred_size, m.min_gt_size) == (500, 7)
    with pytest.raises(ValueError, match="track"):
        ComponentMetrics(0.5, track="road")
