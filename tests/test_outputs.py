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


def test_close_waits_for_the_saves_under_way(own_studio):
    """At shutdown (app.py calls close() once the server has stopped) an image being saved is written
    whole, with its row."""
    import threading
    import time

    from studio.requests import Txt2ImgRequest

    saving, save = threading.Event(), own_studio.outputs.save

    def slow_save(*args):
        saving.set()
        time.sleep(1.0)
        return save(*args)

    own_studio.outputs.save = slow_save
    request = Txt2ImgRequest(prompt="a boat", steps=2, width=64, height=64, seed=1)
    job = threading.Thread(target=own_studio.generate, args=(request,), kwargs={"owner": "ann"})
    job.start()
    assert saving.wait(60)
    assert not own_studio.close(timeout=0.1)  # still saving
    assert own_studio.close(timeout=30)
    assert len(list(own_studio.settings.outputs_dir.rglob("*.png"))) == 1 == len(own_studio.history.page("ann", 0, 9))
    job.join()


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


# --- killed while saving -------------------------------------------------------------------------

KILLED_SAVE = """
import os, signal, sys
from pathlib import Path
import numpy as np
from PIL import Image
import studio.outputs
from studio.core import Studio
from studio.results import Rendered
from studio.settings import Settings

models, outputs, presets, point = sys.argv[1:]
studio = Studio(Settings(preset="tiny", models_dir=Path(models), outputs_dir=Path(outputs),
                         presets_dir=Path(presets), device="cpu"))
renames, real_fdopen, real_replace = [], os.fdopen, os.replace

class HalfWritten:  # writes half the PNG to disk, then the process dies
    def __init__(self, handle): self.handle = handle
    def __enter__(self): return self
    def __exit__(self, *exc): self.handle.close()
    def write(self, data):
        self.handle.write(bytes(data)[: len(data) // 2]); self.handle.flush(); os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst):  # the second image: killed after its row, before its rename
    renames.append(dst)
    if len(renames) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

if point == "writing":
    studio.outputs.save.__globals__["os"].fdopen = lambda fd, mode: HalfWritten(real_fdopen(fd, mode))
else:
    studio.outputs.save.__globals__["os"].replace = replace
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
studio.save(Rendered(images=[image, image], infotexts=["a fox\\nSeed: 1", "a fox\\nSeed: 2"], seeds=[1, 2]),
             "txt2img", "ann")
"""


@pytest.mark.parametrize(("point", "saved"), [pytest.param("writing", 0, marks=pytest.mark.slow), ("renaming", 1)])
def test_a_kill_during_a_save_leaves_no_half_file_and_no_row_without_its_file(settings, tmp_path, point, saved):
    """Killed halfway through writing the first PNG, or after the second's row and before its file is
    renamed into place: at the next start no half file is left, every PNG has its row and every row
    its PNG."""
    import dataclasses
    import signal
    import subprocess
    import sys

    from studio.core import Studio

    outputs = tmp_path / "outputs"
    run = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(settings.models_dir), str(outputs),
                          str(settings.presets_dir), point], capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert list(outputs.rglob("*.png.tmp"))  # the kill left its temp file ...
    restarted = Studio(dataclasses.replace(settings, outputs_dir=outputs))
    assert not list(outputs.rglob("*.tmp"))  # ... which the next start removes
    pngs = sorted(outputs.rglob("*.png"))
    rows = restarted.history.page("ann", 0, 10)
    assert len(pngs) == saved == len(rows) and [row.path for row in rows] == pngs
    for png in pngs:
        with Image.open(png) as whole:
            whole.load()  # the one saved before the kill is whole
