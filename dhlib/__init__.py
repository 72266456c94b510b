"""DenseHybrid Lab: hybrid open-set semantic segmentation with synthetic negative data.

Modules, one concept each: ``config`` (profiles), ``data`` (datasets in their real formats
and the SynthCity generator), ``negatives`` (cutting and pasting negative patches), ``models`` (the two-head
DeepLabV3+ segmenters), ``flows`` (synthetic negatives), ``losses``, ``scores`` (the six
anomaly scores), ``metrics`` (mIoU, AP/AUROC/FPR95), ``evaluation``,
``viz`` (plots).
"""
import torch

__version__ = "0.1.0"

# Weight decay drives the weights of channels that ReLU switched off towards zero; products with
# them are float32 subnormals, which CPU arithmetic handles many times slower, so a long run (or a
# fine-tuning from a float32 checkpoint) slows down step after step. Flushing them to zero changes
# nothing a model can use. The setting is per thread, and torch's worker threads copy it when
# they start: it must be made before the first parallel operation, hence here, at import.
torch.set_flush_denormal(True)
