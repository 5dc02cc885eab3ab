"""The PNG Info tab: the generation parameters stored in any PNG (ours, A1111's, Forge's)."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from studio.metadata import parse_infotext, read_png_infotext
from studio.ui.widgets import ImageInput


def read_parameters(path: str | None) -> tuple[str, str]:
    """(raw parameters text, a readable list of them) of an image file."""
    if not path:
        return "", ""
    with Image.open(path) as image:
        text = read_png_infotext(image)
    if not text:
        return "", "This image carries no generation parameters (no PNG `parameters` text)."
    prompt, negative, params = parse_infotext(text)
    lines = [f"**Prompt:** {prompt}"] + ([f"**Negative prompt:** {negative}"] if negative else [])
    lines += [f"**{key}:** {value}" for key, value in params.items()]
    return text, "\n\n".join(lines)


def create_tab():
    """Returns (the raw text box, the send button) for the shell to wire to Text to Image."""
    with gr.Tab("PNG Info", id="pnginfo"):
        with gr.Row():
            with gr.Column():
                image = ImageInput(label="Drop a PNG", type="filepath", image_mode=None,
                                   sources=["upload", "clipboard"], height=360, elem_id="pnginfo-image")
            with gr.Column():
                raw = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo-text")
                readable = gr.Markdown()
                send = gr.Button("→ Text to Image", variant="primary", elem_id="pnginfo-send")
    image.change(read_parameters, inputs=image, outputs=[raw, readable], api_name="png_info")
    return raw, send
