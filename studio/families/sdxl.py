"""Stable Diffusion XL: two CLIP text encoders side by side (the second's pooled output too), a
4-channel UNet with size conditioning."""

from __future__ import annotations

from pathlib import Path

from studio.families.base import Capabilities, LatentFormat
from studio.families.unet import UNetFamily
from studio.samplers import DIFFUSION_SAMPLERS


class SDXL(UNetFamily):
    name = "sdxl"
    title = "SDXL"
    capabilities = Capabilities(samplers=tuple(DIFFUSION_SAMPLERS), step_caches=("deepcache",))
    latent = LatentFormat(4, ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                              (-0.3165, -0.2492, -0.2188)), rgb_bias=(0.1084, -0.0175, -0.0011))
    pipelines = {
        "txt2img": "StableDiffusionXLPipeline",
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
        "instruct": "StableDiffusionXLInstructPix2PixPipeline",
        "control": "StableDiffusionXLControlNetPipeline",
    }
    tiny_version = 1

    def ldm_architecture(self, keys: list[str]) -> str | None:
        return "SDXL" if any(key.startswith("conditioner.embedders.") for key in keys) else None

    def lora_base_model_matches(self, base_model: str) -> bool:
        return "sdxl" in base_model.lower()

    def build_tiny(self, root: Path) -> None:
        from studio.families.sd_tiny import build_sdxl

        build_sdxl(root)
