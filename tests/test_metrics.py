import numpy as np
import pytest
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
    from dhlib.metrics import ComponentMetrics
    y = _blobs()
    m = ComponentMetrics(threshold=0.5, min_gt_size=1)
    m.update(y.astype(float), y)
    out = m.compute()
    assert out["sIoU_gt"] == 1 and out["PPV"] == 1 and out["mean_F1"] == 1
    assert out["components_gt"] == 2 and out["components_pred"] == 2


def test_component_metrics_adjusted_iou_for_one_blob_over_two_objects():
    from dhlib.metrics import ComponentMetrics
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
    from dhlib.metrics import ComponentMetrics
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
