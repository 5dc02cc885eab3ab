"""Stable Diffusion 1.x (and 2.x single files): one CLIP text encoder, a 4-channel UNet."""

from __future__ import annotations

from pathlib import Path

from studio.families.base import Capabilities, LatentFormat
from studio.families.unet import UNetFamily
from studio.samplers import DIFFUSION_SAMPLERS


class SD1(UNetFamily):
    name = "sd"
    title = "SD 1.x/2.x"
    capabilities = Capabilities(samplers=tuple(DIFFUSION_SAMPLERS), step_caches=("deepcache",))
    latent = LatentFormat(4, ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                              (-0.2120, -0.2616, -0.7177)))
    pipelines = {
        "txt2img": "StableDiffusionPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "instruct": "StableDiffusionInstructPix2PixPipeline",
        "control": "StableDiffusionControlNetPipeline",
    }
    base_load_kwargs = {"safety_checker": None, "requires_safety_checker": False}
    tiny_version = 1

    def ldm_architecture(self, keys: list[str]) -> str | None:
        if any(key.startswith("cond_stage_model.model.") for key in keys):
            return "SD 2.x"  # OpenCLIP text encoder
        if any(key.startswith("cond_stage_model.transformer.") for key in keys):
            return "SD 1.x"
        return None

    def lora_base_model_matches(self, base_model: str) -> bool:
        lowered = base_model.lower()
        return not any(other in lowered for other in ("sdxl", "flux", "sd3"))

    def build_tiny(self, root: Path) -> None:
        from studio.families.sd_tiny import build_sd1

        build_sd1(root)
