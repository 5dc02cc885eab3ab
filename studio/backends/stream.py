"""A render as a stream of events, for backends whose GPU is in another process (a ZeroGPU worker,
a Ray replica): only picklable tuples cross, and the front end plays them to the job's callbacks.

Events: ("status", text), ("step", done, total), ("preview", image), then ("done", Rendered) or
("error", StudioError class name or "", message). Remote backends may add their own kinds first.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Iterator

from studio import errors
from studio.model_pool import ModelPool
from studio.presets import Preset
from studio.rendering import render
from studio.requests import GenerationRequest
from studio.results import JobEvents, Rendered

log = logging.getLogger(__name__)


class EitherStop:
    """Set when any of its stops is: the job's own, or the stream's reader going away."""

    def __init__(self, *stops):
        self.stops = [stop for stop in stops if stop is not None]

    def is_set(self) -> bool:
        return any(stop.is_set() for stop in self.stops)


def render_stream(pool: ModelPool, request: GenerationRequest, preset: Preset, stop=None,
                  previews: bool = True) -> Iterator[tuple]:
    """Run the render in a thread and yield its events as they happen. `stop` is anything with
    `is_set()`, read at every step; closing the stream stops the render too. `previews`: whether
    anyone shows them (each costs a decode on the GPU side)."""
    updates: queue.Queue = queue.Queue()
    closed = threading.Event()

    def work():
        try:
            rendered = render(pool.manager(preset), request, JobEvents(
                on_step=lambda done, total: updates.put(("step", done, total)),
                on_preview=(lambda image: updates.put(("preview", image))) if previews else None,
                on_status=lambda text: updates.put(("status", text)),
                stop=EitherStop(stop, closed),
            ))
            updates.put(("done", rendered))
        except errors.StudioError as exc:
            updates.put(("error", type(exc).__name__, str(exc)))
        except Exception as exc:  # noqa: BLE001  a bug or a library failure, told to the front end
            log.exception("render failed")
            updates.put(("error", "", f"{type(exc).__name__}: {exc}"))

    thread = threading.Thread(target=work, name="render", daemon=True)
    thread.start()
    try:
        while True:
            event = updates.get()
            yield event
            if event[0] in ("done", "error"):
                break
    finally:
        closed.set()
        thread.join()  # at its next step: the GPU is free when the stream is


def deliver(stream: Iterator[tuple], events: JobEvents) -> Rendered:
    """Play a stream's events to the job's callbacks; the Rendered at its end, or its error raised
    here as the StudioError it was (another failure as a RuntimeError with its text)."""
    for event in stream:
        kind = event[0]
        if kind == "step" and events.on_step is not None:
            events.on_step(event[1], event[2])
        elif kind == "preview" and events.on_preview is not None:
            events.on_preview(event[1])
        elif kind == "status" and events.on_status is not None:
            events.on_status(event[1])
        elif kind == "done":
            return event[1]
        elif kind == "error":
            error_class = getattr(errors, event[1], None) if event[1] else None
            if isinstance(error_class, type) and issubclass(error_class, errors.StudioError):
                raise error_class(event[2])
            raise RuntimeError(event[2])
    raise RuntimeError("the GPU worker ended the job without a result")
