"""Stop buttons that stop only their own user's job, and each user's own "Time taken" line.

A1111's Interrupt sets one global flag, so anyone's click stops everyone's job. Here each running
job has its own Event, keyed by the browser session (or API client) that started it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class JobBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._summaries: dict[str, str] = {}  # owner -> the summary of their last job ("" while one runs)

    @contextmanager
    def running(self, owner: str) -> Iterator[threading.Event]:
        """Register a job of `owner` for its duration; yields the Event its Stop button sets."""
        stop = threading.Event()
        with self._lock:
            self._stops[owner] = stop
            self._summaries[owner] = ""
        try:
            yield stop
        finally:
            with self._lock:
                if self._stops.get(owner) is stop:
                    del self._stops[owner]

    def stop(self, owner: str) -> bool:
        """Ask `owner`'s running job to stop at its next step. False when it has none."""
        with self._lock:
            stop = self._stops.get(owner)
        if stop is None:
            return False
        stop.set()
        return True

    def finished(self, owner: str, summary: str) -> None:
        with self._lock:
            self._summaries[owner] = summary

    def summary(self, owner: str) -> str:
        """The summary of `owner`'s last finished job; "" while one runs or after one failed."""
        with self._lock:
            return self._summaries.get(owner, "")


class InFlight:
    """Counts work under way (a `with` block each), so a shutdown can wait for it to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *exc) -> None:
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)
