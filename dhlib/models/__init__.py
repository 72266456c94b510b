"""Segmentation models: DeepLabV3+ with a class head and an in/out (OOD) head.

``DeepWV3PlusTH`` is the paper model (WideResNet38, loads the official checkpoints);
``SmallDeepLabTH`` the CPU-sized model of the quick tier; ``build_model(profile)`` picks one.
"""
from .attention import ResidualCBAM
from .checkpoints import CheckpointError, CheckpointMismatchError, LoadReport, load_checkpoint, save_state_dict
from .deeplabv3plus import ASPP, DeepWV3PlusTH, OODHead, TwoHeadDeepLab
from .small import SmallDeepLabTH
from . import weights

__all__ = ["ASPP", "CheckpointError", "CheckpointMismatchError", "DeepWV3PlusTH", "LoadReport", "OODHead",
           "ResidualCBAM", "SmallDeepLabTH", "TwoHeadDeepLab", "build_model", "load_checkpoint",
           "save_state_dict", "weights"]


def build_model(profile) -> TwoHeadDeepLab:
    """The profile's two-head model: ``'wrn38'`` (paper) or ``'small'`` (quick)."""
    if profile.model == "wrn38":
        return DeepWV3PlusTH(profile.num_classes, attention=profile.attention, aspp_dim=profile.aspp_dim,
                             fine_dim=profile.fine_dim, rates=profile.aspp_rates)
    if profile.model == "small":
        return SmallDeepLabTH(profile.num_classes, widths=profile.small_widths, aspp_dim=profile.aspp_dim,
                              fine_dim=profile.fine_dim, rates=profile.aspp_rates, attention=profile.attention,
                              skip_stride=profile.skip_stride,
                              input_scale=profile.input_scale)
    raise ValueError(f"unknown model {profile.model!r}: use 'wrn38' or 'small'")
