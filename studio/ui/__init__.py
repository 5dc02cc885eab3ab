"""The Gradio app: a header with the model preset, then one tab per task.

UI modules build widgets and call the Studio; they never import torch or diffusers.
"""

from __future__ import annotations

import gradio as gr

from studio.jobs import JobBoard
from studio.presets import Limits
from studio.ui import txt2img

CSS = """
#txt2img-generate { min-height: 5em; font-size: 1.2em; }
footer { display: none !important; }
"""


def widest_limits(studio) -> Limits:
    """Slider ranges wide enough for every preset; each request is checked against its own preset."""
    limits = [studio.preset(name).limits for name in studio.preset_names()] or [studio.default_preset.limits]
    return Limits(**{field: max(getattr(lim, field) for lim in limits) for field in Limits.__dataclass_fields__})


def build(studio) -> gr.Blocks:
    jobs = JobBoard()
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
        with gr.Tabs():
            fit_txt2img, txt2img_sliders = txt2img.create_tab(studio, preset_box, jobs, widest_limits(studio))
        demo.load(fit_txt2img, inputs=preset_box, outputs=txt2img_sliders, api_visibility="private", queue=False)
    return demo
