"""Control (ControlNet): the request, its plan, its pipeline spec. The modes and their maps are
studio/control.py's CONTROL_MODES; a preset offers those it names under [models.control]."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from studio.control import CONTROL_MODES
from studio.errors import RequestError
from studio.families import Capabilities
from studio.imaging import check_image
from studio.presets import Limits
from studio.tasks.base import DEFAULT_CAPABILITIES, Plan, TaskSpec, check_range
from studio.tasks.txt2img import Txt2ImgRequest


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

    def validate(self, limits: Limits, caps: Capabilities = DEFAULT_CAPABILITIES) -> None:
        super().validate(limits, caps)
        check_image(self.control_image, "Control image")
        if self.control_mode not in CONTROL_MODES:
            raise RequestError(
                f"Unknown control mode {self.control_mode!r}. Choose one of: {', '.join(CONTROL_MODES)}.")
        check_range("Control weight", self.conditioning_scale, 0, 2)
        check_range("Guidance start", self.guidance_start, 0, 1)
        check_range("Guidance end", self.guidance_end, 0, 1)
        if self.guidance_start >= self.guidance_end:
            raise RequestError(
                f"Guidance start ({self.guidance_start:g}) must be below guidance end ({self.guidance_end:g})."
            )

    def infotext_extra(self) -> dict:
        return {
            "ControlNet": f"{self.control_mode}, weight {self.conditioning_scale:g}, "
            f"start {self.guidance_start:g}, end {self.guidance_end:g}"
        }


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


SPEC = TaskSpec("control", controlnet=True)
PLANNERS = {"control": plan_control}
