"""Which device a run uses: one rule for training, flow pre-training and evaluation."""
from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_problem(requested: str) -> str | None:
    """What is wrong with a ``device`` setting, or None when it is one of the accepted forms."""
    if requested in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", requested):
        return None
    return f"device={requested!r}: use {DEVICE_CHOICES}"


def select_device(requested: str = "auto", rank: int = 0) -> torch.device:
    """The device for ``requested`` in the process of distributed ``rank``.

    * ``'auto'``: a GPU when CUDA is available, else the CPU;
    * ``'cuda'``: a GPU, and an error when there is none (asked for, so not silently slow);
    * ``'cuda:N'``: GPU N;
    * ``'cpu'``: the CPU.

    Without an index, process ``rank`` takes GPU ``rank mod count``: torchrun starts one
    process per GPU, and each must train on its own.
    """
    problem = device_problem(requested)
    if problem:
        raise ValueError(problem)
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={requested!r} asks for a GPU, but CUDA is not available here; "
                           "use --set device=auto (a GPU when there is one) or device=cpu")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", rank % torch.cuda.device_count())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16). Elsewhere
    oneDNN emulates bf16, which is slower than float32, so mixed precision would cost time."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step on ``device``, or None for float32.

    CUDA: bf16 where the GPU supports it, else fp16 (with a GradScaler). CPU: bf16 where the
    CPU has it natively; autocast keeps the losses, softmax and normalisation in float32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
