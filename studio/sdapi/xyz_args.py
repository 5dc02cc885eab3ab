"""A1111's `script_name: "x/y/z plot"` with its `script_args`, read into the studio's plot.

`script_args` are the script's own arguments in the order of its `ui()` (scripts/xyz_grid.py of
AUTOMATIC1111/stable-diffusion-webui): x type, x values, x values (dropdown), the same for y and z,
draw legend, include lone images, include sub grids, no fixed seeds, vary seeds x/y/z, margin size,
csv mode. An axis type is an index into the axis options of the mode (txt2img or img2img: each
leaves out the other's own options), or its label.
"""

from __future__ import annotations

import csv
import io

from studio.sdapi.payloads import ApiError
from studio.xyz_plot import AXIS_TYPES, NOTHING, Axis, PlotOptions

SCRIPT_TITLE = "x/y/z plot"

# A1111's axis options in order; "t"/"i": only in txt2img / img2img; "" in both.
_A1111_AXES = [
    ("Nothing", ""), ("Seed", ""), ("Var. seed", ""), ("Var. strength", ""), ("Steps", ""), ("Hires steps", "t"),
    ("CFG Scale", ""), ("Image CFG Scale", "i"), ("Prompt S/R", ""), ("Prompt order", ""), ("Sampler", "t"),
    ("Hires sampler", "t"), ("Sampler", "i"), ("Checkpoint name", ""), ("Negative Guidance minimum sigma", ""),
    ("Sigma Churn", ""), ("Sigma min", ""), ("Sigma max", ""), ("Sigma noise", ""), ("Schedule type", ""),
    ("Schedule min sigma", ""), ("Schedule max sigma", ""), ("Schedule rho", ""), ("Beta schedule alpha", ""),
    ("Beta schedule beta", ""), ("Eta", ""), ("Clip skip", ""), ("Denoising", ""),
    ("Initial noise multiplier", ""), ("Extra noise", ""), ("Hires upscaler", "t"), ("Cond. Image Mask Weight", "i"),
    ("VAE", ""), ("Styles", ""), ("UniPC Order", ""), ("Face restore", ""), ("Token merging ratio", ""),
    ("Token merging ratio high-res", ""), ("Always discard next-to-last sigma", ""), ("SGM noise multiplier", ""),
    ("Refiner checkpoint", ""), ("Refiner switch at", ""), ("RNG source", ""), ("FP8 mode", ""), ("Size", ""),
]


def a1111_axis_labels(mode: str) -> list[str]:
    """The axis options' labels as A1111 indexes them in `mode` ("txt2img" or "img2img")."""
    own = "t" if mode == "txt2img" else "i"
    return [label for label, only in _A1111_AXES if only in ("", own)]


def _arg(args: list, index: int, default):
    return args[index] if index < len(args) and args[index] is not None else default


def _axis_label(value, mode: str, name: str) -> str:
    labels = a1111_axis_labels(mode)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ApiError(422, f"script_args: the {name} type must be an axis index or label, got {value!r}.")
    if isinstance(value, int):
        if not 0 <= value < len(labels):
            raise ApiError(422, f"script_args: the {name} type {value} is not an axis of {mode} (0-{len(labels) - 1}).")
        label = labels[value]
    else:
        label = next((known for known in labels if known.lower() == value.strip().lower()), value)
    if label not in AXIS_TYPES:
        ours = ", ".join(label for label in AXIS_TYPES if label in labels)
        raise ApiError(422, f"script_args: the axis {label!r} ({name}) is not one this studio plots. It plots: {ours}.")
    return label


def _values_text(text, dropdown) -> str:
    """The values as the studio reads them: the dropdown's list when one was sent (A1111 uses it
    for the axes with choices), else the text."""
    if isinstance(dropdown, list) and dropdown:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow([str(value) for value in dropdown])
        return buffer.getvalue()
    if text is None:
        return ""
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ApiError(422, f"script_args: axis values must be text like '1, 2, 3', got {text!r}.")
    return str(text)


def plot_of_script_args(args, mode: str) -> tuple[tuple[Axis, Axis, Axis], PlotOptions]:
    if not isinstance(args, list):
        raise ApiError(422, "'script_args' must be a list: the X/Y/Z plot's arguments in A1111's order.")
    axes = []
    for i, name in enumerate(("X", "Y", "Z")):
        label = _axis_label(_arg(args, 3 * i, 0), mode, name)
        text = _values_text(_arg(args, 3 * i + 1, ""), _arg(args, 3 * i + 2, None))
        axes.append(Axis(label, text if label != NOTHING else ""))
    if all(axis.type == NOTHING for axis in axes):
        raise ApiError(422, "script_args: every axis is 'Nothing'; give the X/Y/Z plot at least one axis.")
    margin = _arg(args, 16, 0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 500:
        raise ApiError(422, f"script_args: the margin size must be 0-500 pixels, got {margin!r}.")
    options = PlotOptions(legend=bool(_arg(args, 9, True)), margin=int(margin), sub_grids=bool(_arg(args, 11, False)),
                          fixed_seeds=not bool(_arg(args, 12, False)), lone_images=bool(_arg(args, 10, False)))
    return (axes[0], axes[1], axes[2]), options
