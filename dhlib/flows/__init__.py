"""Normalizing flows that generate synthetic negatives (TPAMI 2024).

``build_flow(profile)`` gives the profile's :class:`MultiScaleFlow` over RGB patches, with
``sample(n, h, w, temperature)``, ``log_prob(x)`` and ``bits_per_dim(x)``.
"""
from .flow import MultiScaleFlow
from .layers import ActNorm, AffineCoupling, FlowStep, InvConv1x1, Split, Squeeze
from .toy import Flow2D

__all__ = ["ActNorm", "AffineCoupling", "Flow2D", "FlowStep", "InvConv1x1", "MultiScaleFlow",
           "Split", "Squeeze", "build_flow"]


def build_flow(profile) -> MultiScaleFlow:
    """The profile's flow: ``flow_levels`` levels of ``flow_steps`` steps, ``flow_hidden`` wide."""
    return MultiScaleFlow(3, profile.flow_levels, profile.flow_steps, profile.flow_hidden, profile.seed)
