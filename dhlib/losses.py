"""Loss terms of DenseHybrid and its flow extension, each with its equation.

Targets come from :func:`dhlib.negatives.paste`: ``seg_target`` holds train ids with 255 on
void and pasted pixels; ``ood_target`` is 1 on pasted (negative) pixels, 0 on inliers and
255 on void. With class logits s(x) and OOD logits o(x)::

    L_d   = mean over inlier pixels of −ln softmax(s)_y                  segmentation
    L_x   = mean over negative pixels of ln p̂(x) = logsumexp_k s_k(x)     data likelihood
            (optionally floored: softplus(ln p̂(x) − m), see likelihood_loss)
    L_cla = mean over non-void pixels of −ln softmax(o)_{in/out}          dataset posterior
    L     = L_d + β·L_x + 10β·L_cla          (DenseHybrid, ECCV 2022; β in the profile)

and, for the flow of the TPAMI extension, L_flow = L_mle + λ·L_jsd.
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


def class_balance_weights(pixel_counts, exponent: float) -> torch.Tensor:
    """Per-class weights w_c = (median_c' f_c' / f_c)^α from training pixel counts.

    α = 0: plain cross-entropy (the papers); α = 1: median-frequency balancing (Eigen &
    Fergus, 2015). Classes that never occur get weight 0. With an even number of classes
    present the median is the lower middle frequency (``torch.median``), so that one class,
    the median one, keeps weight 1.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("class_balance_weights: no class has any pixel")
    freq = counts / counts.sum()
    weights = torch.zeros_like(freq)
    weights[present] = (freq[present].median() / freq[present]) ** exponent
    return weights.float()


def segmentation_loss(seg_logits: torch.Tensor, seg_target: torch.Tensor,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_d: cross-entropy −ln P(y|x) on inlier pixels; void and pasted pixels (255) ignored.

    With ``class_weights`` w: Σ_i w_{y_i}·(−ln P(y_i|x_i)) / Σ_i w_{y_i}.
    """
    return F.cross_entropy(seg_logits, seg_target, weight=class_weights, ignore_index=255)


def likelihood_loss(seg_logits: torch.Tensor, ood_target: torch.Tensor,
                    floor: float | None = None) -> torch.Tensor:
    """L_x: the mean of ln p̂(x) = logsumexp_k s_k(x) over negative pixels (ood_target = 1).

    DenseHybrid reads exp s_k(x) as an unnormalised joint density p̂(x, k), so
    p̂(x) = Σ_k exp s_k(x) and p(x) = p̂(x)/Z with an intractable Z(θ). Lowering ln p̂ on
    negatives pushes probability mass away from them; since Z = ∫ p̂ is shared by all
    inputs, this lowers Z and thereby raises the *normalised* likelihood of everything the
    negatives do not cover -- the inliers -- without ever computing Z. Minimising it never
    needs the gradient of ln Z, which an explicit inlier term −ln p(x_in) would.
    An empty negative mask gives 0.

    The term is unbounded below: ln p̂ falls without limit as all logits of a negative pixel
    fall together. Fine-tuning at lr 1e-6 (the papers) never gets far; a from-scratch run
    does (quick tier, 2400 steps: L_x −426 and a rising L_d). With ``floor = m`` the term
    becomes a smooth hinge that stops pushing once ln p̂ is well below m:

        L_x = mean over negative pixels of softplus(ln p̂(x) − m),
        ∂L_x/∂ln p̂ = sigmoid(ln p̂ − m)  (≈ 1 above m, as the plain term; → 0 below it).
    """
    negative = ood_target == 1
    if not negative.any():
        return seg_logits.sum() * 0.0
    logits = seg_logits.float() if seg_logits.dtype in (torch.float16, torch.bfloat16) else seg_logits
    log_density = torch.logsumexp(logits, 1)[negative]
    if floor is None:
        return log_density.mean()
    return F.softplus(log_density - floor).mean()


def ood_head_loss(ood_logits: torch.Tensor, ood_target: torch.Tensor, seg_target: torch.Tensor | None = None,
                  class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> torch.Tensor:
    """L_cla: 2-way cross-entropy of the OOD head, inlier (0) vs negative (1); void ignored.

    With ``class_weights`` w (and ``seg_target``) an inlier pixel of class c counts w_c and a
    negative pixel 1, the median class's weight::

        L_cla = Σ_i v_i·(−ln P(o_i|x_i)) / Σ_i v_i,   v_i = w_{y_i} if o_i = 0, else 1

    so that rare inlier classes are not learnt as "out" for want of examples (an inlier pixel
    without a class, void kept as inlier, counts 1).

    With ``focal_gamma`` γ > 0 each pixel's term is the focal loss (Lin et al., ICCV 2017)::

        −ln P(o_i|x_i)  →  2^γ · (1 − P(o_i|x_i))^γ · (−ln P(o_i|x_i))

    which fades the pixels the head already gets right (most inliers, the obvious negatives)
    and leaves the loss to the hard ones: the inlier pixels it takes for anomalies. The factor
    2^γ makes the term equal the cross-entropy where the head is undecided (P = 1/2), as it is
    when it starts fresh, so γ does not also rescale L_cla against L_d and L_x there.
    """
    if class_weights is None and not focal_gamma:
        return F.cross_entropy(ood_logits, ood_target, ignore_index=255)
    per_pixel = F.cross_entropy(ood_logits, ood_target, ignore_index=255, reduction="none")
    if focal_gamma:
        p_true = torch.exp(-per_pixel)             # P(o_i|x_i); 1 on void pixels, whose term is 0
        per_pixel = (2 * (1 - p_true)) ** focal_gamma * per_pixel
    v = torch.ones_like(per_pixel)
    if class_weights is not None:
        classed = (ood_target == 0) & (seg_target != 255)
        v[classed] = class_weights.to(v)[seg_target[classed]]
    v[ood_target == 255] = 0
    return (v * per_pixel).sum() / v.sum().clamp_min(1e-12)


def densehybrid_loss(seg_logits, ood_logits, seg_target, ood_target, beta: float,
                     class_weights: torch.Tensor | None = None, likelihood_floor: float | None = None,
                     ood_class_weights: torch.Tensor | None = None, ood_focal_gamma: float = 0.0) -> dict:
    """All segmenter terms and their weighted sum L = L_d + β·L_x + 10β·L_cla
    (``likelihood_floor``: see :func:`likelihood_loss`; ``ood_class_weights`` and
    ``ood_focal_gamma``: see :func:`ood_head_loss`)."""
    terms = {"L_d": segmentation_loss(seg_logits, seg_target, class_weights),
             "L_x": likelihood_loss(seg_logits, ood_target, likelihood_floor),
             "L_cla": ood_head_loss(ood_logits, ood_target, seg_target, ood_class_weights, ood_focal_gamma)}
    terms["loss"] = terms["L_d"] + beta * terms["L_x"] + 10 * beta * terms["L_cla"]
    return terms
