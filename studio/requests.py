"""One dataclass per task. `validate(limits)` raises a RequestError that says what to change."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from PIL import Image

from studio.control import CONTROL_MODES
from studio.errors import RequestError
from studio.imaging import RESIZE_MODES, check_image, round8
from studio.loras import MAX_LORAS_PER_REQUEST, merge_loras, parse_prompt_loras
from studio.metadata import format_infotext, parse_infotext
from studio.presets import Limits
from studio.samplers import SAMPLER_NAMES

MAX_SEED = 2**32 - 1
MAX_CLIP_SKIP = 12
MAX_PROMPT_CHARS = 10_000


def _check_range(label: str, value: float, low: float, high: float, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{label} must be a number, got {value!r}.")
    if not low <= value <= high:  # NaN fails this too
        raise RequestError(f"{label} must be between {_number(low)} and {_number(high)}, got {_number(value)}.{hint}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_int(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise RequestError(f"{label} must be a whole number, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class GenerationRequest:
    """Settings every task shares. Subclasses add their own and extend `validate` / `infotext_extra`."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    guidance_scale: float = 7.0
    seed: int = -1  # -1: pick a random seed; the seed used is reported and stored
    sampler: str = "Euler a"
    batch_size: int = 1
    batch_count: int = 1
    # (name, weight) pairs from the LoRA picker; `<lora:name:w>` tags in the prompt are added by
    # `with_prompt_loras()` before the request runs.
    loras: tuple[tuple[str, float], ...] = ()
    clip_skip: int = 1  # A1111's: 2 reads the text encoder's next-to-last layer
    vae: str = ""  # a file of the VAE folder to decode with; "" = the model's own

    task = "txt2img"

    def with_prompt_loras(self) -> "GenerationRequest":
        """This request with `<lora:...>` tags taken out of the prompt and merged into `loras`."""
        clean, tagged = parse_prompt_loras(self.prompt)
        return replace(self, prompt=clean, loras=merge_loras(list(self.loras), tagged))

    def validate(self, limits: Limits) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise RequestError("Prompt and negative prompt must be text.")
        if len(self.loras) > MAX_LORAS_PER_REQUEST:
            raise RequestError(f"At most {MAX_LORAS_PER_REQUEST} LoRAs can be used at once, got {len(self.loras)}.")
        for name, weight in self.loras:
            _check_range(f"Weight of LoRA '{name}'", weight, -4, 4)
        steps = _check_int("Steps", self.steps)
        _check_range("Steps", steps, 1, limits.max_steps, " Lower the number of steps." if steps > 1 else "")
        _check_range("CFG scale", self.guidance_scale, 0, 30)
        seed = _check_int("Seed", self.seed)
        if seed != -1:
            _check_range("Seed", seed, 0, MAX_SEED, " Use -1 for a random seed.")
        if self.sampler not in SAMPLER_NAMES:
            raise RequestError(f"Unknown sampler {self.sampler!r}. Choose one of: {', '.join(SAMPLER_NAMES)}.")
        _check_range("Batch size", _check_int("Batch size", self.batch_size), 1, limits.max_batch_size)
        _check_range("Batch count", _check_int("Batch count", self.batch_count), 1, limits.max_batch_count)
        _check_range("Clip skip", _check_int("Clip skip", self.clip_skip), 1, MAX_CLIP_SKIP)
        if not isinstance(self.vae, str):
            raise RequestError("VAE must be the name of a file in the VAE folder, or empty for the model's own.")
        for label, text in (("Prompt", self.prompt), ("Negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise RequestError(f"{label} is {len(text)} characters; at most {MAX_PROMPT_CHARS} are read. "
                                   "Shorten it.")

    def infotext_extra(self) -> dict:
        """The task's own settings, written after the common ones (A1111 names)."""
        return {}

    def infotext(self, seed: int, model: str, size: tuple[int, int], steps_run: int | None = None,
                 extra: dict | None = None) -> str:
        params = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "CFG scale": float(self.guidance_scale),
            "Seed": seed,
            "Size": f"{size[0]}x{size[1]}",
            "Model hash": (extra or {}).get("Model hash"),  # A1111's order: the hash, then the name
            "Model": model,
        }
        params.update(self.infotext_extra())
        if self.clip_skip != 1:
            params["Clip skip"] = self.clip_skip
        if steps_run is not None and steps_run != self.steps:
            params["Steps run"] = steps_run  # img2img/inpaint run round(steps x strength) of them
        params.update(extra or {})
        prompt = self.prompt
        if self.loras:  # as A1111 writes them: in the prompt, so the text reproduces the image
            tags = " ".join(f"<lora:{name}:{weight:g}>" for name, weight in self.loras)
            prompt = f"{prompt}, {tags}" if prompt else tags
        return format_infotext(prompt, self.negative_prompt, params)


