"""Text to Image on the tiny models, through the real diffusers pipelines."""

import threading

import numpy as np
import pytest
from PIL import Image

from studio.errors import ModelUnavailableError, RequestError
from studio.requests import Txt2ImgRequest
from studio.samplers import DIFFUSION_SAMPLERS


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def request(**change) -> Txt2ImgRequest:
    fields = {"prompt": "a red fox in the snow", "steps": 4, "width": 64, "height": 64, "seed": 7, **change}
    return Txt2ImgRequest(**fields)


def test_same_request_and_seed_give_identical_pixels(studio):
    first = studio.generate(request())
    second = studio.generate(request())
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


def test_different_seeds_and_prompts_differ(studio):
    base = pixels(studio.generate(request(seed=1)).images[0])
    assert np.abs(base - pixels(studio.generate(request(seed=2)).images[0])).mean() > 1
    assert np.abs(base - pixels(studio.generate(request(seed=1, prompt="blue sky")).images[0])).mean() > 0.1


def test_batch_gives_n_images_with_consecutive_reproducible_seeds(studio):
    result = studio.generate(request(seed=100, batch_size=3, batch_count=2))
    assert len(result.images) == len(result.paths) == 6
    assert result.seeds == [100, 101, 102, 103, 104, 105]
    # Any image of a batch can be made again alone from the seed stored with it.
    alone = studio.generate(request(seed=104))
    assert np.abs(pixels(alone.images[0]) - pixels(result.images[4])).max() <= 2


def test_random_seed_is_reported_and_reproduces(studio):
    result = studio.generate(request(seed=-1))
    seed = result.seeds[0]
    assert 0 <= seed < 2**32 and f"Seed: {seed}," in result.infotexts[0]
    again = studio.generate(request(seed=seed))
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))


@pytest.mark.parametrize("sampler", DIFFUSION_SAMPLERS)
def test_every_sampler_runs(studio, sampler):
    result = studio.generate(request(sampler=sampler, width=72, height=64))
    image = result.images[0]
    assert image.size == (72, 64)
    assert pixels(image).std() > 0  # not a blank image
    assert f"Sampler: {sampler}," in result.infotexts[0]


def test_output_png_carries_the_parameters_chunk(studio, settings):
    result = studio.generate(request(negative_prompt="blurry", seed=31))
    path = result.paths[0]
    assert path.suffix == ".png" and settings.outputs_dir in path.parents
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.info["parameters"] == result.infotexts[0]
        assert np.array_equal(pixels(saved.convert("RGB")), pixels(result.images[0]))
    assert result.infotexts[0].startswith("a red fox in the snow\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a")
    assert not list(path.parent.glob("*.tmp")), "no temp files are left behind"


def test_progress_reports_every_step_of_every_batch(studio):
    seen = []
    studio.generate(request(steps=5, batch_count=2), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 10) for i in range(1, 11)]


def test_stop_ends_the_job_early_and_keeps_no_cut_short_image(studio):
    stop = threading.Event()
    seen = []

    def on_step(done, total):
        seen.append(done)
        if done == 2:
            stop.set()

    result = studio.generate(request(steps=20, batch_count=3), on_step=on_step, stop=stop)
    assert result.stopped and result.images == [] and result.paths == []
    assert max(seen) == 2  # the loop ended right after the step that saw Stop


def test_weights_load_once_and_tasks_share_them(studio):
    manager = studio.manager()
    base = manager.base_pipeline()
    with manager.pipeline("txt2img", "DDIM") as pipe:
        assert pipe.unet is base.unet and pipe.vae is base.vae and pipe.text_encoder is base.text_encoder
        assert pipe.scheduler is not base.scheduler  # its own scheduler: per-request state
        assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.unet.dtype == base.unet.dtype
    assert manager.base_pipeline() is base


def test_limits_are_checked_against_the_preset(studio):
    with pytest.raises(RequestError, match="Steps must be between 1 and 50"):
        studio.generate(request(steps=51))


def test_model_not_cached_says_which_and_how_to_fix(settings, tmp_path):
    from studio.core import Studio

    offline = Studio(settings)
    with pytest.raises(ModelUnavailableError) as err:
        offline.generate(request(), preset="sd15")
    message = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "--preset tiny" in message and "Connect to the internet once" in message


def test_big_images_are_decoded_in_tiles(studio, monkeypatch):
    from studio import rendering

    vae = studio.manager().base_pipeline().vae
    monkeypatch.setattr(rendering, "VAE_TILING_PIXELS", 100 * 100)
    studio.generate(request(width=128, height=128))
    assert vae.use_tiling
    studio.generate(request(width=64, height=64))
    assert not vae.use_tiling


