"""Rendering on Ray Serve: N replicas of one deployment, each with its own GPU and model pool.

The Gradio front end stays one process (pages, A1111 API, saving, history); each job goes to a
replica through a streaming handle, so progress, previews and the result come back as the events of
studio/backends/stream.py.

- Routing: Serve's model multiplexing, keyed by `preset|sorted LoRA names`. A replica that already
  holds the key (its preset loaded, those LoRAs in its adapters) gets the job when it can; `hold`
  loads a key the replica lacks. LoRA weights still apply to that one request only (adapters.py).
- Stop: Ray's cancel raises only at an `await`, and the pipeline call blocks, so each job has a
  flag on a small actor (StopBoard) that the replica's step callback reads: the job ends within a
  step, keeping the batches it finished, as on one GPU.
- Queue and backpressure: each front end sends at most one job per replica and keeps the rest
  waiting in order (each told its place), up to the studio's queue size; beyond it the user is told
  the studio is busy instead of getting an exception. Serve's own `max_queued_requests` is set to
  the same size and gets the same message, but Serve counts it per caller (each front end's
  router), so it bounds one front end's flood, not a cluster shared by several.
- A replica that dies mid-job (killed, out of host memory) fails only that job, with a message;
  Serve starts another in its place and the next job goes to a living one.

Ray's own GradioServer is not used: it fails with Gradio 6 (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from studio.errors import BackendError, RequestError, StudioError
from studio.model_pool import ModelPool
from studio.presets import Preset
from studio.requests import GenerationRequest
from studio.results import JobEvents, Rendered
from studio.settings import Settings

try:
    import ray
    from ray import serve
    from ray.exceptions import RayError
    from ray.serve.exceptions import BackPressureError
except ImportError:  # an optional dependency: only --workers / --ray-address need it
    ray = serve = None

log = logging.getLogger(__name__)

APP = "sd-studio"
NAMESPACE = "sd-studio"
STOP_BOARD = "sd-studio-stops"
QUEUE_NOTE_AFTER_S = 0.5  # a job not taken by then is told its place in the queue
MODEL_SETS_PER_REPLICA = 4  # keys (preset + LoRA set) a replica is said to hold, the oldest dropped
STUDIO_PACKAGE = Path(__file__).resolve().parent.parent


def multiplex_key(preset_name: str, request: GenerationRequest) -> str:
    """What routing matches replicas on. Never empty (Serve refuses an empty id), and the same for
    the same LoRA set whatever the weights or order."""
    return f"{preset_name}|{','.join(sorted({name for name, _ in request.loras}))}"


def _require_ray() -> None:
    if ray is None:
        raise BackendError('--workers and --ray-address render on Ray Serve, which is not installed: '
                           'pip install "ray[serve]" (see README, Scale out).')


if ray is not None:
    @ray.remote(num_cpus=0)
    class StopBoard:
        """The jobs whose user pressed Stop, read by the replicas at every step."""

        def __init__(self):
            self.stopped: set[str] = set()

        def stop(self, job: str) -> None:
            self.stopped.add(job)

        def is_stopped(self, job: str) -> bool:
            return job in self.stopped

        def forget(self, job: str) -> None:
            self.stopped.discard(job)

    class _BoardStop:
        """A job's Stop as the renderer reads it (`is_set()`, once a step). The board is asked
        without waiting: each step reads the answer to the previous step's question, so a step
        costs no round trip and a Stop lands at most one step late."""

        def __init__(self, board, job: str):
            self.board, self.job, self.seen, self.asked = board, job, False, None

        def is_set(self) -> bool:
            if self.asked is not None and ray.wait([self.asked], timeout=0)[0]:
                self.seen, self.asked = self.seen or ray.get(self.asked), None
            if not self.seen and self.asked is None:
                self.asked = self.board.is_stopped.remote(self.job)
            return self.seen

    @serve.deployment(max_ongoing_requests=1)
    class StudioWorker:
        """One replica: one model pool on its GPU (or its share of the CPUs), one job at a time."""

        def __init__(self, settings: Settings):
            self.pool = ModelPool(settings)
            self.name = ray.get_runtime_context().get_actor_name()
            self.board = ray.get_actor(STOP_BOARD, namespace=NAMESPACE)
            self.loads = 0
            self._next: tuple[GenerationRequest, Preset] | None = None

        @serve.multiplexed(max_num_models_per_replica=MODEL_SETS_PER_REPLICA)
        async def hold(self, key: str) -> str:
            """Serve calls this only for a key this replica does not hold: load its preset and LoRAs."""
            self.loads += 1
            request, preset = self._next
            await asyncio.to_thread(self._warm, request, preset)
            return key

        def _warm(self, request: GenerationRequest, preset: Preset) -> None:
            from studio.tasks import PLANNERS

            plan = PLANNERS[request.task](request, preset.limits)
            if plan.passthrough is None:
                with self.pool.manager(preset).pipeline(plan.task, request.sampler, plan.control_mode, request.loras):
                    pass  # loaded: the base (and the task's model) and the LoRAs, none left active

        async def __call__(self, request: GenerationRequest, preset: Preset, job: str, previews: bool):
            from studio.backends.stream import EitherStop, render_stream

            self._next = (request, preset)
            loads = self.loads
            try:
                await self.hold(serve.get_multiplexed_model_id())
            except StudioError as exc:
                yield ("error", type(exc).__name__, str(exc))
                return
            yield ("started", self.name, self.loads == loads)
            cancelled = threading.Event()  # the front end went away: Serve cancels at an await
            stream = render_stream(self.pool, request, preset, EitherStop(_BoardStop(self.board, job), cancelled),
                                   previews)
            try:
                while (event := await asyncio.to_thread(next, stream, None)) is not None:
                    yield event
            except asyncio.CancelledError:
                cancelled.set()
                raise


def replica_resources(replicas: int, gpus: int, cpus: float, cores: int) -> tuple[dict, int]:
    """(Ray actor options, torch threads) of each replica. A GPU each where the cluster has enough;
    more replicas than GPUs share them (0.5 GPU each for 2 on 1: Ray would otherwise wait for GPUs
    that never come, and `serve.run` with them). Without GPUs, CPU replicas split this machine's
    cores between their torch threads, through OMP_NUM_THREADS: `torch.set_num_threads` holds only
    for the thread calling it, and each job renders in a thread of its own."""
    if gpus:
        return {"num_gpus": min(1.0, gpus / replicas)}, 0
    threads = max(1, cores // replicas)
    return {"num_cpus": min(1.0, cpus / replicas), "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}}}, \
        threads


def start_local_cluster(workers: int, object_store_mb: int = 256) -> None:
    """A Ray cluster on this machine only, for `workers` replicas: no dashboard, a small object
    store (images are small), the studio importable by the replicas."""
    _require_ray()
    ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
             object_store_memory=object_store_mb * 2**20, namespace=NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(STUDIO_PACKAGE.parent)}})


class RayBackend:
    """The front end's side: starts or joins the cluster, deploys the replicas, sends jobs."""

    queues_jobs = True  # at most one job per replica, the rest in its own queue (with its messages)

    def __init__(self, settings: Settings, workers: int = 0, address: str | None = None,
                 object_store_mb: int = 256):
        _require_ray()
        self._started_ray = False
        if not ray.is_initialized():
            self._connect(workers, address, object_store_mb)
        self.board = StopBoard.options(name=STOP_BOARD, namespace=NAMESPACE, get_if_exists=True,
                                       lifetime="detached").remote()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.replicas = workers or max(1, gpus)
        actor, self.threads = replica_resources(self.replicas, gpus, resources.get("CPU", 1), os.cpu_count() or 1)
        self.queue_size = settings.queue_size
        serve.start(proxy_location="Disabled")  # no HTTP proxy: the front end calls the handle
        app = StudioWorker.options(num_replicas=self.replicas, max_queued_requests=settings.queue_size,
                                   ray_actor_options=actor).bind(settings)
        self.handle = serve.run(app, name=APP, route_prefix=None).options(stream=True)
        self.concurrency = self.replicas
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.replicas)
        self._queued = 0  # jobs waiting for a slot
        # This front end's jobs not yet on a replica, oldest first (other front ends' are not seen).
        self._waiting: list[str] = []
        self.running: dict[str, str] = {}  # job -> the replica (actor name) rendering it
        self.routed = self.hits = 0  # jobs started, and of those, on a replica that held their key

    def _connect(self, workers: int, address: str | None, object_store_mb: int) -> None:
        try:
            if address:
                # The replicas import the studio: send this checkout's package along.
                ray.init(address=address, namespace=NAMESPACE, runtime_env={"py_modules": [str(STUDIO_PACKAGE)]},
                         log_to_driver=False)
            else:
                start_local_cluster(workers, object_store_mb)
                self._started_ray = True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(f"Could not start or reach the Ray cluster{f' at {address}' if address else ''}: "
                               f"{exc}") from None

    def submit(self, request: GenerationRequest, preset: Preset, events: JobEvents) -> Rendered:
        from studio.backends.stream import deliver

        job = uuid.uuid4().hex
        with self._lock:
            if self._queued >= self.queue_size:
                raise self._busy()
            self._queued += 1
            self._waiting.append(job)
        finished, started = threading.Event(), threading.Event()
        watcher = threading.Thread(target=self._watch, args=(job, events, finished, started), daemon=True)
        watcher.start()
        has_slot = False
        try:
            # At most one job in flight per replica from this front end: the rest wait here, where a
            # free slot is seen at once (in Serve's router a queued job waits on its retries).
            try:
                while not (has_slot := self._slots.acquire(timeout=0.05)):
                    if events.stop is not None and events.stop.is_set():
                        return Rendered(stopped=True)
            finally:
                with self._lock:
                    self._queued -= 1
            response = self.handle.options(multiplexed_model_id=multiplex_key(preset.name, request)).remote(
                request, preset, job, events.on_preview is not None)
            return deliver(self._played(response, job, started), events)
        except BackPressureError:  # Serve's own queue limit (counted per caller) refused it
            raise self._busy() from None
        except RayError as exc:
            log.warning("a Ray replica failed during job %s: %s", job, exc)
            raise RequestError(
                f"The GPU worker rendering your job stopped ({type(exc).__name__}), so the job is lost. Press "
                "Generate again: the other workers keep serving and Ray starts a new one in its place."
            ) from None
        finally:
            if has_slot:
                self._slots.release()
            finished.set()
            watcher.join()
            with self._lock:
                self._waiting.remove(job) if job in self._waiting else None
                self.running.pop(job, None)
            self.board.forget.remote(job)

    def _busy(self) -> RequestError:
        return RequestError(
            f"The studio is busy: every GPU worker ({self.replicas}) has a job and {self.queue_size} more are "
            f"waiting, so yours would be number {self.queue_size + 1} in the queue. Try again in a minute.")

    def _played(self, response, job: str, started: threading.Event):
        """The replica's events, less its "started" one, which this backend reads itself."""
        for event in response:
            if event[0] == "started":
                with self._lock:
                    self._waiting.remove(job)
                    self.running[job] = event[1]
                    self.routed += 1
                    self.hits += event[2]
                started.set()
                continue
            yield event

    def _watch(self, job: str, events: JobEvents, finished: threading.Event, started: threading.Event) -> None:
        """While the job lives: hand its Stop to the board at once, and while no replica has taken
        it (after a moment, so a free replica's job shows nothing), say its place in the queue."""
        told, sent = 0, time.monotonic()
        while not finished.is_set():
            if events.stop is not None and events.stop.wait(0.05):
                self.board.stop.remote(job)
                return
            if events.stop is None:
                finished.wait(0.05)
            if started.is_set() or events.on_status is None or time.monotonic() - sent < QUEUE_NOTE_AFTER_S:
                continue
            with self._lock:
                place = self._waiting.index(job) + 1 if job in self._waiting else 0
            if place and place != told:
                events.on_status(f"Waiting for a GPU worker: number {place} in the queue")
                told = place

    def close(self) -> None:
        """Delete the deployment; stop the cluster too when this backend started it."""
        serve.delete(APP)
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()
