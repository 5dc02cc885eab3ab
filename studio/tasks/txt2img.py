"""Text to Image, with A1111's Hires. fix: the request, its plan, its pipeline spec."""

from __future__ import annotations

from dataclasses import dataclass

from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import round_to
from studio.metadata import parse_infotext
from studio.presets import Limits
from studio.samplers import SAMPLER_NAMES
from studio.tasks.base import (
    DEFAULT_CAPABILITIES,
    GenerationRequest,
    HiresPass,
    Plan,
    TaskSpec,
    check_int,
    check_range,
    check_size,
    steps_and_strength,
)

HIRES_MAX_SCALE = 4.0


@dataclass(frozen=True)
class Txt2ImgRequest(GenerationRequest):
    width: int = 512
    height: int = 512
    # A1111's "Hires. fix": make the image at width x height, upscale it by hires_scale, then
    # redraw it there with Image to Image at hires_denoising, in hires_steps (0: as many as steps).
    hires_fix: bool = False
    hires_scale: float = 2.0
    hires_steps: int = 0
    hires_denoising: float = 0.7

    task = "txt2img"

    def hires_size(self, multiple: int = 8) -> tuple[int, int]:
        return round_to(self.width * self.hires_scale, multiple), round_to(self.height * self.hires_scale, multiple)

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        check_size(self.width, self.height, limits)
        if not self.hires_fix:
            return
        check_range("Hires. fix 'Upscale by'", self.hires_scale, 1, HIRES_MAX_SCALE)
        check_range("Hires steps", check_int("Hires steps", self.hires_steps), 0, limits.max_steps,
                     " Use 0 for as many as Steps.")
        check_range("Hires. fix denoising strength", self.hires_denoising, 0, 1)
        width, height = self.hires_size(limits.size_multiple)
        if width > limits.max_width or height > limits.max_height:
            raise RequestError(
                f"Hires. fix would make {width}x{height}, above this preset's limit of "
                f"{limits.max_width}x{limits.max_height}. Lower 'Upscale by' or the width and height."
            )

    def infotext_extra(self) -> dict:
        if not self.hires_fix:
            return {}
        return {  # as A1111 writes them; Size stays the first pass's
            "Denoising strength": float(self.hires_denoising),
            "Hires upscale": float(self.hires_scale),
            "Hires steps": self.hires_steps or None,
            "Hires upscaler": "Lanczos",
        }


def plan_txt2img(request: Txt2ImgRequest, limits: Limits) -> Plan:
    size = (request.width, request.height)
    plan = Plan("txt2img", {"width": size[0], "height": size[1]}, size, request.steps)
    if request.hires_fix:
        steps = request.hires_steps or request.steps
        steps_run, strength = steps_and_strength(steps, request.hires_denoising)
        plan.hires = HiresPass(request.hires_size(limits.size_multiple), steps, steps_run, strength)
        plan.size, plan.infotext_size = plan.hires.size, size
    return plan


SPEC = TaskSpec("txt2img")
PLANNERS = {"txt2img": plan_txt2img}


def txt2img_settings_from_infotext(text: str) -> dict:
    """The Text to Image settings an infotext names (A1111's or ours), as request keyword arguments."""
    prompt, negative, params = parse_infotext(text)
    settings: dict = {"prompt": prompt, "negative_prompt": negative}
    try:
        if "Steps" in params:
            settings["steps"] = int(params["Steps"])
        if "CFG scale" in params:
            settings["guidance_scale"] = float(params["CFG scale"])
        if "Distilled CFG Scale" in params:  # Forge's FLUX.1-dev guidance (its CFG scale is 1)
            settings["guidance_scale"] = float(params["Distilled CFG Scale"])
        if "Seed" in params:
            settings["seed"] = int(params["Seed"])
        if "Size" in params:
            width, height = params["Size"].lower().split("x")
            settings["width"], settings["height"] = int(width), int(height)
    except ValueError as exc:
        raise RequestError(f"These parameters could not be read: {exc}") from None
    try:
        settings["hires_fix"] = "Hires upscale" in params  # absent: the image was made without it
        if settings["hires_fix"]:
            settings["hires_scale"] = float(params["Hires upscale"])
            settings["hires_steps"] = int(params.get("Hires steps", 0))
            settings["hires_denoising"] = float(params.get("Denoising strength", 0.7))
    except ValueError as exc:
        raise RequestError(f"These Hires. fix parameters could not be read: {exc}") from None
    if "Sampler" in params:
        sampler = params["Sampler"]
        # A1111 1.8+ writes the schedule separately: "Sampler: DPM++ 2M, Schedule type: Karras" (Forge's
        # FLUX.1 images: "Euler, Schedule type: Beta").
        schedule = params.get("Schedule type", "")
        if schedule in ("Karras", "Beta") and f"{sampler} {schedule}" in SAMPLER_NAMES:
            sampler = f"{sampler} {schedule}"
        settings["sampler"] = sampler
    return settings
