"""Single-file checkpoints and VAEs as civitai serves them (the original LDM key layout), made from
the tiny models and loaded offline with diffusers' from_single_file and the configs in the repo."""

import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from studio.errors import PresetError, RequestError, StudioError
from studio.families.sd_export import export_checkpoint, vae_to_ldm
from studio.requests import InpaintRequest, Txt2ImgRequest


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def run(studio, preset, **change):
    fields = {"prompt": "a red fox in the snow", "steps": 3, "width": 64, "height": 64, "seed": 5, **change}
    return studio.generate(Txt2ImgRequest(**fields), preset=preset)


@pytest.fixture(scope="module")
def checkpoints(settings, models_dir):
    """The checkpoints folder: tiny SD 1.x (+ its inpainting twin), a second SD 1.x in a subfolder,
    a tiny SDXL, a pickle and a truncated file."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    folder = settings.checkpoints_dir
    tiny = models_dir / "tiny"
    pipe = StableDiffusionPipeline.from_pretrained(tiny / "base", safety_checker=None)
    export_checkpoint(pipe, folder / "tiny-sd1.safetensors")
    export_checkpoint(pipe, folder / "tiny-sd1-inpainting.safetensors",
                      unet=UNet2DConditionModel.from_pretrained(tiny / "inpaint" / "unet"))
    with torch.no_grad():
        pipe.unet.conv_in.weight.mul_(1.5)  # another "fine-tune" of the same family
    export_checkpoint(pipe, folder / "sub" / "other.safetensors")
    export_checkpoint(StableDiffusionXLPipeline.from_pretrained(tiny / "sdxl-base"), folder / "tiny-sdxl.safetensors")
    (folder / "evil.ckpt").write_bytes(b"\x80\x04K\x01.")  # a pickle: never opened
    data = (folder / "tiny-sd1.safetensors").read_bytes()
    (folder / "broken.safetensors").write_bytes(data[: len(data) // 2])
    yield folder
    shutil.rmtree(folder)
    folder.mkdir()


def test_the_picker_offers_checkpoints_next_to_presets_and_never_a_pickle(studio, checkpoints):
    names = studio.model_names()
    assert {"tiny", "sd15", "tiny-sd1.safetensors", "sub/other.safetensors", "tiny-sdxl.safetensors"} <= set(names)
    assert not any(name.endswith(".ckpt") for name in names)
    assert studio.user_models.checkpoints.refused() == ["evil.ckpt"]
    info = studio.user_models.checkpoints.info("tiny-sd1-inpainting.safetensors")
    assert (info.architecture, info.kind, info.detected.fingerprint) == ("SD 1.x", "inpaint", (32,))
    assert studio.user_models.checkpoints.info("tiny-sdxl.safetensors").architecture == "SDXL"


def test_a_checkpoint_gives_the_pixels_of_the_same_weights_from_the_diffusers_folder(studio, checkpoints):
    from_folder = run(studio, "tiny")
    from_file = run(studio, "tiny-sd1.safetensors")
    assert np.array_equal(pixels(from_folder), pixels(from_file))
    digest = hashlib.sha256((checkpoints / "tiny-sd1.safetensors").read_bytes()).hexdigest()[:10]
    assert from_file.infotexts[0].endswith(f"Model hash: {digest}, Model: tiny-sd1")
    # A1111's title form, "name [hash]", names the same checkpoint (API clients send it).
    assert np.array_equal(pixels(from_file), pixels(run(studio, f"tiny-sd1.safetensors [{digest}]")))


def test_its_inpainting_twin_serves_the_inpaint_tab(studio, checkpoints):
    preset = studio.preset("tiny-sd1.safetensors")
    assert preset.models["inpaint"].endswith("tiny-sd1-inpainting.safetensors")
    assert preset.models["instruct"].endswith("tiny/instruct")  # the family preset's own
    image = Image.new("RGB", (64, 64), (90, 120, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    fields = {"prompt": "a cat", "image": image, "mask": mask, "steps": 3, "seed": 2}
    from_file = studio.generate(InpaintRequest(**fields), preset="tiny-sd1.safetensors")
    from_folder = studio.generate(InpaintRequest(**fields), preset="tiny")
    assert np.array_equal(pixels(from_file), pixels(from_folder))
    assert "Model: tiny-sd1-inpainting" in from_file.infotexts[0]


def test_an_sdxl_checkpoint_loads_offline_with_both_text_encoders(studio, checkpoints):
    # Every weight is equal (test_single_file_export); the pooled projection differs by 3e-7 because
    # the CPU's BLAS takes another path for a weight that from_pretrained mmaps at an address not
    # 64-byte aligned. That may move a pixel by one level, no more.
    difference = np.abs(pixels(run(studio, "tiny-sdxl")) - pixels(run(studio, "tiny-sdxl.safetensors")))
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_switching_checkpoints_keeps_one_loaded_and_each_gives_its_own_image(studio, checkpoints):
    first = pixels(run(studio, "tiny-sd1.safetensors"))
    other = run(studio, "sub/other.safetensors")
    assert np.abs(first - pixels(other)).mean() > 0.5 and "Model: other" in other.infotexts[0]
    assert list(studio.pool._managers) == ["sub/other.safetensors"]
    assert np.array_equal(first, pixels(run(studio, "tiny-sd1.safetensors")))


def test_a_pickle_checkpoint_is_refused_with_its_reason(studio, checkpoints):
    with pytest.raises(StudioError, match="'evil.ckpt' is a pickle file .* pickles can run code when loaded"):
        run(studio, "evil.ckpt")


def test_a_truncated_checkpoint_gets_a_clear_message_and_the_studio_keeps_serving(studio, checkpoints):
    with pytest.raises(RequestError, match="Checkpoint 'broken.safetensors' could not be read: the file is damaged "
                                           "or incomplete .* Download it again"):
        run(studio, "broken.safetensors")
    assert run(studio, "tiny").images


def test_an_unknown_model_lists_presets_and_checkpoints(studio, checkpoints):
    with pytest.raises(PresetError, match="Unknown preset 'nope.safetensors'.*Checkpoints: .*tiny-sd1.safetensors"):
        run(studio, "nope.safetensors")


@pytest.fixture()
def vae_file(settings, models_dir):
    """A VAE as vae-ft-mse files come (LDM keys, no prefix), with a decoder that draws differently."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(models_dir / "tiny" / "base" / "vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(0.4)
    state = {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(vae.state_dict(), 4).items()}
    path = settings.vaes_dir / "bright-vae.safetensors"
    save_file(state, path)
    yield path
    path.unlink()


