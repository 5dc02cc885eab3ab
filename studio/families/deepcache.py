"""DeepCache (Ma et al., 2023) for the UNet families: between full steps only the UNet's shallowest
layers run (conv_in, the last layer of the last up block, conv_out); the deeper blocks give back
their outputs of the last full step, where the features change little from step to step.

Built on diffusers' hook registry, as diffusers' own caches are, and removed after each lend. The
DeepCache package on PyPI (0.1.1, 2024) does the same by reassigning the blocks' `forward` and
finds the step in the pipeline's scheduler; here the UNet's calls are counted, so it needs no
pipeline and leaves nothing behind."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from diffusers.hooks import HookRegistry, ModelHook  # this module is imported only when a UNet lends

HOOK = "studio_deepcache"
INTERVAL = 3  # a full step, then two cached ones (the paper's N=3 keeps SD's images close)


class _Steps:
    def __init__(self) -> None:
        self.calls = 0

    @property
    def cached(self) -> bool:
        return (self.calls - 1) % INTERVAL != 0


class _Counter(ModelHook):
    def __init__(self, steps: _Steps):
        super().__init__()
        self.steps = steps

    def pre_forward(self, module, *args, **kwargs):
        self.steps.calls += 1
        return args, kwargs


class _Reused(ModelHook):
    """On a cached step, the module's output of the last full step instead of running it."""

    def __init__(self, steps: _Steps):
        super().__init__()
        self.steps, self.output = steps, None

    def new_forward(self, module, *args, **kwargs):
        if self.steps.cached and self.output is not None:
            return self.output
        self.output = self.fn_ref.original_forward(*args, **kwargs)
        return self.output


def _deep_modules(unet) -> list:
    """What a cached step skips: every down block, the mid block, every up block but the last, and
    every layer of the last up block but its last resnet and attention (the shallow branch, whose
    skip connection is conv_in's fresh output)."""
    last = unet.up_blocks[-1]
    inner = [*last.resnets[:-1], *(getattr(last, "attentions", None) or [])[:-1]]
    mid = [unet.mid_block] if unet.mid_block is not None else []
    return [*unet.down_blocks, *mid, *unet.up_blocks[:-1], *inner]


@contextmanager
def deep_cached(unet) -> Iterator:
    """DeepCache on `unet` inside the block; the plain UNet (bit for bit) after it."""
    steps = _Steps()
    modules = [unet, *_deep_modules(unet)]
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(_Counter(steps), HOOK)
    for module in modules[1:]:
        HookRegistry.check_if_exists_or_initialize(module).register_hook(_Reused(steps), HOOK)
    try:
        yield
    finally:
        for module in modules:
            module._diffusers_hook.remove_hook(HOOK, recurse=False)
