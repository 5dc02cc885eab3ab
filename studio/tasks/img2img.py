"""Image to Image (SDEdit): the request, its plan, its pipeline spec. Hires. fix's second pass
runs on this task's pipeline too."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import RESIZE_MODES, check_image, resize_image
from studio.presets import Limits
from studio.tasks.base import (
    DEFAULT_CAPABILITIES,
    GenerationRequest,
    Plan,
    TaskSpec,
    check_size,
    check_strength,
    input_image,
    steps_and_strength,
)


@dataclass(frozen=True)
class Img2ImgRequest(GenerationRequest):
    """SDEdit: noise the image by `strength`, then denoise it towards the prompt."""

    image: Image.Image | None = None
    strength: float = 0.75
    resize_mode: str = "Keep size"
    width: int = 512  # used by the two "Resize" modes
    height: int = 512

    task = "img2img"

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        check_image(self.image)
        check_strength(self.strength)
        if self.resize_mode not in RESIZE_MODES:
            raise RequestError(f"Unknown resize mode {self.resize_mode!r}. Choose one of: {', '.join(RESIZE_MODES)}.")
        if self.resize_mode != "Keep size":
            check_size(self.width, self.height, limits)

    def infotext_extra(self) -> dict:
        return {"Denoising strength": float(self.strength), "Resize mode": self.resize_mode}


def plan_img2img(request: Img2ImgRequest, limits: Limits) -> Plan:
    if request.resize_mode == "Keep size":
        image, notes = input_image(request.image, limits)
    else:
        image, notes = resize_image(check_image(request.image), request.resize_mode, request.width, request.height), []
    steps_run, strength = steps_and_strength(request.steps, request.strength)
    plan = Plan("img2img", {"image": image, "strength": strength}, image.size, steps_run, notes=notes)
    if steps_run == 0:
        plan.passthrough = image  # strength 0 adds no noise: the input is the answer
    return plan


SPEC = TaskSpec("img2img")
PLANNERS = {"img2img": plan_img2img}
