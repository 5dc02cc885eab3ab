"""Renders a validated request on a pipeline lent by the model manager: request in, images,
seeds and infotexts out. This is the part that runs where the GPU is (in this process, a ZeroGPU
worker or a Ray replica: studio/backends/); saving and history stay with the front end (core.py).

The same loop serves every task: the task's Plan (its module under studio/tasks/) says what differs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from studio.errors import RequestError
from studio.families import Encoded
from studio.model_cache import free_memory
from studio.models import ModelManager
from studio.previews import PREVIEW_EVERY, latents_to_preview
from studio.requests import MAX_SEED, GenerationRequest
from studio.results import JobEvents, PreviewCallback, Rendered, StepCallback, resolve_seed
from studio.tasks import PLANNERS, Plan

VAE_TILING_PIXELS = 1024 * 1024

class _Stopped(Exception):
    """Raised from the step callback to leave the denoising loop at once."""


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class _StepCallback:
    """A diffusers `callback_on_step_end` that reports progress over several pipeline calls, makes
    a cheap preview every few steps, and leaves the loop when this job's Stop event is set (every
    pipeline honours an exception, not all of them check `_interrupt`). `size` is the image size of
    the pass running, set by each pass (FLUX.1's packed latents do not tell it)."""

    on_step: StepCallback | None
    total: int
    stop: threading.Event | None
    on_preview: PreviewCallback | None
    manager: ModelManager
    size: tuple[int, int] = (0, 0)
    done: int = 0

    def __call__(self, pipe, step, timestep, kwargs):
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)
        if self.on_preview is not None and self.done % PREVIEW_EVERY == 0 and "latents" in kwargs:
            self.on_preview(_preview(self.manager, pipe, kwargs["latents"], self.size))
        if self.stop is not None and self.stop.is_set():
            raise _Stopped
        return kwargs


def _preview(manager: ModelManager, pipe, latents, size: tuple[int, int]) -> Image.Image:
    decoder = manager.preview_decoder()
    start = time.perf_counter()
    family = manager.family
    image = latents_to_preview(family.unpack_latents(pipe, latents, size), family.latent, decoder)
    if decoder is not None:
        manager.note_preview_time(time.perf_counter() - start)
    return image


@dataclass
class _Told:
    """What the passes learnt on the way: notes for the user, embeddings used (for the infotext)."""

    notes: list[str] = field(default_factory=list)
    embeddings: dict = field(default_factory=dict)  # name -> Embedding

    def add(self, encoded: Encoded) -> None:
        self.notes += [note for note in encoded.notes if note not in self.notes]
        self.embeddings |= {embedding.name: embedding for embedding in encoded.embeddings}


def _denoise(manager: ModelManager, request: GenerationRequest, plan: Plan, seeds: list[list[int]],
             on_step: StepCallback | None, stop: threading.Event | None,
             on_preview: PreviewCallback | None, told: _Told) -> tuple[list[Image.Image], bool, tuple | None]:
    """Run every batch, then the Hires. fix pass when the plan has one; returns the images that
    finished every pass, whether Stop cut in, and (peak, total) device memory bytes where the
    device reports them."""
    hires = plan.hires
    total_steps = (plan.steps_run + (hires.steps_run if hires else 0)) * request.batch_count
    callback = _StepCallback(on_step, total_steps, stop, on_preview, manager)
    first_size = (plan.inputs["width"], plan.inputs["height"]) if hires else plan.size
    images, stopped, memory = _run_pass(manager, request, plan.task, plan.control_mode, request.steps, seeds,
                                        callback, lambda batch: plan.inputs, first_size, told)
    if hires is None:
        return images, stopped, memory
    if stopped:
        return [], True, memory  # only images that went through both passes are results
    upscaled = [image.resize(hires.size, Image.Resampling.LANCZOS) for image in images]
    if hires.steps_run == 0:
        return upscaled, False, memory
    size = request.batch_size
    inputs = [{"image": upscaled[k * size:(k + 1) * size], "strength": hires.strength} for k in range(len(seeds))]
    # Image to Image shares the base weights: no model loads, and the request's LoRAs apply again.
    images, stopped, hires_memory = _run_pass(manager, request, "img2img", None, hires.steps, seeds, callback,
                                              lambda batch: inputs[batch], hires.size, told)
    if memory is not None and hires_memory is not None:
        memory = (max(memory[0], hires_memory[0]), memory[1])
    return images, stopped, memory


