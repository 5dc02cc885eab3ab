"""The X/Y/Z plot: a job of one generation per cell, a labelled grid, its cap, Stop, the page's and
the A1111 API's forms."""

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from studio.errors import RequestError
from studio.requests import Txt2ImgRequest
from studio.xyz_plot import Axis, PlotOptions, expand_numbers, plot_job, split_values
from tests.test_shared import FAST, image_of

NOTHING = Axis()


def small(**change) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 5, **change})


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("text, kind, values", [
    ("1, 2, 3", int, [1, 2, 3]),
    ("1-5", int, [1, 2, 3, 4, 5]),
    ("1-10 (+3)", int, [1, 4, 7, 10]),
    ("10-1 (-4)", int, [10, 6, 2]),
    ("1-10 [4]", int, [1, 4, 7, 10]),
    ("-2, 3", int, [-2, 3]),
    ("0.5-1 (+0.25)", float, [0.5, 0.75, 1.0]),
    ("5-8 [3]", float, [5.0, 6.5, 8.0]),
])
def test_values_read_as_a1111_writes_them(text, kind, values):
    assert expand_numbers(split_values(text), kind) == values


def test_quoted_values_keep_their_commas_and_bad_values_say_what_is_wrong():
    assert split_values('a fox, "a red, tall fox", owl') == ["a fox", "a red, tall fox", "owl"]
    with pytest.raises(RequestError, match="'ten' is not a whole number"):
        expand_numbers(["ten"], int)
    with pytest.raises(RequestError, match="at most 1000"):
        expand_numbers(["1-100000000"], int)  # refused before it is expanded


