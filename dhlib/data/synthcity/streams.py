"""Random streams: every SynthCity image is a pure function of ``(seed, stream, index)``.

Each kind of image draws from its own independent sequence, so the same call always gives
the same pixels, on any machine, in any order, in parallel or not.
"""
from __future__ import annotations

import numpy as np

# Bump whenever a change to the renderer changes pixels: exports made by another version
# are then written anew instead of being re-used.
GENERATOR_VERSION = 3

# Streams: independent random sequences for each thing SynthCity writes.
STREAMS = {"train": 1, "val": 2, "negatives": 3, "anomalies": 4}


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """The random generator of one image: a pure function of (seed, stream, index)."""
    return np.random.default_rng([seed, STREAMS[stream], index])
