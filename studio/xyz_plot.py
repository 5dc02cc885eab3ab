"""A1111's X/Y/Z plot as a job: up to three axes over a request's fields, one generation per cell
(X varies fastest, then Y, then Z), and a grid of the cells with their labels.

Values are written as A1111 writes them: a list (`1, 2, 3`, quoted with "..." when a value holds
a comma), an integer range (`1-5` = 1,2,3,4,5; `1-10 (+3)` = 1,4,7,10; `1-10 [4]` = four values from
1 to 10), and the same for decimals (`0.5-1 (+0.25)`, `5-8 [3]`).

Every cell is saved as its own PNG with its own parameters, as a generation of the tab; the grid
is saved beside them with a parameters text of its own (the first cell's, with the axes).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from studio.errors import RequestError
from studio.grid import draw_grid, join_subgrids
from studio.job_service import Generation, Job, merge_results
from studio.metadata import format_infotext, parse_infotext
from studio.requests import GenerationRequest
from studio.results import Rendered, Result, resolve_seed

MAX_VALUES_CHARS = 5000
MAX_AXIS_VALUES = 1000  # read before the plot's own cap, so `1-1000000000` is refused unexpanded

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
_INT_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
_FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[(\d+)\s*\]\s*")
_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[(\d+(?:\.\d*)?)\s*\]\s*")


def split_values(text: str) -> list[str]:
    """A1111's lists: comma-separated, a value with a comma in "quotes"; blanks dropped."""
    if len(text) > MAX_VALUES_CHARS:
        raise RequestError(f"An axis' values are {len(text)} characters; at most {MAX_VALUES_CHARS} are read.")
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [value.strip() for row in rows for value in row if value.strip()]


def _number(text: str, kind: type):
    return kind(text.replace(" ", ""))


def expand_numbers(values: list[str], kind: type) -> list:
    """Ranges expanded and every value read as `kind` (int or float)."""
    out: list = []
    count_re, range_re = (_INT_COUNT, _INT_RANGE) if kind is int else (_FLOAT_COUNT, _FLOAT_RANGE)
    for value in values:
        if m := count_re.fullmatch(value):
            start, end, count = _number(m[1], kind), _number(m[2], kind), int(float(m[3]))
            _check_count(value, count)
            numbers = np.linspace(start, end, num=max(1, count))
            out += [int(n) for n in numbers.astype(int)] if kind is int else [float(n) for n in numbers]
        elif (m := range_re.fullmatch(value)) and m[2].strip():
            start, end = _number(m[1], kind), _number(m[2], kind)
            step = _number(m[3], kind) if m[3] else kind(1)
            if step == 0:
                raise RequestError(f"The range {value!r} has a step of 0: give it a step like (+2).")
            _check_count(value, int(abs((end - start) / step)) + 1)
            if kind is int:
                out += list(range(start, end + (1 if step > 0 else -1), step))
            else:
                out += [float(n) for n in np.arange(start, end + step / 2, step)]
        else:
            try:
                out.append(kind(value))
            except ValueError:
                raise RequestError(f"{value!r} is not a {'whole ' if kind is int else ''}number.") from None
        _check_count("the values", len(out))
    return out


def _check_count(value: str, count: int) -> None:
    if count > MAX_AXIS_VALUES:
        raise RequestError(f"{value!r} makes {count} values; an axis takes at most {MAX_AXIS_VALUES}.")


@dataclass(frozen=True)
class Cell:
    """What one cell runs: a request and its model."""

    request: GenerationRequest
    preset: str | None


@dataclass(frozen=True)
class AxisType:
    """An axis: its A1111 label, the type of its values, how a value changes a cell, and (for the
    choice axes) the values there are."""

    label: str
    kind: type
    apply: Callable[[Cell, object], Cell]
    choices: Callable[[object, str | None], list[str]] | None = None  # (studio, preset) -> values
    tasks: tuple[str, ...] = ()  # the tasks it applies to; () = every task
    field: str = ""  # the request field it needs (an axis is offered where the request has it)


def _set(field: str):
    def apply(cell: Cell, value) -> Cell:
        if not hasattr(cell.request, field):
            raise RequestError(f"This tab has no {field.replace('_', ' ')} to vary.")
        return replace(cell, request=replace(cell.request, **{field: value}))
    return apply


def _model(cell: Cell, value) -> Cell:
    return replace(cell, preset=value)


def _size(cell: Cell, value) -> Cell:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not match:
        raise RequestError(f"A size is written WIDTHxHEIGHT, like 512x768; got {value!r}.")
    return replace(cell, request=replace(cell.request, width=int(match[1]), height=int(match[2])))