def test_a_2x3_plot_has_6_cells_equal_to_the_same_requests_alone_and_a_labelled_grid(studio):
    axes = (Axis("Seed", "1, 2, 3"), Axis("Steps", "2, 3"), NOTHING)
    result = studio.jobs.run("plot-user", plot_job(studio, small(), None, axes, PlotOptions(), "plot-user", 100))
    grid, cells = result.images[0], result.images[1:]
    assert len(cells) == 6 and len(result.paths) == 7 and all(path.exists() for path in result.paths)
    assert "txt2img-grids" in str(result.paths[0])
    for index, cell in enumerate(cells):  # X (seed) varies fastest, then Y (steps)
        seed, steps = (1, 2, 3)[index % 3], (2, 3)[index // 3]
        alone = studio.generate(small(seed=seed, steps=steps)).images[0]
        assert np.array_equal(pixels(cell), pixels(alone)), (seed, steps)
        assert f"Seed: {seed}," in result.infotexts[1 + index] and f"Steps: {steps}," in result.infotexts[1 + index]
    # Cells at the grid's bottom-right, labels above them and to their left.
    assert grid.width > 3 * 64 and grid.height > 2 * 64
    left, top = grid.width - 3 * 64, grid.height - 2 * 64
    assert np.array_equal(pixels(grid.crop((left, top, left + 64, top + 64))), pixels(cells[0]))
    label_row = pixels(grid.crop((left, 0, grid.width, top)))
    label_column = pixels(grid.crop((0, top, left, grid.height)))
    assert (label_row < 100).any() and (label_column < 100).any()  # dark text on white
    assert "X Type: Seed, X Values: \"1, 2, 3\", Y Type: Steps, Y Values: \"2, 3\"" in result.infotexts[0]


@pytest.mark.slow
def test_a_z_axis_makes_sub_grids_side_by_side_and_no_legend_draws_no_labels(studio):
    axes = (Axis("Seed", "1, 2"), NOTHING, Axis("CFG Scale", "4, 9"))
    job = plot_job(studio, small(), None, axes, PlotOptions(legend=False, sub_grids=True), "plot-user", 100)
    result = studio.jobs.run("plot-user", job)
    grid, first, second = result.images[:3]
    assert first.size == second.size == (128, 64)  # no labels: the cells alone
    assert grid.height == 64 and grid.width >= 256
    assert len(result.images) == 3 + 4


def test_the_cap_refuses_a_plot_too_big_with_its_count(studio):
    axes = (Axis("Seed", "1-4"), Axis("Steps", "2, 3"), NOTHING)
    with pytest.raises(RequestError, match=r"would make 8 images \(4 × 2 × 1\).*at most 6"):
        plot_job(studio, small(), None, axes, PlotOptions(), "plot-user", 6)


def test_prompt_sr_replaces_its_first_value_and_the_model_axis_takes_only_models_present(studio):
    axes = (Axis("Prompt S/R", "red, blue"), NOTHING, NOTHING)
    job = plot_job(studio, small(), None, axes, PlotOptions(), "plot-user", 100)
    assert [g.request.prompt for g in job.generations] == ["a red fox", "a blue fox"]
    with pytest.raises(RequestError, match="the prompt does not hold it"):
        plot_job(studio, small(), None, (Axis("Prompt S/R", "green, blue"), NOTHING, NOTHING), PlotOptions(), "u", 9)
    with pytest.raises(RequestError, match="'sd-nowhere' not found. Choose from: .*tiny"):
        plot_job(studio, small(), None, (Axis("Checkpoint name", "tiny, sd-nowhere"), NOTHING, NOTHING),
                 PlotOptions(), "u", 9)
    job = plot_job(studio, small(), None, (Axis("Checkpoint name", "tiny, tiny-sdxl"), NOTHING, NOTHING),
                   PlotOptions(), "u", 9)
    assert [g.preset for g in job.generations] == ["tiny", "tiny-sdxl"]


def test_a_random_seed_is_fixed_once_for_every_cell(studio):
    job = plot_job(studio, small(seed=-1), None, (Axis("Steps", "2, 3, 4"), NOTHING, NOTHING), PlotOptions(), "u", 9)
    seeds = {g.request.seed for g in job.generations}
    assert len(seeds) == 1 and -1 not in seeds


def test_stop_keeps_the_finished_cells_and_the_grid_shows_what_was_made(studio):
    axes = (Axis("Seed", "1-4"), NOTHING, NOTHING)
    job = plot_job(studio, small(), None, axes, PlotOptions(legend=False), "stopper", 100)

    def stop_at_the_third(progress):
        if progress.item == 3:
            studio.jobs.stop("stopper")

    result = studio.jobs.run("stopper", job, on_update=stop_at_the_third)
    assert result.stopped and len(result.images) == 1 + 2  # the grid and the two finished cells
    grid = pixels(result.images[0])
    assert np.array_equal(grid[:, :64], pixels(result.images[1]))
    assert (grid[:, 128:] == 128).all()  # the cells not made are grey


@pytest.mark.slow
def test_the_page_and_the_a1111_script_args_give_the_same_grid(client, server):
    gallery, info = client.predict(prompt="a red fox", steps=2, seed=3, **FAST, plot_x_type="Steps",
                                   plot_x_values="2, 3", api_name="/txt2img")
    assert len(gallery) == 3 and "X Type: Steps" in info  # the grid first, with its own parameters
    height, width = image_of(gallery[0]).shape[:2]
    assert width == 128 and height > 64 and image_of(gallery[2]).shape == (64, 64, 3)  # the labels above the cells
    # A1111's order: x type (4: Steps in txt2img), x values, x dropdown, y..., z..., draw legend,
    # include lone images, include sub grids, no fixed seeds, vary seeds x/y/z, margin, csv mode.
    args = [4, "2, 3", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    answer = requests.post(f"{server}sdapi/v1/txt2img", timeout=120, json={
        **FAST, "prompt": "a red fox", "steps": 2, "seed": 3, "script_name": "X/Y/Z plot", "script_args": args}).json()
    assert len(answer["images"]) == 1  # the grid alone: no lone images asked for
    with Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))) as grid:
        assert np.array_equal(np.asarray(grid.convert("RGB"), dtype=np.int16), image_of(gallery[0]))
    with_cells = requests.post(f"{server}sdapi/v1/txt2img", timeout=120, json={
        **FAST, "prompt": "a red fox", "steps": 2, "seed": 3, "script_name": "x/y/z plot",
        "script_args": [4, "", ["2", "3"], 0, "", [], 0, "", [], True, True]}).json()
    assert len(with_cells["images"]) == 3 and json.loads(with_cells["info"])["all_seeds"] == [3, 3, 3]
