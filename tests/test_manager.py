"""The model manager's memory: the cache budget (the preset's or the flag's), room on a full
GPU, eviction that really frees, and out-of-memory errors that leave the studio working."""

import dataclasses
import gc
import weakref

import pytest
import torch

from studio.core import Studio
from studio.errors import RequestError
from studio.requests import Txt2ImgRequest


def run(studio):
    return studio.generate(Txt2ImgRequest(prompt="a castle", steps=3, width=64, height=64, seed=21))


def test_evicting_a_cached_model_really_frees_it(settings):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from PIL import Image

    from studio.requests import InpaintRequest

    studio = Studio(dataclasses.replace(settings, model_cache_mb=8))  # room for about one UNet
    manager = studio.manager()
    photo, mask = Image.new("RGB", (64, 64)), Image.new("L", (64, 64), 255)
    studio.generate(InpaintRequest(prompt="x", steps=2, image=photo, mask=mask, loras=(("tiny-style", 1.0),)))
    unet = manager.component("inpaint")
    inpaint = weakref.ref(unet)
    lora_layer = weakref.ref(next(m for m in unet.modules() if isinstance(m, BaseTunerLayer)))
    del unet
    manager.component("instruct")
    assert manager.cached_roles() == ["instruct"]
    gc.collect()
    # No reference is left anywhere, not even to the LoRA-wrapped layers: the memory is free.
    assert inpaint() is None and lora_layer() is None


@pytest.mark.parametrize("flag_mb, kept", [
    (None, ["instruct", "control.scribble"]),  # tiny.toml's 9 MB: one UNet and a ControlNet
    (0, ["inpaint", "instruct", "control.scribble"]),  # --model-cache-mb 0: no limit
])
def test_the_presets_model_budget_applies_unless_the_flag_overrides_it(settings, flag_mb, kept):
    manager = Studio(dataclasses.replace(settings, model_cache_mb=flag_mb)).manager()
    for role in ("inpaint", "instruct", "control.scribble"):
        manager.component(role)
    assert manager.cached_roles() == kept


def test_on_a_full_gpu_cached_models_make_room_for_the_generation(settings):
    """The eviction policy against a simulated 20 MB GPU: the CUDA free-memory reading is the one
    part replaced, as this machine has no GPU."""
    from studio.model_cache import module_bytes

    manager = Studio(dataclasses.replace(settings, model_cache_mb=0, vram_reserve_mb=6)).manager()
    manager.free_device_bytes = lambda: 20 * 2**20 - sum(map(module_bytes, manager.cached_models()))
    manager.component("control.scribble")  # 2.7 MB: 17 MB left
    manager.component("inpaint")  # 5.4 MB more: 12 MB left
    assert manager.cached_roles() == ["control.scribble", "inpaint"]
    manager.component("instruct")  # 5.4 MB more would leave 6.6 MB: still above the reserve
    manager.component("control.openpose")  # below the 6 MB reserve: the least recently used goes
    assert manager.cached_roles() == ["inpaint", "instruct", "control.openpose"]


@pytest.mark.slow  # loads and evicts every model: 4 s
def test_a_model_that_does_not_fit_evicts_the_others_then_says_so(settings, monkeypatch):
    from diffusers import UNet2DConditionModel

    manager = Studio(dataclasses.replace(settings, model_cache_mb=0)).manager()
    manager.component("control.scribble")
    manager.component("instruct")
    original = UNet2DConditionModel.from_pretrained.__func__
    failures = {"left": 1}

    def fails_while_full(cls, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.70 GiB")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(fails_while_full))
    manager.component("inpaint")  # the first try fails; with the others evicted it fits
    assert manager.cached_roles() == ["inpaint"]
    failures["left"] = 2
    manager.component("control.scribble")
    with pytest.raises(RequestError, match="Not enough GPU memory to load the instruct model.*--lowvram"):
        manager.component("instruct")
    assert manager.cached_roles() == []  # the room was made; nothing half-loaded stays


def test_out_of_memory_is_reported_and_the_next_request_works(studio, monkeypatch):
    from diffusers import StableDiffusionPipeline

    original = StableDiffusionPipeline.__call__
    calls = {"n": 0}

    def fail_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", fail_once)
    with pytest.raises(RequestError, match="Out of memory at 64x64 with batch size 1. Try a smaller size"):
        run(studio)
    assert len(run(studio).images) == 1


@pytest.mark.slow  # three rounds of evicting and reloading: a long job
def test_loras_on_an_evicted_and_reloaded_model_stay_exact(settings):
    """Inpaint with a LoRA, evict the inpaint UNet (Instruct needs the room), load it again:
    the LoRA gives the same image as before, and no LoRA the plain image."""
    import numpy as np
    from PIL import Image

    from studio.requests import InpaintRequest, InstructRequest

    photo, mask = Image.new("RGB", (64, 64), (120, 60, 30)), Image.new("L", (64, 64), 255)
    common = {"prompt": "x", "steps": 3, "seed": 4, "mask_blur": 0, "image": photo, "mask": mask}
    studio = Studio(dataclasses.replace(settings, model_cache_mb=8))  # room for one UNet

    def inpaint(loras=()):
        return np.asarray(studio.generate(InpaintRequest(**common, loras=loras)).images[0])

    plain, styled = inpaint(), inpaint((("tiny-style", 1.0),))
    for _ in range(3):
        studio.generate(InstructRequest(prompt="x", steps=2, seed=1, image=photo))
        assert studio.manager().cached_roles() == ["instruct"]  # the inpaint UNet is gone
        assert np.array_equal(inpaint((("tiny-style", 1.0),)), styled)
        assert np.array_equal(inpaint(), plain)
