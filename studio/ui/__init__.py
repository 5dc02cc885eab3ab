"""The Gradio app: a header with the model preset, then one tab per task, History and PNG Info,
and the buttons that carry an image or its parameters from one tab to another.

UI modules build widgets and call the Studio; they never import torch or diffusers.
"""

from __future__ import annotations

import gradio as gr

from studio.checkpoints import OWN_VAE
from studio.errors import StudioError
from studio.metadata import parse_infotext
from studio.presets import Limits
from studio.requests import MAX_CLIP_SKIP, txt2img_settings_from_infotext
from studio.ui import control, extras, history, img2img, inpaint, instruct, pnginfo, txt2img
from studio.ui.common import Header, TabHandles
from studio.ui.header import header_row
from studio.ui.widgets import StudioBlocks, user_error

CSS = """
.generate-button { min-height: 5em; font-size: 1.2em; }
footer { display: none !important; }
"""
THEME = gr.themes.Soft(primary_hue="orange")


def launch_options(studio) -> dict:
    """What every launch of the page passes to `demo.launch`: the logins, the upload limit, the files
    Gradio may serve (none of the outputs folder: the page shows copies, see published.py), and the
    app, with the guard in front of every route (guard.py) and A1111's API unless --api off."""
    settings = studio.settings
    return dict(
        _app=studio_app(studio),
        auth=list(settings.auth) or None,
        auth_message="SD Studio: log in to use it.",
        max_file_size=f"{settings.max_upload_mb}mb",
        allowed_paths=[],
        blocked_paths=[str(settings.outputs_dir)],
        # Gradio's own run history would keep every prompt in the browser (or a Hub bucket) beside the
        # studio's History tab, and its routes would fetch and upload files: off.
        run_history=False,
    )


def close_server(demo) -> None:
    """`demo.close()`, without its race: Gradio sets the app's asyncio stop event from the calling
    thread while the server's loop may be adding a waiter to it (a stream starting), which fails with
    "deque mutated during iteration". Set it on its own loop first; Gradio's set is then a no-op."""
    import threading

    event = getattr(getattr(demo, "app", None), "stop_event", None)
    loop = getattr(event, "_loop", None)  # bound when the first waiter came; None: nobody waits
    if loop is not None and loop.is_running():
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (event.set(), done.set()))
        done.wait(5)
    demo.close()


def studio_app(studio):
    """Gradio's app class with the guard outermost. Gradio adds its own CORS layer to any app it
    serves; a middleware handed in through `app_kwargs` would sit behind it, where Gradio has already
    answered every preflight with the caller's origin. So the guard wraps the finished stack.
    (`launch(_app=...)` is how Gradio's own Server mode hands in its app.)"""
    from gradio.routes import App, ORJSONResponse

    from studio.ui.guard import Guard

    class StudioApp(App):
        def build_middleware_stack(self):
            return Guard(super().build_middleware_stack(), self, studio.settings)

    routes = []
    if studio.settings.api:
        from studio.sdapi import sdapi_routes

        routes = sdapi_routes(studio)
    return StudioApp(routes=routes, default_response_class=ORJSONResponse)


def widest_limits(studio) -> Limits:
    """Slider ranges wide enough for every preset; each request is checked against its own preset."""
    limits = [studio.preset(name).limits for name in studio.preset_names()] or [studio.default_preset.limits]
    return Limits(**{field: max(getattr(lim, field) for lim in limits) for field in Limits.__dataclass_fields__})


def build(studio) -> gr.Blocks:
    jobs = studio.jobs  # the one job service, shared with the A1111 API
    caps = widest_limits(studio)
    with StudioBlocks(title="SD Studio", analytics_enabled=False) as demo:
        header = header_row(studio)
        preset_box = header.preset
        with gr.Tabs() as tabs:
            handles = {
                "txt2img": txt2img.create_tab(studio, header, jobs, caps),
                "img2img": img2img.create_tab(studio, header, jobs, caps),
                "inpaint": inpaint.create_inpaint_tab(studio, header, jobs, caps),
                "outpaint": inpaint.create_outpaint_tab(studio, header, jobs, caps),
                "instruct": instruct.create_tab(studio, header, jobs, caps),
                "control": control.create_tab(studio, header, jobs, caps),
            }
            extras_results = extras.create_tab(studio)
            history_results, history_tabs, reuse = history.create_tab(studio)
            png_text, png_send = pnginfo.create_tab()

        def fit_header(name):
            """Clip skip only where the family reads CLIP's layers (not FLUX.1)."""
            try:
                return gr.update(visible=studio.preset(name).capabilities.clip_skip)
            except StudioError:
                return gr.update()

        def fit_all(name):
            return (*(update for tab in handles.values() for update in tab.fit[0](name)), fit_header(name))

        preset_box.change(fit_header, inputs=preset_box, outputs=header.clip_skip, api_visibility="private",
                          queue=False)
        demo.load(fit_all, inputs=preset_box,
                  outputs=[*(c for tab in handles.values() for c in tab.fit[1]), header.clip_skip],
                  api_visibility="private", queue=False)
        sources = [(tab.results, tab.row.prompt) for tab in handles.values()]
        history_prompt = gr.Textbox(visible=False)  # the selected history image's prompt, for send-to
        history_results.info.change(lambda text: txt2img_settings_from_infotext(text or "")["prompt"],
                                    inputs=history_results.info, outputs=history_prompt, api_visibility="private")
        extras_prompt = gr.Textbox(visible=False)  # the upscaled image's own prompt, kept in its parameters
        extras_results.info.change(lambda text: txt2img_settings_from_infotext(text or "")["prompt"],
                                   inputs=extras_results.info, outputs=extras_prompt, api_visibility="private")
        _wire_send_to(tabs, handles, sources + [(history_results, history_prompt), (extras_results, extras_prompt)])
        _wire_reuse(studio, tabs, handles, header, reuse, history_results, history_tabs)
        _wire_fill(studio, tabs, handles["txt2img"], header, png_send, png_text, "txt2img")
    return demo