def test_a_vae_decodes_that_request_only_and_is_written_in_the_infotext(studio, vae_file):
    before = pixels(run(studio, "tiny"))
    with_vae = run(studio, "tiny", vae="bright-vae.safetensors")
    assert pixels(with_vae).mean() > before.mean() + 5
    assert "VAE: bright-vae.safetensors" in with_vae.infotexts[0] and "VAE hash: " in with_vae.infotexts[0]
    assert np.array_equal(before, pixels(run(studio, "tiny")))
    with pytest.raises(RequestError, match="Unknown VAE 'nope.safetensors'. Available VAEs: bright-vae.safetensors"):
        run(studio, "tiny", vae="nope.safetensors")


@pytest.mark.slow  # three clients, three models: 3 s
def test_over_the_api_each_client_picks_its_own_checkpoint_vae_and_clip_skip(server, checkpoints, vae_file):
    from gradio_client import Client

    fast = {"prompt": "a red fox", "steps": 2, "seed": 4, "width": 64, "height": 64}
    ann, bob = Client(server, verbose=False), Client(server, verbose=False)
    _, ann_info = ann.predict(**fast, preset="tiny-sd1.safetensors", vae="bright-vae.safetensors", clip_skip=2,
                              api_name="/txt2img")
    _, bob_info = bob.predict(**fast, preset="tiny", api_name="/txt2img")
    assert "Model: tiny-sd1" in ann_info and "VAE: bright-vae.safetensors" in ann_info and "Clip skip: 2" in ann_info
    assert "tiny/base" in bob_info and "VAE" not in bob_info and "Clip skip" not in bob_info
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Clip skip must be between 1 and 12"):
        ann.predict(**fast, preset="tiny", clip_skip=0, api_name="/txt2img")
    with pytest.raises(AppError, match="'evil.ckpt' is a pickle file"):
        ann.predict(**fast, preset="evil.ckpt", api_name="/txt2img")
    with pytest.raises(AppError, match="'broken.safetensors' could not be read: the file is damaged or incomplete"):
        ann.predict(**fast, preset="broken.safetensors", api_name="/txt2img")
    assert "Model: tiny-sd1" in ann.predict(**fast, preset="tiny-sd1.safetensors", api_name="/txt2img")[1]


def test_reuse_finds_the_model_an_image_names_or_says_it_is_not_here(studio, checkpoints):
    from studio.metadata import parse_infotext

    made = run(studio, "sub/other.safetensors").infotexts[0]
    assert studio.model_of_infotext(parse_infotext(made)[2]) == ("sub/other.safetensors", None)
    assert studio.model_of_infotext(parse_infotext(run(studio, "tiny").infotexts[0])[2]) == ("tiny", None)
    a1111 = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model hash: 6ce0161689, Model: v1-5-pruned"
    model, message = studio.model_of_infotext(parse_infotext(a1111)[2])
    assert model is None and message.startswith("This image was made with the model 'v1-5-pruned' (hash 6ce0161689), "
                                                "which is not in your checkpoints folder")


def test_a1111_hashes_are_read_once_and_kept_in_a_file(tmp_path):
    from studio.checkpoints import CheckpointFolder

    (tmp_path / "m").mkdir()
    model = tmp_path / "m" / "a.safetensors"
    save_file({"x": torch.zeros(4)}, model)
    folder = CheckpointFolder(tmp_path / "m", hash_cache=tmp_path / "hashes.json")
    expected = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert folder.short_hash(model) == expected and expected in (tmp_path / "hashes.json").read_text()
    again = CheckpointFolder(tmp_path / "m", hash_cache=tmp_path / "hashes.json")
    assert again.short_hash(model) == expected  # from the file
    save_file({"x": torch.ones(4)}, model)  # a new file under the same name gets its own hash
    assert again.short_hash(model) == hashlib.sha256(model.read_bytes()).hexdigest()[:10] != expected
