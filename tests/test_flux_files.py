"""FLUX.1 files as people download them: a transformer alone in BFL / civitai layout (.safetensors)
and city96's GGUF (Q8_0, Q4_0), in the checkpoints folder, detected from their keys and loaded
offline with the family preset's text encoders and VAE."""

import numpy as np
import pytest

from studio.errors import RequestError, StudioError
from studio.families.flux_files import export_gguf, export_transformer_single_file
from studio.requests import InpaintRequest, Txt2ImgRequest

pytestmark = pytest.mark.slow  # exports four files, loads each: in CI, not in the quick loop

COMMON = {"prompt": "a lighthouse on a cliff", "steps": 2, "seed": 3, "sampler": "Euler", "guidance_scale": 3.5,
          "width": 64, "height": 64}


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def flux_files(settings, models_dir):
    folder, flux = settings.checkpoints_dir / "flux", models_dir / "tiny" / "flux"
    export_transformer_single_file(flux / "base" / "transformer", folder / "tiny-flux-dev.safetensors")
    export_transformer_single_file(flux / "fill" / "transformer", folder / "tiny-flux-dev-fill.safetensors")
    export_gguf(flux / "base" / "transformer", folder / "tiny-flux-q8.gguf", "Q8_0")
    export_gguf(flux / "base" / "transformer", folder / "tiny-flux-q4.gguf", "Q4_0")
    (folder / "cut.gguf").write_bytes((folder / "tiny-flux-q8.gguf").read_bytes()[:5000])
    return folder


def test_files_are_detected_from_their_keys(studio, flux_files):
    checkpoints = studio.user_models.checkpoints
    assert {"flux/tiny-flux-dev.safetensors", "flux/tiny-flux-q8.gguf"} <= set(studio.model_names())
    assert checkpoints.info("flux/tiny-flux-dev.safetensors").describe() == "FLUX.1-dev transformer"
    assert checkpoints.info("flux/tiny-flux-dev-fill.safetensors").kind == "inpaint"
    assert checkpoints.info("flux/tiny-flux-q4.gguf").describe() == "FLUX.1-dev transformer (GGUF)"
    with pytest.raises(StudioError, match="cut.gguf' could not be read"):
        checkpoints.info("flux/cut.gguf")


def test_a_transformer_file_gives_the_folders_pixels_with_the_presets_encoders(studio, flux_files):
    folder = studio.generate(Txt2ImgRequest(**COMMON), preset="tiny-flux")
    single = studio.generate(Txt2ImgRequest(**COMMON), preset="flux/tiny-flux-dev.safetensors")
    assert np.array_equal(pixels(single), pixels(folder))
    assert single.infotexts[0].endswith("Model: tiny-flux-dev") and "Model hash: " in single.infotexts[0]
    assert studio.preset("flux/tiny-flux-dev.safetensors").components_from == "./tiny/flux/base"


def test_the_fill_file_named_after_it_inpaints(studio, flux_files):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (90, 120, 200))
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    request = InpaintRequest(**{k: v for k, v in COMMON.items() if k not in ("width", "height")}, image=image,
                             mask=mask)
    folder = studio.generate(request, preset="tiny-flux")
    single = studio.generate(request, preset="flux/tiny-flux-dev.safetensors")
    assert np.array_equal(pixels(single), pixels(folder)) and "Model: tiny-flux-dev-fill," in single.infotexts[0]


@pytest.mark.parametrize("name, at_least", [("tiny-flux-q8.gguf", 45), ("tiny-flux-q4.gguf", 25)])
def test_a_gguf_file_gives_pixels_close_to_the_unquantized_ones(studio, flux_files, name, at_least):
    exact = pixels(studio.generate(Txt2ImgRequest(**COMMON), preset="tiny-flux"))
    quantized = pixels(studio.generate(Txt2ImgRequest(**COMMON), preset=f"flux/{name}"))
    # Q8_0 keeps 8 bits a weight (error ~1e-3 here), Q4_0 4: close, never the same.
    assert at_least < psnr(quantized, exact) < 100


def test_an_sd_file_is_not_taken_for_flux_nor_a_flux_lora_for_a_checkpoint(studio, settings, models_dir):
    import shutil

    target = settings.checkpoints_dir / "flux" / "not-a-model.safetensors"
    shutil.copy(models_dir / "tiny" / "flux" / "loras" / "tiny-flux-peft.safetensors", target)
    try:
        with pytest.raises(RequestError, match="not a checkpoint of a model family.*FLUX.1.*looks like a LoRA"):
            studio.user_models.checkpoints.info("flux/not-a-model.safetensors")
    finally:
        target.unlink()


def test_the_width_aware_converter_matches_diffusers_own_at_flux_width():
    """At FLUX.1's real width (3072; diffusers' converter knows no other) our BFL -> diffusers
    conversion gives exactly diffusers' tensors, and diffusers -> BFL -> diffusers is the identity.
    One double and one single block of random bytes (the shapes are what matter)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from studio.families.flux_files import bfl_to_diffusers, diffusers_to_bfl

    config = {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 128, "num_attention_heads": 24,
              "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True}
    with init_empty_weights():
        shapes = {k: v.shape for k, v in FluxTransformer2DModel(**config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randint(0, 255, shape, dtype=torch.uint8, generator=generator) for k, shape in shapes.items()}
    bfl = diffusers_to_bfl(state)
    ours, theirs = bfl_to_diffusers(dict(bfl), config), convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert sorted(ours) == sorted(theirs) == sorted(state)
    assert all(torch.equal(ours[k], theirs[k]) and torch.equal(ours[k], state[k]) for k in state)
