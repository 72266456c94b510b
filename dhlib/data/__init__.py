"""Datasets in their real formats, the SynthCity generator that writes them, and transforms."""
from .ade20k import ADE20KNegatives
from .anomaly import KINDS as ANOMALY_KINDS, AmbiguousDatasetError, load_anomaly_dataset
from .cityscapes import CityscapesSegmentation
from .fishyscapes import CustomImages, Fishyscapes, LabelledImages, OODFolder
from .io import CorruptFileError, DatasetNotFoundError, LabelValueError
from .labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize
from .transforms import eval_transforms, train_transforms

__all__ = [
    "ADE20KNegatives", "CityscapesSegmentation", "CustomImages", "Fishyscapes", "LabelledImages", "OODFolder",
    "ANOMALY_KINDS", "AmbiguousDatasetError", "load_anomaly_dataset",
    "CorruptFileError", "DatasetNotFoundError", "LabelValueError",
    "CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "colorize",
    "eval_transforms", "train_transforms", "datasets_from_profile",
]


def datasets_from_profile(profile, train_augment: bool = True) -> dict:
    """The profile's datasets: Cityscapes train/val, ADE20K negatives, the anomaly test set.

    In the quick tier the SynthCity trees are written first if they are missing.
    """
    from . import synthcity
    synthcity.ensure(profile, progress=False)
    train_tf = train_transforms(profile.crop_size, profile.scale_range, class_uniform=profile.class_uniform) if train_augment else None
    return {
        "train": CityscapesSegmentation(profile.path("cityscapes_root"), "train", train_tf),
        "val": CityscapesSegmentation(profile.path("cityscapes_root"), "val"),
        "negatives": ADE20KNegatives(profile.path("ade20k_root")),
        "anomalies": Fishyscapes(profile.path("fishyscapes_root"), profile.fishyscapes_split),
    }
