from studio.metadata import format_infotext, parse_infotext
from studio.requests import Txt2ImgRequest, txt2img_settings_from_infotext


def test_infotext_matches_the_a1111_layout():
    request = Txt2ImgRequest(prompt="a cat", negative_prompt="blurry", steps=20, guidance_scale=7.0,
                             width=512, height=768, sampler="Euler a")
    text = request.infotext(seed=1234, model="stable-diffusion-v1-5/stable-diffusion-v1-5", size=(512, 768))
    assert text == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model: stable-diffusion-v1-5/stable-diffusion-v1-5"
    )


def test_round_trip_gives_back_the_settings():
    request = Txt2ImgRequest(prompt="castle, at night,\nwide shot", negative_prompt="low quality, text",
                             steps=33, guidance_scale=6.5, width=640, height=384, sampler="DPM++ 2M Karras")
    settings = txt2img_settings_from_infotext(request.infotext(seed=42, model="m", size=(640, 384)))
    assert settings == {
        "prompt": "castle, at night,\nwide shot", "negative_prompt": "low quality, text", "steps": 33,
        "guidance_scale": 6.5, "seed": 42, "width": 640, "height": 384, "sampler": "DPM++ 2M Karras",
        "hires_fix": False,  # made without it, so reusing the text turns it off
    }


def test_hires_fix_settings_round_trip_and_are_read_from_a1111_text():
    request = Txt2ImgRequest(prompt="a fox", width=512, height=512, hires_fix=True, hires_scale=1.75,
                             hires_steps=12, hires_denoising=0.45)
    settings = txt2img_settings_from_infotext(request.infotext(seed=3, model="m", size=(512, 512)))
    assert {key: settings[key] for key in ("width", "hires_fix", "hires_scale", "hires_steps", "hires_denoising")} \
        == {"width": 512, "hires_fix": True, "hires_scale": 1.75, "hires_steps": 12, "hires_denoising": 0.45}
    a1111 = ("a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: x, "
             "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Latent, Version: v1.10.1")
    settings = txt2img_settings_from_infotext(a1111)
    assert (settings["hires_fix"], settings["hires_scale"], settings["hires_steps"], settings["hires_denoising"]) \
        == (True, 2.0, 0, 0.5)  # no "Hires steps": as many as Steps


def test_values_with_commas_are_quoted_and_read_back():
    text = format_infotext("p", "", {"Steps": 5, "Model": "a, b: c", "Seed": 1})
    assert 'Model: "a, b: c"' in text
    assert parse_infotext(text)[2]["Model"] == "a, b: c"


def test_reads_text_written_by_a1111():
    a1111 = (
        "masterpiece, 1girl, <lora:detail:0.6>\n"
        "Negative prompt: worst quality\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3021766423, "
        'Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "detail: 1d5c8b6a0e2b", '
        "Version: v1.10.1"
    )
    prompt, negative, params = parse_infotext(a1111)
    assert prompt == "masterpiece, 1girl, <lora:detail:0.6>" and negative == "worst quality"
    assert params["Lora hashes"] == "detail: 1d5c8b6a0e2b" and params["Version"] == "v1.10.1"
    settings = txt2img_settings_from_infotext(a1111)
    assert settings["sampler"] == "DPM++ 2M Karras"
    assert (settings["steps"], settings["seed"], settings["width"], settings["height"]) == (28, 3021766423, 512, 768)


def test_text_without_parameters_is_all_prompt():
    assert parse_infotext("just a prompt") == ("just a prompt", "", {})
