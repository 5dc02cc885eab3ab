"""--lowvram: diffusers' model offload on the shared modules of every task pipeline.

On this CPU-only machine the offload device is the CPU itself, so no byte moves, but the same
accelerate hooks are put on and taken off the same shared modules as on a GPU: these tests show
that every tab gives the image it gives without offload, and that no hook outlives a request."""

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.requests import ControlRequest, InpaintRequest, InstructRequest, Txt2ImgRequest

COMMON = {"prompt": "a house by a lake", "steps": 4, "seed": 9}
SIZE = {"width": 64, "height": 64}


def requests():
    image = Image.new("RGB", (64, 64), (40, 90, 160))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    scribble = Image.new("RGB", (64, 64))
    ImageDraw.Draw(scribble).line((5, 5, 60, 60), fill="white", width=4)
    return [
        Txt2ImgRequest(**COMMON, **SIZE, loras=(("tiny-style", 0.8),)),
        InpaintRequest(**COMMON, image=image, mask=mask),
        InstructRequest(**COMMON, image=image),
        ControlRequest(**COMMON, **SIZE, control_image=scribble, control_mode="scribble"),
        Txt2ImgRequest(**COMMON, **SIZE),
    ]


@pytest.fixture(scope="module")
def lowvram_studio(settings):
    from studio.core import Studio

    return Studio(dataclasses.replace(settings, lowvram=True))


def hooked(manager) -> list[str]:
    """Names of the models that still carry an accelerate hook."""
    base = manager.base_pipeline()
    models = {**{name: m for name, m in base.components.items() if hasattr(m, "parameters")},
              **dict(zip(manager.cached_roles(), manager.cached_models()))}
    return [name for name, model in models.items() if hasattr(model, "_hf_hook")]


def test_every_tab_gives_the_same_image_with_offload(studio, lowvram_studio):
    for request in requests():
        plain = studio.generate(request).images[0]
        offloaded = lowvram_studio.generate(request).images[0]
        assert np.array_equal(np.asarray(plain), np.asarray(offloaded)), type(request).__name__
        assert hooked(lowvram_studio.manager()) == []  # nothing outlives the request


def test_models_carry_offload_hooks_only_while_lent(lowvram_studio):
    manager = lowvram_studio.manager()
    with manager.pipeline("txt2img", "Euler a") as pipe:
        assert all(hasattr(getattr(pipe, name), "_hf_hook") for name in ("unet", "vae", "text_encoder"))
        assert pipe._offload_device.type == manager.device.type
    assert hooked(manager) == []
    assert manager.home.type == "cpu"  # weights rest in RAM between requests


def test_a_failed_run_leaves_no_hook_behind(lowvram_studio):
    manager = lowvram_studio.manager()
    with pytest.raises(RuntimeError, match="injected"):
        with manager.pipeline("instruct", "Euler a"):
            raise RuntimeError("injected failure mid-run")
    assert hooked(manager) == []
    assert lowvram_studio.generate(requests()[0]).images  # and the next request works
