"""WideResNet38 (the "A2" variant): the backbone of NVIDIA's and DenseHybrid's DeepLabV3+.

A pre-activation residual network: every block starts with BN+ReLU on its input,
``out = convs(bnrelu(x)) + shortcut`` where the shortcut is ``x`` itself or a 1×1
projection of ``bnrelu(x)`` when the shape changes. Stages (output channels, stride):

    mod1  conv3×3, 64                     stride 1
    pool2 → mod2  3 blocks (128, 128)     stride 2   <- the decoder's skip feature
    pool3 → mod3  3 blocks (256, 256)     stride 4
    mod4  6 blocks (512, 512)             stride 8   (first block strided)
    mod5  3 blocks (512, 1024)            stride 8, dilation 2
    mod6  1 bottleneck (512, 1024, 2048)  stride 8, dilation 4, dropout 0.3
    mod7  1 bottleneck (1024, 2048, 4096) stride 8, dilation 4, dropout 0.5

Dilating mod5-mod7 instead of striding keeps an output stride of 8 for segmentation.
Module and parameter names follow the published checkpoints (``mod2.block1.bn1.0.weight``...).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


def bn_relu(channels: int) -> nn.Sequential:
    """BatchNorm followed by ReLU, stored as ``<name>.0`` (BN) and ``<name>.1`` (ReLU)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=False))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block, basic (two 3×3) or bottleneck (1×1, 3×3, 1×1).

    ``channels`` has two entries for a basic block and three for a bottleneck.
    """

    def __init__(self, in_channels: int, channels, stride: int = 1, dilation: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        bottleneck = len(channels) == 3
        self.bn1 = bn_relu(in_channels)
        if not bottleneck:
            layers = [("conv1", nn.Conv2d(in_channels, channels[0], 3, stride, dilation, dilation, bias=False)),
                      ("bn2", bn_relu(channels[0])),
                      ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False))]
        else:
            layers = [("conv1", nn.Conv2d(in_channels, channels[0], 1, stride, bias=False)),
                      ("bn2", bn_relu(channels[0])),
                      ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
                      ("bn3", bn_relu(channels[1])),
                      ("conv3", nn.Conv2d(channels[1], channels[2], 1, bias=False))]
        if dropout:  # before the last convolution, as in the original network
            layers.insert(len(layers) - 1, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or in_channels != channels[-1]:
            self.proj_conv = nn.Conv2d(in_channels, channels[-1], 1, stride, bias=False)

    def forward(self, x):
        pre = self.bn1(x)
        shortcut = self.proj_conv(pre) if hasattr(self, "proj_conv") else x
        return self.convs(pre) + shortcut


def residual_stage(in_channels: int, channels, blocks: int, stride: int = 1, dilation: int = 1,
                   dropout: float = 0.0) -> nn.Sequential:
    """``blocks`` residual blocks named block1..blockN; only the first may stride."""
    layers = []
    for i in range(blocks):
        layers.append((f"block{i + 1}", IdentityResidualBlock(
            in_channels, channels, stride if i == 0 else 1, dilation, dropout)))
        in_channels = channels[-1]
    return nn.Sequential(OrderedDict(layers))


def add_wider_resnet38(module: nn.Module) -> None:
    """Attach the WideResNet38 stages to ``module`` as attributes mod1..mod7, pool2, pool3.

    They are attributes of the segmentation model itself (not of a sub-module) because
    that is where the published checkpoints keep them.
    """
    module.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, 64, 3, 1, 1, bias=False))]))
    module.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
    module.mod2 = residual_stage(64, (128, 128), 3)
    module.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
    module.mod3 = residual_stage(128, (256, 256), 3)
    module.mod4 = residual_stage(256, (512, 512), 6, stride=2)
    module.mod5 = residual_stage(512, (512, 1024), 3, dilation=2)
    module.mod6 = residual_stage(1024, (512, 1024, 2048), 1, dilation=4, dropout=0.3)
    module.mod7 = residual_stage(2048, (1024, 2048, 4096), 1, dilation=4, dropout=0.5)
