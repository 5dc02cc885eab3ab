"""FLUX.1 (Black Forest Labs): a rectified-flow transformer with T5 + CLIP text encoders and a
16-channel VAE; dev is guidance-distilled (a guidance input, no negative prompt), schnell takes
neither. Fill is its inpainting transformer, Kontext its instruction editor, and the Union
ControlNets steer it with a control mode per map."""

from __future__ import annotations

import json
from pathlib import Path

from studio.families.base import Capabilities, Detected, Family, LatentFormat
from studio.samplers import FLOW_SAMPLERS

# The Union ControlNets' modes (InstantX / Shakker-Labs FLUX.1-dev-ControlNet-Union): canny 0,
# tile 1, depth 2, blur 3, pose 4, gray 5, low quality 6.
UNION_MODES = {"canny": 0, "openpose": 4}
_LORA_PREFIXES = ("transformer.", "lora_unet_double_blocks_", "lora_unet_single_blocks_", "double_blocks.",
                  "single_blocks.", "lora_transformer_", "diffusion_model.double_blocks.")
_BFL_PREFIXES = ("", "model.diffusion_model.")  # transformer-only files, and full checkpoints


def is_flux_lora(keys: list[str]) -> bool:
    return any(key.startswith(_LORA_PREFIXES) for key in keys)


