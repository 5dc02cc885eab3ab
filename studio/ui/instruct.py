"""The Instruct tab (InstructPix2Pix): edit an image by saying what to change."""

from __future__ import annotations

import gradio as gr

from studio.loras import parse_lora_list
from studio.requests import InstructRequest
from studio.ui.common import (
    TabHandles,
    fit_to_preset,
    prompt_row,
    results_panel,
    run_job,
    sampling_controls,
    wire_generate,
)
from studio.ui.widgets import ImageInput, NamedSlider


def create_tab(studio, preset_box, jobs, caps):
    d = studio.default_preset.defaults
    with gr.Tab("Instruct", id="instruct"):
        row = prompt_row("instruct", d, "make it winter")
        with gr.Row():
            with gr.Column():
                image = ImageInput(label="Image", type="pil", image_mode="RGB", sources=["upload", "clipboard"],
                                   height=320, elem_id="instruct-image")
                image_guidance = NamedSlider(1, 10, value=1.5, step=0.05, label="Image CFG scale",
                                             info="higher keeps more of the image (at least 1)")
                sampling = sampling_controls(studio, preset_box, d, caps)
            with gr.Column():
                results = results_panel("instruct", sampling)

    def instruct(image, prompt, negative_prompt="", image_guidance_scale=1.5, steps=20, guidance_scale=7.0, seed=-1,
                 sampler="Euler a", batch_size=1, batch_count=1, loras="", preset=None, request: gr.Request = None,
                 progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: InstructRequest(
            image=image, prompt=prompt or "", negative_prompt=negative_prompt or "",
            image_guidance_scale=image_guidance_scale, steps=steps, guidance_scale=guidance_scale,
            seed=-1 if seed is None else seed, sampler=sampler, batch_size=batch_size, batch_count=batch_count, loras=tuple(parse_lora_list(loras)),
        ), preset, request, progress)

    s = sampling
    wire_generate(instruct, row, [image, row.prompt, row.negative, image_guidance, s.steps, s.guidance, s.seed,
                                  s.sampler, s.batch_size, s.batch_count, s.loras, preset_box], results, "instruct", jobs)
    return TabHandles(results, row, sampling, fit_to_preset(studio, preset_box, sampling), receiver=image)
