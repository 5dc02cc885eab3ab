"""--attention: the attention kernels the denoisers run with, one choice for the whole server.

- `sdpa` (the default): PyTorch's scaled_dot_product_attention picks a kernel per call.
- `sdpa-math`, `sdpa-flash`, `sdpa-efficient`, `sdpa-cudnn`: PyTorch's SDPA held to one kernel
  (`torch.nn.attention.sdpa_kernel`), for every family (the UNets' processors and diffusers'
  attention dispatcher both call SDPA).
- `flash-attn`, `sage`, `xformers`: the packages of those names through diffusers' attention
  dispatcher (`set_attention_backend`), for the denoisers that use it (FLUX.1's transformer);
  xformers also on UNets (diffusers' xformers processors). A choice a denoiser cannot take leaves
  it on SDPA, and its images say nothing of it.

The kernels change the pixels a little, so an image made with a choice other than `sdpa` carries
"Attention: <choice>" in its parameters.
"""

from __future__ import annotations

from contextlib import nullcontext

DEFAULT = "sdpa"
TORCH_KERNELS = {"sdpa-math": "MATH", "sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                 "sdpa-cudnn": "CUDNN_ATTENTION"}
PACKAGES = {"flash-attn": "flash", "sage": "sage", "xformers": "xformers"}  # -> diffusers' backend names
CHOICES = (DEFAULT, *TORCH_KERNELS, *PACKAGES)


def check(choice: str, device) -> None:
    """Refuse (ValueError, said to the user at start) a choice this machine cannot run (Settings
    has refused a name that is not one of CHOICES)."""
    import torch

    if choice in TORCH_KERNELS:
        q = torch.zeros(1, 1, 8, 64, device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        try:
            with kernels(choice):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
        except RuntimeError as exc:
            raise ValueError(f"--attention {choice}: PyTorch has no such kernel on {device} here "
                             f"({str(exc).splitlines()[0][:160]}). Leave it at sdpa, or pick another.") from None
    elif choice in PACKAGES:
        from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

        try:
            _check_attention_backend_requirements(AttentionBackendName(PACKAGES[choice]))
        except (RuntimeError, ImportError) as exc:
            raise ValueError(f"--attention {choice}: {str(exc).splitlines()[0][:200]} "
                             "Install it, or leave --attention at sdpa.") from None


def kernels(choice: str):
    """The SDPA kernel restriction of `choice` around a pipeline call (none for the others)."""
    if choice not in TORCH_KERNELS:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, TORCH_KERNELS[choice]))


def prepare(denoiser, choice: str) -> bool:
    """Set a package backend on `denoiser` once it is loaded; whether the choice reaches its attention."""
    if choice == DEFAULT:
        return False
    if choice in TORCH_KERNELS:
        return True
    processors = [getattr(module, "processor", None) for module in denoiser.modules()]
    if any(hasattr(processor, "_attention_backend") for processor in processors):
        denoiser.set_attention_backend(PACKAGES[choice])
        return True
    if choice == "xformers" and hasattr(denoiser, "enable_xformers_memory_efficient_attention"):
        denoiser.enable_xformers_memory_efficient_attention()
        return True
    return False