def _lora_weight(cell: Cell, value) -> Cell:
    loras = cell.request.with_prompt_loras().loras
    if not loras:
        raise RequestError("The LoRA weight axis changes the first LoRA's weight: pick a LoRA first.")
    request = cell.request.with_prompt_loras()
    return replace(cell, request=replace(request, loras=((loras[0][0], value), *loras[1:])))


def _denoising(cell: Cell, value) -> Cell:
    field = "strength" if hasattr(cell.request, "strength") else "hires_denoising"
    return _set(field)(cell, value)


def _model_choices(studio, preset):
    return studio.model_names()


def _sampler_choices(studio, preset):
    return list(studio.preset(preset).capabilities.samplers)


def _vae_choices(studio, preset):
    from studio.checkpoints import OWN_VAE

    return [OWN_VAE, *studio.user_models.vaes.names()]


def _vae(cell: Cell, value) -> Cell:
    from studio.checkpoints import OWN_VAE

    return replace(cell, request=replace(cell.request, vae="" if value in ("", "None", OWN_VAE) else value))


PROMPT_SR = "Prompt S/R"
NOTHING = "Nothing"

AXIS_TYPES: dict[str, AxisType] = {axis.label: axis for axis in (
    AxisType(NOTHING, str, lambda cell, value: cell),
    AxisType("Seed", int, _set("seed")),
    AxisType("Steps", int, _set("steps")),
    AxisType("Hires steps", int, _set("hires_steps"), tasks=("txt2img",), field="hires_steps"),
    AxisType("CFG Scale", float, _set("guidance_scale")),
    AxisType("Image CFG Scale", float, _set("image_guidance_scale"), tasks=("instruct",),
             field="image_guidance_scale"),
    AxisType(PROMPT_SR, str, lambda cell, value: cell),  # applied by the plot (it needs the first value)
    AxisType("Sampler", str, _set("sampler"), _sampler_choices),
    AxisType("Checkpoint name", str, _model, _model_choices),
    AxisType("Size", str, _size, field="width"),
    AxisType("Denoising", float, _denoising),
    AxisType("VAE", str, _vae, _vae_choices),
    AxisType("Clip skip", int, _set("clip_skip")),
    AxisType("LoRA weight", float, _lora_weight),
    AxisType("Control weight", float, _set("conditioning_scale"), tasks=("control",), field="conditioning_scale"),
)}


@dataclass(frozen=True)
class Axis:
    """One axis as the user wrote it: a type's label and its values text."""

    type: str = NOTHING
    values: str = ""


@dataclass(frozen=True)
class PlotOptions:
    legend: bool = True  # labels drawn
    margin: int = 0  # pixels between cells
    sub_grids: bool = False  # with a Z axis, each Z value's grid also saved and returned
    fixed_seeds: bool = True  # a random seed (-1) is picked once for every cell, so cells differ only by their axes
    lone_images: bool = True  # the cells returned after the grid (A1111's "include lone images"); saved either way


@dataclass(frozen=True)
class AxisValues:
    type: AxisType
    values: list
    labels: list[str]


def count_values(axis: Axis) -> int:
    """How many values an axis has (1 for Nothing), from its text alone: the count shown before a plot runs."""
    kind = AXIS_TYPES.get(axis.type)
    if kind is None or kind.label == NOTHING:
        return 1
    return len(_values_of(kind, axis))


def _values_of(kind: AxisType, axis: Axis) -> list:
    """An axis' values as written: its list, with number ranges expanded."""
    texts = split_values(axis.values or "")
    return expand_numbers(texts, kind.kind) if kind.kind in (int, float) else texts


def read_axis(axis: Axis, request: GenerationRequest, studio, preset: str | None) -> AxisValues:
    """The values of an axis, checked: a type the request can vary, numbers that read, choices
    that exist (the model axis: only models present)."""
    kind = AXIS_TYPES.get(axis.type)
    if kind is None:
        raise RequestError(f"Unknown axis type {axis.type!r}. Choose one of: {', '.join(AXIS_TYPES)}.")
    if kind.label == NOTHING:
        return AxisValues(kind, [None], [""])
    if kind.field and not hasattr(request, kind.field):
        raise RequestError(f"The axis {kind.label!r} does not apply to {request.task}.")
    values = _values_of(kind, axis)
    if not values:
        raise RequestError(f"The {kind.label} axis has no values: write them like '1, 2, 3' or '1-10 (+3)'.")
    if kind.choices is not None:
        choices = kind.choices(studio, preset)
        by_lower = {choice.lower(): choice for choice in choices}
        unknown = [value for value in values if value.lower() not in by_lower]
        if unknown:
            raise RequestError(f"{kind.label}: {', '.join(repr(v) for v in unknown[:5])} not found. Choose from: "
                               f"{', '.join(choices[:30])}.")
        values = [by_lower[value.lower()] for value in values]
    if kind.label == PROMPT_SR and values[0] not in request.prompt + request.negative_prompt:
        raise RequestError(f"Prompt S/R: the first value {values[0]!r} is the text to replace, and the prompt does not "
                           "hold it.")
    labels = [str(value) if kind.label == PROMPT_SR else f"{kind.label}: {_shown(value)}" for value in values]
    return AxisValues(kind, values, labels)


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _apply(cell: Cell, axis: AxisValues, index: int) -> Cell:
    value = axis.values[index]
    if axis.type.label == PROMPT_SR:
        search = axis.values[0]
        request = cell.request
        return replace(cell, request=replace(request, prompt=request.prompt.replace(search, value),
                                             negative_prompt=request.negative_prompt.replace(search, value)))
    return axis.type.apply(cell, value)


