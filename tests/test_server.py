"""The running app, called over HTTP with gradio_client as an API user would."""

import time

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

GOOD = dict(prompt="a lighthouse", negative_prompt="", steps=3, guidance_scale=7, width=64, height=64,
            seed=11, sampler="Euler a", batch_size=2, api_name="/txt2img")


def call(client, **change):
    return client.predict(**{**GOOD, **change})


def test_txt2img_endpoint_takes_keyword_arguments(client):
    endpoint = client.view_api(return_format="dict")["named_endpoints"]["/txt2img"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names[:9] == ["prompt", "negative_prompt", "steps", "guidance_scale", "width", "height", "seed",
                         "sampler", "batch_size"]


def test_txt2img_returns_png_files_with_parameters(client):
    gallery, infotext = call(client)
    assert len(gallery) == 2
    assert infotext.startswith("a lighthouse\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 11, Size: 64x64")
    for item, seed in zip(gallery, (11, 12)):
        with Image.open(item["image"]) as image:
            assert image.format == "PNG" and image.size == (64, 64)
            assert f"Seed: {seed}," in image.info["parameters"]


def test_hires_fix_over_the_api(client):
    gallery, infotext = call(client, batch_size=1, hires_fix=True, hires_scale=2, hires_denoising=0.4)
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (128, 128)
    assert "Size: 64x64" in infotext and "Denoising strength: 0.4, Hires upscale: 2" in infotext
    with pytest.raises(AppError, match="Hires. fix would make 1024x1024"):
        call(client, batch_size=1, hires_fix=True, hires_scale=4, width=256, height=256)


def test_same_seed_over_the_api_gives_the_same_image(client):
    first, _ = call(client, batch_size=1)
    second, _ = call(client, batch_size=1)
    with Image.open(first[0]["image"]) as a, Image.open(second[0]["image"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 100}, "Width must be a multiple of 8, got 100: use 96 or 104."),
        ({"steps": 0}, "Steps must be between 1 and"),
        ({"steps": 51}, "Steps must be between 1 and 50"),  # above the tiny preset's own limit
        ({"batch_size": 5}, "Batch size must be between 1 and 4"),
        ({"batch_size": 100}, "Batch size must be between 1 and"),
        ({"preset": "nope"}, "Unknown preset 'nope'. Available presets:"),
    ],
)
def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(client, change, message):
    with pytest.raises(AppError) as err:
        call(client, **change)
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)
    gallery, _ = call(client, batch_size=1)  # the next request works
    assert len(gallery) == 1


def test_loras_over_the_api_as_an_argument_or_in_the_prompt(client):
    picked, info = call(client, batch_size=1, loras="tiny-kohya:0.7")
    typed, _ = call(client, batch_size=1, prompt="a lighthouse <lora:tiny-kohya:0.7>")
    plain, _ = call(client, batch_size=1)
    with Image.open(picked[0]["image"]) as a, Image.open(typed[0]["image"]) as b, Image.open(plain[0]["image"]) as c:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert info.startswith("a lighthouse, <lora:tiny-kohya:0.7>\n") and "Lora hashes:" in info


@pytest.mark.parametrize("loras, message",
                         [("../../etc/passwd", "Unknown LoRA"), ("evil.ckpt", "pickles can run code")])
def test_bad_lora_names_over_the_api_get_a_message(client, loras, message):
    with pytest.raises(AppError, match=message):
        call(client, loras=loras)


def test_previews_stream_to_the_gallery_before_the_result(client):
    job = client.submit(**{**GOOD, "steps": 9, "batch_size": 1})
    final_gallery, final_info = job.result(timeout=120)
    outputs = job.outputs()
    previews = [gallery for gallery, info in outputs[:-1] if gallery and gallery[0]["caption"] == "preview"]
    assert len(previews) >= 2  # steps 3, 6 and 9 of 9
    with Image.open(previews[0][0]["image"]) as preview:
        assert preview.size == (64, 64)  # full size: the tiny preset's preview VAE decoded it
    assert final_gallery[0]["caption"] is None and final_info.startswith("a lighthouse")


@pytest.mark.slow
def test_cancelling_over_the_api_frees_the_gpu_for_the_next_user(server, settings):
    from gradio_client import Client

    mine, theirs = Client(server, verbose=False), Client(server, verbose=False)
    quick = {**GOOD, "steps": 10, "batch_size": 1}

    def large_images() -> list:
        return [path for path in settings.outputs_dir.rglob("*.png") if Image.open(path).size == (512, 512)]

    before = large_images()
    # About a minute of work here: four 50-step batches at 512x512.
    job = mine.submit(**{**GOOD, "steps": 50, "width": 512, "height": 512, "batch_size": 1, "batch_count": 4})
    deadline = time.monotonic() + 60
    while job.status().code.name != "ITERATING" and time.monotonic() < deadline:  # a preview came: running
        time.sleep(0.05)
    job.cancel()
    theirs.predict(**quick)
    # The GPU lock serialises jobs and a job saves its images when it lets go: had the cancelled job
    # run on to its end before this one, its four 512x512 images would be saved by now.
    assert large_images() == before
