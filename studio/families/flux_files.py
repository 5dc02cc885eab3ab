"""FLUX.1's single files: the BFL / civitai layout of a transformer (`double_blocks.0.img_attn.qkv`,
`single_blocks.0.linear1`, ...), as `.safetensors` or city96's `.gguf`, to and from diffusers' names.

diffusers 0.42's own converter hard-codes FLUX.1's width (`inner_dim = 3072`, single-block split
3072/3072/3072/12288), which no smaller transformer fits; `bfl_to_diffusers` reads the widths from
the config instead, so the studio loads every file (the real ones, and the tiny twin's that the
tests write) through the same code: read the file, convert the keys, hand the diffusers-keyed dict
to `from_single_file`, which then loads it unconverted (GGUF tensors stay quantized).
"""

from __future__ import annotations

from pathlib import Path

import torch


def _folder_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))  # one file, or the shards of a big model
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    # BFL's final adaLN is (shift, scale), diffusers' (scale, shift): the swap is its own inverse.
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


# (diffusers name, BFL name) for the one-to-one tensors, without .weight/.bias.
_EMBEDDERS = [
    ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
    ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
    ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
    ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
    ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
    ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
    ("context_embedder", "txt_in"),
    ("x_embedder", "img_in"),
    ("proj_out", "final_layer.linear"),
]
_DOUBLE = [
    ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
    ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
    ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"),
    ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
]
_DOUBLE_NORMS = [
    ("attn.norm_q", "img_attn.norm.query_norm"), ("attn.norm_k", "img_attn.norm.key_norm"),
    ("attn.norm_added_q", "txt_attn.norm.query_norm"), ("attn.norm_added_k", "txt_attn.norm.key_norm"),
]
_DOUBLE_QKV = [
    (("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn.qkv"),
    (("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn.qkv"),
]
_SINGLE = [("norm.linear", "modulation.lin"), ("proj_out", "linear2")]
_SINGLE_NORMS = [("attn.norm_q", "norm.query_norm"), ("attn.norm_k", "norm.key_norm")]
_SINGLE_QKV = (("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear1")


def _block_count(state: dict, prefix: str) -> int:
    return len({k.split(".")[1] for k in state if k.startswith(prefix)})


def diffusers_to_bfl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A FluxTransformer2DModel state dict in BFL's names: the inverse of diffusers'
    `convert_flux_transformer_checkpoint_to_diffusers` (fused qkv, (shift, scale) final adaLN)."""
    src, out = dict(state), {}

    def move(old: str, new: str) -> None:
        for suffix in (".weight", ".bias"):
            if old + suffix in src:
                out[new + suffix] = src.pop(old + suffix)

    def fuse(olds: tuple[str, ...], new: str) -> None:
        for suffix in (".weight", ".bias"):
            out[new + suffix] = torch.cat([src.pop(o + suffix) for o in olds], dim=0)

    for old, new in _EMBEDDERS:
        move(old, new)
    out["final_layer.adaLN_modulation.1.weight"] = _swap_halves(src.pop("norm_out.linear.weight"))
    out["final_layer.adaLN_modulation.1.bias"] = _swap_halves(src.pop("norm_out.linear.bias"))
    for i in range(_block_count(src, "transformer_blocks.")):
        a, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for old, new in _DOUBLE:
            move(a + old, b + new)
        for old, new in _DOUBLE_NORMS:
            out[f"{b}{new}.scale"] = src.pop(f"{a}{old}.weight")
        for olds, new in _DOUBLE_QKV:
            fuse(tuple(a + o for o in olds), b + new)
    for i in range(_block_count(src, "single_transformer_blocks.")):
        a, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for old, new in _SINGLE:
            move(a + old, b + new)
        for old, new in _SINGLE_NORMS:
            out[f"{b}{new}.scale"] = src.pop(f"{a}{old}.weight")
        fuse(tuple(a + o for o in _SINGLE_QKV[0]), b + _SINGLE_QKV[1])
    if src:
        raise ValueError(f"unmapped Flux transformer keys: {sorted(src)[:8]}")
    return out


def bfl_to_diffusers(checkpoint: dict, config: dict) -> dict:
    """BFL names to diffusers', with the widths from `config` (diffusers' own converter assumes
    FLUX.1's 3072). Accepts GGUF tensors too: the fused weights are split by rows only."""
    prefix = "model.diffusion_model."
    if any(k.startswith(prefix) for k in checkpoint):  # an all-in-one file: keep the transformer's part
        checkpoint = {k: v for k, v in checkpoint.items() if k.startswith(prefix)}
    src = {k.removeprefix(prefix): v for k, v in checkpoint.items()}
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    out = {}

    def move(new: str, old: str) -> None:
        for suffix in (".weight", ".bias"):
            if old + suffix in src:
                out[new + suffix] = src.pop(old + suffix)

    def split(news: tuple[str, ...], old: str, sizes: list[int]) -> None:
        for suffix in (".weight", ".bias"):
            for new, part in zip(news, torch.split(src.pop(old + suffix), sizes, dim=0)):
                out[new + suffix] = part

    for new, old in _EMBEDDERS:
        move(new, old)
    out["norm_out.linear.weight"] = _swap_halves(src.pop("final_layer.adaLN_modulation.1.weight"))
    out["norm_out.linear.bias"] = _swap_halves(src.pop("final_layer.adaLN_modulation.1.bias"))
    for i in range(_block_count(src, "double_blocks.")):
        a, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for new, old in _DOUBLE:
            move(a + new, b + old)
        for new, old in _DOUBLE_NORMS:
            out[f"{a}{new}.weight"] = src.pop(f"{b}{old}.scale")
        for news, old in _DOUBLE_QKV:
            split(tuple(a + n for n in news), b + old, [inner] * 3)
    for i in range(_block_count(src, "single_blocks.")):
        a, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for new, old in _SINGLE:
            move(a + new, b + old)
        for new, old in _SINGLE_NORMS:
            out[f"{a}{new}.weight"] = src.pop(f"{b}{old}.scale")
        rows = src[f"{b}linear1.weight"].shape[0]
        split(tuple(a + n for n in _SINGLE_QKV[0]), b + _SINGLE_QKV[1], [inner] * 3 + [rows - 3 * inner])
    if src:
        raise ValueError(f"unmapped BFL Flux keys: {sorted(src)[:8]}")
    return out


def export_transformer_single_file(transformer_folder: Path, path: Path) -> Path:
    """Write a diffusers Flux transformer folder as one BFL-layout `.safetensors` (civitai's form)."""
    from safetensors.torch import save_file

    state = diffusers_to_bfl(_folder_state_dict(Path(transformer_folder)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    return path


_QUANTS = ("Q8_0", "Q4_0", "F16")


def export_gguf(transformer_folder: Path, path: Path, quant: str = "Q8_0") -> Path:
    """Write a Flux transformer folder as a city96-style `.gguf` in BFL names: 2-D weights whose rows
    split into whole blocks quantized as `quant`, 1-D tensors (biases, norm scales) F32, the rest F16."""
    import gguf
    import numpy as np

    if quant not in _QUANTS:
        raise ValueError(f"quant must be one of {_QUANTS}, not {quant!r}")
    qtype = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    state = diffusers_to_bfl(_folder_state_dict(Path(transformer_folder)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="flux")  # city96's files say general.architecture = flux
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{quant}"])
    for name, tensor in state.items():
        data = tensor.float().numpy()
        if data.ndim == 1:
            writer.add_tensor(name, data.astype(np.float32))
        elif data.ndim == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def load_single_file(path: Path, config: str | Path, subfolder: str | None = None, **kwargs):
    """`FluxTransformer2DModel.from_single_file` for BFL files of any width: reads the `.safetensors`
    or `.gguf` itself, converts with `bfl_to_diffusers` and passes the diffusers-keyed dict (which
    from_single_file then loads unconverted). `config` is a pipeline folder (subfolder "transformer"
    is then implied) or a transformer folder; kwargs go to from_single_file (quantization_config ...)."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    if subfolder is None and (Path(config) / "model_index.json").is_file():
        subfolder = "transformer"
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    model_config = FluxTransformer2DModel.load_config(str(config), subfolder=subfolder, local_files_only=True)
    return FluxTransformer2DModel.from_single_file(
        bfl_to_diffusers(checkpoint, model_config), config=str(config), subfolder=subfolder,
        local_files_only=True, **kwargs,
    )
