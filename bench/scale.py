"""`python -m bench --workers N`: the Ray Serve backend's figures.

- throughput: 8 mixed jobs (Text to Image, Image to Image, Inpaint; two LoRA sets and none), sent
  at once, on N replicas ÷ on 1 replica, each after a warm-up round, in one local cluster; and
  1 replica ÷ this process without Ray (LocalBackend), what Ray's hops cost;
- the multiplex hit rate: the share of jobs that went to a replica already holding their preset and
  LoRA set, over 20 jobs from two users, each alternating two LoRA sets.
On a machine without GPUs the replicas are CPU replicas sharing its cores; the torch threads of
each replica are printed, since that is what the ratio trades.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

SET_A = (("tiny-style", 1.0),)
SET_B = (("tiny-kohya", 1.0), ("tiny-style", 0.5))


def mixed_jobs(args) -> list:
    from studio.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest

    size = args.size
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8))
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    common = {"prompt": "a lighthouse at dusk", "steps": args.steps, "seed": 7}
    kinds = [
        Txt2ImgRequest(**common, width=size, height=size, loras=SET_A),
        Img2ImgRequest(**common, image=photo, strength=1.0, loras=SET_B),
        Txt2ImgRequest(**common, width=size, height=size, loras=SET_B),
        InpaintRequest(**common, image=photo, mask=mask, mask_blur=0),
    ]
    return kinds * 2


def all_at_once(studio, jobs) -> float:
    """Seconds until every job, each sent from its own thread as a user would, has its images."""
    errors: list[BaseException] = []

    def run(job):
        try:
            studio.generate(job)
        except BaseException as exc:  # noqa: BLE001  reported below: a benchmark of failures means nothing
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def hit_rate(studio, args) -> float:
    from studio.requests import Txt2ImgRequest

    backend = studio.backend
    routed, hits = backend.routed, backend.hits

    def user(first: int):
        for k in range(10):
            loras = (SET_A, SET_B)[(first + k) % 2]
            studio.generate(Txt2ImgRequest(prompt="a boat", steps=2, width=64, height=64, seed=k, loras=loras))

    threads = [threading.Thread(target=user, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (backend.hits - hits) / (backend.routed - routed)


def run(args, report) -> None:
    import ray

    from studio.backends.ray_serve import RayBackend, start_local_cluster
    from studio.core import Studio
    from studio.settings import Settings

    settings = Settings.from_env(preset=args.preset, device=args.device, outputs_dir=args.outputs)
    jobs = mixed_jobs(args)
    local = Studio(settings)  # the jobs run in threads of this process, as the page runs them
    all_at_once(local, jobs)
    local_seconds = min(all_at_once(local, jobs) for _ in range(args.scale_runs))
    report("jobs_per_s_local", len(jobs) / local_seconds, " jobs/s")
    del local
    start = time.perf_counter()
    start_local_cluster(args.workers)
    report("ray_start_s", time.perf_counter() - start, " s")
    seconds = {}
    try:
        for workers in (1, args.workers):
            start = time.perf_counter()
            backend = RayBackend(settings, workers=workers)
            report(f"deploy_{workers}_replicas_s", time.perf_counter() - start, " s")
            report(f"threads_per_replica_{workers}", backend.threads)
            studio = Studio(settings, backend=backend)
            all_at_once(studio, jobs)  # warm-up: every replica loads its models
            seconds[workers] = min(all_at_once(studio, jobs) for _ in range(args.scale_runs))
            report(f"jobs_per_s_{workers}_replicas", len(jobs) / seconds[workers], " jobs/s")
            if workers == args.workers:
                report("multiplex_hit_rate", hit_rate(studio, args))
            backend.close()
    finally:
        ray.shutdown()
    report("throughput_ratio", seconds[1] / seconds[args.workers])
    report("one_replica_vs_local", local_seconds / seconds[1])
