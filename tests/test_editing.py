"""Image to Image, Inpaint, Outpaint, Instruct and Control on the tiny models."""

import numpy as np
import pytest
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
from studio.tasks import steps_and_strength

COMMON = {"prompt": "a house by a lake", "steps": 4, "seed": 5}


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A deterministic 'photo': gradients and shapes, so any change shows."""
    y, x = np.mgrid[0:64, 0:96]
    array = np.stack([x * 2.5, y * 4, (x + y) * 1.5], axis=-1).astype(np.uint8)
    image = Image.fromarray(array)
    ImageDraw.Draw(image).ellipse((20, 10, 60, 50), fill=(240, 200, 40))
    return image


# --- Image to Image -------------------------------------------------------------------------

def test_img2img_strength_zero_returns_the_input_unchanged(studio, photo):
    result = studio.generate(Img2ImgRequest(**COMMON, image=photo, strength=0.0))
    assert np.array_equal(pixels(result.images[0]), pixels(photo))
    assert "Denoising strength: 0," in result.infotexts[0] and "Steps run: 0" in result.infotexts[0]


@pytest.mark.parametrize("steps, strength", [(20, 0.35), (10, 0.5), (7, 1.0), (9, 0.25)])
def test_img2img_runs_round_steps_times_strength(studio, photo, steps, strength):
    seen = []
    result = studio.generate(Img2ImgRequest(**{**COMMON, "steps": steps}, image=photo, strength=strength),
                             on_step=lambda done, total: seen.append(total))
    expected = int(steps * strength + 0.5)
    assert len(seen) == expected and seen[0] == expected
    assert f"Steps: {steps}," in result.infotexts[0]
    if expected != steps:
        assert f"Steps run: {expected}" in result.infotexts[0]


def test_strength_helper_matches_diffusers_flooring():
    for steps in range(1, 60):
        for strength in np.linspace(0.01, 1, 37):
            run, effective = steps_and_strength(steps, float(strength))
            assert run == min(steps, int(steps * strength + 0.5))
            assert min(int(steps * effective), steps) == run  # what diffusers' get_timesteps does


def test_img2img_output_size_rules(studio):
    odd = Image.new("RGB", (100, 75), (90, 120, 200))
    kept = studio.generate(Img2ImgRequest(**COMMON, image=odd, strength=0.5))
    assert kept.images[0].size == (96, 72)  # rounded down to multiples of 8
    for mode in ("Resize and crop", "Resize and pad"):
        resized = studio.generate(Img2ImgRequest(**COMMON, image=odd, strength=0.5, resize_mode=mode,
                                                 width=64, height=128))
        assert resized.images[0].size == (64, 128)


@pytest.mark.slow  # a sweep of strengths: 4 s
def test_img2img_changes_the_image_at_some_strength(studio, photo):
    result = studio.generate(Img2ImgRequest(**COMMON, image=photo, strength=0.6))
    assert np.abs(pixels(result.images[0]) - pixels(photo)).mean() > 1


def test_oversized_input_is_scaled_down_with_a_note(studio):
    big = Image.new("RGB", (1024, 512), (10, 200, 10))  # the tiny preset allows 512x512
    result = studio.generate(Img2ImgRequest(**COMMON, image=big, strength=0.0))
    assert result.images[0].size == (512, 256)
    assert "scaled down to 512x256" in result.notes[0]


# --- Inpaint --------------------------------------------------------------------------------

def box_mask(size, box) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.mark.parametrize("blur", [0, 4])
@pytest.mark.parametrize("preset", ["tiny", "tiny-base-inpaint"])
def test_inpaint_leaves_every_pixel_outside_the_mask_unchanged(studio, photo, blur, preset, base_inpaint_preset):
    mask = box_mask(photo.size, (30, 20, 60, 44))
    result = studio.generate(InpaintRequest(**COMMON, image=photo, mask=mask, mask_blur=blur),
                             preset=base_inpaint_preset if preset != "tiny" else None)
    out, src = pixels(result.images[0]), pixels(photo)
    assert out.shape == src.shape
    outside = np.ones(photo.size[::-1], dtype=bool)
    outside[20 - blur:45 + blur, 30 - blur:61 + blur] = False
    assert np.array_equal(out[outside], src[outside])
    assert np.abs(out[25:40, 35:55] - src[25:40, 35:55]).mean() > 1  # the masked part did change
    assert f"Mask blur: {blur}" in result.infotexts[0]


def test_inpaint_uses_the_inpaint_unet_or_the_base_unet(studio, base_inpaint_preset):
    with studio.manager().pipeline("inpaint", "Euler") as pipe:
        assert pipe.unet.config.in_channels == 9
    with studio.manager(base_inpaint_preset).pipeline("inpaint", "Euler") as pipe:
        assert pipe.unet.config.in_channels == 4


def test_inpaint_empty_mask_gets_a_message(studio, photo):
    with pytest.raises(RequestError, match="The mask is empty"):
        studio.generate(InpaintRequest(**COMMON, image=photo, mask=Image.new("L", photo.size, 0)))
    with pytest.raises(RequestError, match="the mask is empty"):
        studio.generate(InpaintRequest(**COMMON, image=photo, mask=None))


def test_inpaint_mask_of_another_size_is_resized_to_the_image(studio, photo):
    small = box_mask((48, 32), (24, 0, 47, 31))  # the right half, at half size
    result = studio.generate(InpaintRequest(**COMMON, image=photo, mask=small, mask_blur=0))
    out, src = pixels(result.images[0]), pixels(photo)
    assert np.array_equal(out[:, :48], src[:, :48])
    assert np.abs(out[:, 50:] - src[:, 50:]).mean() > 1


def test_inpaint_invert_and_only_masked(studio, photo):
    mask = box_mask(photo.size, (0, 0, 47, 63))
    inverted = studio.generate(InpaintRequest(**COMMON, image=photo, mask=mask, invert_mask=True, mask_blur=0))
    assert np.array_equal(pixels(inverted.images[0])[:, :48], pixels(photo)[:, :48])
    cropped = studio.generate(InpaintRequest(**COMMON, image=photo, mask=box_mask(photo.size, (40, 20, 55, 35)),
                                             inpaint_area="Only masked", padding=8, mask_blur=0))
    out = pixels(cropped.images[0])
    assert out.shape == pixels(photo).shape
    outside = np.ones(photo.size[::-1], dtype=bool)
    outside[20:36, 40:56] = False
    assert np.array_equal(out[outside], pixels(photo)[outside])
    assert "Inpaint area: Only masked" in cropped.infotexts[0]


# --- Outpaint -------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", ["Edge colours", "Noise"])
def test_outpaint_keeps_the_original_and_grows_the_canvas(studio, photo, fill):
    result = studio.generate(OutpaintRequest(**COMMON, image=photo, left=16, right=32, up=0, down=8, fill=fill))
    out = pixels(result.images[0])
    assert result.images[0].size == (96 + 48, 64 + 8)
    assert np.array_equal(out[0:64, 16:112], pixels(photo))
    assert out[:, :16].std() > 0  # the new area was painted


def test_outpaint_needs_an_extension(studio, photo):
    with pytest.raises(RequestError, match="every extension is 0"):
        studio.generate(OutpaintRequest(**COMMON, image=photo))
    with pytest.raises(RequestError, match="multiple of 8"):
        studio.generate(OutpaintRequest(**COMMON, image=photo, left=5))


# --- Instruct -------------------------------------------------------------------------------

def test_instruct_keeps_the_input_size_and_edits(studio):
    image = Image.new("RGB", (100, 60), (200, 30, 30))
    result = studio.generate(InstructRequest(**COMMON, image=image, image_guidance_scale=1.5))
    assert result.images[0].size == (96, 56)
    assert "Image CFG scale: 1.5" in result.infotexts[0]
    with studio.manager().pipeline("instruct", "Euler a") as pipe:
        assert pipe.unet.config.in_channels == 8


def test_instruct_refuses_image_guidance_below_one(studio, photo):
    with pytest.raises(RequestError, match="Image CFG scale must be between 1 and 10, got 0.5"):
        studio.generate(InstructRequest(**COMMON, image=photo, image_guidance_scale=0.5))


# --- Control --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["scribble", "openpose", "canny"])
def test_control_weight_zero_equals_text_to_image(studio, mode):
    scribble = Image.new("RGB", (64, 64))
    ImageDraw.Draw(scribble).line((5, 5, 60, 60), fill="white", width=4)
    plain = studio.generate(Txt2ImgRequest(**COMMON, width=64, height=64))
    zero = studio.generate(ControlRequest(**COMMON, width=64, height=64, control_image=scribble,
                                          control_mode=mode, conditioning_scale=0.0))
    full = studio.generate(ControlRequest(**COMMON, width=64, height=64, control_image=scribble,
                                          control_mode=mode, conditioning_scale=1.0))
    assert np.abs(pixels(zero.images[0]) - pixels(plain.images[0])).max() <= 1
    assert np.abs(pixels(full.images[0]) - pixels(plain.images[0])).mean() > 1  # the map does steer
    assert f'ControlNet: "{mode}, weight 1, start 0, end 1"' in full.infotexts[0]  # quoted: it has commas


def test_canny_needs_a_canny_controlnet_in_the_preset(studio):
    edges = Image.new("RGB", (64, 64))
    with pytest.raises(ModelUnavailableError, match="The preset 'tiny-sdxl' has no control.canny model"):
        studio.generate(ControlRequest(**COMMON, width=64, height=64, control_image=edges, control_mode="canny"),
                        preset="tiny-sdxl")


def test_control_guidance_window_must_be_ordered(studio):
    with pytest.raises(RequestError, match="Guidance start"):
        studio.generate(ControlRequest(**COMMON, width=64, height=64, control_image=Image.new("RGB", (64, 64)),
                                       guidance_start=0.8, guidance_end=0.2))


def test_a_preset_without_the_role_says_so(studio, photo):
    with pytest.raises(ModelUnavailableError, match="has no instruct model"):
        studio.generate(InstructRequest(**COMMON, image=photo), preset="sd-turbo")
