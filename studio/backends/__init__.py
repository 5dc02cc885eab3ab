"""Where generation runs: the seam between the front end and the GPU.

The front end (studio/core.py's Studio, the Gradio page, the A1111 API) validates a request, saves
the images, writes history and keeps each user's jobs apart. A Backend only renders: it takes a
validated request and its resolved preset and gives back a Rendered (images, seeds, infotexts),
reporting progress to the job's JobEvents and answering its Stop on the way.

- LocalBackend: this process, its one GPU (the default).
- ZeroGPUBackend: a Hugging Face ZeroGPU worker per job (chosen on a ZeroGPU Space).
- RayBackend: N replicas of a Ray Serve deployment, one GPU each (--workers N, --ray-address).
"""

from __future__ import annotations

from typing import Protocol

from studio.presets import Preset
from studio.requests import GenerationRequest
from studio.results import JobEvents, Rendered


class Backend(Protocol):
    concurrency: int  # jobs it renders at once (the page lets one more through: it saves beside them)
    queues_jobs: bool  # it holds back jobs beyond `concurrency` itself (Ray); else the Studio does

    def submit(self, request: GenerationRequest, preset: Preset, events: JobEvents) -> Rendered:
        """Render `request` with `preset`; StudioError for what the user can change."""

    def close(self) -> None:
        """Let go of what it started (a Ray cluster, its deployment)."""


def choose_backend(settings, pool) -> Backend:
    """The backend the settings ask for: Ray with --workers/--ray-address, ZeroGPU on a ZeroGPU
    Space, else this process."""
    from studio import zerogpu

    if settings.workers or settings.ray_address:
        from studio.backends.ray_serve import RayBackend

        return RayBackend(settings, workers=settings.workers, address=settings.ray_address or None)
    if zerogpu.ENABLED:
        return zerogpu.ZeroGPUBackend(pool)
    from studio.backends.local import LocalBackend

    return LocalBackend(pool)
