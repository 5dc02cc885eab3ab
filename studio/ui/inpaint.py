"""The Inpaint and Outpaint tabs: repaint a painted area, or grow the canvas and paint the new part."""

from __future__ import annotations

import gradio as gr

from studio.imaging import mask_from_editor
from studio.requests import INPAINT_AREAS, OUTPAINT_FILLS, InpaintRequest, OutpaintRequest
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
from studio.ui.widgets import ImageInput, MaskEditor, NamedSlider


def create_inpaint_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    with gr.Tab("Inpaint", id="inpaint"):
        row = prompt_row(studio, "inpaint", d, "a red door")
        with gr.Row():
            with gr.Column():
                editor = MaskEditor(
                    label="Image: paint over what to change",
                    type="pil",
                    image_mode="RGBA",
                    sources=["upload", "clipboard"],
                    brush=gr.Brush(default_size=24, colors=["#ff00ff"], color_mode="fixed"),
                    eraser=gr.Eraser(default_size=24),
                    transforms=(),
                    layers=False,
                    height=380,
                    elem_id="inpaint-editor",
                )
                with gr.Accordion("Upload a mask instead (white = repaint)", open=False):
                    mask_upload = ImageInput(label="Mask", type="pil", sources=["upload"], height=200)
                with gr.Row():
                    invert = gr.Checkbox(False, label="Invert mask (repaint what is not painted)")
                    mask_blur = NamedSlider(0, 64, value=4, step=1, label="Mask blur")
                with gr.Row():
                    area = gr.Radio(list(INPAINT_AREAS), value="Whole picture", label="Inpaint area")
                    padding = NamedSlider(0, 256, value=32, step=4, label="Only masked padding")
                strength = NamedSlider(0, 1, value=1.0, step=0.01, label="Denoising strength")
                sampling = sampling_controls(studio, preset_box, d, caps)
            with gr.Column():
                results = results_panel("inpaint", sampling)

    def inpaint(image, prompt, negative_prompt, mask=None, invert_mask=False, mask_blur=4,
                inpaint_area="Whole picture", padding=32, strength=1.0, steps=20, guidance_scale=7.0, seed=-1,
                sampler="Euler a", batch_size=1, batch_count=1, loras="", preset=None, vae="", clip_skip=1,
                step_cache="", styles=None,
                request: gr.Request = None,
                progress=gr.Progress()):
        """`image`: the editor value (background + painted layers) or a plain image with `mask`."""
        background = image.get("background") if isinstance(image, dict) else image
        painted = mask_from_editor(image) if isinstance(image, dict) else None
        yield from run_job(studio, jobs, lambda: InpaintRequest(
            image=background.convert("RGB") if background is not None else None,
            mask=mask if mask is not None else painted, invert_mask=invert_mask, mask_blur=mask_blur,
            inpaint_area=inpaint_area, padding=padding, strength=strength,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles)

    own = {"image": editor, "mask": mask_upload, "invert_mask": invert, "mask_blur": mask_blur, "inpaint_area": area,
           "padding": padding, "strength": strength}
    inputs = inputs_of(inpaint, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, inpaint, row, inputs, results, "inpaint", jobs)
    return TabHandles(results, row, sampling, fit_to_preset(studio, preset_box, sampling, row=row, task="inpaint"),
                      receiver=editor)


def create_outpaint_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    with gr.Tab("Outpaint", id="outpaint"):
        row = prompt_row(studio, "outpaint", d, "a wide mountain landscape")
        with gr.Row():
            with gr.Column():
                image = image_input("outpaint")
                with gr.Row():
                    margins = [NamedSlider(0, 512, value=value, step=8, label=label)
                               for label, value in (("Left", 0), ("Right", 128), ("Up", 0), ("Down", 0))]
                with gr.Row():
                    fill = gr.Radio(list(OUTPAINT_FILLS), value="Edge colours", label="Fill the new area with")
                    mask_blur = NamedSlider(0, 64, value=8, step=1, label="Mask blur",
                                            info="how far into the original the model looks across the seam")
                sampling = sampling_controls(studio, preset_box, d, caps)
            with gr.Column():
                results = results_panel("outpaint", sampling)

    def outpaint(image, prompt, negative_prompt, left=0, right=128, up=0, down=0, fill="Edge colours", mask_blur=8,
                 steps=20, guidance_scale=7.0, seed=-1, sampler="Euler a", batch_size=1, batch_count=1, loras="",
                 preset=None, vae="", clip_skip=1, step_cache="", styles=None,
                request: gr.Request = None, progress=gr.Progress()):
        yield from run_job(studio, jobs, lambda: OutpaintRequest(
            image=image, left=left, right=right, up=up, down=down, fill=fill, mask_blur=mask_blur,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles)

    own = {"image": image, **dict(zip(("left", "right", "up", "down"), margins)), "fill": fill, "mask_blur": mask_blur}
    inputs = inputs_of(outpaint, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, outpaint, row, inputs, results, "outpaint", jobs)
    return TabHandles(results, row, sampling, fit_to_preset(studio, preset_box, sampling, row=row, task="outpaint"))
