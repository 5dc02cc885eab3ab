"""Hugging Face ZeroGPU: the backend that renders each job in a ZeroGPU worker; inert elsewhere.

On a ZeroGPU Space the `spaces` package is installed and `SPACES_ZERO_GPU` is set; a function
decorated with `@spaces.GPU(duration=...)` gets a GPU for that long, in a forked worker whose
arguments and results are pickled (a generator's yields too). So: `spaces` is imported before
anything touches CUDA (app.py imports this module first), the decorated generator takes only
picklable arguments (a request, a resolved preset) and yields picklable events (studio/backends/
stream.py), and the LoRA set is reconciled inside every call (the worker's changes to the model do
not come back). The pool reaches the worker by fork, not by pickling. Elsewhere the decorator is
a no-op.
"""

from __future__ import annotations

import os

try:
    import spaces
except ImportError:  # not on a Space: everything runs in-process
    spaces = None

ENABLED = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))


def estimate_seconds(request, preset=None, previews=False) -> int:
    """GPU time to ask ZeroGPU for: about 0.1 s per 512x512 step on a ZeroGPU slice, plus loading."""
    width, height = getattr(request, "width", 512), getattr(request, "height", 512)
    images = request.batch_size * request.batch_count
    cost = preset.family_spec.step_cost if preset is not None else 1.0  # FLUX.1's step is several SD steps
    steps = request.steps * images * max(1.0, width * height / 512**2) * cost
    if getattr(request, "hires_fix", False):  # the second pass, at the larger size
        hires_width, hires_height = request.hires_size()
        hires_steps = (request.hires_steps or request.steps) * request.hires_denoising
        steps += hires_steps * images * max(1.0, hires_width * hires_height / 512**2) * cost
    return int(min(300, 20 + 0.1 * steps))


def gpu(duration):
    """`@spaces.GPU(duration=duration)` when `spaces` is installed (a no-op unless on ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


class ZeroGPUBackend:
    """Each job in a ZeroGPU worker, its progress and previews streamed back. Stop cannot reach
    into the worker: the front end stops reading, which ends the worker (as Gradio's cancel does)."""

    concurrency = 1
    queues_jobs = False

    def __init__(self, pool):
        self.pool = pool
        # Decorated per instance: the worker forks this process, pool included.
        self._stream = gpu(duration=estimate_seconds)(self._render_stream)

    def _render_stream(self, request, preset, previews):
        from studio.backends.stream import render_stream

        yield from render_stream(self.pool, request, preset, previews=previews)

    def submit(self, request, preset, events):
        from studio.backends.stream import deliver
        from studio.results import Rendered

        def until_stopped(stream):
            for event in stream:
                if events.stop is not None and events.stop.is_set():
                    stream.close()
                    yield ("done", Rendered(stopped=True))
                    return
                yield event

        return deliver(until_stopped(self._stream(request, preset, events.on_preview is not None)), events)

    def close(self) -> None:
        pass
