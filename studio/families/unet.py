"""What SD 1.x/2.x and SDXL share: a UNet denoiser, ControlNetModel, the 9-channel inpainting and
8-channel InstructPix2Pix UNets, A1111's prompt encoding over CLIP, and the LDM single-file layout
(`model.diffusion_model.*`) that civitai checkpoints use."""

from __future__ import annotations

import json
from pathlib import Path

from studio.families.base import Detected, Family
from studio.samplers import DIFFUSION_SAMPLERS

LDM_UNET = "model.diffusion_model."
KINDS = {4: "base", 9: "inpaint", 8: "instruct"}  # UNet input channels -> what the model does


class UNetFamily(Family):
    denoiser = "unet"
    convolutional = True
    denoiser_class = "UNet2DConditionModel"
    control_class = "ControlNetModel"
    variant_channels = {"inpaint": 9, "instruct": 8}
    samplers = DIFFUSION_SAMPLERS

    def step_cached(self, denoiser, name: str):
        from studio.families.deepcache import deep_cached

        return deep_cached(denoiser)  # the one step cache of UNets: "deepcache"

    def encode_prompts(self, pipe, request, embeddings, syntax: str, caps):
        from studio.families import clip_prompts

        prompt, negative, clip_skip = request.prompt, request.negative_prompt, request.clip_skip
        if syntax == "plain":
            return clip_prompts.plain_prompts(pipe, prompt, negative, clip_skip)
        return clip_prompts.encode_prompts(pipe, prompt, negative, clip_skip, embeddings)

    def lora_keys_match(self, keys: list[str]) -> bool | None:
        from studio.families.flux import is_flux_lora  # a transformer's keys are the one sure sign

        return False if is_flux_lora(keys) else None

    def load_lora_into_denoiser(self, pipe, state: dict, adapter: str) -> None:
        converted, alphas = pipe.lora_state_dict(dict(state))
        pipe.load_lora_into_unet(converted, alphas, unet=pipe.unet, adapter_name=adapter, _pipeline=pipe)

    def ldm_architecture(self, keys: list[str]) -> str | None:
        """This family's architecture name for an LDM checkpoint's text-encoder keys, or None."""
        raise NotImplementedError

    def detect(self, keys: list[str], shape) -> Detected | None:
        first = f"{LDM_UNET}input_blocks.0.0.weight"
        if first not in keys:
            return None
        architecture = self.ldm_architecture(keys)
        if architecture is None:
            return None
        in_channels = shape(first)[1]
        if in_channels not in KINDS:
            from studio.errors import RequestError

            raise RequestError(f"This {architecture} checkpoint has a UNet with {in_channels} input channels; the "
                               "studio runs 4 (plain), 8 (InstructPix2Pix) and 9 (inpainting).")
        attention = sorted(key for key in keys if key.startswith(LDM_UNET) and key.endswith("attn2.to_k.weight"))
        context_dim = shape(attention[0])[1] if attention else 0
        return Detected(self.name, architecture, KINDS[in_channels], (context_dim,))

    def config_fingerprint(self, folder: Path) -> tuple | None:
        unet = folder / "unet" / "config.json"
        if not unet.is_file():
            return None
        return (int(json.loads(unet.read_text())["cross_attention_dim"]),)

    def load_single_file(self, cls, role: str, path: Path, config: Path, dtype, **kwargs):
        if role in self.variant_channels:  # an inpainting or instruct checkpoint's UNet
            kwargs["in_channels"] = self.variant_channels[role]
        return cls.from_single_file(str(path), config=str(config), local_files_only=True, dtype=dtype,
                                             **kwargs)
