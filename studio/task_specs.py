"""What each manager task asks of the model manager: its diffusers pipeline class per family and
the models it needs besides the base. `ModelManager.pipeline` reads this table and knows no task
by name, so a new task is a new entry here (and its request and plan).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    pipelines: dict[str, str]  # model family -> diffusers pipeline class name
    unet_role: str | None = None  # a specialised UNet that replaces the base UNet (inpaint, instruct)
    # False: the base UNet serves when the preset has no such model (diffusers inpaints with both)
    unet_required: bool = False
    controlnet: bool = False  # adds the ControlNet of the request's control mode

    def roles(self, preset, control_mode: str | None = None) -> list[str]:
        """The preset roles this task loads, the base first."""
        roles = ["base"]
        if self.unet_role and (self.unet_required or preset.model(self.unet_role)):
            roles.append(self.unet_role)
        if self.controlnet:
            roles.append(f"control.{control_mode}")
        return roles

    def overrides(self, roles: list[str], component) -> dict:
        """`from_pipe` overrides: the specialised models of `roles`, loaded by `component(role)`."""
        return {("controlnet" if role.startswith("control.") else "unet"): component(role) for role in roles[1:]}


def _family(sd: str, sdxl: str) -> dict[str, str]:
    return {"sd": sd, "sdxl": sdxl}


TASKS: dict[str, TaskSpec] = {
    "txt2img": TaskSpec(_family("StableDiffusionPipeline", "StableDiffusionXLPipeline")),
    "img2img": TaskSpec(_family("StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline")),
    "inpaint": TaskSpec(_family("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"),
                        unet_role="inpaint"),
    "instruct": TaskSpec(_family("StableDiffusionInstructPix2PixPipeline", "StableDiffusionXLInstructPix2PixPipeline"),
                         unet_role="instruct", unet_required=True),
    "control": TaskSpec(_family("StableDiffusionControlNetPipeline", "StableDiffusionXLControlNetPipeline"),
                        controlnet=True),
}
