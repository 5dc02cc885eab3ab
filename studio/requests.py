"""Every task's request in one import, for the callers that take any of them (the UI, the A1111
API, tests). Each is defined with its plan and spec in its module under studio/tasks/."""

from studio.control import CONTROL_MODES
from studio.tasks.base import MAX_CLIP_SKIP, MAX_PROMPT_CHARS, MAX_SEED, GenerationRequest
from studio.tasks.control import ControlRequest
from studio.tasks.img2img import Img2ImgRequest
from studio.tasks.inpaint import INPAINT_AREAS, OUTPAINT_FILLS, InpaintRequest, OutpaintRequest
from studio.tasks.instruct import InstructRequest
from studio.tasks.txt2img import HIRES_MAX_SCALE, Txt2ImgRequest, txt2img_settings_from_infotext

__all__ = [
    "CONTROL_MODES", "HIRES_MAX_SCALE", "INPAINT_AREAS", "MAX_CLIP_SKIP", "MAX_PROMPT_CHARS", "MAX_SEED",
    "OUTPAINT_FILLS", "ControlRequest", "GenerationRequest", "Img2ImgRequest", "InpaintRequest", "InstructRequest",
    "OutpaintRequest", "Txt2ImgRequest", "txt2img_settings_from_infotext",
]
