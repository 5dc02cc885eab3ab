"""Instruct (InstructPix2Pix): the request, its plan, its pipeline spec."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import check_image
from studio.presets import Limits
from studio.tasks.base import DEFAULT_CAPABILITIES, GenerationRequest, Plan, TaskSpec, input_image


@dataclass(frozen=True)
class InstructRequest(GenerationRequest):
    """InstructPix2Pix: edit the image as the prompt says ("make it winter")."""

    image: Image.Image | None = None
    image_guidance_scale: float = 1.5

    task = "instruct"

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        check_image(self.image)
        if not 1 <= self.image_guidance_scale <= 10:
            raise RequestError(
                f"Image CFG scale must be between 1 and 10, got {self.image_guidance_scale:g}: below 1 the "
                "image is ignored. Raise it to keep more of the input."
            )

    def infotext_extra(self) -> dict:
        return {"Image CFG scale": float(self.image_guidance_scale)}


def plan_instruct(request: InstructRequest, limits: Limits) -> Plan:
    image, notes = input_image(request.image, limits)
    inputs = {"image": image, "image_guidance_scale": request.image_guidance_scale}
    return Plan("instruct", inputs, image.size, request.steps, notes=notes)


SPEC = TaskSpec("instruct", variant_role="instruct", variant_required=True)
PLANNERS = {"instruct": plan_instruct}
