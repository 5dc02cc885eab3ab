"""Inpaint and Outpaint: their requests and plans, and the inpaint pipeline's spec (Outpaint
inpaints a grown canvas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import blur_mask, check_image, extend_canvas, paste_back, prepare_mask, round_to
from studio.presets import Limits
from studio.tasks.base import (
    DEFAULT_CAPABILITIES,
    GenerationRequest,
    Plan,
    TaskSpec,
    check_int,
    check_range,
    check_strength,
    input_image,
    steps_and_strength,
)

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

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        check_image(self.image)
        if self.mask is None:
            raise RequestError("Paint over the area to change (or upload a mask) first: the mask is empty.")
        check_strength(self.strength)
        check_range("Mask blur", check_int("Mask blur", self.mask_blur), 0, 64)
        check_range("Only masked padding", check_int("Only masked padding", self.padding), 0, 256)
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

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        image = check_image(self.image)
        margins = {"Left": self.left, "Right": self.right, "Up": self.up, "Down": self.down}
        for label, value in margins.items():
            value = check_int(f"{label} extension", value)
            if value < 0 or value % limits.size_multiple:
                raise RequestError(f"{label} extension must be a multiple of {limits.size_multiple} for this model "
                                   f"and not negative, got {value}.")
        if not any(margins.values()):
            raise RequestError("Choose how far to extend the image: every extension is 0.")
        if self.fill not in OUTPAINT_FILLS:
            raise RequestError(f"Unknown outpaint fill {self.fill!r}. Choose one of: {', '.join(OUTPAINT_FILLS)}.")
        check_range("Mask blur", check_int("Mask blur", self.mask_blur), 0, 64)
        step = limits.size_multiple
        width = round_to(image.width, step) + self.left + self.right
        height = round_to(image.height, step) + self.up + self.down
        if width > limits.max_width or height > limits.max_height:
            raise RequestError(
                f"The outpainted image would be {width}x{height}; this preset allows at most "
                f"{limits.max_width}x{limits.max_height}. Extend less or start from a smaller image."
            )

    def infotext_extra(self) -> dict:
        return {"Mask blur": self.mask_blur, "Outpaint": f"left {self.left}, right {self.right}, up {self.up}, "
                f"down {self.down}, fill {self.fill}"}


def plan_inpaint(request: InpaintRequest, limits: Limits) -> Plan:
    image, notes = input_image(request.image, limits)
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
    step = limits.size_multiple
    image = image.resize((round_to(image.width, step), round_to(image.height, step)), Image.Resampling.LANCZOS) \
        if image.width % step or image.height % step else image
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


# The preset's inpaint model when it has one; else the base denoiser, which diffusers inpaints with too.
SPEC = TaskSpec("inpaint", variant_role="inpaint")
PLANNERS = {"inpaint": plan_inpaint, "outpaint": plan_outpaint}