def plot_job(studio, request: GenerationRequest, preset: str | None, axes: tuple[Axis, Axis, Axis],
             options: PlotOptions, owner: str, cap: int) -> Job:
    """The plot as a job: one generation per cell, and a `finish` that draws and saves the grid."""
    x, y, z = (read_axis(axis, request, studio, preset) for axis in axes)
    count = len(x.values) * len(y.values) * len(z.values)
    if count > cap:
        raise RequestError(f"This plot would make {count} images ({len(x.values)} × {len(y.values)} × "
                           f"{len(z.values)}); this studio makes at most {cap} in one plot. Use fewer values.")
    if options.fixed_seeds:
        request = replace(request, seed=resolve_seed(request.seed))
    request = replace(request, batch_size=1, batch_count=1)  # one image a cell
    generations = []
    for iz in range(len(z.values)):
        for iy in range(len(y.values)):
            for ix in range(len(x.values)):
                cell = Cell(request, preset)
                for axis, index in ((x, ix), (y, iy), (z, iz)):
                    cell = _apply(cell, axis, index)
                # Wildcards and variants: resolved from the cell's own seed.
                cell_request = replace(cell.request, seed=resolve_seed(cell.request.seed))
                cell_request = studio.wildcards.expand(cell_request, cell_request.seed)[0]
                generations.append(Generation(cell_request, cell.preset))

    def finish(results: list[Result]) -> Result:
        return _finish(studio, results, (x, y, z), axes, options, owner, request.task)

    return Job(generations, finish)


def plot_parameters(first_infotext: str, axes: tuple[Axis, Axis, Axis]) -> str:
    """The grid's own parameters: the first cell's, with the plot's axes as A1111's keys."""
    prompt, negative, params = parse_infotext(first_infotext)
    params = dict(params) | {"Script": "X/Y/Z plot"}
    for name, axis in zip("XYZ", axes):
        if axis.type != NOTHING:
            params[f"{name} Type"] = axis.type
            params[f"{name} Values"] = axis.values
    return format_infotext(prompt, negative, params)


def _finish(studio, results: list[Result], axes: tuple[AxisValues, ...], written: tuple[Axis, ...],
            options: PlotOptions, owner: str, task: str) -> Result:
    x, y, z = axes
    cells_made = merge_results(results)
    images = [result.images[0] if result.images else None for result in results]
    images += [None] * (len(x.values) * len(y.values) * len(z.values) - len(images))
    if not any(image is not None for image in images):
        return cells_made
    per_z = len(x.values) * len(y.values)
    sub_grids = []
    for iz in range(len(z.values)):
        block = images[iz * per_z:(iz + 1) * per_z]
        rows = [block[r * len(x.values):(r + 1) * len(x.values)] for r in range(len(y.values))]
        sub_grids.append(draw_grid(rows, x.labels, y.labels, options.legend, options.margin))
    grid = join_subgrids(sub_grids, z.labels, options.legend, options.margin)
    first = next(result for result in results if result.infotexts)
    text = plot_parameters(first.infotexts[0], written)
    extra = [grid] + (sub_grids if options.sub_grids and len(sub_grids) > 1 else [])
    seed = first.seeds[0]
    saved = studio.save(Rendered(images=extra, infotexts=[text] * len(extra), seeds=[seed] * len(extra)),
                        f"{task}-grids", owner)
    cells = cells_made if options.lone_images else Result()
    return Result(images=extra + cells.images, infotexts=[text] * len(extra) + cells.infotexts,
                  seeds=[seed] * len(extra) + cells.seeds, paths=saved + cells.paths, notes=cells_made.notes,
                  stopped=cells_made.stopped, peak_memory_bytes=cells_made.peak_memory_bytes,
                  device_memory_bytes=cells_made.device_memory_bytes)
