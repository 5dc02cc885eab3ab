"""Writes a diffusers pipeline as one `.safetensors` file in the original (LDM) key layout, the one
civitai serves: `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`
(SD 1.x) or `conditioner.embedders.{0,1}.*` (SDXL).

The tests and the benchmark use it to make real single-file checkpoints from the tiny (or
SD-1.5-shaped) models, so that loading them with `from_single_file` can be compared, pixel for
pixel, with loading the same weights from the diffusers folder. Written from the layouts'
structure; diffusers' forward conversion checks it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(state: dict, layers_per_block: int, up_attention: list[bool]) -> dict:
    """UNet2DConditionModel keys -> `model.diffusion_model.*`. `up_attention[i]`: up block i has
    attentions (the LDM upsampler then sits at index 2 of its last layer, else 1)."""
    stride = layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in fixed:
            new = f"{fixed[module]}.{param}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + i * stride + j}.0.{_rename_first(rest, _RESNET)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            new = f"input_blocks.{1 + int(m[1]) * stride + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{1 + int(m[1]) * stride + layers_per_block}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_rename_first(m[2], _RESNET)}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"output_blocks.{int(m[1]) * stride + int(m[2])}.0.{_rename_first(m[3], _RESNET)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            new = f"output_blocks.{int(m[1]) * stride + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            i = int(m[1])
            new = f"output_blocks.{i * stride + layers_per_block}.{2 if up_attention[i] else 1}.conv.{m[2]}"
        else:
            raise ValueError(f"no LDM name for UNet key {key}")
        out[f"model.diffusion_model.{new}"] = value
    return out


def vae_to_ldm(state: dict, blocks: int) -> dict:
    """AutoencoderKL keys -> `first_stage_model.*` (decoder blocks numbered bottom-up, attention
    projections as 1x1 convolutions)."""
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
            new = f"{m[1]}.mid.attn_1.{_rename_first(m[2], _VAE_ATTENTION)}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[f"first_stage_model.{new}"] = value
    return out


def clip_to_ldm(state: dict, prefix: str) -> dict:
    """A CLIPTextModel's keys under `prefix`, in the `text_model.*` layout A1111 files use."""
    return {f"{prefix}{key if key.startswith('text_model.') else 'text_model.' + key}": value
            for key, value in state.items() if not key.endswith("position_ids")}


def open_clip_to_ldm(state: dict, prefix: str) -> dict:
    """A CLIPTextModelWithProjection's keys in OpenCLIP's layout (SDXL's second encoder): q, k and v
    joined into `in_proj`, the projection transposed."""
    names = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    layer = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    out = {}
    for key, value in state.items():
        if key in names:
            out[prefix + names[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", key):
            n, param = m[1], m[2]
            parts = [state[f"text_model.encoder.layers.{n}.self_attn.{p}_proj.{param}"] for p in "qkv"]
            out[f"{prefix}transformer.resblocks.{n}.attn.in_proj_{param}"] = torch.cat(parts)
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            if "self_attn." in m[2] and "out_proj" not in m[2]:
                continue  # k and v went into in_proj with q
            out[f"{prefix}transformer.resblocks.{m[1]}.{_rename_first(m[2], layer)}"] = value
    return out


def export_checkpoint(pipe, path: Path, unet=None) -> Path:
    """Save `pipe` (SD 1.x or SDXL; `unet` replaces its UNet, e.g. an inpainting one) as one
    `.safetensors` file in the LDM layout."""
    from safetensors.torch import save_file

    unet = unet or pipe.unet
    config = unet.config
    up_attention = [name.startswith("CrossAttn") for name in config.up_block_types]
    state = unet_to_ldm(unet.state_dict(), config.layers_per_block, up_attention)
    state |= vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.down_block_types))
    if getattr(pipe, "text_encoder_2", None) is not None:
        state |= clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        state |= open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
    else:
        state |= clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path
