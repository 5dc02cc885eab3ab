"""One job service for both front ends (the page and the A1111 API): a user's job of one or more
generations, with progress over the whole job ("Image 7 of 24"), previews, the GPU queue's place,
a Stop that is that user's alone (what finished is kept) and the summary of the last job.

A job is a list of generations (a plot's cells, one image per wildcard prompt, a detailer's
regions) and a `finish` that makes the job's result of theirs (a plot draws its grid). Each
generation runs through Studio.generate, so every invariant of one generation holds for each.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from PIL import Image

from studio.jobs import JobBoard
from studio.requests import GenerationRequest
from studio.results import Result, resolve_seed
from studio.tasks.base import check_int
from studio.wildcards import has_dynamic_parts


@dataclass(frozen=True)
class Generation:
    """One generation of a job: a request and the model (preset or checkpoint) it runs on."""

    request: GenerationRequest
    preset: str | None = None


@dataclass
class Job:
    """Generations run in order, then `finish(results)` makes the job's result (by default the
    results one after another). `finish` gets only the results that finished when the user stopped."""

    generations: list[Generation]
    finish: Callable[[list[Result]], Result] | None = None

    @classmethod
    def single(cls, request: GenerationRequest, preset: str | None = None) -> "Job":
        return cls([Generation(request, preset)])


@dataclass
class JobProgress:
    """Where one user's job is, for the page's progress bar and the API's /progress."""

    items: int = 1
    item: int = 0  # the generation running, from 1; 0 before the first starts
    done: int = 0  # steps of that generation
    total: int = 0
    status: str = ""  # what it does when it is not stepping (waiting for the GPU, loading a model)
    preview: Image.Image | None = None
    started: float = field(default_factory=time.time)

    def fraction(self) -> float:
        """The share of the whole job done: finished generations and the running one's steps."""
        if self.item == 0:
            return 0.0
        within = self.done / self.total if self.total else 0.0
        return min(1.0, (self.item - 1 + within) / self.items)

    def text(self) -> str:
        where = f"Image {self.item} of {self.items}" if self.items > 1 else ""
        steps = f"step {self.done} of {self.total}" if self.total else ""
        if self.status and not self.done:
            return " · ".join(part for part in (where, self.status) if part)
        return " · ".join(part for part in (where, steps) if part) or "Starting"


def merge_results(results: list[Result]) -> Result:
    """The results of a job's generations as one: their images in order, their notes once each."""
    merged = Result()
    for result in results:
        for name in ("images", "infotexts", "seeds", "paths"):
            getattr(merged, name).extend(getattr(result, name))
        merged.notes.extend(note for note in result.notes if note not in merged.notes)
        merged.stopped = merged.stopped or result.stopped
        for name in ("peak_memory_bytes", "device_memory_bytes"):
            values = [v for v in (getattr(merged, name), getattr(result, name)) if v is not None]
            setattr(merged, name, max(values) if values else None)
    return merged


class JobService:
    """Each user's job: one at a time per owner (a key for its Stop: the browser session or the API
    caller); the GPU's queue is the Studio's, shared by everyone."""

    def __init__(self, studio):
        self.studio = studio
        self.board = JobBoard()
        self._lock = threading.Lock()
        self._progress: dict[str, JobProgress] = {}

    def job_for(self, request: GenerationRequest, preset: str | None = None, styles=(), owner: str = "local") -> Job:
        """The job a front end's request makes: its styles applied to its prompts (`owner`'s and the
        server's styles), and one generation per image when its prompts hold wildcards or variants."""
        request = self.styled(request, styles, owner)
        requests = [request]
        if has_dynamic_parts(request.prompt) or has_dynamic_parts(request.negative_prompt):
            check_int("Seed", request.seed)  # before it is used to pick
            requests = self.studio.wildcards.expand(request, resolve_seed(request.seed))
        return Job([Generation(each, preset) for each in requests])

    def styled(self, request: GenerationRequest, styles=(), owner: str = "local") -> GenerationRequest:
        """`request` with the named styles applied to its prompts (`owner`'s and the server's styles)."""
        if not styles:
            return request
        prompt, negative = self.studio.styles.apply(request.prompt, request.negative_prompt, styles, owner)
        return replace(request, prompt=prompt, negative_prompt=negative)

    def check(self, job: Job) -> None:
        """Every generation's request checked before the first runs, so a bad cell of a plot is
        said before any image is made."""
        for generation in job.generations:
            preset = self.studio.preset(generation.preset)
            generation.request.with_prompt_loras().validate(preset.limits, preset.capabilities)

    def run(self, owner: str, job: Job, history_owner: str | None = None,
            on_update: Callable[[JobProgress], None] | None = None,
            on_preview: Callable[[Image.Image], None] | None = None) -> Result:
        """Run `job` for `owner` (its history: `history_owner`, by default the same). `on_update`
        hears every change of progress; `on_preview` every rough picture. A Stop ends the running
        generation at its next step and runs no more; the job's result holds what finished."""
        started = time.perf_counter()
        self.check(job)
        progress = JobProgress(items=len(job.generations))
        with self._lock:
            self._progress[owner] = progress
        results: list[Result] = []

        def changed(**values) -> None:
            for name, value in values.items():
                setattr(progress, name, value)
            if on_update is not None:
                on_update(progress)

        def previewed(image) -> None:
            progress.preview = image
            if on_preview is not None:
                on_preview(image)

        try:
            with self.board.running(owner) as stop:
                for index, generation in enumerate(job.generations, start=1):
                    if stop.is_set():
                        break
                    changed(item=index, done=0, total=0, status="")
                    result = self.studio.generate(
                        generation.request, preset=generation.preset, stop=stop, owner=history_owner or owner,
                        on_step=lambda done, total: changed(done=done, total=total, status=""),
                        on_preview=previewed, on_status=lambda text: changed(status=text))
                    results.append(result)
                    if result.stopped:
                        break
                stopped = stop.is_set() or any(result.stopped for result in results)
        finally:
            with self._lock:
                if self._progress.get(owner) is progress:
                    del self._progress[owner]
        outcome = job.finish(results) if job.finish is not None else merge_results(results)
        outcome.stopped = outcome.stopped or stopped
        outcome.seconds = time.perf_counter() - started
        self.board.finished(owner, outcome.summary())
        return outcome

    def stop(self, owner: str) -> bool:
        """Stop `owner`'s running job (what finished is kept). False when it has none."""
        return self.board.stop(owner)

    def progress(self, owner: str) -> JobProgress | None:
        with self._lock:
            return self._progress.get(owner)

    def summary(self, owner: str) -> str:
        """"Time taken: ..." of `owner`'s last finished job; "" while one runs or after one failed."""
        return self.board.summary(owner)

