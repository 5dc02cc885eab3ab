"""The tiny offline twin of FLUX.1: small random-weight models in the diffusers layout, built from code.

Same idea as studio/tiny.py: every FLUX.1 part the real presets load from the hub has a tiny twin
saved with `save_pretrained`, so the tiny preset goes through the same `from_pretrained` /
`from_pipe` / `load_lora_weights` / `from_single_file` code. Weights are random but deterministic.

Layout under `root` (see `build`):
    base/                   FluxPipeline (transformer 64ch with guidance embedding like FLUX.1-dev, 16-channel
                            VAE, CLIP text encoder + char-level CLIPTokenizer, T5 encoder + char-level
                            T5Tokenizer, FlowMatchEulerDiscreteScheduler as FLUX.1-dev's)
    fill/transformer/       FLUX.1-Fill transformer (in_channels 384 = 64 latents + 64 masked latents + 256 mask)
    kontext/transformer/    FLUX.1-Kontext transformer (base's architecture, other weights)
    control-union/          FluxControlNetModel, union (`num_mode`), non-zero output projections
    preview-vae/            AutoencoderTiny with 16 latent channels (taef1's layout in miniature)
    loras/                  tiny-flux-peft.safetensors (diffusers/PEFT keys), tiny-flux-kohya.safetensors
                            (sd-scripts keys on BFL module names, `ss_*` metadata), tiny-flux-xlabs.safetensors

Its single files (for the tests) are written by studio/families/flux_files.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SEED = 20261201

# inner_dim 32: every linear's input width (32, 64, 128, 160, 256) is a multiple of the 32-wide
# GGUF Q8_0 / Q4_0 blocks, so nearly all weights quantize.
HEADS = 2
HEAD_DIM = 16
ROPE_AXES = (4, 6, 6)  # sum = HEAD_DIM; each even (rotary pairs)
CLIP_DIM = 32  # = pooled_projection_dim
T5_DIM = 32  # = joint_attention_dim
LATENT_CHANNELS = 16
NUM_LAYERS = 2
NUM_SINGLE_LAYERS = 2
T5_MAX_LENGTH = 512
CONTROL_MODES = 10  # InstantX / Shakker union ControlNets have 10 mode slots
LORA_RANK = 4


# ---------------------------------------------------------------- components


def transformer(in_channels: int = 64, out_channels: int | None = None):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, out_channels=out_channels, num_layers=NUM_LAYERS,
        num_single_layers=NUM_SINGLE_LAYERS, attention_head_dim=HEAD_DIM, num_attention_heads=HEADS,
        joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_DIM, guidance_embeds=True, axes_dims_rope=ROPE_AXES,
    )


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks keep FLUX's 8x downscale; no quant convs and FLUX.1's latent shift/scale.
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=LATENT_CHANNELS, norm_num_groups=8, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
    )


def _preview_vae():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(latent_channels=LATENT_CHANNELS, encoder_block_out_channels=(8, 8, 8, 8),
                           decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                           num_decoder_blocks=(1, 1, 1, 1))


def _clip(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=CLIP_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=CLIP_DIM,
    )
    return CLIPTextModel(config)


def t5_tokenizer():
    """A character-level T5 (Unigram) tokenizer built in memory: each word becomes "▁" + first char,
    then one piece per char, so prompt length in tokens ~ length in characters (no sentencepiece file)."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x180)]
    # Unigram keeps the best-scoring split: "▁h"+"e"... beats "▁"+"h"+"e"...
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    # T5 v1.1's gated-GELU feed-forward, as FLUX's t5-v1_1-xxl.
    config = T5Config(
        vocab_size=len(tokenizer), d_model=T5_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, is_encoder_decoder=False, tie_word_embeddings=False,
    )
    return T5EncoderModel(config)


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.1-dev's scheduler_config.json (the shift grows with the image's token count).
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )


def _controlnet(base):
    from diffusers import FluxControlNetModel

    config = {k: v for k, v in base.config.items() if not k.startswith("_") and k != "out_channels"}
    controlnet = FluxControlNetModel(**{**config, "num_layers": 2, "num_single_layers": 1, "num_mode": CONTROL_MODES})
    # Trained from the transformer, as the real ones are (FluxControlNetModel.from_transformer).
    for name in ("pos_embed", "time_text_embed", "context_embedder", "x_embedder"):
        getattr(controlnet, name).load_state_dict(getattr(base, name).state_dict())
    controlnet.transformer_blocks.load_state_dict(base.transformer_blocks.state_dict(), strict=False)
    controlnet.single_transformer_blocks.load_state_dict(base.single_transformer_blocks[:1].state_dict())
    # The real zero-initialised outputs would make a fresh ControlNet a no-op; small random
    # weights let the control image (and the mode) visibly steer the tiny model.
    with torch.no_grad():
        for module in [*controlnet.controlnet_blocks, *controlnet.controlnet_single_blocks,
                       controlnet.controlnet_x_embedder]:
            for param in module.parameters():
                param.normal_(0, 0.2)
    return controlnet


