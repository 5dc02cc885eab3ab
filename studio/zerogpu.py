"""Hugging Face ZeroGPU support, optional and inert elsewhere.

On a ZeroGPU Space the `spaces` package is installed and `SPACES_ZERO_GPU` is set; a function
decorated with `@spaces.GPU(duration=...)` gets a GPU for that long, in a forked worker whose
arguments and results are pickled. So: `spaces` is imported before anything touches CUDA (app.py
imports this module first), the decorated function takes only picklable arguments (a request, a
preset name, an owner) and returns a picklable Result, and the LoRA set is reconciled inside every
call (the worker's changes to the model do not come back). Elsewhere the decorator is a no-op.
"""

from __future__ import annotations

import os

try:
    import spaces
except ImportError:  # not on a Space: everything runs in-process
    spaces = None

ENABLED = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))

# The Studio the decorated function serves. It reaches the forked worker by fork, not by pickling
# (it holds locks and a database connection); app.py sets it once, before launch.
_studio = None


def serve(studio) -> None:
    global _studio
    _studio = studio


def estimate_seconds(request, preset=None, owner="local") -> int:
    """GPU time to ask ZeroGPU for: about 0.1 s per 512x512 step on a ZeroGPU slice, plus loading."""
    width, height = getattr(request, "width", 512), getattr(request, "height", 512)
    images = request.batch_size * request.batch_count
    steps = request.steps * images * max(1.0, width * height / 512**2)
    if getattr(request, "hires_fix", False):  # the second pass, at the larger size
        hires_width, hires_height = request.hires_size()
        hires_steps = (request.hires_steps or request.steps) * request.hires_denoising
        steps += hires_steps * images * max(1.0, hires_width * hires_height / 512**2)
    return int(min(300, 20 + 0.1 * steps))


def gpu(duration):
    """`@spaces.GPU(duration=duration)` when `spaces` is installed (a no-op unless on ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


@gpu(duration=estimate_seconds)
def generate(request, preset=None, owner="local"):
    """Studio.generate in the GPU worker: no progress callback or Stop event cross the process
    boundary (Gradio's cancel ends the worker instead)."""
    return _studio.generate(request, preset=preset, owner=owner)
