"""DeepLabV3+ with two heads: K class logits and the 2-way in/out (OOD) head of DenseHybrid.

The data flow::

    x ──normalise──▶ backbone ──▶ deep feature (stride 8) ──ASPP──▶ bot_aspp (1×1) ──upsample──┐
                         └─────▶ skip feature ──bot_fine (1×1)─────────────────────────────────┤ concat
                                                                        decoder feature f (304 ch)
                                                     [attention: f + γ·(M_s ⊙ M_c ⊙ f)]        │
                                  final: 3×3, 3×3, 1×1 ──▶ class logits  ◀─────────────────────┤
                                  logits_ood: BN, ReLU, 1×1 ──▶ in/out logits ◀────────────────┘
    both upsampled (bilinear, align_corners=True) to the input size.

ASPP (atrous spatial pyramid pooling) looks at the deep feature through parallel 3×3
convolutions with dilation rates (6, 12, 18) × (16 / output stride) -- (12, 24, 36) at
output stride 8 -- plus a 1×1 branch and a global-average ("image pooling") branch.
Parameter names follow the published checkpoints (``aspp.features.1.0.weight``, ``final.6``,
``logits_ood.conv``...).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import ResidualCBAM
from .wider_resnet import add_wider_resnet38

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, as the reference models do."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2),
                                   dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class ASPP(nn.Module):
    """Image pooling, a 1×1 branch and one dilated 3×3 branch per rate, concatenated
    in that order: ``(2 + len(rates)) · dim`` output channels."""

    def __init__(self, in_channels: int, dim: int = 256, rates=(12, 24, 36)):
        super().__init__()
        self.features = nn.ModuleList([conv_bn_relu(in_channels, dim, 1)] +
                                      [conv_bn_relu(in_channels, dim, 3, r) for r in rates])
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = conv_bn_relu(in_channels, dim, 1)
        self.rates = tuple(rates)

    def forward(self, x):
        pooled = upsample(self.img_conv(self.img_pooling(x)), x.shape[-2:])
        return torch.cat([pooled] + [branch(x) for branch in self.features], 1)


class OODHead(nn.Module):
    """DenseHybrid's in/out head: BN → ReLU → 1×1 conv to 2 logits (channel 1 = "out")."""

    def __init__(self, channels: int):
        super().__init__()
        # The released head's BatchNorm momentum (models/deeplabv3/deeplabv3.py, _BNReluConv):
        # slow running statistics for a head that starts from nothing on a moving feature.
        self.norm = nn.BatchNorm2d(channels, momentum=0.01)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, 2, 1, bias=True)

    def forward(self, f):
        return self.conv(self.relu(self.norm(f)))


class TwoHeadDeepLab(nn.Module):
    """The DeepLabV3+ decoder and both heads; a subclass supplies the backbone.

    ``build_backbone()`` attaches the backbone's modules (called first, so its parameters
    come first in the ``state_dict``, as in the checkpoints); ``features(x)`` returns ``(skip, deep)``: the high-resolution skip feature and the
    stride-8 deep feature. ``forward(x)`` takes RGB in [0, 1] (N×3×H×W, any H and W) and
    returns ``(seg_logits N×K×H×W, ood_logits N×2×H×W)``; ``forward(x, size=(h, w))``
    returns them at h×w instead (the trainer's loss grid, see ``dhlib.train.loss_grid``).
    """

    def __init__(self, num_classes: int, skip_channels: int, deep_channels: int, aspp_dim: int = 256,
                 fine_dim: int = 48, rates=(12, 24, 36), attention: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.build_backbone()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        decoder_dim = aspp_dim + fine_dim  # 304 in the paper model
        self.aspp = ASPP(deep_channels, aspp_dim, rates)
        self.bot_fine = nn.Conv2d(skip_channels, fine_dim, 1, bias=False)
        self.bot_aspp = nn.Conv2d((2 + len(rates)) * aspp_dim, aspp_dim, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(decoder_dim, aspp_dim, 3, padding=1, bias=False), nn.BatchNorm2d(aspp_dim), nn.ReLU(),
            nn.Conv2d(aspp_dim, aspp_dim, 3, padding=1, bias=False), nn.BatchNorm2d(aspp_dim), nn.ReLU(),
            nn.Conv2d(aspp_dim, num_classes, 1, bias=False))
        self.logits_ood = OODHead(decoder_dim)
        # The attention block is optional and lives under its own prefix, 'attention.'.
        self.attention = ResidualCBAM(decoder_dim) if attention else None

    def build_backbone(self):
        raise NotImplementedError

    def features(self, x):
        raise NotImplementedError

    def decoder_feature(self, x, return_maps: bool = False):
        """The 304-channel feature both heads read (after attention, if enabled)."""
        skip, deep = self.features((x - self.mean) / self.std)
        context = upsample(self.bot_aspp(self.aspp(deep)), skip.shape[-2:])
        f = torch.cat([self.bot_fine(skip), context], 1)
        maps = None
        if self.attention is not None:
            f, maps = self.attention(f, return_maps=True)
        return (f, maps) if return_maps else f

    def forward(self, x, size=None):
        """Both heads' logits, upsampled to ``size`` (default: the input's height and width)."""
        f = self.decoder_feature(x)
        size = x.shape[-2:] if size is None else size
        return upsample(self.final(f), size), upsample(self.logits_ood(f), size)

    @torch.no_grad()
    def attention_maps(self, x) -> dict:
        """The attention block's channel and spatial maps for ``x`` (attention must be on)."""
        if self.attention is None:
            raise RuntimeError("this model was built with attention=False: there are no maps")
        return self.decoder_feature(x, return_maps=True)[1]


class DeepWV3PlusTH(TwoHeadDeepLab):
    """WideResNet38 DeepLabV3+ with two heads ("TH"), as in the DenseHybrid release.

    Its ``state_dict`` matches the official checkpoints key for key (with ``attention=False``);
    137,105,154 parameters for 19 classes.
    """

    def __init__(self, num_classes: int = 19, attention: bool = False, aspp_dim: int = 256, fine_dim: int = 48,
                 rates=(12, 24, 36)):
        super().__init__(num_classes, skip_channels=128, deep_channels=4096, aspp_dim=aspp_dim,
                         fine_dim=fine_dim, rates=rates, attention=attention)

    def build_backbone(self):
        add_wider_resnet38(self)

    def features(self, x):
        skip = self.mod2(self.pool2(self.mod1(x)))              # 128 ch, stride 2
        deep = self.mod3(self.pool3(skip))                      # 256 ch, stride 4
        deep = self.mod7(self.mod6(self.mod5(self.mod4(deep))))  # 4096 ch, stride 8
        return skip, deep


def receptive_field(model: nn.Module, stop: str | None = None) -> list[tuple[str, int, int]]:
    """Theoretical receptive field along the main path of a backbone, layer by layer.

    Walks the convolutions and poolings in registration order (skipping the parallel 1×1
    shortcut projections) and applies ``rf += (k − 1)·d·jump``, ``jump *= stride``.
    Returns ``(name, receptive field in input pixels, jump = stride so far)`` per layer,
    up to the module named ``stop``.
    """
    rf, jump, rows = 1, 1, []
    for name, m in model.named_modules():
        if stop is not None and name.startswith(stop):
            break
        on_main_path = name.startswith(("mod", "pool")) and "proj_conv" not in name
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and on_main_path:
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            d = m.dilation if isinstance(m.dilation, int) else m.dilation[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            rf += (k - 1) * d * jump
            jump *= s
            rows.append((name, rf, jump))
    return rows
