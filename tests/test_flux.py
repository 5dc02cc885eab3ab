"""FLUX.1 in every tab, on the tiny offline FLUX.1 (presets/tiny-flux.toml): the same guarantees as
for SD (same seed same pixels, exact paste-back, LoRAs for one request only) through the family's
own pipelines, prompt encoding, latents and files."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from studio.errors import ModelUnavailableError, RequestError
from studio.requests import (
    ControlRequest,
    Img2ImgRequest,
    InpaintRequest,
    InstructRequest,
    OutpaintRequest,
    Txt2ImgRequest,
)

FLUX = "tiny-flux"
COMMON = {"prompt": "a lighthouse on a cliff", "steps": 2, "seed": 7, "sampler": "Euler", "guidance_scale": 3.5}


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(studio, **changes):
    return studio.generate(Txt2ImgRequest(**{**COMMON, "width": 64, "height": 64, **changes}), preset=FLUX)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    y, x = np.mgrid[0:64, 0:96]
    image = Image.fromarray(np.stack([x * 2.5, y * 4, (x + y) * 1.5], axis=-1).astype(np.uint8))
    ImageDraw.Draw(image).ellipse((20, 10, 60, 50), fill=(240, 200, 40))
    return image


@pytest.fixture(scope="module")
def fresh(settings, tmp_path_factory):
    """The image of COMMON from a freshly loaded model (a Studio of its own: no LoRA ever loaded)."""
    import dataclasses

    from studio.core import Studio

    own = Studio(dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("fresh-flux")))
    return pixels(txt2img(own).images[0])


def test_text_to_image_same_seed_same_pixels_and_forges_infotext(studio, fresh):
    result = txt2img(studio, batch_size=2)
    assert np.array_equal(pixels(result.images[0]), fresh)
    assert not np.array_equal(pixels(result.images[1]), fresh)  # seed + 1
    info = result.infotexts[0]
    assert "CFG scale: 1, Distilled CFG Scale: 3.5," in info and "Sampler: Euler," in info
    assert "Negative prompt" not in info and "Clip skip" not in info


def test_guidance_changes_the_image(studio, fresh):
    assert not np.array_equal(pixels(txt2img(studio, guidance_scale=1.0).images[0]), fresh)


@pytest.mark.parametrize("sampler", ["Euler Beta", "Euler Karras", "UniPC", "DPM++ 2M"])
def test_every_flow_sampler_runs(studio, fresh, sampler):
    result = txt2img(studio, sampler=sampler, steps=3)
    assert result.images[0].size == (64, 64) and f"Sampler: {sampler}," in result.infotexts[0]


def test_an_sd_sampler_is_refused_with_the_familys_list(studio):
    with pytest.raises(RequestError, match="Unknown sampler 'DPM\\+\\+ 2M Karras'. Choose one of: Euler"):
        txt2img(studio, sampler="DPM++ 2M Karras")


def test_sizes_are_multiples_of_16(studio):
    with pytest.raises(RequestError, match="Width must be a multiple of 16, got 72: use 64 or 80"):
        txt2img(studio, width=72)


def test_previews_unpack_the_packed_latents(studio):
    previews = []
    result = studio.generate(Txt2ImgRequest(**{**COMMON, "steps": 3, "width": 96, "height": 64}), preset=FLUX,
                             on_preview=previews.append)
    assert previews and previews[0].size == (96, 64) and result.images[0].size == (96, 64)


def test_hires_fix_runs_image_to_image_at_the_larger_size(studio):
    result = txt2img(studio, hires_fix=True, hires_scale=1.5, hires_denoising=0.5)
    assert result.images[0].size == (96, 96) and "Size: 64x64" in result.infotexts[0]


def test_image_to_image_keeps_the_size_and_zero_strength_keeps_the_image(studio, photo):
    made = studio.generate(Img2ImgRequest(**COMMON, image=photo, strength=0.6), preset=FLUX)
    assert made.images[0].size == (96, 64) and not np.array_equal(pixels(made.images[0]), pixels(photo))
    kept = studio.generate(Img2ImgRequest(**COMMON, image=photo, strength=0.0), preset=FLUX)
    assert np.array_equal(pixels(kept.images[0]), pixels(photo))


@pytest.mark.parametrize("preset", [FLUX, "tiny-flux-no-fill"])  # the Fill transformer, then the base's
def test_inpaint_keeps_every_pixel_outside_the_feathered_mask(studio, photo, preset):
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).rectangle((30, 16, 70, 48), fill=255)
    result = studio.generate(InpaintRequest(**COMMON, image=photo, mask=mask, mask_blur=4), preset=preset)
    out, original = pixels(result.images[0]), pixels(photo)
    feathered = np.asarray(mask.filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(4 * 2)))
    outside = np.asarray(Image.fromarray(feathered)) == 0
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out[~outside], original[~outside])
    fill = studio.manager(preset).preset.model("inpaint")
    assert ("Model: ./tiny/flux/fill" in result.infotexts[0]) == bool(fill)


def test_outpaint_grows_the_canvas_by_multiples_of_16(studio, photo):
    result = studio.generate(OutpaintRequest(**COMMON, image=photo, right=32), preset=FLUX)
    assert result.images[0].size == (128, 64)
    assert np.array_equal(pixels(result.images[0])[:, :96], pixels(photo))
    with pytest.raises(RequestError, match="multiple of 16"):
        studio.generate(OutpaintRequest(**COMMON, image=photo, right=24), preset=FLUX)


def test_kontext_changes_the_picture_and_keeps_its_size(studio, photo):
    odd = photo.resize((100, 60))
    result = studio.generate(InstructRequest(**COMMON, image=odd), preset=FLUX)
    assert result.images[0].size == (96, 48)  # rounded down to 16
    assert not np.array_equal(pixels(result.images[0]), pixels(odd.resize((96, 48))))
    assert "Model: ./tiny/flux/kontext" in result.infotexts[0] and "Image CFG scale" not in result.infotexts[0]


def test_control_follows_the_map_and_one_union_model_serves_both_modes(studio):
    edges = Image.new("RGB", (64, 64))
    ImageDraw.Draw(edges).rectangle((16, 16, 48, 48), outline=(255, 255, 255), width=2)
    common = {**COMMON, "width": 64, "height": 64, "control_image": edges}
    canny = studio.generate(ControlRequest(**common, control_mode="canny"), preset=FLUX)
    pose = studio.generate(ControlRequest(**common, control_mode="openpose"), preset=FLUX)
    weak = studio.generate(ControlRequest(**common, control_mode="canny", conditioning_scale=0.2), preset=FLUX)
    assert not np.array_equal(pixels(canny.images[0]), pixels(weak.images[0]))
    assert canny.images[0].size == pose.images[0].size == (64, 64)
    manager = studio.manager(FLUX)
    assert [role for role in manager.cached_roles() if role.startswith("control.")] == ["control.canny"]
    with pytest.raises(ModelUnavailableError, match="no control.scribble model"):
        studio.generate(ControlRequest(**common, control_mode="scribble"), preset=FLUX)


def test_tabs_say_what_a_preset_lacks_before_generate(studio):
    assert studio.task_note("instruct", FLUX) == ""
    assert "control modes are: openpose, canny" in studio.task_note("control", FLUX)
    assert "has no instruct model" in studio.task_note("instruct", "tiny-sdxl")


# --- LoRAs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-flux-peft", "tiny-flux-kohya", "tiny-flux-xlabs"])
def test_a_lora_in_each_format_changes_the_image_and_leaves_no_trace(studio, fresh, name):
    with_lora = txt2img(studio, loras=((name, 1.0),))
    assert not np.array_equal(pixels(with_lora.images[0]), fresh)
    assert f"<lora:{name}:1>" in with_lora.infotexts[0]
    assert np.array_equal(pixels(txt2img(studio).images[0]), fresh)


def test_a_lora_loaded_again_after_its_model_was_let_go_gives_the_same_image(studio):
    """diffusers' kohya converter scales the text encoder's tensors in place: the LoRA cache hands
    out copies, so the second load of a cached file is the same LoRA (it was not, before)."""
    first = txt2img(studio, loras=(("tiny-flux-kohya", 0.7),))
    studio.generate(Txt2ImgRequest(prompt="x", steps=1, width=64, height=64), preset="tiny")  # FLUX.1 let go
    again = txt2img(studio, loras=(("tiny-flux-kohya", 0.7),))
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))


def test_an_sd_lora_is_refused_on_flux_with_both_families_named(studio, settings, models_dir, fresh):
    sd_lora = settings.loras_dir / "sd-only-style.safetensors"
    flux_lora = settings.loras_dir / "flux-only-style.safetensors"
    shutil.copy(models_dir / "tiny" / "loras" / "tiny-style-peft.safetensors", sd_lora)  # no metadata: keys tell
    shutil.copy(models_dir / "tiny" / "flux" / "loras" / "tiny-flux-kohya.safetensors", flux_lora)  # ss_* say flux1
    try:
        with pytest.raises(RequestError, match="sd-only-style.*SD 1.x/2.x or SDXL, not FLUX.1"):
            txt2img(studio, loras=(("sd-only-style", 1),))
        with pytest.raises(RequestError, match="flux-only-style.*trained for flux1 \\(FLUX.1\\).*this model is SD"):
            studio.generate(Txt2ImgRequest(prompt="x", steps=2, loras=(("flux-only-style", 1),)), preset="tiny")
    finally:
        sd_lora.unlink()
        flux_lora.unlink()
    assert np.array_equal(pixels(txt2img(studio).images[0]), fresh)


# --- prompts -------------------------------------------------------------------------------------

def _encoded(studio, prompt: str, **changes):
    manager = studio.manager(FLUX)
    request = Txt2ImgRequest(**{**COMMON, "prompt": prompt, **changes})
    with manager.pipeline("txt2img", "Euler") as pipe:
        return pipe, manager.encode_prompts(pipe, request)


def test_a_300_token_prompt_reaches_t5_whole_and_a_longer_one_gets_a_note(studio):
    words = " ".join(["sun"] * 100)  # the tiny T5 reads characters: "▁s u n", 3 tokens a word
    pipe, encoded = _encoded(studio, words)
    ids = pipe.tokenizer_2(words).input_ids
    assert 300 <= len(ids) <= 512 and encoded.notes == []
    assert encoded.kwargs["prompt_embeds"].shape[1] == 512
    _, longer = _encoded(studio, " ".join(["sun"] * 200))
    assert any("T5 tokens; this model reads 512" in note for note in longer.notes)


def test_plain_prompts_match_diffusers_and_weights_reach_t5_only(studio):
    pipe, plain = _encoded(studio, "a red fox")
    with torch.no_grad():  # as in the pipeline's own call
        embeds, pooled, _ = pipe.encode_prompt(prompt="a red fox", prompt_2=None, max_sequence_length=512)
    assert plain.kwargs["prompt_embeds"].equal(embeds) and plain.kwargs["pooled_prompt_embeds"].equal(pooled)
    _, weighted = _encoded(studio, "a (red:1.5) fox", negative_prompt="blurry", clip_skip=2)
    assert not weighted.kwargs["prompt_embeds"].equal(embeds)
    assert weighted.kwargs["pooled_prompt_embeds"].equal(pooled)  # CLIP reads "a red fox" unweighted
    assert [note.split(" ")[0:3] for note in weighted.notes] == [
        ["FLUX.1", "applies", "prompt"], ["FLUX.1", "has", "no"], ["Clip", "skip", "does"]]


def test_batch_rows_share_the_prompt(studio):
    result = txt2img(studio, batch_size=3, seed=11)
    assert len(result.images) == 3 and len({pixels(image).tobytes() for image in result.images}) == 3


# --- the speed option: diffusers' cache hooks ----------------------------------------------------

@pytest.mark.parametrize("cache", ["first-block", "taylorseer"])
def test_a_step_cache_is_written_to_the_infotext_and_leaves_no_trace(studio, fresh, cache):
    cached = txt2img(studio, step_cache=cache, steps=6)
    assert f"Step cache: {cache}" in cached.infotexts[0] and cached.images[0].size == (64, 64)
    assert np.array_equal(pixels(txt2img(studio).images[0]), fresh)  # off again: the exact image
    with pytest.raises(RequestError, match="Unknown step cache 'first-block'. Choose one of: deepcache"):
        studio.generate(Txt2ImgRequest(prompt="x", steps=2, step_cache="first-block"), preset="tiny")


def test_forges_flux_infotext_fills_the_settings():
    from studio.requests import txt2img_settings_from_infotext

    text = "a fox\nSteps: 20, Sampler: Euler, Schedule type: Beta, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1"
    settings = txt2img_settings_from_infotext(text)
    assert (settings["sampler"], settings["guidance_scale"]) == ("Euler Beta", 3.5)


def test_fp8_weights_give_a_close_image_and_say_so(settings, fresh, tmp_path):
    import dataclasses

    from studio.core import Studio

    small = Studio(dataclasses.replace(settings, fp8=True, outputs_dir=tmp_path))
    result = txt2img(small)
    transformer = small.manager(FLUX).base_pipeline().transformer
    assert transformer.x_embedder.weight.dtype == torch.float8_e4m3fn  # stored in 8 bits, computed in 32
    assert "Diffusion in Low Bits: float8-e4m3fn" in result.infotexts[0]
    difference = np.abs(pixels(result.images[0]) - fresh)
    assert 0 < difference.mean() < 8  # e4m3 keeps 3 mantissa bits: close, not the same
