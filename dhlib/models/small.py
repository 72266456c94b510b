"""A CPU-sized two-head DeepLabV3+ for the quick tier: the same ASPP, decoder, attention and
heads as ``DeepWV3PlusTH`` on a small pre-activation residual backbone.

    (input_scale < 1: the normalised image is first resized by input_scale, anti-aliased)
    mod1  conv3×3, stride 2                       c0 channels     stride 2   <- skip (skip_stride=2)
    mod2  1 block, stride 2                       c1              stride 4   <- skip (skip_stride=4)
    mod3  2 blocks, stride 2                      c2              stride 8
    mod4  2 blocks, dilation 2                    c3              stride 8
    mod5  1 block, dilation 4                     c4              stride 8   <- deep feature

It uses the WideResNet's own residual block and trains from scratch (no pretrained weights
can be downloaded here). The decoder reads its skip feature at stride 4 (cheap) or at stride
2 like the WRN38 model, which resolves thin objects (3-px poles) at about twice the cost of a
training step. Widths, ASPP size, rates and the skip stride come from the profile.

``input_scale`` lets the model look at the scene at a lower resolution (quick: 0.5, so a
256×512 SynthCity image is seen at 128×256); the logits are still returned at the input size.
Measured on 2 CPU cores, a half-resolution model trained on whole images learns far more per
second than a full-resolution one trained on crops (val mIoU 0.56 vs 0.45), at the price of
the thinnest objects (1-2 px poles become sub-pixel).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F

from .deeplabv3plus import TwoHeadDeepLab
from .wider_resnet import bn_relu, residual_stage


class SmallDeepLabTH(TwoHeadDeepLab):
    def __init__(self, num_classes: int = 19, widths=(32, 48, 64, 96, 128), aspp_dim: int = 64,
                 fine_dim: int = 16, rates=(4, 8, 12), attention: bool = True, skip_stride: int = 4,
                 input_scale: float = 1.0):
        if skip_stride not in (2, 4):
            raise ValueError(f"skip_stride must be 2 (mod1's output) or 4 (mod2's), got {skip_stride}")
        if not 0 < input_scale <= 1:
            raise ValueError(f"input_scale must be in (0, 1] (1 = full resolution), got {input_scale}")
        self.widths, self.skip_stride, self.input_scale = tuple(widths), skip_stride, float(input_scale)
        super().__init__(num_classes, skip_channels=widths[0] if skip_stride == 2 else widths[1],
                         deep_channels=widths[4],
                         aspp_dim=aspp_dim, fine_dim=fine_dim, rates=rates, attention=attention)

    def build_backbone(self):
        c0, c1, c2, c3, c4 = self.widths
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, c0, 3, 2, 1, bias=False))]))
        self.mod2 = residual_stage(c0, (c1, c1), 1, stride=2)
        self.mod3 = residual_stage(c1, (c2, c2), 2, stride=2)
        self.mod4 = residual_stage(c2, (c3, c3), 2, dilation=2)
        self.mod5 = residual_stage(c3, (c4, c4), 1, dilation=4)
        self.bn_out = bn_relu(c4)  # pre-activation blocks end un-normalised: close with BN+ReLU

    def features(self, x):
        if self.input_scale != 1:  # look at the scene at a lower resolution
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", antialias=True,
                              recompute_scale_factor=False)
        early = self.mod1(x)
        mid = self.mod2(early)
        deep = self.bn_out(self.mod5(self.mod4(self.mod3(mid))))
        return (early if self.skip_stride == 2 else mid), deep
