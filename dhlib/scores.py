"""Dense anomaly scores: every function maps ``(seg_logits N×K×H×W, ood_logits N×2×H×W)``
to an ``N×H×W`` map where higher means more anomalous.

With class logits s_k(x) and P(k|x) = softmax(s)_k:

    msp             1 − max_k P(k|x)                       (Hendrycks & Gimpel, 2017)
    max_logit       − max_k s_k(x)                          (Hendrycks et al., 2022)
    entropy         − Σ_k P(k|x) ln P(k|x)
    energy          − ln Σ_k exp s_k(x) = − ln p̂(x)         (Liu et al., 2020), up to ln Z
    discriminative  ln P(out|x), from the OOD head
    hybrid          ln P(out|x) − ln p̂(x)                    (DenseHybrid, Grcić et al., 2022)

DenseHybrid reads the class logits as an *unnormalised* generative model, p̂(x) =
Σ_k exp s_k(x) ∝ p(x), and fuses it with the discriminative P(out|x): the hybrid score
is the log-ratio P(out|x) / p̂(x). Everything is computed with log-sum-exp and
log-softmax, so logits of ±1e4 give finite scores. Inputs in half precision are promoted
to float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _promote(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def msp(seg_logits, ood_logits=None):
    """1 − max softmax probability: 1 − exp(max_k s_k − logsumexp s)."""
    s = _promote(seg_logits)
    return -torch.expm1(s.amax(1) - torch.logsumexp(s, 1))


def max_logit(seg_logits, ood_logits=None):
    """Negative largest class logit."""
    return -_promote(seg_logits).amax(1)


def entropy(seg_logits, ood_logits=None):
    """Entropy of the class posterior, −Σ P ln P with ln P from log-softmax."""
    log_p = F.log_softmax(_promote(seg_logits), 1)
    return -(log_p.exp() * log_p).sum(1)


def energy(seg_logits, ood_logits=None):
    """Free energy −logsumexp(s) = −ln p̂(x)."""
    return -torch.logsumexp(_promote(seg_logits), 1)


def discriminative(seg_logits, ood_logits):
    """ln P(out|x) = log-softmax of the OOD head, channel 1."""
    return F.log_softmax(_promote(ood_logits), 1)[:, 1]


def hybrid(seg_logits, ood_logits):
    """DenseHybrid's score ln P(out|x) − ln p̂(x) = discriminative + energy."""
    return discriminative(seg_logits, ood_logits) + energy(seg_logits)


SCORES = {"msp": msp, "max_logit": max_logit, "entropy": entropy, "energy": energy,
          "discriminative": discriminative, "hybrid": hybrid}
