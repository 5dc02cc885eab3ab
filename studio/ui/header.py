"""The row above the tabs: the model (a preset or a checkpoint of the checkpoints folder), the VAE
and Clip skip, each user's own, and what the user's model folders hold."""

from __future__ import annotations

import gradio as gr

from studio.checkpoints import OWN_VAE
from studio.errors import StudioError
from studio.folders import PICKLE_REASON
from studio.requests import MAX_CLIP_SKIP
from studio.ui.common import Header
from studio.ui.widgets import NamedSlider


def header_row(studio) -> Header:
    with gr.Row(equal_height=False):
        gr.Markdown("## SD Studio", elem_id="studio-title")
        preset = gr.Dropdown(
            studio.model_choices(),
            value=studio.default_preset.name,
            label="Model",
            info="A preset, or a checkpoint of your checkpoints folder. Yours only: others keep theirs.",
            allow_custom_value=True,  # an unknown name reaches the server's clear message
            scale=3,
            elem_id="model-picker",
        )
        vae = gr.Dropdown([OWN_VAE, *studio.user_models.vaes.names()], value=OWN_VAE, label="VAE", scale=2,
                          allow_custom_value=True, elem_id="vae-picker")
        # A1111's name; 2 is what most anime models want (README: Your models and prompts).
        clip_skip = NamedSlider(1, MAX_CLIP_SKIP, value=1, step=1, label="Clip skip", scale=2)
        refresh = gr.Button("🔄", scale=0, min_width=48, elem_id="models-refresh")
    with gr.Accordion("Your checkpoints, VAEs and embeddings", open=False):
        listing = gr.Markdown(describe_user_models(studio), elem_id="user-models")

    def refreshed():
        vaes = [OWN_VAE, *studio.user_models.vaes.names()]
        return gr.update(choices=studio.model_choices()), gr.update(choices=vaes), describe_user_models(studio)

    refresh.click(refreshed, outputs=[preset, vae, listing], api_visibility="private", queue=False)
    return Header(preset, vae, clip_skip)


def describe_user_models(studio) -> str:
    """Markdown: each checkpoint with its detected family, refused files with the reason, VAEs,
    and embeddings with their token counts (the word that triggers each is its name)."""
    models = studio.user_models
    lines = [f"**Checkpoints** (`{models.checkpoints.files.folder}`, .safetensors):"]
    for name in models.checkpoints.names():
        try:
            lines.append(f"- {name}: {models.checkpoints.info(name).describe()}")
        except StudioError as exc:
            lines.append(f"- {name}: {exc}")
    lines += [f"- {name}: not loaded, {PICKLE_REASON}" for name in models.checkpoints.refused()]
    lines.append(f"\n**VAEs** (`{models.vaes.files.folder}`): " + (", ".join(models.vaes.names()) or "none"))
    lines.append(f"\n**Embeddings** (`{models.embeddings.files.folder}`; write the name in a prompt to use one):")
    lines += [f"- {line}" for line in models.embeddings.describe_all()] or ["- none"]
    refused = models.vaes.refused() + models.embeddings.files.refused()
    if refused:
        lines.append(f"\nNot loaded, {PICKLE_REASON}: " + ", ".join(refused))
    return "\n".join(lines)