class Flux(Family):
    name = "flux"
    title = "FLUX.1"
    capabilities = Capabilities(negative_prompt=False, guidance="distilled", guidance_label="Distilled CFG Scale",
                                guidance_range=(0.0, 30.0), clip_skip=False, image_guidance=False,
                                samplers=tuple(FLOW_SAMPLERS), prompt_tokens=512,
                                step_caches=("first-block", "taylorseer"))
    # taef1's latent_rgb_factors as ComfyUI uses them for FLUX.1's approximate previews.
    latent = LatentFormat(16, (
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
    ), rgb_bias=(-0.0329, -0.0718, -0.0851))
    size_multiple = 16
    pipelines = {
        "txt2img": "FluxPipeline",
        "img2img": "FluxImg2ImgPipeline",
        "inpaint": "FluxInpaintPipeline",  # on the base transformer when the preset has no Fill model
        "instruct": "FluxKontextPipeline",
        "control": "FluxControlNetPipeline",
    }
    variant_pipelines = {"inpaint": "FluxFillPipeline"}
    denoiser = "transformer"
    denoiser_class = "FluxTransformer2DModel"
    control_class = "FluxControlNetModel"
    samplers = FLOW_SAMPLERS
    variant_channels = {"inpaint": 384}  # a Fill transformer's input: latents, masked latents, mask
    tiny_version = 1
    half_dtype = "bfloat16"  # T5 and the transformer overflow in float16 (black images)
    step_cost = 4.0  # a 12B transformer against an 0.9B UNet, at the same number of pixels

    def task_inputs(self, task: str, inputs: dict, pipe, control_mode: str | None) -> dict:
        inputs = dict(inputs)
        if task in ("img2img", "inpaint") and "width" not in inputs:  # Flux's default is 1024², not the image's
            first = inputs["image"][0] if isinstance(inputs["image"], list) else inputs["image"]
            inputs |= {"width": first.width, "height": first.height}
        if task == "instruct":  # Kontext: no image guidance; keep the input's size (rounded to 16)
            image = inputs["image"]
            inputs.pop("image_guidance_scale", None)
            inputs |= {"width": image.width, "height": image.height, "max_area": image.width * image.height,
                       "_auto_resize": False}
        elif task == "control":
            inputs["control_image"] = inputs.pop("image")
            if pipe.controlnet.config.num_mode is not None:  # a Union ControlNet with a mode input (not Pro 2.0)
                inputs["control_mode"] = UNION_MODES[control_mode]
        return inputs

    def unpack_latents(self, pipe, latents, size: tuple[int, int]):
        # FLUX.1's latents come packed in 2x2 patches, (B, h/2 * w/2, 64): the pipeline's own unpacking.
        return pipe._unpack_latents(latents, size[1], size[0], pipe.vae_scale_factor)

    def call_kwargs(self, request) -> dict:
        # The prompt embeddings come one row per image (FluxPipeline does not repeat given ones).
        return super().call_kwargs(request) | {"num_images_per_prompt": 1}

    def encode_prompts(self, pipe, request, embeddings, syntax: str, caps):
        from studio.families.flux_prompts import encode_flux_prompt

        found = embeddings.find(f"{request.prompt}\n{request.negative_prompt}") if embeddings is not None else []
        return encode_flux_prompt(pipe, request.prompt, request.negative_prompt, request.clip_skip,
                                  request.batch_size, caps.prompt_tokens, found, syntax)

    def step_cache(self, name: str):
        import diffusers

        # diffusers' defaults: First Block Cache reuses the other blocks' output while the first
        # block's changes by under 5%; TaylorSeer forecasts features between full steps.
        return {"first-block": lambda: diffusers.FirstBlockCacheConfig(threshold=0.05),
                "taylorseer": lambda: diffusers.TaylorSeerCacheConfig()}[name]()

    def lora_base_model_matches(self, base_model: str) -> bool:
        return "flux" in base_model.lower()

    def lora_keys_match(self, keys: list[str]) -> bool | None:
        return is_flux_lora(keys)

    def load_lora_into_denoiser(self, pipe, state: dict, adapter: str) -> None:
        converted, alphas = pipe.lora_state_dict(dict(state), return_alphas=True)
        pipe.load_lora_into_transformer(converted, network_alphas=alphas, transformer=pipe.transformer,
                                        adapter_name=adapter, _pipeline=pipe)

    # --- single files: the transformer alone (BFL / civitai layout), .safetensors or .gguf --------

    def detect(self, keys: list[str], shape) -> Detected | None:
        prefix = next((p for p in _BFL_PREFIXES if f"{p}double_blocks.0.img_attn.qkv.weight" in keys), None)
        if prefix is None:
            return None
        in_channels = shape(f"{prefix}img_in.weight")[1]
        kinds = {64: "base", 384: "inpaint"}
        if in_channels not in kinds:
            from studio.errors import RequestError

            raise RequestError(f"This FLUX.1 transformer takes {in_channels} input channels; the studio runs the "
                               "base models (64) and Fill (384). FLUX.1 Canny/Depth (128) are not supported.")
        guidance = f"{prefix}guidance_in.in_layer.weight" in keys
        width = shape(f"{prefix}txt_in.weight")[1]
        architecture = ("FLUX.1-dev" if guidance else "FLUX.1-schnell") + (" Fill" if in_channels == 384 else "")
        return Detected(self.name, architecture, kinds[in_channels], (guidance, width), transformer_only=True)

    def config_fingerprint(self, folder: Path) -> tuple | None:
        config = folder / "transformer" / "config.json"
        if not config.is_file():
            return None
        values = json.loads(config.read_text())
        return bool(values.get("guidance_embeds")), int(values["joint_attention_dim"])

    def load_single_file(self, cls, role: str, path: Path, config: Path, dtype, components: str | None = None,
                         **kwargs):
        """The transformer from `path` (GGUF through diffusers' GGUF quantizer), with its config
        from `config`; for the base, the text encoders, VAE and scheduler from `components`."""
        import diffusers

        from studio.families.flux_files import load_single_file

        transformer_kwargs = {}
        if role in self.variant_channels:  # FLUX.1 Fill: 384 channels in, 64 out
            transformer_kwargs |= {"in_channels": self.variant_channels[role], "out_channels": 64}
        if path.suffix.lower() == ".gguf":
            transformer_kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
        transformer = load_single_file(path, config, subfolder="transformer", torch_dtype=dtype, **transformer_kwargs)
        if role != "base":
            return transformer
        return cls.from_pretrained(components, transformer=transformer, dtype=dtype, **kwargs)

    def build_tiny(self, root: Path) -> None:
        from studio.families.flux_tiny import build

        build(root / "flux")
