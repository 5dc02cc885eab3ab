"""What every task shares: the request's common settings and their checks, the Plan a task makes
of a request, and the TaskSpec that tells the model manager what the task's pipeline needs.

Each task is one module beside this one (its request, its plan, its spec); studio/tasks/__init__.py
is the registry the renderer and the model manager read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

from PIL import Image

from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import check_image, fit_within
from studio.loras import MAX_LORAS_PER_REQUEST, merge_loras, parse_prompt_loras
from studio.metadata import format_infotext
from studio.presets import Limits
from studio.prompt_syntax import parse_weighted
from studio.samplers import DIFFUSION_SAMPLERS

# What a request is checked against when its caller names no family: a classic CFG model.
DEFAULT_CAPABILITIES = Capabilities(samplers=tuple(DIFFUSION_SAMPLERS))

MAX_SEED = 2**32 - 1
MAX_CLIP_SKIP = 12
MAX_PROMPT_CHARS = 10_000


def check_range(label: str, value: float, low: float, high: float, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{label} must be a number, got {value!r}.")
    if not low <= value <= high:  # NaN fails this too
        raise RequestError(f"{label} must be between {_number(low)} and {_number(high)}, got {_number(value)}.{hint}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_int(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise RequestError(f"{label} must be a whole number, got {value!r}.")
    return int(value)


def check_text(label: str, text) -> None:
    """Text that can be encoded, saved in a PNG and shown: no lone surrogates (JSON's "\\ud800"
    reaches Python as a str that UTF-8 cannot encode) and no NUL characters."""
    if not isinstance(text, str):
        raise RequestError(f"{label} must be text, got {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise RequestError(f"{label} holds a character that is not valid text (U+{code:04X}, a lone surrogate) at "
                           f"position {exc.start}; remove it.") from None
    if "\x00" in text:
        raise RequestError(f"{label} holds a NUL character at position {text.index(chr(0))}; remove it.")


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
    # diffusers' cache hooks (FLUX.1: "first-block", "taylorseer"): fewer full denoiser passes, an
    # approximate image; "" = off, the exact image.
    step_cache: str = ""
    # The prompt as written, when wildcards or {a|b} variants were resolved into `prompt` for this
    # image (studio/wildcards.py); written to the infotext as Dynamic Prompts does.
    prompt_template: str = ""
    negative_template: str = ""

    task = "txt2img"

    def with_prompt_loras(self) -> "GenerationRequest":
        """This request with `<lora:...>` tags taken out of the prompt and merged into `loras`."""
        self._check_lengths()  # before any parser reads the text
        clean, tagged = parse_prompt_loras(self.prompt)
        return replace(self, prompt=clean, loras=merge_loras(list(self.loras), tagged))

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        """Every field within `limits` and what the model family takes (`caps`); a RequestError
        that says what to change otherwise."""
        self._check_lengths()
        if len(self.loras) > MAX_LORAS_PER_REQUEST:
            raise RequestError(f"At most {MAX_LORAS_PER_REQUEST} LoRAs can be used at once, got {len(self.loras)}.")
        for name, weight in self.loras:
            check_range(f"Weight of LoRA '{name}'", weight, -4, 4)
        steps = check_int("Steps", self.steps)
        check_range("Steps", steps, 1, limits.max_steps, " Lower the number of steps." if steps > 1 else "")
        check_range(caps.guidance_label, self.guidance_scale, *caps.guidance_range)
        seed = check_int("Seed", self.seed)
        if seed != -1:
            check_range("Seed", seed, 0, MAX_SEED, " Use -1 for a random seed.")
        if self.sampler not in caps.samplers:
            raise RequestError(f"Unknown sampler {self.sampler!r}. Choose one of: {', '.join(caps.samplers)}.")
        check_range("Batch size", check_int("Batch size", self.batch_size), 1, limits.max_batch_size)
        check_range("Batch count", check_int("Batch count", self.batch_count), 1, limits.max_batch_count)
        check_range("Clip skip", check_int("Clip skip", self.clip_skip), 1, MAX_CLIP_SKIP)
        if not isinstance(self.vae, str):
            raise RequestError("VAE must be the name of a file in the VAE folder, or empty for the model's own.")
        for label, text in (("Prompt", self.prompt), ("Negative prompt", self.negative_prompt)):
            check_text(label, text)
            parse_weighted(text)  # weights out of range, or brackets nested too deep, say so here
        check_text("VAE", self.vae)
        if self.step_cache and self.step_cache not in caps.step_caches:
            if not caps.step_caches:
                raise RequestError(f"This model takes no step cache ({self.step_cache!r}): leave Step cache off.")
            raise RequestError(f"Unknown step cache {self.step_cache!r}. Choose one of: {', '.join(caps.step_caches)}.")
        for name, _ in self.loras:
            check_text("LoRA name", name)

    def _check_lengths(self) -> None:
        for label, text in (("Prompt", self.prompt), ("Negative prompt", self.negative_prompt)):
            if not isinstance(text, str):
                raise RequestError("Prompt and negative prompt must be text.")
            if len(text) > MAX_PROMPT_CHARS:
                raise RequestError(f"{label} is {len(text)} characters; at most {MAX_PROMPT_CHARS} are read. "
                                   "Shorten it.")

    def infotext_extra(self) -> dict:
        """The task's own settings, written after the common ones (A1111 names)."""
        return {}

    def infotext(self, seed: int, model: str, size: tuple[int, int], steps_run: int | None = None,
                 extra: dict | None = None, caps: Capabilities = DEFAULT_CAPABILITIES) -> str:
        params = {"Steps": self.steps, "Sampler": self.sampler}
        if caps.guidance == "cfg":
            params["CFG scale"] = float(self.guidance_scale)
        else:  # as Forge writes FLUX.1's: no real CFG (1), and the distilled guidance when the model takes it
            params["CFG scale"] = 1.0
            if caps.guidance == "distilled":
                params[caps.guidance_label] = float(self.guidance_scale)
        params |= {
            "Seed": seed,
            "Size": f"{size[0]}x{size[1]}",
            "Model hash": (extra or {}).get("Model hash"),  # A1111's order: the hash, then the name
            "Model": model,
        }
        params.update(self.infotext_extra())
        if not caps.image_guidance:  # FLUX.1 Kontext takes none: the setting did nothing
            params.pop("Image CFG scale", None)
        if self.clip_skip != 1 and caps.clip_skip:
            params["Clip skip"] = self.clip_skip
        if self.step_cache:  # it changes the image: written, so the text reproduces it
            params["Step cache"] = self.step_cache
        if self.prompt_template:  # the Dynamic Prompts extension's keys
            params["Template"] = self.prompt_template
        if self.negative_template:
            params["Negative Template"] = self.negative_template
        if steps_run is not None and steps_run != self.steps:
            params["Steps run"] = steps_run  # img2img/inpaint run round(steps x strength) of them
        params.update(extra or {})
        prompt = self.prompt
        if self.loras:  # as A1111 writes them: in the prompt, so the text reproduces the image
            tags = " ".join(f"<lora:{name}:{weight:g}>" for name, weight in self.loras)
            prompt = f"{prompt}, {tags}" if prompt else tags
        return format_infotext(prompt, self.negative_prompt if caps.negative_prompt else "", params)


