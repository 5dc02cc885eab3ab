"""The Gradio app: a header with the model preset, then one tab per task, and the send-to buttons
that carry an image (and its prompt) from any result to another tab.

UI modules build widgets and call the Studio; they never import torch or diffusers.
"""

from __future__ import annotations

import gradio as gr

from studio.jobs import JobBoard
from studio.presets import Limits
from studio.ui import control, img2img, inpaint, instruct, txt2img

CSS = """
.generate-button { min-height: 5em; font-size: 1.2em; }
footer { display: none !important; }
"""


def widest_limits(studio) -> Limits:
    """Slider ranges wide enough for every preset; each request is checked against its own preset."""
    limits = [studio.preset(name).limits for name in studio.preset_names()] or [studio.default_preset.limits]
    return Limits(**{field: max(getattr(lim, field) for lim in limits) for field in Limits.__dataclass_fields__})


def _selected_path(gallery, selected) -> str:
    if not gallery:
        raise gr.Error("There is no result to send yet: generate an image first.")
    index = selected if isinstance(selected, int) and 0 <= selected < len(gallery) else 0
    item = gallery[index]
    return item[0] if isinstance(item, (tuple, list)) else item


def build(studio) -> gr.Blocks:
    jobs = JobBoard()
    caps = widest_limits(studio)
    with gr.Blocks(title="SD Studio", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("## SD Studio", elem_id="studio-title")
            preset_box = gr.Dropdown(
                studio.preset_names(),
                value=studio.default_preset.name,
                label="Model preset",
                info="Your choice applies to your own generations only.",
                allow_custom_value=True,  # an unknown name reaches the server's clear message
                scale=2,
            )
        with gr.Tabs() as tabs:
            t2i = txt2img.create_tab(studio, preset_box, jobs, caps)
            i2i = img2img.create_tab(studio, preset_box, jobs, caps)
            inp = inpaint.create_inpaint_tab(studio, preset_box, jobs, caps)
            outp = inpaint.create_outpaint_tab(studio, preset_box, jobs, caps)
            ins = instruct.create_tab(studio, preset_box, jobs, caps)
            ctl = control.create_tab(studio, preset_box, jobs, caps)

        def fit_all(name):
            return tuple(update for tab in (t2i, i2i, inp, outp, ins, ctl) for update in tab[2][0](name))

        all_sliders = [component for tab in (t2i, i2i, inp, outp, ins, ctl) for component in tab[2][1]]
        demo.load(fit_all, inputs=preset_box, outputs=all_sliders, api_visibility="private", queue=False)
        _wire_send_to(tabs, [t2i, i2i, inp, outp, ins, ctl], i2i[3], inp[3], ins[3], ctl[3], ctl[4])
    return demo


def _wire_send_to(tabs, sources, img2img_image, inpaint_editor, instruct_image, control_photo, control_mode):
    """Each result panel's send buttons put the selected image into the target tab's input,
    copy the prompt along, and switch to that tab."""
    targets = {
        "img2img": (img2img_image, lambda path: path),
        "inpaint": (inpaint_editor, lambda path: {"background": path, "layers": [], "composite": path}),
        "instruct": (instruct_image, lambda path: path),
        "control": (control_photo, lambda path: path),
    }
    prompts = {"img2img": sources[1][1].prompt, "inpaint": sources[2][1].prompt, "instruct": sources[4][1].prompt,
               "control": sources[5][1].prompt}
    for results, row, *_ in sources:
        for target, button in results.send.items():
            component, to_value = targets[target]
            outputs = [component, prompts[target], tabs]
            extra = (gr.update(value="openpose"),) if target == "control" else ()
            if target == "control":
                outputs.append(control_mode)

            def send(gallery, selected, prompt, to_value=to_value, target=target, extra=extra):
                return (to_value(_selected_path(gallery, selected)), prompt, gr.Tabs(selected=target), *extra)

            button.click(send, inputs=[results.gallery, results.selected, row.prompt], outputs=outputs,
                         api_visibility="private", queue=False)