def _run_pass(manager: ModelManager, request: GenerationRequest, task: str, control_mode: str | None, steps: int,
              seeds: list[list[int]], callback: _StepCallback, inputs_of: Callable[[int], dict], size: tuple[int, int],
              told: _Told):
    """One pipeline call per batch, with batch k's own inputs; (images, stopped, memory)."""
    images: list[Image.Image] = []
    callback.size = size
    with manager.pipeline(task, request.sampler, control_mode, request.loras, request.vae,
                          request.step_cache) as pipe:
        # Encoded inside the lend: the request's LoRAs on the text encoder apply.
        encoded = manager.encode_prompts(pipe, request)
        told.add(encoded)
        manager.reset_peak_memory()  # under the lock: no other job's peak counts
        # Decoding a big image at once needs several GB; tiles keep it within reach of small GPUs.
        if size[0] * size[1] > VAE_TILING_PIXELS:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        for batch, batch_seeds in enumerate(seeds):
            try:
                output = pipe(
                    **({"num_images_per_prompt": request.batch_size} | manager.family.call_kwargs(request)),
                    **encoded.kwargs,
                    num_inference_steps=steps,
                    # One generator per image, so each can be made again alone from its own seed.
                    generator=[manager.generator(s) for s in batch_seeds],
                    callback_on_step_end=callback,
                    **manager.family.task_inputs(task, inputs_of(batch), pipe, control_mode),
                )
            except _Stopped:
                return images, True, manager.peak_memory()
            images += output.images
        return images, False, manager.peak_memory()


def render(manager: ModelManager, request: GenerationRequest, events: JobEvents | None = None) -> Rendered:
    """Make a validated request's images on the manager's pipelines: every batch, the Hires. fix
    pass, each image finished (pasted back, cropped) and given its infotext. Saves nothing."""
    events = events or JobEvents()
    on_step, stop, on_preview, on_status = events.on_step, events.stop, events.on_preview, events.on_status
    plan = PLANNERS[request.task](request, manager.preset.limits)
    first_seed = resolve_seed(request.seed)
    # Image k of the whole run uses seed + k, as in A1111.
    seeds = [
        [(first_seed + batch * request.batch_size + i) % (MAX_SEED + 1) for i in range(request.batch_size)]
        for batch in range(request.batch_count)
    ]
    started = time.perf_counter()
    out_of_memory, memory, told = False, None, _Told()
    if plan.passthrough is not None:
        images, stopped = [plan.passthrough.copy() for _ in range(request.batch_size * request.batch_count)], False
    else:
        missing = manager.roles_to_load(plan.task, plan.control_mode)
        if missing and on_status is not None:
            on_status(f"Loading {' and '.join(map(_model_label, missing))} (the first use downloads it)")
        try:
            images, stopped, memory = _denoise(manager, request, plan, seeds, on_step, stop, on_preview, told)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            out_of_memory = True
    if out_of_memory:
        # Freed here, outside the except block: the exception's frames held the activations.
        free_memory()
        width, height = plan.size
        raise RequestError(
            f"Out of memory at {width}x{height} with batch size {request.batch_size}. Try a smaller size or "
            "batch size (batch count costs no extra memory), or close other programs using the GPU."
            + ("" if manager.lowvram else " Whoever runs the studio can also start it with --lowvram.")
        )
    result = Rendered(notes=plan.notes + told.notes, stopped=stopped)
    if memory is not None:
        result.peak_memory_bytes, result.device_memory_bytes = memory
    model = manager.model_name(plan.task)
    extra = manager.model_infotext(plan.task, request.vae) | _lora_hashes(manager, request.loras)
    if told.embeddings:  # A1111's, so civitai links the embeddings
        extra["TI hashes"] = ", ".join(f"{name}: {e.short_hash}" for name, e in told.embeddings.items())
    # Finishing happens after the GPU lock is released, so the next job can start.
    for image, seed in zip(images, [s for batch in seeds for s in batch]):
        if plan.finish is not None:
            image = plan.finish(image)
        size = plan.infotext_size or image.size
        infotext = request.infotext(seed=seed, model=model, size=size, steps_run=plan.steps_run, extra=extra,
                                    caps=manager.preset.capabilities)
        result.images.append(image)
        result.seeds.append(seed)
        result.infotexts.append(infotext)
    result.seconds = time.perf_counter() - started
    return result


def _model_label(role: str) -> str:
    if role.startswith("control."):
        return f"the {role.removeprefix('control.')} ControlNet"
    return f"the {role} model"


def _lora_hashes(manager: ModelManager, loras) -> dict:
    """A1111's `Lora hashes: "name: hash, ..."`, which civitai uses to link the LoRAs."""
    hashes = [f"{name}: {manager.loras.info(name).short_hash}" for name, _ in loras
              if manager.loras.info(name).short_hash]
    return {"Lora hashes": ", ".join(hashes)} if hashes else {}
