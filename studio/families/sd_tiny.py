"""The tiny offline twins of SD 1.x and SDXL (studio/tiny.py builds the set; these are their parts).

Under `<models_dir>/tiny/`:
    base/               StableDiffusionPipeline (UNet 4ch, VAE, CLIP text encoder, tokenizer, scheduler)
    inpaint/unet/       9-channel inpaint UNet
    instruct/unet/      8-channel InstructPix2Pix UNet
    control-<mode>/     ControlNetModel, one per control mode
    loras/              tiny-style-peft.safetensors (diffusers/PEFT keys), tiny-kohya.safetensors (kohya keys)
    preview-vae/        AutoencoderTiny (TAESD's architecture) for live previews
    sdxl-base/          StableDiffusionXLPipeline (two CLIP text encoders, the second with projection)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio import tiny
from studio.control import CONTROL_MODES


def sd_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=tiny.CROSS_ATTENTION_DIM,
        norm_num_groups=32,
    )


def sd_vae():
    from diffusers import AutoencoderKL

    # Four blocks give the same 8x latent downscale as the real SD VAE, so size rules match.
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _controlnet(unet):
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    # The real zero-initialised output convolutions would make a fresh ControlNet a no-op;
    # give them small random weights so the control image visibly steers the tiny model.
    with torch.no_grad():
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            for param in module.parameters():
                param.normal_(0, 0.2)
        for param in controlnet.controlnet_cond_embedding.conv_out.parameters():
            param.normal_(0, 0.2)
    return controlnet


def ddpm_scheduler():
    from diffusers import EulerAncestralDiscreteScheduler

    # The SD 1.5 noise schedule, as in its scheduler_config.json.
    return EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1,
    )


def _build_base(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    tokenizer = tiny.build_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=sd_unet(4),
        vae=sd_vae(),
        text_encoder=tiny.text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=ddpm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _build_loras(folder: Path, base: Path) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder.mkdir(parents=True)
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
    # The diffusers/PEFT one also patches the text encoder, as many real LoRAs do.
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=tiny.lora_layers(unet, 4, ["to_q", "to_k", "to_v", "to_out.0"]),
        text_encoder_lora_layers=tiny.lora_layers(text_encoder, 4, ["q_proj", "k_proj", "v_proj", "out_proj"]),
        weight_name="tiny-style-peft.safetensors",
    )
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
    save_file(_kohya_state_dict(unet, text_encoder, rank=4), folder / "tiny-kohya.safetensors",
              metadata=_kohya_metadata())


def _kohya_state_dict(unet, text_encoder, rank: int) -> dict[str, torch.Tensor]:
    """A LoRA as kohya-ss / A1111 write it, and civitai serves it: `lora_unet_<module path with _>`
    and `lora_te_text_model_<...>` keys with `.lora_down.weight`, `.lora_up.weight` and `.alpha`,
    on the UNet's attention, its ResNet convolutions (LoCon) and the text encoder's attention and MLP."""
    state: dict[str, torch.Tensor] = {}

    def add(key: str, down: torch.Tensor, up: torch.Tensor) -> None:
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down * 0.3, up * 0.3
        state[f"{key}.alpha"] = torch.tensor(float(rank))

    for name, module in unet.named_modules():
        key = "lora_unet_" + name.replace(".", "_")
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and ".attn" in name:
            add(key, torch.randn(rank, module.in_features), torch.randn(module.out_features, rank))
        elif name.endswith(("conv1", "conv2")) and ".resnets." in name:
            add(key, torch.randn(rank, module.in_channels, 3, 3), torch.randn(module.out_channels, rank, 1, 1))
    for name, module in text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            path = name if name.startswith("text_model.") else f"text_model.{name}"  # A1111's names have it
            add("lora_te_" + path.replace(".", "_"), torch.randn(rank, module.in_features),
                torch.randn(module.out_features, rank))
    return state


def _kohya_metadata() -> dict[str, str]:
    # What kohya's trainer writes into the safetensors header (all values are strings).
    return {
        "ss_base_model_version": "sd_v1",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "4",
        "ss_tag_frequency": json.dumps({"10_tinystyle": {"tinystyle": 10, "watercolor": 6}}),
    }


def build_sdxl(root: Path) -> None:
    """SDXL's layout in miniature: two text encoders side by side (cross-attention 32 + 48), the
    second's projection and the size/crop conditioning in the UNet's added embedding. The two
    widths differ, as in SDXL (768, 1280): single-file loading tells the encoders apart by width."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = tiny.build_tokenizer()
    time_dim, second_width = 8, 48
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=second_width + 6 * time_dim,
        cross_attention_dim=tiny.CROSS_ATTENTION_DIM + second_width, norm_num_groups=32,
    )
    pipe = StableDiffusionXLPipeline(
        vae=sd_vae(), text_encoder=tiny.text_encoder(tokenizer),
        text_encoder_2=tiny.text_encoder(tokenizer, True, second_width),
        tokenizer=tokenizer, tokenizer_2=tiny.build_tokenizer(), unet=unet, scheduler=ddpm_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(root / "sdxl-base")


def build_sd1(root: Path) -> None:
    from diffusers import UNet2DConditionModel

    _build_base(root / "base")
    sd_unet(9).save_pretrained(root / "inpaint" / "unet")
    sd_unet(8).save_pretrained(root / "instruct" / "unet")
    base_unet = UNet2DConditionModel.from_pretrained(root / "base" / "unet")
    for mode in CONTROL_MODES:  # presets/tiny.toml names one per mode
        _controlnet(base_unet).save_pretrained(root / f"control-{mode}")
    _build_loras(root / "loras", root / "base")
    tiny.preview_vae().save_pretrained(root / "preview-vae")
