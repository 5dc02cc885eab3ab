"""The Instruct tab (InstructPix2Pix): edit an image by saying what to change."""

from __future__ import annotations

import gradio as gr

from studio.requests import InstructRequest
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
from studio.ui.widgets import NamedSlider


def create_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    with gr.Tab("Instruct", id="instruct"):
        row = prompt_row(studio, "instruct", d, "make it winter")
        with gr.Row():
            with gr.Column():
                image = image_input("instruct")
                image_guidance = NamedSlider(1, 10, value=1.5, step=0.05, label="Image CFG scale",
                                             info="higher keeps more of the image (at least 1)")
                sampling = sampling_controls(studio, preset_box, d, caps)
            with gr.Column():
                results = results_panel("instruct", sampling)

    def instruct(image, prompt, negative_prompt="", image_guidance_scale=1.5, steps=20, guidance_scale=7.0, seed=-1,
                 sampler="Euler a", batch_size=1, batch_count=1, loras="", preset=None, vae="", clip_skip=1,
                 step_cache="", styles=None,
                request: gr.Request = None,
                 progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: InstructRequest(
            image=image, image_guidance_scale=image_guidance_scale,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles)

    own = {"image": image, "image_guidance_scale": image_guidance}
    inputs = inputs_of(instruct, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, instruct, row, inputs, results, "instruct", jobs)
    fit = fit_to_preset(studio, preset_box, sampling, row=row, task="instruct", image_guidance=image_guidance)
    return TabHandles(results, row, sampling, fit, receiver=image)
