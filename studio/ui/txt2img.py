"""The Text to Image tab: prompt -> images, with the settings A1111 users expect."""

from __future__ import annotations

import gradio as gr

from studio.requests import Txt2ImgRequest
from studio.ui.common import (
    TabHandles,
    fit_to_preset,
    prompt_row,
    results_panel,
    run_job,
    sampling_controls,
    shared_settings,
    wire_generate,
)
from studio.ui.widgets import NamedSlider


def size_sliders(defaults, caps):
    with gr.Row():
        width = NamedSlider(64, caps.max_width, value=defaults.width, step=8, label="Width")
        height = NamedSlider(64, caps.max_height, value=defaults.height, step=8, label="Height")
    return width, height


def create_tab(studio, preset_box, jobs, caps):
    d = studio.default_preset.defaults
    with gr.Tab("Text to Image", id="txt2img"):
        row = prompt_row("txt2img", d, "a watercolor lighthouse at dawn")
        with gr.Row():
            with gr.Column():
                sampling = sampling_controls(studio, preset_box, d, caps)
                width, height = size_sliders(d, caps)
            with gr.Column():
                results = results_panel("txt2img", sampling)

    def txt2img(prompt, negative_prompt, steps, guidance_scale, width, height, seed, sampler,
                batch_size=1, batch_count=1, loras="", preset=None, request: gr.Request = None, progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: Txt2ImgRequest(
            width=width, height=height,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras),
        ), preset, request, progress)

    s = sampling
    wire_generate(txt2img, row, [row.prompt, row.negative, s.steps, s.guidance, width, height, s.seed, s.sampler,
                                 s.batch_size, s.batch_count, s.loras, preset_box], results, "txt2img", jobs)
    fit = fit_to_preset(studio, preset_box, sampling, (width, height))
    return TabHandles(results, row, sampling, fit, size=(width, height))