def test_previews_come_every_three_steps_at_full_size_through_taesd(studio):
    previews = []
    studio.generate(request(steps=7, width=64, height=128), on_preview=previews.append)
    assert len(previews) == 2 and previews[0].size == (64, 128)  # steps 3 and 6, decoded by the preview VAE
    assert np.asarray(previews[1]).std() > 0


def test_a_slow_preview_vae_gives_way_to_the_latent_approximation(settings):
    from studio.core import Studio

    manager = Studio(settings).manager()
    assert manager.preview_decoder() is not None
    manager.note_preview_time(3.0)  # the first decode pays set-up costs: not judged
    assert manager.preview_decoder() is not None
    manager.note_preview_time(1.3)  # the real TAESD at 512x512 on a 2-core CPU
    assert manager.preview_decoder() is None


def test_without_a_loadable_preview_vae_previews_fall_back_to_the_latent_approximation(settings, tmp_path):
    import dataclasses
    import shutil

    from studio.core import Studio

    shutil.copy(settings.presets_dir / "tiny.toml", tmp_path)
    tiny = (tmp_path / "tiny.toml").read_text()
    (tmp_path / "tiny.toml").write_text(tiny.replace('"./tiny/preview-vae"', '"./tiny/no-such-folder"'))
    previews = []
    result = Studio(dataclasses.replace(settings, presets_dir=tmp_path)).generate(
        request(steps=7, width=64, height=128), on_preview=previews.append)
    assert result.images  # a preview never costs the image
    assert len(previews) == 2 and previews[0].size == (32, 64)  # latents are 1/8, drawn 4x: rough


def test_each_result_says_its_time_and_on_a_gpu_its_memory_peak(studio):
    from studio.results import Result

    result = studio.generate(request())
    assert result.seconds > 0 and result.peak_memory_bytes is None  # the CPU reports no device memory
    assert result.summary() == f"Time taken: {result.seconds:.1f} s"
    on_a_gpu = Result(seconds=3.24, peak_memory_bytes=3 * 2**30, device_memory_bytes=8 * 2**30)
    assert on_a_gpu.summary() == "Time taken: 3.2 s · GPU memory peak: 3.00 of 8.0 GB"


def test_the_progress_bar_says_which_model_is_loading_the_first_time(settings):
    from studio.core import Studio
    from studio.requests import InpaintRequest

    fresh, statuses = Studio(settings), []
    fresh.generate(request(), on_status=statuses.append)
    fresh.generate(request(), on_status=statuses.append)
    assert statuses == ["Loading the base model (the first use downloads it)"]  # once, before the first run
    image, mask = Image.new("RGB", (64, 64)), Image.new("L", (64, 64), 255)
    fresh.generate(InpaintRequest(prompt="x", steps=2, image=image, mask=mask), on_status=statuses.append)
    assert statuses[-1] == "Loading the inpaint model (the first use downloads it)"


HIRES = {"hires_fix": True, "hires_scale": 1.5, "hires_steps": 4, "hires_denoising": 0.5}


def test_hires_fix_redraws_the_image_larger_the_same_way_every_time(studio):
    first = studio.generate(request(batch_size=2, **HIRES))
    again = studio.generate(request(batch_size=2, **HIRES))
    assert [image.size for image in first.images] == [(96, 96), (96, 96)]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, again.images))
    plain = studio.generate(request(batch_size=2))  # the first pass alone, made larger, is not the result
    upscaled = pixels(plain.images[0].resize((96, 96), Image.Resampling.LANCZOS))
    assert np.abs(pixels(first.images[0]) - upscaled).mean() > 1
    # As A1111 writes it: Size is the first pass's, the Hires. fix settings follow.
    assert "Size: 64x64" in first.infotexts[0]
    assert "Denoising strength: 0.5, Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Lanczos" in first.infotexts[0]


