"""The X/Y/Z plot accordion of Text to Image and Image to Image (A1111's script menu): three axes,
the legend and margin, and the count of images before it runs."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.xyz_plot import AXIS_TYPES, NOTHING, Axis, PlotOptions, count_values


def plot_controls(studio, tab: str, task: str) -> dict[str, gr.components.Component]:
    """The plot's inputs, by the generate handler's argument names."""
    types = [axis.label for axis in AXIS_TYPES.values() if not axis.tasks or task in axis.tasks]
    components: dict[str, gr.components.Component] = {}
    cap = studio.settings.max_plot_images
    with gr.Accordion("X/Y/Z plot", open=False, elem_id=f"{tab}-plot"):
        for name in "xyz":
            with gr.Row(equal_height=True):
                components[f"plot_{name}_type"] = gr.Dropdown(types, value=NOTHING, label=f"{name.upper()} type",
                                                              scale=1, elem_id=f"{tab}-plot-{name}-type")
                components[f"plot_{name}_values"] = gr.Textbox(
                    "", label=f"{name.upper()} values", scale=3, elem_id=f"{tab}-plot-{name}-values",
                    placeholder="1, 2, 3 · 1-10 (+3) · 1-10 [4] · Prompt S/R: the first value is replaced by each")
        with gr.Row(equal_height=True):
            components["plot_legend"] = gr.Checkbox(True, label="Draw legend")
            components["plot_margin"] = gr.Slider(0, 100, value=0, step=2, label="Grid margin (px)")
        count = gr.Markdown(f"Pick an axis type to make a grid (at most {cap} images a plot).",
                            elem_id=f"{tab}-plot-count")

    axis_inputs = [components[f"plot_{name}_{part}"] for name in "xyz" for part in ("type", "values")]

    def counted(*values):
        try:
            counts = [count_values(Axis(values[i], values[i + 1])) for i in range(0, 6, 2)]
        except StudioError as exc:
            return str(exc)
        if all(values[i] == NOTHING for i in range(0, 6, 2)):
            return f"Pick an axis type to make a grid (at most {cap} images a plot)."
        total = counts[0] * counts[1] * counts[2]
        shape = " × ".join(str(c) for c in counts if c > 1) or "1"
        over = f" That is over this studio's {cap}: use fewer values." if total > cap else ""
        return f"This plot makes **{total}** images ({shape}) and a grid.{over}"

    for component in axis_inputs:
        component.change(counted, inputs=axis_inputs, outputs=count, api_visibility="private", queue=False)
    return components


def plot_of(x_type, x_values, y_type, y_values, z_type, z_values, legend=True, margin=0):
    """The axes and options of a handler's plot arguments; None when every axis is Nothing."""
    axes = (Axis(x_type or NOTHING, x_values or ""), Axis(y_type or NOTHING, y_values or ""),
            Axis(z_type or NOTHING, z_values or ""))
    if all(axis.type == NOTHING for axis in axes):
        return None
    return axes, PlotOptions(legend=bool(legend), margin=int(min(max(margin or 0, 0), 100)))
