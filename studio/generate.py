"""Runs a validated request on a pipeline lent by the model manager, and saves the results."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from studio.models import ModelManager
from studio.outputs import OutputStore
from studio.requests import MAX_SEED, Txt2ImgRequest

# on_step(done, total): called after every denoising step, across the whole batch count.
StepCallback = Callable[[int, int], None]


@dataclass
class Result:
    images: list[Image.Image] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    stopped: bool = False  # the user pressed Stop; only batches that finished are kept


def resolve_seed(seed: int) -> int:
    return random.randint(0, MAX_SEED) if seed == -1 else seed


def _step_callback(on_step: StepCallback | None, total: int, stop: threading.Event | None):
    """A diffusers `callback_on_step_end` that reports progress over several pipeline calls and
    ends the denoising loop early when this job's Stop event is set."""
    done = 0

    def callback(pipe, step, timestep, kwargs):
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, total)
        if stop is not None and stop.is_set():
            pipe._interrupt = True  # diffusers checks this before the next step
        return kwargs

    return callback


def run_txt2img(
    manager: ModelManager,
    request: Txt2ImgRequest,
    outputs: OutputStore,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Result:
    first_seed = resolve_seed(request.seed)
    result = Result()
    callback = _step_callback(on_step, request.steps * request.batch_count, stop)
    with manager.pipeline("txt2img", request.sampler) as pipe:
        for batch in range(request.batch_count):
            # Image k of the whole run uses seed + k, as in A1111, each from its own generator,
            # so any image can be reproduced alone from the seed stored with it.
            seeds = [(first_seed + batch * request.batch_size + i) % (MAX_SEED + 1) for i in range(request.batch_size)]
            output = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                width=request.width,
                height=request.height,
                num_images_per_prompt=request.batch_size,
                generator=[manager.generator(s) for s in seeds],
                callback_on_step_end=callback,
            )
            if stop is not None and stop.is_set():
                result.stopped = True  # this batch was cut short: its images are not what was asked
                break
            result.images += output.images
            result.seeds += seeds
    # Saving happens after the GPU lock is released, so the next job can start meanwhile.
    for image, seed in zip(result.images, result.seeds):
        infotext = request.infotext(seed=seed, model=manager.base_id)
        result.infotexts.append(infotext)
        result.paths.append(outputs.save(image, infotext, request.task, seed))
    return result
