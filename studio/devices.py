"""Which device the models run on, and in which precision."""

from __future__ import annotations

import torch

from studio.errors import ModelUnavailableError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(requested: str = "auto", dtype: str = "auto",
                half: torch.dtype = torch.float16) -> tuple[torch.device, torch.dtype]:
    """The device to run on and its dtype: CUDA or Apple MPS in the family's half precision (`half`:
    fp16, or bf16 for FLUX.1, which overflows in fp16), else CPU fp32, unless `dtype` names one
    (bfloat16 halves the memory of a CPU run)."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError("--device cuda was asked for, but PyTorch sees no CUDA GPU. Use --device cpu.")
    if dtype != "auto":
        return device, DTYPES[dtype]
    return device, torch.float32 if device.type == "cpu" else half
