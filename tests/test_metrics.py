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
