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
