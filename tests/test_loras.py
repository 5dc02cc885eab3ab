"""LoRAs per request: formats, exactness, isolation, refusals, path escapes."""

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from studio.errors import RequestError
from studio.families import FAMILIES
from studio.loras import LoraLibrary, parse_prompt_loras
from studio.requests import InpaintRequest, Txt2ImgRequest

BASE = {"prompt": "a castle on a hill", "steps": 3, "width": 64, "height": 64, "seed": 21}


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def run(studio, loras=(), **change):
    return studio.generate(Txt2ImgRequest(**{**BASE, **change}, loras=tuple(loras)))


@pytest.fixture(scope="module")
def fresh_base(settings):
    """The same request on a freshly loaded base, never touched by a LoRA."""
    from studio.core import Studio

    return pixels(run(Studio(settings)))


def test_both_formats_load_and_change_the_output(studio, fresh_base):
    for name in ("tiny-style", "tiny-kohya"):
        assert np.abs(pixels(run(studio, [(name, 1.0)])) - fresh_base).mean() > 0.5, name


@pytest.mark.parametrize("name", ["tiny-style", "tiny-kohya"])
def test_loras_patch_the_text_encoder_too(studio, name):
    from studio.adapters import adapter_id

    run(studio, [(name, 1.0)])
    parts = studio.manager().base_pipeline().get_list_adapters()
    assert adapter_id(name) in parts.get("text_encoder", []) and adapter_id(name) in parts.get("unet", [])


def test_a_kohya_lora_reaches_the_resnet_convolutions_as_civitai_locon_files_do(studio):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from studio.adapters import adapter_id

    run(studio, [("tiny-kohya", 1.0)])
    unet = studio.manager().base_pipeline().unet
    convs = [name for name, module in unet.named_modules() if isinstance(module, BaseTunerLayer)
             and name.endswith("conv1") and adapter_id("tiny-kohya") in module.lora_A]
    assert convs  # lora_unet_..._resnets_0_conv1 keys, with 3x3 down and 1x1 up weights


