"""What each task asks of its pipeline: a Plan made from a validated request.

A plan names the manager task, the task's own pipeline inputs, the output size, the number of
denoising steps that will really run, and how to finish each image (e.g. paste the original back
outside an inpaint mask). The runner in generate.py does the rest, the same way for every task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from studio.errors import RequestError
from studio.imaging import (
    blur_mask,
    check_image,
    extend_canvas,
    fit_within,
    paste_back,
    prepare_mask,
    resize_image,
    round8,
)
from studio.presets import Limits
from studio.requests import (
    ControlRequest,
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    InstructRequest,
    OutpaintRequest,
    Txt2ImgRequest,
)


@dataclass
class HiresPass:
    """Hires. fix: each first-pass image is upscaled to `size` and redrawn by Image to Image."""

    size: tuple[int, int]
    steps: int  # Image to Image's steps, of which it runs
    steps_run: int  # round(steps x strength); 0: the upscaled image is the result
    strength: float


@dataclass
class Plan:
    task: str  # the manager's pipeline: txt2img, img2img, inpaint, instruct, control
    inputs: dict  # the task's own keyword arguments for the diffusers call
    size: tuple[int, int]  # of the images it makes (after a Hires. fix pass)
    steps_run: int
    control_mode: str | None = None
    finish: Callable[[Image.Image], Image.Image] | None = None
    passthrough: Image.Image | None = None  # nothing to denoise: this image is the result
    notes: list[str] = field(default_factory=list)  # told to the user (e.g. "scaled down to fit")
    hires: HiresPass | None = None
    infotext_size: tuple[int, int] | None = None  # "Size:" when it is not the images' (A1111: the first pass)


def steps_and_strength(steps: int, strength: float) -> tuple[int, float]:
    """Steps to run = round(steps x strength), and the strength that makes diffusers run exactly
    that many (it floors steps x strength, so 20 x 0.35 would run 6 steps, not 7)."""
    run = min(steps, math.floor(steps * strength + 0.5))
    return run, min(1.0, (run + 0.5) / steps)


def _input_image(image: Image.Image, limits: Limits) -> tuple[Image.Image, list[str]]:
    """The input, in RGB, with sides that are multiples of 8, within the preset's limits."""
    fitted, note = fit_within(check_image(image), limits.max_width, limits.max_height)
    return fitted, [note] if note else []


def plan_txt2img(request: Txt2ImgRequest, limits: Limits) -> Plan:
    size = (request.width, request.height)
    plan = Plan("txt2img", {"width": size[0], "height": size[1]}, size, request.steps)
    if request.hires_fix:
        steps = request.hires_steps or request.steps
        steps_run, strength = steps_and_strength(steps, request.hires_denoising)
        plan.hires = HiresPass(request.hires_size(), steps, steps_run, strength)
        plan.size, plan.infotext_size = plan.hires.size, size
    return plan


def plan_img2img(request: Img2ImgRequest, limits: Limits) -> Plan:
    if request.resize_mode == "Keep size":
        image, notes = _input_image(request.image, limits)
    else:
        image, notes = resize_image(check_image(request.image), request.resize_mode, request.width, request.height), []
    steps_run, strength = steps_and_strength(request.steps, request.strength)
    plan = Plan("img2img", {"image": image, "strength": strength}, image.size, steps_run, notes=notes)
    if steps_run == 0:
        plan.passthrough = image  # strength 0 adds no noise: the input is the answer
    return plan


def plan_inpaint(request: InpaintRequest, limits: Limits) -> Plan:
    image, notes = _input_image(request.image, limits)
    mask = prepare_mask(request.mask, image.size, invert=request.invert_mask)
    if not np.asarray(mask).any():
        raise RequestError("The mask is empty: paint over the area to change (or turn off 'Invert mask').")
    feathered = blur_mask(mask, request.mask_blur)
    steps_run, strength = steps_and_strength(request.steps, request.strength)
    if steps_run == 0:
        raise RequestError("Denoising strength is too low to change anything: raise it or add steps.")
    inputs = {"image": image, "mask_image": feathered, "strength": strength,
              "width": image.width, "height": image.height}
    if request.inpaint_area == "Only masked":
        inputs["padding_mask_crop"] = request.padding
    return Plan("inpaint", inputs, image.size, steps_run, notes=notes,
                finish=lambda result: paste_back(image, result, feathered))


def plan_outpaint(request: OutpaintRequest, limits: Limits) -> Plan:
    image = check_image(request.image)
    image = image.resize((round8(image.width), round8(image.height)), Image.Resampling.LANCZOS) \
        if image.width % 8 or image.height % 8 else image
    canvas, new_area = extend_canvas(image, request.left, request.right, request.up, request.down,
                                     request.fill, seed=max(request.seed, 0))
    # The model repaints a band of the original too (mask blur wide) so the seam is continuous;
    # the paste-back then restores the original region exactly.
    band = blur_mask(new_area, request.mask_blur)
    model_mask = Image.fromarray(np.where(np.asarray(band) > 0, 255, 0).astype(np.uint8))
    inputs = {"image": canvas, "mask_image": model_mask, "strength": 1.0,
              "width": canvas.width, "height": canvas.height}
    return Plan("inpaint", inputs, canvas.size, request.steps,
                finish=lambda result: paste_back(canvas, result, new_area))


def plan_instruct(request: InstructRequest, limits: Limits) -> Plan:
    image, notes = _input_image(request.image, limits)
    inputs = {"image": image, "image_guidance_scale": request.image_guidance_scale}
    return Plan("instruct", inputs, image.size, request.steps, notes=notes)


def plan_control(request: ControlRequest, limits: Limits) -> Plan:
    size = (request.width, request.height)
    control = check_image(request.control_image, "Control image").resize(size, Image.Resampling.LANCZOS)
    inputs = {
        "image": control,
        "width": size[0],
        "height": size[1],
        "controlnet_conditioning_scale": float(request.conditioning_scale),
        "control_guidance_start": float(request.guidance_start),
        "control_guidance_end": float(request.guidance_end),
    }
    return Plan("control", inputs, size, request.steps, control_mode=request.control_mode)


PLANNERS: dict[str, Callable[[GenerationRequest, Limits], Plan]] = {
    "txt2img": plan_txt2img,
    "img2img": plan_img2img,
    "inpaint": plan_inpaint,
    "outpaint": plan_outpaint,
    "instruct": plan_instruct,
    "control": plan_control,
}