def _check_size(width, height, limits: Limits) -> None:
    for label, value, limit in (("Width", width, limits.max_width), ("Height", height, limits.max_height)):
        value = _check_int(label, value)
        if value % 8:
            lower, upper = value // 8 * 8, value // 8 * 8 + 8
            raise RequestError(f"{label} must be a multiple of 8, got {value}: use {lower or 8} or {upper}.")
        _check_range(label, value, 64, limit)


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

    def hires_size(self) -> tuple[int, int]:
        return round8(self.width * self.hires_scale), round8(self.height * self.hires_scale)

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        _check_size(self.width, self.height, limits)
        if not self.hires_fix:
            return
        _check_range("Hires. fix 'Upscale by'", self.hires_scale, 1, HIRES_MAX_SCALE)
        _check_range("Hires steps", _check_int("Hires steps", self.hires_steps), 0, limits.max_steps,
                     " Use 0 for as many as Steps.")
        _check_range("Hires. fix denoising strength", self.hires_denoising, 0, 1)
        width, height = self.hires_size()
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


def _check_strength(value: float) -> None:
    _check_range("Denoising strength", value, 0, 1)


@dataclass(frozen=True)
class Img2ImgRequest(GenerationRequest):
    """SDEdit: noise the image by `strength`, then denoise it towards the prompt."""

    image: Image.Image | None = None
    strength: float = 0.75
    resize_mode: str = "Keep size"
    width: int = 512  # used by the two "Resize" modes
    height: int = 512

    task = "img2img"

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        check_image(self.image)
        _check_strength(self.strength)
        if self.resize_mode not in RESIZE_MODES:
            raise RequestError(f"Unknown resize mode {self.resize_mode!r}. Choose one of: {', '.join(RESIZE_MODES)}.")
        if self.resize_mode != "Keep size":
            _check_size(self.width, self.height, limits)

    def infotext_extra(self) -> dict:
        return {"Denoising strength": float(self.strength), "Resize mode": self.resize_mode}


INPAINT_AREAS = ("Whole picture", "Only masked")


@dataclass(frozen=True)
class InpaintRequest(GenerationRequest):
    """Repaint where the mask is white; everything outside the (blurred) mask comes back unchanged."""

    image: Image.Image | None = None
    mask: Image.Image | None = None
    invert_mask: bool = False
    mask_blur: int = 4
    inpaint_area: str = "Whole picture"
    padding: int = 32  # "Only masked": context around the mask, in pixels
    strength: float = 1.0

    task = "inpaint"

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        check_image(self.image)
        if self.mask is None:
            raise RequestError("Paint over the area to change (or upload a mask) first: the mask is empty.")
        _check_strength(self.strength)
        _check_range("Mask blur", _check_int("Mask blur", self.mask_blur), 0, 64)
        _check_range("Only masked padding", _check_int("Only masked padding", self.padding), 0, 256)
        if self.inpaint_area not in INPAINT_AREAS:
            raise RequestError(
                f"Unknown inpaint area {self.inpaint_area!r}. Choose one of: {', '.join(INPAINT_AREAS)}.")

    def infotext_extra(self) -> dict:
        extra = {"Denoising strength": float(self.strength), "Mask blur": self.mask_blur}
        if self.invert_mask:
            extra["Mask mode"] = "Inpaint not masked"
        if self.inpaint_area == "Only masked":
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = self.padding
        return extra


OUTPAINT_FILLS = ("Edge colours", "Noise")