def test_without_lora_after_any_lora_sequence_is_bit_identical_to_a_fresh_base(studio, fresh_base):
    for loras in ([("tiny-style", 0.7)], [("tiny-kohya", 1.0), ("tiny-style", -0.5)], [("tiny-kohya", 2.0)]):
        run(studio, loras)
    assert np.array_equal(pixels(run(studio)), fresh_base)
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipe = studio.manager().base_pipeline()
    layers = [m for part in (pipe.unet, pipe.text_encoder) for m in part.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(layer.lora_A for layer in layers)  # loaded...
    assert not any(layer.active_adapters for layer in layers)  # ...but none active


def test_alternating_lora_sets_each_give_their_own_image(studio):
    a_alone, b_alone = pixels(run(studio, [("tiny-style", 0.8)])), pixels(run(studio, [("tiny-kohya", 1.2)]))
    assert not np.array_equal(a_alone, b_alone)
    for _ in range(2):
        assert np.array_equal(pixels(run(studio, [("tiny-kohya", 1.2)])), b_alone)
        assert np.array_equal(pixels(run(studio, [("tiny-style", 0.8)])), a_alone)


def test_concurrent_requests_with_different_loras_are_isolated(studio, fresh_base):
    sets = {"a": [("tiny-style", 1.0)], "b": [("tiny-kohya", 1.0)], "none": []}
    alone = {key: pixels(run(studio, loras)) for key, loras in sets.items()}
    results: dict[str, list] = {key: [] for key in sets}

    def worker(key):
        for _ in range(3):
            results[key].append(pixels(run(studio, sets[key])))

    threads = [threading.Thread(target=worker, args=(key,)) for key in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key in sets:
        assert all(np.array_equal(image, alone[key]) for image in results[key]), key
    assert np.array_equal(alone["none"], fresh_base)


def test_weight_matters_and_zero_is_no_lora(studio, fresh_base):
    half, full = pixels(run(studio, [("tiny-style", 0.5)])), pixels(run(studio, [("tiny-style", 1.0)]))
    assert not np.array_equal(half, full)
    assert np.array_equal(pixels(run(studio, [("tiny-style", 0.0)])), fresh_base)


def test_prompt_syntax_gives_the_same_image_as_the_picker(studio):
    picked = run(studio, [("tiny-kohya", 0.8)])
    typed = run(studio, prompt="a castle on a hill, <lora:tiny-kohya:0.8>")
    assert np.array_equal(pixels(picked), pixels(typed))
    assert picked.infotexts[0] == typed.infotexts[0]


def test_png_parameters_list_the_loras_as_a1111_does(studio):
    result = run(studio, [("tiny-kohya", 0.8), ("tiny-style", 0.5)])
    with Image.open(result.paths[0]) as image:
        text = image.info["parameters"]
    assert text.startswith("a castle on a hill, <lora:tiny-kohya:0.8> <lora:tiny-style:0.5>\n")
    assert 'Lora hashes: "tiny-kohya: ' in text and ", tiny-style: " in text


def test_loras_reach_the_inpaint_unet(studio):
    photo = Image.new("RGB", (64, 64), (120, 60, 30))
    mask = Image.new("L", (64, 64), 255)
    common = {"prompt": "x", "steps": 3, "seed": 4, "mask_blur": 0}
    plain = studio.generate(InpaintRequest(**common, image=photo, mask=mask))
    styled = studio.generate(InpaintRequest(**common, image=photo, mask=mask, loras=(("tiny-kohya", 1.5),)))
    again = studio.generate(InpaintRequest(**common, image=photo, mask=mask))
    assert not np.array_equal(pixels(plain), pixels(styled))
    assert np.array_equal(pixels(plain), pixels(again))


def test_parse_prompt_loras():
    assert parse_prompt_loras("a, <lora:x:0.6>, b <lora:sub/y>") == ("a, b", [("x", 0.6), ("sub/y", 1.0)])
    with pytest.raises(RequestError, match="must be a number"):
        parse_prompt_loras("<lora:x:lots>")


# --- the library: formats, refusals, names ----------------------------------------------------

@pytest.fixture()
def library(tmp_path, models_dir):
    folder = tmp_path / "loras"
    (folder / "styles").mkdir(parents=True)
    source = models_dir / "tiny" / "loras" / "tiny-kohya.safetensors"
    (folder / "styles" / "ink.safetensors").write_bytes(source.read_bytes())
    (folder / "old.ckpt").write_bytes(b"not really a pickle")
    (folder / "model.bin").write_bytes(b"x")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(source.read_bytes())
    os.symlink(outside, folder / "escape.safetensors")
    return LoraLibrary(folder)


def test_library_lists_safetensors_and_reads_kohya_metadata(library):
    assert library.names() == ["styles/ink"]  # the symlink out of the folder is not listed
    info = library.info("styles/ink")
    assert (info.base_model, info.rank) == ("sd_v1", "4")
    assert [family.name for family in FAMILIES if family.lora_base_model_matches(info.base_model)] == ["sd"]
    assert info.trigger_words == ("tinystyle", "watercolor") and len(info.short_hash) == 12
    assert library.refused() == ["model.bin", "old.ckpt"]


@pytest.mark.parametrize("name", ["old", "old.ckpt", "model", "anything.pt", "x.pth"])
def test_pickle_files_are_refused_with_the_reason(library, name):
    with pytest.raises(RequestError, match="pickles can run code"):
        library.state_dict(name)


@pytest.mark.parametrize(
    "name", ["../secret", "../secret.safetensors", "/etc/passwd", "escape", "styles/../../secret",
             "styles/../escape", "~/secret", "", "   ", "C:\\\\Windows\\\\x", "styles/ink/../../../secret"],
)
def test_hostile_names_never_reach_a_file_outside_the_folder(library, name):
    with pytest.raises(RequestError):
        library.state_dict(name)


def test_ram_cache_keeps_state_dicts_within_budget(models_dir, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    source = models_dir / "tiny" / "loras" / "tiny-kohya.safetensors"
    for name in ("a", "b", "c"):
        (folder / f"{name}.safetensors").write_bytes(source.read_bytes())
    one = sum(t.numel() * t.element_size() for t in LoraLibrary(folder).state_dict("a").values())
    library = LoraLibrary(folder, cache_bytes=int(one * 2.5))
    reads, read = [], library._read
    library._read = lambda name, source: reads.append(name) or read(name, source)
    first = library.state_dict("a")
    second = library.state_dict("a")
    assert reads == ["a"]  # cached: no second read
    # ...and each caller gets its own copy: diffusers' converters change what they are given in place
    first[next(iter(first))].mul_(2)
    assert second is not first and torch.equal(library.state_dict("a")[next(iter(first))], second[next(iter(first))])
    library.state_dict("b"), library.state_dict("c")
    assert library.cached_names() == ["b", "c"]  # "a" was least recently used


# --- bad LoRAs leave the model exactly as it was ----------------------------------------------

def _install(studio, tmp_path, name, tensors, metadata=None):
    path = studio.settings.loras_dir / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_a_lora_for_another_family_is_refused_and_the_base_is_unchanged(studio, fresh_base, tmp_path):
    sdxl_keys = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(4, 640),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(640, 4),
    }
    _install(studio, tmp_path, "xl-style", sdxl_keys, {"ss_base_model_version": "sdxl_base_v1-0"})
    with pytest.raises(RequestError, match="trained for sdxl_base_v1-0"):
        run(studio, [("xl-style", 1.0)])
    assert np.array_equal(pixels(run(studio)), fresh_base)


def test_a_lora_whose_shapes_do_not_fit_is_refused_and_the_base_is_unchanged(studio, fresh_base, tmp_path):
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    wrong = {f"{key}.lora_A.weight": torch.randn(4, 768), f"{key}.lora_B.weight": torch.randn(64, 4)}
    _install(studio, tmp_path, "wrong-shape", wrong)
    with pytest.raises(RequestError, match="does not fit this model"):
        run(studio, [("wrong-shape", 1.0)])
    assert np.array_equal(pixels(run(studio)), fresh_base)
    assert np.abs(pixels(run(studio, [("tiny-style", 1.0)])) - fresh_base).mean() > 0.5  # LoRAs still work


def test_a_corrupt_lora_file_gets_a_message(studio, fresh_base):
    path = studio.settings.loras_dir / "broken.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(RequestError, match="could not be read|damaged"):
        run(studio, [("broken", 1.0)])
    assert np.array_equal(pixels(run(studio)), fresh_base)


def test_unknown_lora_lists_what_exists(studio):
    with pytest.raises(RequestError, match="Unknown LoRA 'nope'. Available LoRAs: .*tiny-kohya"):
        run(studio, [("nope", 1.0)])


# --- memory -----------------------------------------------------------------------------------

def test_adapters_beyond_the_limit_are_deleted(settings, tmp_path, models_dir):
    import dataclasses

    from studio.core import Studio

    folder = tmp_path / "many"
    folder.mkdir()
    source = (models_dir / "tiny" / "loras" / "tiny-kohya.safetensors").read_bytes()
    for i in range(5):
        (folder / f"l{i}.safetensors").write_bytes(source)
    studio = Studio(dataclasses.replace(settings, loras_dir=folder, max_loaded_loras=2))
    for i in range(5):
        run(studio, [(f"l{i}", 1.0)])
    unet = studio.manager().base_pipeline().unet
    assert len(unet.peft_config) == 2


def test_the_fast_switch_falls_back_to_peft_where_a_layer_keeps_its_active_list_elsewhere():
    from studio.adapters import _set_active

    class LayerOfAnotherPeft:  # active_adapters read from another attribute than today's PEFT uses
        def __init__(self):
            self._active, self.calls = ["old"], []

        @property
        def active_adapters(self):
            return self._active

        def set_adapter(self, names, inference_mode=False):
            self.calls.append(names)
            self._active = names

    layer = LayerOfAnotherPeft()
    _set_active(layer, ["a"])
    assert layer.active_adapters == ["a"] and layer.calls == [["a"]]


# --- --compile: the denoiser's LoRAs in slots ----------------------------------------------------

@pytest.fixture(scope="module")
def slotted(settings, tmp_path_factory):
    """A studio with --compile whose compiler is switched off (torch._dynamo's `disable`): the slots'
    bookkeeping runs as under a compiled model, in seconds (tests/test_speed.py compiles for real)."""
    import dataclasses

    from studio.core import Studio

    with torch._dynamo.config.patch(disable=True):
        yield Studio(dataclasses.replace(settings, compile=True, outputs_dir=tmp_path_factory.mktemp("slotted")))


@pytest.mark.slow  # seven LoRA sets twice, on their own studio
def test_slotted_loras_give_the_usual_images_and_none_is_the_bare_model(studio, slotted, fresh_base):
    """Each LoRA set, in slots, makes the image it makes loaded the usual way (a level at most: its
    alpha/rank is folded into B), in any order; without LoRAs, the bare model's pixels exactly; a slot
    is made once for each new kind of LoRA, not at every swap."""
    sets = [[("tiny-style", 0.8)], [("tiny-kohya", 1.0)], [("tiny-style", 0.5), ("tiny-kohya", 1.1)], [],
            [("tiny-kohya", 0.7), ("tiny-style", 1.0)], [("tiny-style", 0.8)], []]
    with torch._dynamo.config.patch(disable=True):
        for loras in sets:
            made = run(slotted, loras)
            assert "Compile: inductor" in made.infotexts[0]
            if loras:
                assert np.abs(pixels(made) - pixels(run(studio, loras))).max() <= 1, loras
            else:
                assert np.array_equal(pixels(made), fresh_base)
        made_once = slotted.manager().adapters.slots.remade
        for loras in sets:
            run(slotted, loras)
    assert made_once == slotted.manager().adapters.slots.remade <= 4  # swaps copy weights; no slot is re-made
    unet = slotted.manager().base_pipeline().unet
    assert set(unet.peft_config) == {"slot0", "slot1"}  # the LoRAs themselves live in RAM, not in the model