def _selected_path(gallery, selected) -> str:
    if not gallery:
        raise user_error("There is no image to send yet.")
    index = selected if isinstance(selected, int) and 0 <= selected < len(gallery) else 0
    item = gallery[index]
    return item[0] if isinstance(item, (tuple, list)) else item


def _wire_send_to(tabs, handles: dict[str, TabHandles], sources):
    """Each send button puts the selected image into the target tab's input, copies the prompt
    along, and switches to that tab (Control: to pose mode, with the image as the photo)."""
    as_editor = {"inpaint": lambda path: {"background": path, "layers": [], "composite": path}}
    for results, prompt in sources:
        for target, button in results.send.items():
            tab = handles[target]
            to_value = as_editor.get(target, lambda path: path)
            outputs = [tab.receiver, tab.row.prompt, tabs] + ([tab.mode] if tab.mode is not None else [])

            def send(gallery, selected, prompt_text, to_value=to_value, target=target, mode=tab.mode):
                extra = ("openpose",) if mode is not None else ()
                return (to_value(_selected_path(gallery, selected)), prompt_text, gr.Tabs(selected=target), *extra)

            button.click(send, inputs=[results.gallery, results.selected, prompt], outputs=outputs,
                         api_visibility="private", queue=False)


def _settings_outputs(tab: TabHandles) -> list:
    s = tab.sampling
    return [tab.row.prompt, tab.row.negative, s.steps, s.guidance, s.seed, s.sampler, *(tab.size or ()),
            *(tab.hires or ())]


def _settings_values(text: str, tab: TabHandles) -> list:
    """Values for `_settings_outputs(tab)` from an infotext; what the text leaves out stays as it is."""
    try:
        settings = txt2img_settings_from_infotext(text or "")
    except StudioError as exc:
        raise user_error(str(exc)) from None
    keys = ["prompt", "negative_prompt", "steps", "guidance_scale", "seed", "sampler"]
    keys += ["width", "height"] if tab.size else []
    keys += ["hires_fix", "hires_scale", "hires_steps", "hires_denoising"] if tab.hires else []
    return [settings[key] if key in settings else gr.update() for key in keys]


def _wire_fill(studio, tabs, tab: TabHandles, header: Header, button, text_box, target: str):
    """PNG Info -> Text to Image: every setting the text names, then switch there."""
    button.click(lambda text: (*_settings_values(text, tab), *_header_values(studio, text), gr.Tabs(selected=target)),
                 inputs=text_box, outputs=[*_settings_outputs(tab), *_header_outputs(header), tabs],
                 api_visibility="private", queue=False)


def _header_outputs(header: Header) -> list:
    return [header.preset, header.vae, header.clip_skip]


def _header_values(studio, text: str) -> list:
    """The model, VAE and Clip skip an infotext names, for the header; a model that is not here
    keeps the current one, with a message saying so."""
    params = parse_infotext(text or "")[2]
    model, missing = studio.model_of_infotext(params)
    if missing:
        gr.Warning(missing)
    vae = params.get("VAE")
    if vae is None:
        vae_value = OWN_VAE
    elif vae in studio.user_models.vaes.names():
        vae_value = vae
    else:
        vae_value = gr.update()
        gr.Warning(f"This image was decoded with the VAE '{vae}', which is not in your VAE folder: the current "
                   "VAE is kept.")
    clip_skip = params.get("Clip skip", "1")
    clip_skip_value = int(clip_skip) if clip_skip.isdigit() and 1 <= int(clip_skip) <= MAX_CLIP_SKIP else gr.update()
    return [model or gr.update(), vae_value, clip_skip_value]


def _wire_reuse(studio, tabs, handles: dict[str, TabHandles], header: Header, reuse, results, tabs_of):
    """History's "reuse parameters": fill the tab the image came from (outpaint's own settings
    live in its tab; its prompt and sampling settings are filled like the others)."""
    order = list(handles)
    outputs = [component for tab in handles.values() for component in _settings_outputs(tab)]

    def fill(text, tab_names, index):
        if not text:
            raise user_error("Pick an image first.")
        source = tab_names[index] if 0 <= index < len(tab_names) else "txt2img"
        source = source if source in handles else "txt2img"
        updates = []
        for name in order:
            tab = handles[name]
            updates += _settings_values(text, tab) if name == source else [gr.update()] * len(_settings_outputs(tab))
        return (*updates, *_header_values(studio, text), gr.Tabs(selected=source))

    reuse.click(fill, inputs=[results.info, tabs_of, results.selected],
                outputs=[*outputs, *_header_outputs(header), tabs], api_visibility="private", queue=False)
