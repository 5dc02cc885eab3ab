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


# --- saving beside the next job ----------------------------------------------------------------

@pytest.fixture()
def own_studio(settings, tmp_path):
    import dataclasses

    from studio.core import Studio

    return Studio(dataclasses.replace(settings, outputs_dir=tmp_path / "outputs"))


def test_the_next_job_renders_while_the_first_is_still_saving(own_studio):
    """The GPU slot is given up when the pipeline returns: a second job's first step comes while
    the first job's PNG is still being written."""
    import threading
    import time

    from studio.requests import Txt2ImgRequest

    saving, saved, save = threading.Event(), threading.Event(), own_studio.outputs.save

    def slow_save(*args):
        saving.set()
        time.sleep(1.5)  # a big PNG on a slow disk
        path = save(*args)
        saved.set()
        return path

    own_studio.outputs.save = slow_save
    request = Txt2ImgRequest(prompt="a boat", steps=2, width=64, height=64, seed=1)
    first = threading.Thread(target=own_studio.generate, args=(request,))
    first.start()
    assert saving.wait(60)
    steps_while_saving = []
    own_studio.outputs.save = save
    own_studio.generate(request, on_step=lambda done, total: steps_while_saving.append(not saved.is_set()))
    first.join()
    assert steps_while_saving and steps_while_saving[0]  # it stepped before the first save ended


def test_a_save_that_fails_says_so_and_the_next_job_saves(own_studio):
    import errno

    from studio.errors import StudioError
    from studio.requests import Txt2ImgRequest

    request = Txt2ImgRequest(prompt="a boat", steps=2, width=64, height=64, seed=1, batch_size=2)
    save, calls = own_studio.outputs.save, []

    def full_disk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args)

    own_studio.outputs.save = full_disk
    with pytest.raises(StudioError, match="Image 2 of 2 could not be saved in .* \\(No space left on device\\). "
                                          "Free some disk space.*the 1 before it are in your history"):
        own_studio.generate(request, owner="ann")
    assert len(own_studio.history.page("ann", 0, 10)) == 1  # the PNG that was written has its row
    own_studio.outputs.save = save
    assert len(own_studio.generate(request, owner="ann").paths) == 2
    pngs = list((own_studio.settings.outputs_dir).rglob("*.png"))
    assert len(pngs) == 3 == len(own_studio.history.page("ann", 0, 10)) and not list(
        own_studio.settings.outputs_dir.rglob("*.tmp"))
