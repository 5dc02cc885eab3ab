"""Builds the offline "tiny" model set from code: small random-weight models in the diffusers layout.

Everything the real presets load from the hub has a tiny twin here, saved with `save_pretrained`
(or as the files controlnet-aux expects), so the `tiny` preset goes through exactly the same
`from_pretrained` / `load_lora_weights` / annotator loading code. The weights are random but
deterministic (fixed seed): the same version of this file always builds the same models.

Layout under `<models_dir>/tiny/`:
    base/               StableDiffusionPipeline (UNet 4ch, VAE, CLIP text encoder, tokenizer, scheduler)
    inpaint/unet/       9-channel inpaint UNet
    instruct/unet/      8-channel InstructPix2Pix UNet
    control-scribble/   ControlNetModel
    control-openpose/   ControlNetModel
    control-canny/      ControlNetModel
    annotators/         body_pose_model.pth, hand_pose_model.pth, facenet.pth (controlnet-aux OpenPose)
    loras/              tiny-style-peft.safetensors (diffusers/PEFT keys), tiny-kohya.safetensors (kohya keys)
    preview-vae/        AutoencoderTiny (TAESD's architecture) for live previews
    sdxl-base/          StableDiffusionXLPipeline (two CLIP text encoders, the second with projection)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from studio.control import CONTROL_MODES

# Bump when the models change, so old caches are rebuilt instead of silently reused.
VERSION = 6
SEED = 20261121
_MARKER = "tiny-models.json"

CROSS_ATTENTION_DIM = 32
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet: one printable character for each of the 256 bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer():
    """A character-level CLIP tokenizer built in memory: every byte, alone or ending a word."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + list(_SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        norm_num_groups=32,
    )


def _vae():
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


def _preview_vae():
    from diffusers import AutoencoderTiny

    # TAESD's layout (three 2x upsamplings: latents to full size) with narrow blocks.
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))


def _text_encoder(tokenizer, with_projection: bool = False, hidden_size: int = CROSS_ATTENTION_DIM):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        layer_norm_eps=1e-5,
        projection_dim=hidden_size,
    )
    model = CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)
    # A trained CLIP's final layer norm has a bias, so its output's mean is not ~0; A1111's emphasis
    # divides by that mean. A zero bias (the init) would make the tiny model's weighting degenerate.
    with torch.no_grad():
        norm = getattr(model, "text_model", model).final_layer_norm
        norm.bias.normal_(0, 0.5)
    return model


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


def _scheduler():
    from diffusers import EulerAncestralDiscreteScheduler

    # The SD 1.5 noise schedule, as in its scheduler_config.json.
    return EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1,
    )


def _build_base(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    tokenizer = build_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=_unet(4),
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _build_sdxl_base(folder: Path) -> None:
    """SDXL's layout in miniature: two text encoders side by side (cross-attention 32 + 48), the
    second's projection and the size/crop conditioning in the UNet's added embedding. The two
    widths differ, as in SDXL (768, 1280): single-file loading tells the encoders apart by width."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = build_tokenizer()
    time_dim, second_width = 8, 48
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=second_width + 6 * time_dim,
        cross_attention_dim=CROSS_ATTENTION_DIM + second_width, norm_num_groups=32,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(tokenizer), text_encoder_2=_text_encoder(tokenizer, True, second_width),
        tokenizer=tokenizer, tokenizer_2=build_tokenizer(), unet=unet, scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder)


def _build_annotators(folder: Path) -> None:
    """Random OpenPose weights in the file layout controlnet-aux's `from_pretrained(folder)` reads."""
    from controlnet_aux.open_pose.body import bodypose_model
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.hand import handpose_model

    folder.mkdir(parents=True)
    # controlnet-aux strips the first name of each key (`model0.conv1_1.weight` -> `conv1_1.weight`).
    for model, name in ((bodypose_model(), "body_pose_model.pth"), (handpose_model(), "hand_pose_model.pth")):
        state = {".".join(k.split(".")[1:]): v.half() for k, v in model.state_dict().items()}
        torch.save(state, folder / name)
    torch.save({k: v.half() for k, v in FaceNet().state_dict().items()}, folder / "facenet.pth")


def _lora_layers(model, rank: int, targets: list[str]):
    """PEFT LoRA on `targets` of `model`, with random (non-zero) up weights."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    model.add_adapter(config, adapter_name="tiny")
    return get_peft_model_state_dict(model, adapter_name="tiny")


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
        unet_lora_layers=_lora_layers(unet, 4, ["to_q", "to_k", "to_v", "to_out.0"]),
        text_encoder_lora_layers=_lora_layers(text_encoder, 4, ["q_proj", "k_proj", "v_proj", "out_proj"]),
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


def _build_all(root: Path) -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    _build_base(root / "base")
    _unet(9).save_pretrained(root / "inpaint" / "unet")
    _unet(8).save_pretrained(root / "instruct" / "unet")
    base_unet = UNet2DConditionModel.from_pretrained(root / "base" / "unet")
    for mode in CONTROL_MODES:  # presets/tiny.toml names one per mode
        _controlnet(base_unet).save_pretrained(root / f"control-{mode}")
    _build_annotators(root / "annotators")
    _build_loras(root / "loras", root / "base")
    _preview_vae().save_pretrained(root / "preview-vae")
    _build_sdxl_base(root / "sdxl-base")
    (root / _MARKER).write_text(json.dumps({"version": VERSION, "seed": SEED, "control": list(CONTROL_MODES)}))


def is_built(root: Path) -> bool:
    try:
        marker = json.loads((root / _MARKER).read_text())
        # A new control mode (studio/control.py) needs its tiny ControlNet: rebuilt then.
        return marker.get("version") == VERSION and set(marker.get("control", ())) >= set(CONTROL_MODES)
    except (OSError, ValueError):
        return False


def ensure_built(root: Path) -> Path:
    """Build the tiny set into `root` unless an up-to-date one is there. Returns `root`.

    Built in a temporary sibling folder and renamed into place, so an interrupted build never
    leaves a half set that looks complete.
    """
    if is_built(root):
        return root
    from filelock import FileLock  # huggingface_hub's dependency

    root.parent.mkdir(parents=True, exist_ok=True)
    # Two processes (two studios, or parallel test workers) build it once: the second waits here,
    # then finds it built, instead of deleting the folder the first is reading.
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_built(root):
            return root
        staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root.parent))
        try:
            with torch.random.fork_rng():
                _build_all(staging)
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root
