"""DenseHybrid Lab: hybrid open-set semantic segmentation with synthetic negative data.

Modules, one concept each: ``config`` (profiles), ``data`` (datasets in their real formats
and the SynthCity generator), ``negatives`` (cutting and pasting negative patches), ``models`` (the two-head
DeepLabV3+ segmenters), ``flows`` (synthetic negatives), ``losses``, ``scores`` (the six
anomaly scores), ``metrics`` (mIoU, AP/AUROC/FPR95), ``evaluation``,
``viz`` (plots).
"""
__version__ = "0.1.0"
