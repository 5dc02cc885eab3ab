"""The Extras tab (A1111's): upscale one image or a batch, by a factor or to a size, with a model
upscaler from the upscalers folder (or two blended), tiled."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.extras import ExtrasRequest
from studio.imaging import open_image
from studio.ui.common import history_owner, image_input, results_panel, run_safely
from studio.ui.published import publish
from studio.ui.widgets import NamedSlider, gpu_event_options, user_error
from studio.upscalers import DEFAULT_TILE, MAX_SCALE

SCALE_BY, SCALE_TO = "Scale by", "Scale to"


def _folder_note(studio) -> str:
    note = f"Upscalers folder: `{studio.settings.upscalers_dir}` (.safetensors, or .pth read without running code)."
    refused = studio.upscalers.refused()
    if refused:
        note += " Not usable: " + "; ".join(refused.values())
    return note


def create_tab(studio):
    names = studio.upscalers.names()
    with gr.Tab("Extras", id="extras"):
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        image = image_input("extras")
                    with gr.Tab("Batch"):
                        batch = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                        elem_id="extras-batch")
                mode = gr.Radio([SCALE_BY, SCALE_TO], value=SCALE_BY, label="Resize")
                scale = NamedSlider(1, MAX_SCALE, value=2, step=0.05, label="Scale by")
                with gr.Row():
                    width = gr.Number(1024, precision=0, label="Width (Scale to)")
                    height = gr.Number(1024, precision=0, label="Height (Scale to)")
                with gr.Row():
                    # Custom values: files added after the page was built (the server checks every name).
                    upscaler = gr.Dropdown(names, value="Lanczos", label="Upscaler", elem_id="extras-upscaler",
                                           allow_custom_value=True)
                    upscaler_2 = gr.Dropdown(names, value="None", label="Upscaler 2", allow_custom_value=True)
                visibility = NamedSlider(0, 1, value=0, step=0.05, label="Upscaler 2 visibility")
                tile = NamedSlider(0, 2048, value=DEFAULT_TILE, step=64, label="Tile size",
                                   info="pixels a model upscales at once (0: the whole image); lower it if memory "
                                        "runs out")
                with gr.Row(equal_height=True):
                    refresh = gr.Button("🔄 Refresh the list", size="sm", scale=0, min_width=160)
                    note = gr.Markdown(_folder_note(studio))
                run = gr.Button("Upscale", variant="primary", elem_id="extras-generate")
            with gr.Column():
                results = results_panel("extras")

    def extras(image, batch, resize_mode=SCALE_BY, scale=2.0, width=1024, height=1024, upscaler="Lanczos",
               upscaler_2="None", upscaler_2_visibility=0.0, tile=DEFAULT_TILE, request: gr.Request = None):
        def work():
            limit = studio.settings.max_upload_mb * 2**20
            images = [open_image(item, f"Batch image {i + 1}", limit) for i, item in enumerate(batch or [])] or [image]
            by_size = resize_mode == SCALE_TO
            requests = [ExtrasRequest(image=each, scale=scale, width=int(width or 0) if by_size else 0,
                                      height=int(height or 0) if by_size else 0, upscaler=upscaler,
                                      upscaler_2=upscaler_2, upscaler_2_visibility=upscaler_2_visibility,
                                      tile=int(tile or 0)) for each in images]
            made = studio.extras(requests, history_owner(request))
            paths = [path for result in made for path in result.paths]
            texts = [text for result in made for text in result.infotexts]
            return [(path, None) for path in publish(paths)], texts[0], texts

        return run_safely(work)

    run.click(extras, inputs=[image, batch, mode, scale, width, height, upscaler, upscaler_2, visibility, tile],
              outputs=[results.gallery, results.info, results.infotexts], api_name="extras",
              **gpu_event_options(studio))

    def refreshed():
        try:
            choices = studio.upscalers.names()
        except StudioError as exc:
            raise user_error(str(exc)) from None
        return gr.update(choices=choices), gr.update(choices=choices), _folder_note(studio)

    refresh.click(refreshed, outputs=[upscaler, upscaler_2, note], api_visibility="private", queue=False)
    return results