def test_hires_fix_at_denoising_zero_is_exactly_the_upscaled_first_pass(studio):
    plain = studio.generate(request(seed=11))
    hires = studio.generate(request(seed=11, **{**HIRES, "hires_denoising": 0.0}))
    upscaled = plain.images[0].resize((96, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(hires.images[0]), pixels(upscaled))


@pytest.mark.parametrize("change, message", [
    ({"hires_scale": 5}, "'Upscale by' must be between 1 and 4, got 5"),
    ({"hires_scale": 4, "width": 256, "height": 256}, "would make 1024x1024, above this preset's limit of 512x512"),
    ({"hires_denoising": 1.5}, "denoising strength must be between 0 and 1"),
    ({"hires_steps": -1}, "Hires steps must be between 0 and 50"),
])
def test_hires_fix_settings_out_of_range_get_a_message(studio, change, message):
    with pytest.raises(RequestError, match=message):
        studio.generate(request(**{**HIRES, **change}))


def test_progress_counts_both_hires_passes_and_stop_in_the_second_keeps_only_finished_images(studio):
    seen, stop = [], threading.Event()

    def on_step(done, total):
        seen.append((done, total))
        if done == 11:  # the first step of the second batch's hires pass
            stop.set()

    # Two batches: first passes of 4 steps each (steps 1-8), then hires passes of round(4 x 0.5) = 2
    # steps each (9-10 for the first batch, 11-12 for the second).
    result = studio.generate(request(batch_count=2, **HIRES), on_step=on_step, stop=stop)
    assert seen[0] == (1, 12) and seen[-1][0] == 11
    assert result.stopped and [image.size for image in result.images] == [(96, 96)]  # no small image


@pytest.mark.slow  # two more studios loaded: 7 s
def test_channels_last_keeps_the_image_within_a_level_says_so_and_skips_flux(settings, studio, tmp_path):
    """--channels-last: the UNet's convolutions in NHWC; other kernels, so a pixel may move by a
    level, and the infotext says it was on. FLUX.1's transformer has no convolutions to reorder."""
    import dataclasses

    import torch

    from studio.core import Studio

    nhwc = Studio(dataclasses.replace(settings, channels_last=True, outputs_dir=tmp_path))
    fields = {"prompt": "a boat", "steps": 4, "width": 64, "height": 64, "seed": 3}
    made, plain = nhwc.generate(Txt2ImgRequest(**fields)), studio.generate(Txt2ImgRequest(**fields))
    assert nhwc.manager().base_pipeline().unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(pixels(made.images[0]) - pixels(plain.images[0])).max() <= 2
    assert "Memory format: channels last" in made.infotexts[0] and "Memory format" not in plain.infotexts[0]
    flux = nhwc.generate(Txt2ImgRequest(**fields, sampler="Euler"), preset="tiny-flux")
    assert "Memory format" not in flux.infotexts[0]


def test_deepcache_runs_the_deep_blocks_only_every_third_step_and_leaves_no_trace(studio):
    """DeepCache on the UNet: the mid block runs on full steps only (4 of 12), the image stays close to
    the exact one, the infotext says so, and the next request without it is the exact image again."""
    from studio.requests import ControlRequest

    exact = pixels(studio.generate(request(steps=12)).images[0])
    mid_calls = []
    hook = studio.manager().base_pipeline().unet.mid_block.resnets[0].register_forward_hook(
        lambda *args: mid_calls.append(1))
    try:
        cached = studio.generate(request(steps=12, step_cache="deepcache"))
    finally:
        hook.remove()
    assert len(mid_calls) == 4 and "Step cache: deepcache" in cached.infotexts[0]
    mse = np.mean((pixels(cached.images[0]) - exact).astype(np.float64) ** 2)
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 25  # close, not the same
    assert np.array_equal(pixels(studio.generate(request(steps=12)).images[0]), exact)
    scribble = Image.new("RGB", (64, 64), "black")
    controlled = studio.generate(ControlRequest(prompt="a fox", control_image=scribble, steps=6, width=64, height=64,
                                                seed=1, step_cache="deepcache"))
    assert controlled.images[0].size == (64, 64)  # the ControlNet's residuals join the cached ones


def test_an_attention_kernel_is_written_to_the_infotext_and_one_this_machine_lacks_is_refused_at_start(
        settings, studio, tmp_path):
    """--attention sdpa-math holds PyTorch's SDPA to its math kernel (every family): the pixels stay
    within a level and the infotext says it. A kernel or package this machine lacks is refused when the
    studio starts, with what to do."""
    import dataclasses

    from studio.core import Studio
    from studio.errors import BackendError

    math = Studio(dataclasses.replace(settings, attention="sdpa-math", outputs_dir=tmp_path))
    for preset, sampler in (("tiny", "Euler a"), ("tiny-flux", "Euler")):
        fields = {"prompt": "a boat", "steps": 3, "width": 64, "height": 64, "seed": 3, "sampler": sampler}
        made = math.generate(Txt2ImgRequest(**fields), preset=preset)
        plain = studio.generate(Txt2ImgRequest(**fields), preset=preset)
        assert np.abs(pixels(made.images[0]) - pixels(plain.images[0])).max() <= 2
        assert "Attention: sdpa-math" in made.infotexts[0] and "Attention" not in plain.infotexts[0]
    with pytest.raises(BackendError, match="--attention sdpa-efficient: PyTorch has no such kernel on cpu"):
        Studio(dataclasses.replace(settings, attention="sdpa-efficient", outputs_dir=tmp_path))
    with pytest.raises(BackendError, match="--attention sage: .*sageattention.*leave --attention at sdpa"):
        Studio(dataclasses.replace(settings, attention="sage", outputs_dir=tmp_path))
    with pytest.raises(ValueError, match="attention must be one of sdpa, sdpa-math"):
        dataclasses.replace(settings, attention="fast")
