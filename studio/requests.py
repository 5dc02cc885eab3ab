"""One dataclass per task. `validate(limits)` raises a RequestError that says what to change."""

from __future__ import annotations

from dataclasses import dataclass

from studio.errors import RequestError
from studio.metadata import format_infotext, parse_infotext
from studio.presets import Limits
from studio.samplers import SAMPLER_NAMES

MAX_SEED = 2**32 - 1


def _check_range(label: str, value: float, low: float, high: float, hint: str = "") -> None:
    if not low <= value <= high:
        raise RequestError(f"{label} must be between {low:g} and {high:g}, got {value:g}.{hint}")


def _check_int(label: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise RequestError(f"{label} must be a whole number, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class Txt2ImgRequest:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1  # -1: pick a random seed; the seed used is reported and stored
    sampler: str = "Euler a"
    batch_size: int = 1
    batch_count: int = 1

    task = "txt2img"

    def validate(self, limits: Limits) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise RequestError("Prompt and negative prompt must be text.")
        steps = _check_int("Steps", self.steps)
        _check_range("Steps", steps, 1, limits.max_steps, " Lower the number of steps.")
        _check_range("CFG scale", self.guidance_scale, 0, 30)
        for label, value, limit in (
            ("Width", self.width, limits.max_width),
            ("Height", self.height, limits.max_height),
        ):
            value = _check_int(label, value)
            if value % 8:
                lower, upper = value // 8 * 8, value // 8 * 8 + 8
                raise RequestError(f"{label} must be a multiple of 8, got {value}: use {lower or 8} or {upper}.")
            _check_range(label, value, 64, limit)
        seed = _check_int("Seed", self.seed)
        if seed != -1:
            _check_range("Seed", seed, 0, MAX_SEED, " Use -1 for a random seed.")
        if self.sampler not in SAMPLER_NAMES:
            raise RequestError(f"Unknown sampler {self.sampler!r}. Choose one of: {', '.join(SAMPLER_NAMES)}.")
        _check_range("Batch size", _check_int("Batch size", self.batch_size), 1, limits.max_batch_size)
        _check_range("Batch count", _check_int("Batch count", self.batch_count), 1, limits.max_batch_count)

    def infotext(self, seed: int, model: str, extra: dict | None = None) -> str:
        params = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "CFG scale": float(self.guidance_scale),
            "Seed": seed,
            "Size": f"{self.width}x{self.height}",
            "Model": model,
        }
        params.update(extra or {})
        return format_infotext(self.prompt, self.negative_prompt, params)


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
    if "Sampler" in params:
        sampler = params["Sampler"]
        # A1111 1.8+ writes the Karras schedule separately: "Sampler: DPM++ 2M, Schedule type: Karras".
        if params.get("Schedule type") == "Karras" and f"{sampler} Karras" in SAMPLER_NAMES:
            sampler = f"{sampler} Karras"
        settings["sampler"] = sampler
    return settings