@dataclass(frozen=True)
class OutpaintRequest(GenerationRequest):
    """Grow the canvas by the given margins and paint only the new area."""

    image: Image.Image | None = None
    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0
    fill: str = "Edge colours"
    mask_blur: int = 8

    task = "outpaint"

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        image = check_image(self.image)
        margins = {"Left": self.left, "Right": self.right, "Up": self.up, "Down": self.down}
        for label, value in margins.items():
            value = _check_int(f"{label} extension", value)
            if value < 0 or value % 8:
                raise RequestError(f"{label} extension must be a multiple of 8 and not negative, got {value}.")
        if not any(margins.values()):
            raise RequestError("Choose how far to extend the image: every extension is 0.")
        if self.fill not in OUTPAINT_FILLS:
            raise RequestError(f"Unknown outpaint fill {self.fill!r}. Choose one of: {', '.join(OUTPAINT_FILLS)}.")
        _check_range("Mask blur", _check_int("Mask blur", self.mask_blur), 0, 64)
        width, height = round8(image.width) + self.left + self.right, round8(image.height) + self.up + self.down
        if width > limits.max_width or height > limits.max_height:
            raise RequestError(
                f"The outpainted image would be {width}x{height}; this preset allows at most "
                f"{limits.max_width}x{limits.max_height}. Extend less or start from a smaller image."
            )

    def infotext_extra(self) -> dict:
        return {"Mask blur": self.mask_blur, "Outpaint": f"left {self.left}, right {self.right}, up {self.up}, "
                f"down {self.down}, fill {self.fill}"}


@dataclass(frozen=True)
class InstructRequest(GenerationRequest):
    """InstructPix2Pix: edit the image as the prompt says ("make it winter")."""

    image: Image.Image | None = None
    image_guidance_scale: float = 1.5

    task = "instruct"

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        check_image(self.image)
        if not 1 <= self.image_guidance_scale <= 10:
            raise RequestError(
                f"Image CFG scale must be between 1 and 10, got {self.image_guidance_scale:g}: below 1 the "
                "image is ignored. Raise it to keep more of the input."
            )

    def infotext_extra(self) -> dict:
        return {"Image CFG scale": float(self.image_guidance_scale)}




@dataclass(frozen=True)
class ControlRequest(Txt2ImgRequest):
    """Text to Image steered by a ControlNet map: a scribble or canny edges (white on black), or an
    OpenPose skeleton."""

    control_image: Image.Image | None = None
    control_mode: str = "scribble"
    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    task = "control"

    def validate(self, limits: Limits) -> None:
        super().validate(limits)
        check_image(self.control_image, "Control image")
        if self.control_mode not in CONTROL_MODES:
            raise RequestError(
                f"Unknown control mode {self.control_mode!r}. Choose one of: {', '.join(CONTROL_MODES)}.")
        _check_range("Control weight", self.conditioning_scale, 0, 2)
        _check_range("Guidance start", self.guidance_start, 0, 1)
        _check_range("Guidance end", self.guidance_end, 0, 1)
        if self.guidance_start >= self.guidance_end:
            raise RequestError(
                f"Guidance start ({self.guidance_start:g}) must be below guidance end ({self.guidance_end:g})."
            )

    def infotext_extra(self) -> dict:
        return {
            "ControlNet": f"{self.control_mode}, weight {self.conditioning_scale:g}, "
            f"start {self.guidance_start:g}, end {self.guidance_end:g}"
        }


def txt2img_settings_from_infotext(text: str) -> dict:
    """The Text to Image settings an infotext names (A1111's or ours), as request keyword arguments."""
    prompt, negative, params = parse_infotext(text)
    settings: dict = {"prompt": prompt, "negative_prompt": negative}
    try:
        if "Steps" in params:
            settings["steps"] = int(params["Steps"])
        if "CFG scale" in params:
            settings["guidance_scale"] = float(params["CFG scale"])
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
        # A1111 1.8+ writes the Karras schedule separately: "Sampler: DPM++ 2M, Schedule type: Karras".
        if params.get("Schedule type") == "Karras" and f"{sampler} Karras" in SAMPLER_NAMES:
            sampler = f"{sampler} Karras"
        settings["sampler"] = sampler
    return settings
