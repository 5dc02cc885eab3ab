"""The Text to Image tab: prompt -> images, with the settings A1111 users expect."""

from __future__ import annotations

import logging

import gradio as gr

from studio.errors import StudioError
from studio.jobs import JobBoard
from studio.requests import MAX_SEED, Txt2ImgRequest
from studio.samplers import SAMPLER_NAMES
from studio.ui.widgets import NamedSlider, gpu_event_options

log = logging.getLogger(__name__)


def job_owner(request: gr.Request | None) -> str:
    """Who a job belongs to: the browser session (or API client session)."""
    return getattr(request, "session_hash", None) or "local"


def run_safely(work):
    """Run `work()`, turning every failure into a message for the user instead of a traceback."""
    try:
        return work()
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    except gr.Error:
        raise
    except Exception as exc:  # a bug or a library failure: keep serving, say what happened
        log.exception("generation failed")
        raise gr.Error(f"Generation failed ({type(exc).__name__}: {exc}). The studio is still running.") from None


def create_tab(studio, preset_box: gr.Dropdown, jobs: JobBoard, caps):
    """Build the tab. `caps`: the widest limits over all presets, the sliders' static range (API
    calls may name any preset); each preset's own limits are checked when a request arrives.

    Returns (fn, outputs) that fit the sliders to a preset, for the page's load event."""
    d = studio.default_preset.defaults
    with gr.Tab("Text to Image", id="txt2img"):
        with gr.Row(equal_height=True):
            with gr.Column(scale=6):
                prompt = gr.Textbox(label="Prompt", lines=3, placeholder="a watercolor lighthouse at dawn",
                                    elem_id="txt2img-prompt")
                negative = gr.Textbox(label="Negative prompt", lines=2, value=d.negative_prompt)
            with gr.Column(scale=1, min_width=180):
                generate = gr.Button("Generate", variant="primary", size="lg", elem_id="txt2img-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="txt2img-stop")
        with gr.Row():
            with gr.Column():
                sampler = gr.Dropdown(list(SAMPLER_NAMES), value=d.sampler, label="Sampler")
                steps = NamedSlider(1, caps.max_steps, value=d.steps, step=1, label="Steps")
                with gr.Row():
                    width = NamedSlider(64, caps.max_width, value=d.width, step=8, label="Width")
                    height = NamedSlider(64, caps.max_height, value=d.height, step=8, label="Height")
                with gr.Row():
                    batch_count = NamedSlider(1, caps.max_batch_count, value=1, step=1, label="Batch count")
                    batch_size = NamedSlider(1, caps.max_batch_size, value=1, step=1, label="Batch size")
                guidance = NamedSlider(0, 30, value=d.guidance_scale, step=0.5, label="CFG scale")
                with gr.Row(equal_height=True):
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", scale=4)
                    random_seed = gr.Button("🎲", scale=0, min_width=48)
                    reuse_seed = gr.Button("♻️", scale=0, min_width=48)
            with gr.Column():
                gallery = gr.Gallery(label="Results", format="png", columns=2, height=480, elem_id="txt2img-gallery",
                                     object_fit="contain")
                info = gr.Textbox(label="Generation parameters", lines=4, interactive=False, elem_id="txt2img-info")
                infotexts = gr.State([])

    def apply_preset(name):
        """A new preset brings its own defaults and limits (sd-turbo wants 2 steps and CFG 0)."""
        try:
            preset = studio.preset(name)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        d, lim = preset.defaults, preset.limits
        return (
            gr.update(value=d.steps, maximum=lim.max_steps),
            gr.update(value=d.width, maximum=lim.max_width),
            gr.update(value=d.height, maximum=lim.max_height),
            gr.update(value=min(1, lim.max_batch_size), maximum=lim.max_batch_size),
            gr.update(value=1, maximum=lim.max_batch_count),
            gr.update(value=d.guidance_scale),
            gr.update(value=d.sampler),
        )

    preset_outputs = [steps, width, height, batch_size, batch_count, guidance, sampler]
    preset_box.change(apply_preset, inputs=preset_box, outputs=preset_outputs, api_visibility="private", queue=False)

    def txt2img(prompt, negative_prompt, steps, guidance_scale, width, height, seed, sampler,
                batch_size=1, batch_count=1, preset=None, request: gr.Request = None, progress=gr.Progress()):
        req = Txt2ImgRequest(
            prompt=prompt or "", negative_prompt=negative_prompt or "", steps=steps, guidance_scale=guidance_scale,
            width=width, height=height, seed=-1 if seed is None else seed, sampler=sampler,
            batch_size=batch_size, batch_count=batch_count,
        )
        progress(0, desc="Starting")
        with jobs.running(job_owner(request)) as stop_event:
            result = run_safely(lambda: studio.generate(
                req, preset=preset, stop=stop_event,
                on_step=lambda done, total: progress((done, total), desc="Generating", unit="steps"),
            ))
        if result.stopped and not result.paths:
            gr.Info("Stopped.")
        items = [(str(path), None) for path in result.paths]
        return items, (result.infotexts[0] if result.infotexts else ""), result.infotexts

    event = generate.click(
        txt2img,
        inputs=[prompt, negative, steps, guidance, width, height, seed, sampler, batch_size, batch_count, preset_box],
        outputs=[gallery, info, infotexts],
        api_name="txt2img",
        **gpu_event_options(),
    )
    prompt.submit(lambda: None, js="() => document.querySelector('#txt2img-generate').click()",
                  api_visibility="private")

    def stop_job(request: gr.Request):
        jobs.stop(job_owner(request))  # a running job ends at its next step and frees the GPU

    # `cancels` also drops this user's job if it is still waiting in the queue.
    stop.click(stop_job, cancels=[event], api_visibility="private", queue=False)

    def show_selected(texts: list[str], evt: gr.SelectData):
        return texts[evt.index] if 0 <= evt.index < len(texts) else ""

    gallery.select(show_selected, inputs=infotexts, outputs=info, api_visibility="private")
    random_seed.click(lambda: -1, outputs=seed, api_visibility="private", queue=False)

    def seed_of(text: str):
        from studio.metadata import parse_infotext

        seed_text = parse_infotext(text or "")[2].get("Seed")
        return int(seed_text) if seed_text and seed_text.isdigit() and int(seed_text) <= MAX_SEED else -1

    reuse_seed.click(seed_of, inputs=info, outputs=seed, api_visibility="private", queue=False)
    return apply_preset, preset_outputs
