"""`python -m bench --shape flux`: the studio against raw `FluxPipeline` on a transformer of FLUX.1's
real width, offline, on the CPU.

FLUX.1's transformer block as shipped (24 heads of 128 = 3072 wide, T5 width 4096, CLIP width 768,
rope axes 16/56/56) with random weights in bfloat16, but 1 double and 2 single blocks instead of 19
and 38 (660 M parameters instead of 11.9 B), so a step runs on two cores. The text encoders and VAE
are the tiny twin's at those widths. A preset `flux-shaped` (written to a temporary presets folder)
reads 64 T5 tokens, so a 256x256 step is 256 image + 64 text tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SHAPED_VERSION = 1
PRESET = """title = "FLUX.1 shaped (random weights, benchmark)"
family = "flux"
max_prompt_tokens = 64

[models]
base = "./flux-shaped/base"

[defaults]
steps = 4
guidance_scale = 3.5
width = 128
height = 128
sampler = "Euler"
"""


def build(models_dir: Path) -> Path:
    """The FLUX.1-wide pipeline, built once (about 1.3 GB of disk)."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from studio import tiny
    from studio.families import flux_tiny

    root = models_dir / "flux-shaped"
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == SHAPED_VERSION:
        return root
    print("# building the FLUX.1-wide model (once)", flush=True)
    torch.manual_seed(0)
    dtype = torch.bfloat16
    clip_tokenizer, t5_tokenizer = tiny.build_tokenizer(), flux_tiny.t5_tokenizer()
    clip = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=256, num_attention_heads=12, num_hidden_layers=1,
        vocab_size=len(clip_tokenizer), max_position_embeddings=77, bos_token_id=clip_tokenizer.bos_token_id,
        eos_token_id=clip_tokenizer.eos_token_id, pad_token_id=clip_tokenizer.pad_token_id, projection_dim=768))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=4096, d_kv=64, d_ff=256, num_layers=1, num_heads=2,
        feed_forward_proj="gated-gelu", pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=t5_tokenizer.pad_token_id,
        is_encoder_decoder=False, tie_word_embeddings=False))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56))
    pipe = FluxPipeline(scheduler=flux_tiny._scheduler(), vae=flux_tiny._vae(), text_encoder=clip,
                        tokenizer=clip_tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer,
                        transformer=transformer).to(dtype)
    pipe.save_pretrained(root / "base")
    marker.write_text(json.dumps({"version": SHAPED_VERSION}))
    return root


def run(args) -> None:
    from bench.__main__ import bench_overhead, bench_setting, bench_step_cache, copy_presets, make_studio
    from studio.settings import Settings

    build(Settings.from_env().models_dir)
    with tempfile.TemporaryDirectory() as presets, tempfile.TemporaryDirectory() as outputs:
        copy_presets(Path(presets))
        (Path(presets) / "flux-shaped.toml").write_text(PRESET)
        os.environ.update(STUDIO_PRESETS_DIR=presets, STUDIO_DTYPE="bfloat16")
        args.preset, args.outputs = "flux-shaped", outputs
        studio = make_studio(args)
        bench_overhead(studio, args)
        bench_step_cache(studio, args)
        for kernel in ("sdpa-math", "sdpa-flash"):
            bench_setting(args, f"attention_{kernel.replace('-', '_')}", attention=kernel)
