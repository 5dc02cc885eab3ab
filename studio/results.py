"""What a render gives back, without torch: the results the front ends, the job service and the
backends pass around (a Rendered can come back from another process or machine)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from studio.tasks.base import MAX_SEED

# on_step(done, total): called after every denoising step, across the whole batch count.
StepCallback = Callable[[int, int], None]
# on_preview(image): a rough picture of the image being made, every PREVIEW_EVERY steps.
PreviewCallback = Callable[[Image.Image], None]
# on_status(text): what the job is doing when it is not stepping (loading a model), for the progress bar.
StatusCallback = Callable[[str], None]


@dataclass
class JobEvents:
    """What a job reports to the one who asked for it, and the Stop it answers to."""

    on_step: StepCallback | None = None
    on_preview: PreviewCallback | None = None
    on_status: StatusCallback | None = None
    stop: threading.Event | None = None


@dataclass
class Rendered:
    """A finished render: picklable, so it can come back from another process or machine."""

    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the user should know (an image was resized)
    stopped: bool = False  # the user pressed Stop; only batches that finished are kept
    seconds: float = 0.0  # from the request to the last image (Result: to the last file saved)
    peak_memory_bytes: int | None = None  # the most device memory in use while it ran (CUDA only)
    device_memory_bytes: int | None = None  # the device's whole memory (CUDA only)

    def summary(self) -> str:
        """What A1111 prints under its results: time taken, and GPU memory where there is a GPU."""
        text = f"Time taken: {self.seconds:.1f} s"
        if self.peak_memory_bytes is not None and self.device_memory_bytes:
            peak, total = self.peak_memory_bytes / 2**30, self.device_memory_bytes / 2**30
            text += f" · GPU memory peak: {peak:.2f} of {total:.1f} GB"
        return text


@dataclass
class Result(Rendered):
    """A Rendered saved by the front end: each image's file."""

    paths: list[Path] = field(default_factory=list)


def resolve_seed(seed: int) -> int:
    return random.randint(0, MAX_SEED) if seed == -1 else seed
