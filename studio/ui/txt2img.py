"""The Text to Image tab: prompt -> images, with the settings A1111 users expect."""

from __future__ import annotations

import gradio as gr

from studio.requests import HIRES_MAX_SCALE, Txt2ImgRequest
from studio.ui.common import (
    TabHandles,
    fit_to_preset,
    inputs_of,
    prompt_row,
    results_panel,
    run_job,
    sampling_controls,
    shared_inputs,
    shared_settings,
    wire_generate,
)
from studio.ui.plot import plot_controls, plot_of
from studio.ui.widgets import NamedSlider


def size_sliders(defaults, caps):
    with gr.Row():
        width = NamedSlider(64, caps.max_width, value=defaults.width, step=8, label="Width")
        height = NamedSlider(64, caps.max_height, value=defaults.height, step=8, label="Height")
    return width, height


def hires_controls(caps):
    """A1111's Hires. fix: make the image, upscale it, redraw it at the larger size."""
    with gr.Accordion("Hires. fix", open=False):
        enabled = gr.Checkbox(False, label="Hires. fix: upscale each image, then redraw it at the larger size",
                              elem_id="txt2img-hires")
        with gr.Row():
            scale = NamedSlider(1, HIRES_MAX_SCALE, value=2, step=0.05, label="Upscale by")
            steps = NamedSlider(0, caps.max_steps, value=0, step=1, label="Hires steps", info="0: as many as Steps")
        denoising = NamedSlider(0, 1, value=0.7, step=0.01, label="Denoising strength",
                                info="how much of the larger image is redrawn")
    return enabled, scale, steps, denoising


def create_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    with gr.Tab("Text to Image", id="txt2img"):
        row = prompt_row(studio, "txt2img", d, "a watercolor lighthouse at dawn")
        with gr.Row():
            with gr.Column():
                sampling = sampling_controls(studio, preset_box, d, caps)
                width, height = size_sliders(d, caps)
                hires = hires_controls(caps)
                plot = plot_controls(studio, "txt2img", "txt2img")
            with gr.Column():
                results = results_panel("txt2img", sampling)

    def txt2img(prompt, negative_prompt, steps, guidance_scale, width, height, seed, sampler,
                batch_size=1, batch_count=1, loras="", preset=None, hires_fix=False, hires_scale=2.0, hires_steps=0,
                hires_denoising=0.7, vae="", clip_skip=1, step_cache="", styles=None,
                plot_x_type="Nothing", plot_x_values="", plot_y_type="Nothing", plot_y_values="",
                plot_z_type="Nothing", plot_z_values="", plot_legend=True, plot_margin=0,
                request: gr.Request = None, progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: Txt2ImgRequest(
            width=width, height=height, hires_fix=bool(hires_fix), hires_scale=hires_scale, hires_steps=hires_steps,
            hires_denoising=hires_denoising,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles, plot_of(plot_x_type, plot_x_values, plot_y_type, plot_y_values,
                                                         plot_z_type, plot_z_values, plot_legend, plot_margin))

    own = {"width": width, "height": height, **dict(zip(("hires_fix", "hires_scale", "hires_steps", "hires_denoising"),
                                                         hires))}
    own |= plot
    inputs = inputs_of(txt2img, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, txt2img, row, inputs, results, "txt2img", jobs)
    fit = fit_to_preset(studio, preset_box, sampling, (width, height), row, "txt2img")
    return TabHandles(results, row, sampling, fit, size=(width, height), hires=hires)