def _build_base(folder: Path) -> None:
    from diffusers import FluxPipeline

    from studio.tiny import build_tokenizer

    clip_tokenizer, t5 = build_tokenizer(), t5_tokenizer()
    pipe = FluxPipeline(
        scheduler=_scheduler(), vae=_vae(), text_encoder=_clip(clip_tokenizer), tokenizer=clip_tokenizer,
        text_encoder_2=_t5(t5), tokenizer_2=t5, transformer=transformer(),
    )
    pipe.save_pretrained(folder)


# ---------------------------------------------------------------- LoRAs


def _lora_pair(in_features: int, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    # (down, up) with a product of order 0.1 per weight: visible, not destructive.
    return torch.randn(LORA_RANK, in_features) * 0.3, torch.randn(out_features, LORA_RANK) * 0.3


def _peft_layers(model, targets: list[str]) -> dict[str, torch.Tensor]:
    """PEFT LoRA keys for `targets` of `model`, with the same random (A, B) scale as the other two files
    (PEFT's own non-zero init gives a barely visible change on the tiny model)."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=targets, init_lora_weights=False)
    model.add_adapter(config, adapter_name="tiny")
    state = get_peft_model_state_dict(model, adapter_name="tiny")
    for key, value in state.items():
        if key.endswith("lora_A.weight"):
            state[key] = _lora_pair(value.shape[1], 1)[0]
        else:
            state[key] = _lora_pair(1, value.shape[0])[1]
    return state


def _kohya_state_dict(dims: int, clip) -> dict[str, torch.Tensor]:
    """A Flux LoRA as kohya's sd-scripts (networks.lora_flux) writes it: `lora_unet_<BFL module path
    with _>` and `lora_te1_<CLIP path>` keys with `.lora_down.weight`, `.lora_up.weight`, `.alpha`.
    Leaves out `single_blocks_N_linear1`: diffusers 0.42 splits it as 3072/3072/3072/12288 rows."""
    state: dict[str, torch.Tensor] = {}

    def add(key: str, in_features: int, out_features: int) -> None:
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = _lora_pair(in_features, out_features)
        state[f"{key}.alpha"] = torch.tensor(LORA_RANK / 2)  # alpha != rank: the converter's rescale is used

    mlp = dims * 4
    for i in range(NUM_LAYERS):
        for stream in ("img", "txt"):
            prefix = f"lora_unet_double_blocks_{i}_{stream}"
            add(f"{prefix}_attn_qkv", dims, 3 * dims)
            add(f"{prefix}_attn_proj", dims, dims)
            add(f"{prefix}_mlp_0", dims, mlp)
            add(f"{prefix}_mlp_2", mlp, dims)
    for i in range(NUM_SINGLE_LAYERS):
        add(f"lora_unet_single_blocks_{i}_linear2", dims + mlp, dims)
        add(f"lora_unet_single_blocks_{i}_modulation_lin", dims, 3 * dims)
    for i in range(clip.config.num_hidden_layers):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"lora_te1_text_model_encoder_layers_{i}_self_attn_{name}", CLIP_DIM, CLIP_DIM)
    return state


def _kohya_metadata() -> dict[str, str]:
    # What sd-scripts' flux_train_network.py writes into the safetensors header (all strings).
    return {
        "ss_base_model_version": "flux1",
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": str(LORA_RANK),
        "ss_network_alpha": str(LORA_RANK / 2),
        "ss_output_name": "tiny-flux-kohya",
        "ss_tag_frequency": json.dumps({"10_tinyflux": {"tinyflux": 10, "ink sketch": 4}}),
    }


def _xlabs_state_dict(dims: int) -> dict[str, torch.Tensor]:
    """XLabs-AI's layout: attention-processor LoRAs on the double blocks (1 = image, 2 = text), no alpha."""
    state: dict[str, torch.Tensor] = {}
    for i in range(NUM_LAYERS):
        for n in ("1", "2"):
            for name, out in (("qkv", 3 * dims), ("proj", dims)):
                key = f"double_blocks.{i}.processor.{name}_lora{n}"
                state[f"{key}.down.weight"], state[f"{key}.up.weight"] = _lora_pair(dims, out)
    return state


def _build_loras(folder: Path, base: Path) -> None:
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder.mkdir(parents=True)
    model = FluxTransformer2DModel.from_pretrained(base / "transformer")
    dims = model.inner_dim
    FluxPipeline.save_lora_weights(
        folder, transformer_lora_layers=_peft_layers(model, ["to_q", "to_k", "to_v", "to_out.0"]),
        weight_name="tiny-flux-peft.safetensors",
    )
    clip = CLIPTextModel.from_pretrained(base / "text_encoder")
    save_file(_kohya_state_dict(dims, clip), folder / "tiny-flux-kohya.safetensors", metadata=_kohya_metadata())
    save_file(_xlabs_state_dict(dims), folder / "tiny-flux-xlabs.safetensors")


def build(root: Path) -> None:
    """Write the tiny FLUX.1 set into `root` (a fresh staging folder; the caller renames it into place)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(SEED)
    _build_base(root / "base")
    transformer(in_channels=384, out_channels=64).save_pretrained(root / "fill" / "transformer")
    transformer().save_pretrained(root / "kontext" / "transformer")
    base = FluxTransformer2DModel.from_pretrained(root / "base" / "transformer")
    _controlnet(base).save_pretrained(root / "control-union")
    _preview_vae().save_pretrained(root / "preview-vae")
    _build_loras(root / "loras", root / "base")
