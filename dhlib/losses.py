"""Loss terms of DenseHybrid and its flow extension, each with its equation.

So far: the flow's Jensen-Shannon objective (TPAMI 2024). The segmentation terms L_d, L_x,
L_cla join this module with the trainer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jsd_to_uniform(seg_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_jsd: the Jensen-Shannon divergence between the class posterior and the uniform
    distribution, averaged over the pixels where ``mask`` is set (the synthetic ones).

        P = softmax(logits),  U = 1/K,  M = (P + U)/2
        JSD(P ‖ U) = ½ KL(P ‖ M) + ½ KL(U ‖ M) = H(M) − ½ H(P) − ½ log K     ∈ [0, ln 2]

    It is 0 where the segmenter is maximally uncertain. Minimised with respect to the flow
    (through a segmenter that is not updated), it moves the flow's samples toward the
    border of the inlier distribution, where the posterior is flat.
    ``seg_logits`` N×K×H×W, ``mask`` N×H×W (bool); an empty mask gives 0.
    """
    if mask.shape != seg_logits.shape[:1] + seg_logits.shape[2:]:
        raise ValueError(f"mask {tuple(mask.shape)} must be N×H×W of logits {tuple(seg_logits.shape)}")
    k = seg_logits.shape[1]
    # float64: the three terms nearly cancel near the uniform posterior
    log_p = F.log_softmax(seg_logits.double(), dim=1)
    p = log_p.exp()
    m = 0.5 * (p + 1.0 / k)
    entropy_m = -(m * torch.log(m)).sum(1)          # m >= 1/(2K): the log is safe
    entropy_p = -(p * log_p).sum(1)
    jsd = (entropy_m - 0.5 * entropy_p - 0.5 * math.log(k)).clamp_min(0)  # ≥ 0 up to round-off
    mask = mask.bool()
    if not mask.any():
        return seg_logits.sum() * 0.0
    return jsd[mask].mean().to(seg_logits.dtype)
