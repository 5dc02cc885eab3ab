"""Rendering in this process, on its one GPU: jobs take turns on the pool's lock."""

from __future__ import annotations

from studio.model_pool import ModelPool
from studio.presets import Preset
from studio.rendering import render
from studio.requests import GenerationRequest
from studio.results import JobEvents, Rendered


class LocalBackend:
    concurrency = 1
    queues_jobs = False

    def __init__(self, pool: ModelPool):
        self.pool = pool

    def submit(self, request: GenerationRequest, preset: Preset, events: JobEvents) -> Rendered:
        return render(self.pool.manager(preset), request, events)

    def close(self) -> None:
        pass