def check_size(width, height, limits: Limits) -> None:
    step = limits.size_multiple
    for label, value, limit in (("Width", width, limits.max_width), ("Height", height, limits.max_height)):
        value = check_int(label, value)
        if value % step:
            lower, upper = value // step * step, value // step * step + step
            raise RequestError(f"{label} must be a multiple of {step}, got {value}: use {lower or step} or {upper}.")
        check_range(label, value, 64, limit)


def check_strength(value: float) -> None:
    check_range("Denoising strength", value, 0, 1)


@dataclass
class HiresPass:
    """Hires. fix: each first-pass image is upscaled to `size` and redrawn by Image to Image."""

    size: tuple[int, int]
    steps: int  # Image to Image's steps, of which it runs
    steps_run: int  # round(steps x strength); 0: the upscaled image is the result
    strength: float


@dataclass
class Plan:
    """What a request asks of its pipeline: the manager task, the task's own pipeline inputs, the
    output size, the denoising steps that will really run, and how to finish each image (e.g.
    paste the original back outside an inpaint mask). rendering.py does the rest, the same way
    for every task."""

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


def input_image(image: Image.Image, limits: Limits) -> tuple[Image.Image, list[str]]:
    """The input, in RGB, with sides that are multiples of the family's (8, or 16), within the preset's limits."""
    fitted, note = fit_within(check_image(image), limits.max_width, limits.max_height, limits.size_multiple)
    return fitted, [note] if note else []


@dataclass(frozen=True)
class TaskSpec:
    """What a manager task asks of the model manager besides the base: its specialised denoiser
    (a role of the preset: the inpaint or instruct model) or the ControlNet of the request's mode.
    The family (studio/families/) names the pipeline class; `ModelManager.pipeline` reads both and
    knows no task by name."""

    name: str  # the manager task: the key of its lent pipelines, Plan.task
    variant_role: str | None = None  # a specialised denoiser that replaces the base's (inpaint, instruct)
    # False: the base denoiser serves when the preset has no such model (diffusers inpaints with both)
    variant_required: bool = False
    controlnet: bool = False  # adds the ControlNet of the request's control mode

    def roles(self, preset, control_mode: str | None = None) -> list[str]:
        """The preset roles this task loads, the base first."""
        roles = ["base"]
        if self.variant_role and (self.variant_required or preset.model(self.variant_role)):
            roles.append(self.variant_role)
        if self.controlnet:
            roles.append(f"control.{control_mode}")
        return roles

    def overrides(self, roles: list[str], component, denoiser: str) -> dict:
        """`from_pipe` overrides: the specialised models of `roles`, loaded by `component(role)`;
        `denoiser` is the family's name for the component a variant replaces (a UNet or a transformer)."""
        return {("controlnet" if role.startswith("control.") else denoiser): component(role) for role in roles[1:]}
