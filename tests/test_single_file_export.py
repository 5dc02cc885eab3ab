"""The LDM-layout export that the checkpoint tests and the benchmark rely on: diffusers' own
single-file conversion must give back every weight exactly, with the configs the studio ships."""

import pytest
import torch

from studio.checkpoints import config_folder, detect
from studio.families.sd_export import export_checkpoint


def assert_same_weights(expected, loaded):
    want, got = expected.state_dict(), loaded.state_dict()
    assert set(want) == set(got)
    assert [key for key in want if not torch.equal(want[key], got[key])] == []


@pytest.mark.parametrize("folder, cls_name, components, architecture", [
    ("base", "StableDiffusionPipeline", ("unet", "vae", "text_encoder"), "SD 1.x"),
    ("sdxl-base", "StableDiffusionXLPipeline", ("unet", "vae", "text_encoder", "text_encoder_2"), "SDXL"),
])
def test_every_weight_round_trips(models_dir, tmp_path, folder, cls_name, components, architecture):
    import diffusers

    cls = getattr(diffusers, cls_name)
    source = models_dir / "tiny" / folder
    pipe = cls.from_pretrained(source)
    path = export_checkpoint(pipe, tmp_path / "model.safetensors")
    assert detect(path, "model").architecture == architecture
    loaded = cls.from_single_file(str(path), config=str(config_folder(source, tmp_path / "configs")),
                                  local_files_only=True)
    for name in components:
        assert_same_weights(getattr(pipe, name), getattr(loaded, name))


def test_an_inpainting_unet_round_trips_and_is_detected(models_dir, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = StableDiffusionPipeline.from_pretrained(models_dir / "tiny" / "base")
    unet = UNet2DConditionModel.from_pretrained(models_dir / "tiny" / "inpaint" / "unet")
    path = export_checkpoint(pipe, tmp_path / "model-inpainting.safetensors", unet=unet)
    info = detect(path, "model-inpainting")
    assert (info.kind, info.detected.fingerprint) == ("inpaint", (32,))
    loaded = UNet2DConditionModel.from_single_file(
        str(path), config=str(config_folder(models_dir / "tiny" / "base", tmp_path / "configs")), subfolder="unet",
        local_files_only=True, in_channels=9)
    assert_same_weights(unet, loaded)


def test_the_shipped_clip_tokenizer_gives_clips_token_ids(tmp_path):
    """The vocabulary is derived from the shipped merges: check it against ids every SD user has seen."""
    from transformers import CLIPTokenizer

    from studio.presets import CONFIGS_DIR

    tokenizer = CLIPTokenizer.from_pretrained(config_folder(CONFIGS_DIR / "sd15", tmp_path) / "tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat, masterpiece").input_ids == [49406, 320, 1125, 539, 320, 2368, 267, 12066, 49407]
    xl = CLIPTokenizer.from_pretrained(config_folder(CONFIGS_DIR / "sdxl", tmp_path) / "tokenizer_2")
    assert xl.pad_token_id == 0  # "!": SDXL's second tokenizer pads with it
