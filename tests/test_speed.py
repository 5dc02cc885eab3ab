"""--compile for real (inductor on the CPU): LoRAs swap without recompiling the denoiser."""

import dataclasses

import numpy as np
import pytest
import torch

from studio.requests import Txt2ImgRequest

pytestmark = pytest.mark.slow  # two compiles of the tiny UNet: about two minutes on two cores


def test_compiled_denoiser_swaps_loras_and_their_weights_without_recompiling(settings, studio, tmp_path):
    """After the slots are made (the first request with two LoRAs compiles, the second re-makes a slot
    once), any set of those LoRAs at any weights, and none, runs with recompiling forbidden, and each
    image is within a level of the one the uncompiled studio makes."""
    from studio.core import Studio

    compiled = Studio(dataclasses.replace(settings, compile=True, outputs_dir=tmp_path))

    def images(loras):
        request = Txt2ImgRequest(prompt="a harbour", steps=2, width=64, height=64, seed=4, loras=loras)
        made, plain = compiled.generate(request), studio.generate(request)
        return np.asarray(made.images[0], dtype=np.int16), np.asarray(plain.images[0], dtype=np.int16), made

    for loras in ((("tiny-kohya", 1.0), ("tiny-style", 0.8)), (("tiny-style", 0.8), ("tiny-kohya", 1.0))):
        images(loras)  # makes the slots: each compiles once
    with torch._dynamo.config.patch(error_on_recompile=True):
        for loras in ((("tiny-style", 0.4),), (), (("tiny-kohya", 1.2), ("tiny-style", 0.6)), (("tiny-kohya", 0.9),),
                      ()):
            made, plain, result = images(loras)
            assert np.abs(made - plain).max() <= 1, loras
            assert "Compile: inductor" in result.infotexts[0]
    assert compiled.manager().adapters.slots.remade == 3  # slot0 and slot1, then slot1 again for kohya's layers
