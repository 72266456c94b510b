"""SynthCity benchmark: how fast it renders, and how much context a classifier needs.

Prints:
1. rendering speed on one core at 256×512 (target: at least 20 images/s), and the
   export speed with PNG encoding;
2. val mIoU of *per-pixel* RGB classifiers, which see one pixel's colour and nothing else:
   a multinomial logistic regression (scikit-learn) and the Bayes-optimal colour look-up
   (the majority class of each 16³ RGB bin on the training pixels -- no per-pixel colour
   classifier does much better);
3. val mIoU of a small fully-convolutional network with a ~100 px receptive field,
   trained for a couple of minutes on the CPU.

SynthCity is a real segmentation problem when (2) stays far below (3): colour alone is
ambiguous, context resolves it. Run: ``python benchmarks/bench_synthcity.py``
(needs the quick export: ``python -m dhlib make-data``; scikit-learn from the dev extra).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for the rendering timing

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dhlib.config import load_profile
from dhlib.data import CityscapesSegmentation, NUM_CLASSES
from dhlib.data import synthcity
from dhlib.metrics import confusion_matrix, iou_per_class, mean_iou
from dhlib.data.labels import CLASS_NAMES


def rendering_speed(n: int = 100, height: int = 256, width: int = 512):
    synthcity.render_scene(0, 0, height, width)
    start = time.perf_counter()
    for i in range(n):
        synthcity.render_scene(0, i, height, width)
    render = n / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i in range(n // 2):
            synthcity._export_one(("train", tmp, 0, i, height, width))
        export = (n // 2) / (time.perf_counter() - start)
    return render, export


def load_pixels(dataset, count):
    images, targets = [], []
    for i in range(min(count, len(dataset))):
        image, target = dataset[i]
        images.append(image)
        targets.append(target)
    return torch.stack(images), torch.stack(targets)


def per_pixel_rgb(train, val, fit_pixels: int = 200_000, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(seed)
    x_train = train[0].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    y_train = train[1].reshape(-1).numpy()
    keep = np.flatnonzero(y_train != 255)
    pick = rng.choice(keep, min(fit_pixels, keep.size), replace=False)
    x_val = val[0].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    y_val = val[1].reshape(-1).numpy()

    logreg = LogisticRegression(max_iter=300).fit(x_train[pick], y_train[pick])
    logreg_miou = mean_iou(confusion_matrix(logreg.predict(x_val), y_val, NUM_CLASSES))

    bins = 16  # Bayes-optimal colour look-up: majority train class per RGB bin
    code = lambda x: (np.minimum((x * bins).astype(int), bins - 1) * [bins * bins, bins, 1]).sum(1)
    counts = np.zeros((bins ** 3, NUM_CLASSES), np.int64)
    np.add.at(counts, (code(x_train[keep]), y_train[keep]), 1)
    lookup = counts.argmax(1)
    lookup_cm = confusion_matrix(lookup[code(x_val)], y_val, NUM_CLASSES)
    return logreg_miou, mean_iou(lookup_cm)


class ContextNet(nn.Module):
    """A small FCN: three stride-2 stages, dilated 3×3 convolutions (d = 2, 4, 8), upsampling.

    Receptive field ≈ 8·(1 + 2·(2+4+8+1)) ≈ 250 px at the input: it sees the street around a pixel.
    """

    def __init__(self, num_classes=NUM_CLASSES, width=48):
        super().__init__()

        def block(cin, cout, stride=1, dilation=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            block(3, width // 2, 2), block(width // 2, width, 2), block(width, width, 2),
            block(width, width, dilation=2), block(width, width, dilation=4),
            block(width, width, dilation=8), block(width, width))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return F.interpolate(self.classifier(self.features(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def train_context_net(train, val, seconds: float, seed: int = 0):
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    # half resolution (128×256) keeps a CPU step short
    x_tr = F.interpolate(train[0], scale_factor=0.5, mode="bilinear", antialias=True)
    y_tr = train[1][:, ::2, ::2]
    x_va = F.interpolate(val[0], scale_factor=0.5, mode="bilinear", antialias=True)
    y_va = val[1][:, ::2, ::2]
    net = ContextNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, x_tr.shape[0], (8,))
        x, y = x_tr[idx], y_tr[idx]
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(net(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x_va[i:i + 8]).argmax(1) for i in range(0, x_va.shape[0], 8)])
    cm = confusion_matrix(pred, y_va, NUM_CLASSES)
    return mean_iou(cm), iou_per_class(cm), steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--cnn-seconds", type=float, default=150)
    args = parser.parse_args()

    render, export = rendering_speed()
    print(f"rendering 256×512 on one core: {render:.1f} images/s (target >= 20); "
          f"with PNG export: {export:.1f} images/s")

    profile = load_profile("quick")
    synthcity.export(profile=profile)
    train = load_pixels(CityscapesSegmentation(profile.path("cityscapes_root"), "train"), args.train_images)
    val = load_pixels(CityscapesSegmentation(profile.path("cityscapes_root"), "val"), args.val_images)

    start = time.perf_counter()
    logreg, lookup = per_pixel_rgb(train, val)
    print(f"per-pixel RGB logistic regression: val mIoU {logreg:.3f}")
    print(f"per-pixel RGB Bayes look-up (16³ bins): val mIoU {lookup:.3f}  "
          f"({time.perf_counter() - start:.0f} s)")
    miou, per_class, steps = train_context_net(train, val, args.cnn_seconds)
    print(f"context CNN ({steps} steps, {args.cnn_seconds:.0f} s on {os.cpu_count()} cores, "
          f"128×256): val mIoU {miou:.3f}")
    print("  per class: " + ", ".join(f"{CLASS_NAMES[k]} {v:.2f}" for k, v in enumerate(per_class)
                                       if not np.isnan(v)))
    print(f"ratio per-pixel logistic / CNN mIoU: {logreg / miou:.2f}")


if __name__ == "__main__":
    main()
