"""The Image to Image tab (SDEdit): noise an image by a strength, denoise it towards a prompt."""

from __future__ import annotations

import gradio as gr

from studio.imaging import RESIZE_MODES
from studio.requests import Img2ImgRequest
from studio.ui.common import (
    TabHandles,
    fit_to_preset,
    image_input,
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
from studio.ui.txt2img import size_sliders
from studio.ui.widgets import NamedSlider


def create_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    with gr.Tab("Image to Image", id="img2img"):
        row = prompt_row(studio, "img2img", d, "the same scene in autumn, oil painting")
        with gr.Row():
            with gr.Column():
                image = image_input("img2img")
                strength = NamedSlider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                       info="0 returns the image, 1 ignores it")
                resize_mode = gr.Radio(list(RESIZE_MODES), value="Keep size", label="Resize mode")
                width, height = size_sliders(d, caps)
                sampling = sampling_controls(studio, preset_box, d, caps)
                plot = plot_controls(studio, "img2img", "img2img")
            with gr.Column():
                results = results_panel("img2img", sampling)

    def img2img(image, prompt, negative_prompt, strength, steps, guidance_scale, seed, sampler, batch_size=1,
                batch_count=1, resize_mode="Keep size", width=512, height=512, loras="", preset=None,
                vae="", clip_skip=1, step_cache="", styles=None,
                plot_x_type="Nothing", plot_x_values="", plot_y_type="Nothing", plot_y_values="",
                plot_z_type="Nothing", plot_z_values="", plot_legend=True, plot_margin=0,
                request: gr.Request = None, progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: Img2ImgRequest(
            image=image, strength=strength, resize_mode=resize_mode, width=width, height=height,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles, plot_of(plot_x_type, plot_x_values, plot_y_type, plot_y_values,
                                                         plot_z_type, plot_z_values, plot_legend, plot_margin))

    own = {"image": image, "strength": strength, "resize_mode": resize_mode, "width": width, "height": height}
    own |= plot
    inputs = inputs_of(img2img, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, img2img, row, inputs, results, "img2img", jobs)
    fit = fit_to_preset(studio, preset_box, sampling, (width, height), row, "img2img")
    return TabHandles(results, row, sampling, fit, receiver=image)
