"""Saved PNGs: every zlib level keeps the pixels and A1111's `parameters` chunk, whole or not at all."""

import numpy as np
import pytest
from PIL import Image

from studio.outputs import OutputStore
from studio.settings import Settings

INFOTEXT = "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 96x64"


def photo() -> Image.Image:
    y, x = np.mgrid[0:64, 0:96]
    return Image.fromarray(np.stack([x * 2.5, y * 4, (x * y) % 255], axis=-1).astype(np.uint8))


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_level_keeps_the_pixels_and_the_parameters_chunk(tmp_path, level):
    path = OutputStore(tmp_path, level).save(photo(), INFOTEXT, "txt2img", 1)
    with Image.open(path) as saved:
        assert saved.info["parameters"] == INFOTEXT  # what A1111, Forge and civitai read
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(photo()))
    assert path.name == "00001-1.png" and not list(tmp_path.rglob("*.tmp"))


def test_the_level_is_the_settings_and_trades_size(tmp_path):
    sizes = [OutputStore(tmp_path / str(level), level).save(photo(), INFOTEXT, "txt2img", 1).stat().st_size
             for level in (0, 9)]
    assert sizes[0] > sizes[1]  # 0 stores, 9 squeezes
    assert Settings().png_compress == 1
    with pytest.raises(ValueError, match="png_compress must be a zlib level from 0 \\(none\\) to 9, got 10"):
        Settings(png_compress=10)
