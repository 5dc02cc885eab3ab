"""Pieces every tab shares: the prompt row, the sampling settings, the results panel, and the code
that runs a request as one user's job (progress, Stop, messages instead of tracebacks)."""

from __future__ import annotations

import contextvars
import inspect
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from studio.checkpoints import OWN_VAE
from studio.errors import StudioError
from studio.job_service import Job, JobService
from studio.loras import format_lora_list, parse_lora_list
from studio.metadata import parse_infotext
from studio.presets import Defaults, Limits
from studio.requests import MAX_SEED
from studio.ui.published import publish
from studio.ui.widgets import ImageInput, NamedNumber, NamedSlider, gpu_event_options, user_error
from studio.xyz_plot import plot_job

log = logging.getLogger(__name__)

SEND_TARGETS = {  # target tab id -> button label
    "img2img": "→ Image to Image",
    "inpaint": "→ Inpaint",
    "instruct": "→ Instruct",
    "control": "→ Control (pose from it)",
}


@dataclass
class Header:
    """The settings above the tabs that every generation takes: the model (a preset or a
    checkpoint), the VAE and Clip skip, as A1111's quick settings. Each user's own."""

    preset: gr.Dropdown
    vae: gr.Dropdown
    clip_skip: gr.Slider


@dataclass
class PromptRow:
    prompt: gr.Textbox
    negative: gr.Textbox  # hidden where the model family has no negative prompt (FLUX.1)
    generate: gr.Button
    stop: gr.Button
    note: gr.Markdown  # what this tab cannot do with the current model, before Generate is pressed
    styles: gr.Dropdown  # A1111's styles (styles.csv), applied at generation in the order picked


@dataclass
class Sampling:
    sampler: gr.Dropdown
    steps: gr.Slider
    guidance: gr.Slider
    seed: NamedNumber
    batch_count: gr.Slider
    batch_size: gr.Slider
    reuse_seed: gr.Button  # ♻️: the seed of the image shown in the results panel
    loras: gr.Textbox  # "name:weight, ..." kept by the LoRA picker; the API's `loras` argument
    step_cache: gr.Dropdown  # diffusers' cache hooks, where the family has them (FLUX.1)
    speed: gr.Dropdown  # the preset's few-step LoRAs ([speed]): one pick sets LoRA, sampler, steps, CFG


@dataclass
class Results:
    gallery: gr.Gallery
    info: gr.Textbox
    infotexts: gr.State
    selected: gr.State  # index of the image picked in the gallery (0 until one is clicked)
    send: dict[str, gr.Button]
    stats: gr.Markdown | None = None  # "Time taken: ..." of this user's last job


@dataclass
class TabHandles:
    """What a tab gives the app shell: its results (a send-to source), its prompt and settings
    (filled by "reuse parameters" and PNG Info), and the input that receives sent images."""

    results: Results
    row: PromptRow
    sampling: Sampling
    # (fn, outputs) fitting the sliders to a preset, for the page's load event
    fit: tuple[Callable[[str], tuple], list[gr.components.Component]]
    size: tuple[gr.Slider, gr.Slider] | None = None  # (width, height) sliders, where the tab has them
    receiver: gr.Image | gr.ImageEditor | None = None  # the image input a send-to button fills
    mode: gr.Radio | None = None  # Control: the mode radio, switched to pose when a photo is sent
    # Text to Image: Hires. fix (enabled, scale, steps, denoising)
    hires: tuple[gr.Checkbox, gr.Slider, gr.Slider, gr.Slider] | None = None


def job_owner(request: gr.Request | None) -> str:
    """Whose Stop button a job answers to: the browser session (or API client session)."""
    return getattr(request, "session_hash", None) or "local"


def history_owner(request: gr.Request | None) -> str:
    """Whose history a generation goes to: the login when auth is on, else the browser session."""
    username = getattr(request, "username", None)
    return f"user:{username}" if username else f"session:{job_owner(request)}"


def prompt_row(studio, tab: str, defaults: Defaults, placeholder: str, negative: bool = True) -> PromptRow:
    with gr.Row(equal_height=True):
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder=placeholder, elem_id=f"{tab}-prompt")
            negative_box = gr.Textbox(label="Negative prompt", lines=2, value=defaults.negative_prompt,
                                      visible=negative, elem_id=f"{tab}-negative")
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", size="lg", elem_id=f"{tab}-generate",
                                 elem_classes=["generate-button"])
            stop = gr.Button("Stop", variant="stop", elem_id=f"{tab}-stop")
    styles = style_picker(studio, tab, prompt, negative_box)
    note = gr.Markdown("", visible=False, elem_id=f"{tab}-note")
    return PromptRow(prompt, negative_box, generate, stop, note, styles)


def style_picker(studio, tab: str, prompt: gr.Textbox, negative: gr.Textbox) -> gr.Dropdown:
    """A1111's styles: several at once, applied at generation (or into the prompt with 📋); the
    current prompts saved as a style of this user's (💾)."""
    names = studio.styles.names()
    with gr.Row(equal_height=True):
        styles = gr.Dropdown(names, value=[], multiselect=True, allow_custom_value=True, label="Styles", scale=6,
                             elem_id=f"{tab}-styles",  # custom: styles saved after the page was built
                             info="applied at generation (📋: into the prompts now). In prompts, __name__ is a line "
                                  "of wildcards/name.txt and {a|b} one of them, picked from each image's seed")
        refresh = gr.Button("🔄", scale=0, min_width=48)
        apply = gr.Button("📋", scale=0, min_width=48, elem_id=f"{tab}-styles-apply")
    with gr.Accordion("Save the prompts as a style", open=False):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Style name", scale=4, elem_id=f"{tab}-style-name")
            save = gr.Button("💾 Save", scale=1, elem_id=f"{tab}-style-save")
    def owner_names(request: gr.Request):
        return gr.update(choices=studio.styles.names(history_owner(request)))

    def applied(text, negative_text, chosen, request: gr.Request):
        try:
            text, negative_text = studio.styles.apply(text or "", negative_text or "", chosen or [],
                                                      history_owner(request))
        except StudioError as exc:
            raise user_error(str(exc)) from None
        return text, negative_text, []

    def saved(style_name, text, negative_text, request: gr.Request):
        try:
            studio.styles.save(history_owner(request), style_name, text or "", negative_text or "")
        except StudioError as exc:
            raise user_error(str(exc)) from None
        gr.Info(f"Saved the style {style_name.strip()!r}.")
        return gr.update(choices=studio.styles.names(history_owner(request)))

    refresh.click(owner_names, outputs=styles, api_visibility="private", queue=False)
    apply.click(applied, inputs=[prompt, negative, styles], outputs=[prompt, negative, styles],
                api_visibility="private", queue=False)
    save.click(saved, inputs=[name, prompt, negative], outputs=styles, api_visibility="private", queue=False)
    return styles


def image_input(tab: str, label: str = "Image") -> ImageInput:
    """The image a tab starts from (upload or paste; send-to buttons fill it too)."""
    return ImageInput(label=label, type="pil", image_mode="RGB", sources=["upload", "clipboard"], height=320,
                      elem_id=f"{tab}-image")


def sampling_controls(studio, preset_box, defaults: Defaults, caps: Limits, batch: bool = True) -> Sampling:
    family = studio.default_preset.capabilities
    sampler = gr.Dropdown(list(family.samplers), value=defaults.sampler, label="Sampler")
    steps = NamedSlider(1, caps.max_steps, value=defaults.steps, step=1, label="Steps")
    # CFG, or FLUX.1-dev's distilled guidance (Forge's name), or hidden where the model takes none.
    guidance = NamedSlider(*family.guidance_range, value=defaults.guidance_scale, step=0.1 if family.guidance ==
                           "distilled" else 0.5, label=family.guidance_label, visible=family.guidance != "none")
    with gr.Row(visible=batch):
        batch_count = NamedSlider(1, caps.max_batch_count, value=1, step=1, label="Batch count")
        batch_size = NamedSlider(1, caps.max_batch_size, value=1, step=1, label="Batch size")
    with gr.Row(equal_height=True):
        seed = NamedNumber(value=-1, precision=0, label="Seed (-1 = random)", scale=4)
        random_seed = gr.Button("🎲", scale=0, min_width=48)
        reuse_seed = gr.Button("♻️", scale=0, min_width=48)
    random_seed.click(lambda: -1, outputs=seed, api_visibility="private", queue=False)
    step_cache = gr.Dropdown([NO_STEP_CACHE, *family.step_caches], value=NO_STEP_CACHE, label="Step cache",
                             info="faster, approximate: skips denoiser work between similar steps",
                             visible=bool(family.step_caches))
    speeds = _speed_titles(studio.default_preset)
    speed = gr.Dropdown([NO_SPEED, *speeds], value=NO_SPEED, label="Speed preset", visible=bool(speeds),
                        info="a few-step LoRA (LCM, TCD, Hyper-SD) with the sampler, steps and CFG it is made for")
    loras, slots = lora_picker(studio, preset_box)
    slot_values = [component for slot in slots for component in slot]

    def speed_picked(preset_name, title, *values):
        try:
            preset = studio.preset(preset_name)
        except StudioError as exc:
            raise user_error(str(exc)) from None
        chosen = next((s for s in preset.speed.values() if s.title == title), None)
        speed_loras = {s.lora for s in preset.speed.values()}
        pairs = [(name, weight) for name, weight in zip(values[0::2], values[1::2]) if name and name not in speed_loras]
        if chosen is not None:  # in the first free slot (the last one when all are taken)
            pairs = pairs[:LORA_SLOTS - 1] + [(chosen.lora, chosen.weight)]
        pairs += [("", 1.0)] * (LORA_SLOTS - len(pairs))
        d = preset.defaults
        sampler_, steps_, cfg = ((chosen.sampler, chosen.steps, chosen.guidance_scale) if chosen
                                 else (d.sampler, d.steps, d.guidance_scale))
        return (sampler_, steps_, cfg, *(value for pair in pairs for value in pair))

    speed.input(speed_picked, inputs=[preset_box, speed, *slot_values],
                outputs=[sampler, steps, guidance, *slot_values], api_visibility="private", queue=False)
    return Sampling(sampler, steps, guidance, seed, batch_count, batch_size, reuse_seed, loras, step_cache, speed)


LORA_SLOTS = 4
NO_STEP_CACHE = "off"
NO_SPEED = "off"


def _speed_titles(preset) -> list[str]:
    return [speed.title for speed in preset.speed.values()]


def lora_picker(studio, preset_box) -> tuple[gr.Textbox, list[tuple[gr.Dropdown, gr.Slider]]]:
    """Up to four LoRAs with a weight each, a refresh button and what each LoRA's file says about
    itself. `<lora:name:weight>` in the prompt works as well. Returns the hidden text the picker
    keeps ("name:weight, ..."), which the generate events take as their `loras` argument, and the
    (name, weight) slots."""
    names = studio.lora_names()
    slots = []
    with gr.Accordion("LoRA", open=False):
        for i in range(LORA_SLOTS):
            with gr.Row(equal_height=True):
                name = gr.Dropdown(["", *names], value="", label=f"LoRA {i + 1}", scale=3)
                weight = NamedSlider(-2, 2, value=1.0, step=0.05, label="Weight", scale=2)
            slots.append((name, weight))
        with gr.Row(equal_height=True):
            refresh = gr.Button("🔄 Refresh the list", size="sm", scale=0, min_width=160)
            details = gr.Markdown(_folder_note(studio))
        text = gr.Textbox("", visible=False, label="LoRAs")

    def chosen(preset, *values):
        pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2) if values[i]]
        lines = []
        for lora, _ in pairs:
            try:
                lines.append("- " + studio.lora_info(lora, preset).describe())
            except StudioError as exc:
                lines.append(f"- {lora}: {exc}")
        return format_lora_list(pairs), "\n".join(lines) or _folder_note(studio)

    slot_values = [component for slot in slots for component in slot]
    for component in slot_values:
        component.change(chosen, inputs=[preset_box, *slot_values], outputs=[text, details],
                         api_visibility="private", queue=False)

    def refreshed(preset):
        try:
            choices = ["", *studio.lora_names(preset)]
        except StudioError as exc:
            raise user_error(str(exc)) from None
        return tuple(gr.update(choices=choices) for _ in slots) + (_folder_note(studio),)

    refresh.click(refreshed, inputs=preset_box, outputs=[name for name, _ in slots] + [details],
                  api_visibility="private", queue=False)
    preset_box.change(refreshed, inputs=preset_box, outputs=[name for name, _ in slots] + [details],
                      api_visibility="private", queue=False)
    return text, slots


def _folder_note(studio) -> str:
    note = f"LoRA folder: `{studio.settings.loras_dir}` (.safetensors only)."
    refused = studio.refused_loras()
    if refused:
        note += " Not loaded, pickle files can run code: " + ", ".join(refused)
    return note


def results_panel(tab: str, sampling: Sampling | None = None) -> Results:
    gallery = gr.Gallery(label="Results", format="png", columns=2, height=440, object_fit="contain",
                         interactive=False, elem_id=f"{tab}-gallery")
    with gr.Row():
        send = {target: gr.Button(label, size="sm", elem_id=f"{tab}-send-{target}")
                for target, label in SEND_TARGETS.items() if target != tab}
    info = gr.Textbox(label="Generation parameters", lines=4, interactive=False, elem_id=f"{tab}-info")
    stats = gr.Markdown("", elem_id=f"{tab}-stats")
    infotexts, selected = gr.State([]), gr.State(0)

    def show_selected(texts: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return (texts[index] if 0 <= index < len(texts) else ""), index

    gallery.select(show_selected, inputs=infotexts, outputs=[info, selected], api_visibility="private")
    if sampling is not None:
        sampling.reuse_seed.click(seed_of, inputs=info, outputs=sampling.seed, api_visibility="private",
                                    queue=False)
    return Results(gallery, info, infotexts, selected, send, stats)


def seed_of(text: str) -> int:
    """The seed an infotext names, or -1 (random) when it names none."""
    seed_text = parse_infotext(text or "")[2].get("Seed", "")
    return int(seed_text) if seed_text.isdigit() and int(seed_text) <= MAX_SEED else -1


def run_safely(work):
    """Run `work()`, turning every failure into a message for the user instead of a traceback."""
    try:
        return work()
    except StudioError as exc:
        raise user_error(str(exc)) from None
    except gr.Error:
        raise
    except Exception as exc:  # a bug or a library failure: keep serving, say what happened
        log.exception("generation failed")
        raise user_error(f"Generation failed ({type(exc).__name__}: {exc}). The studio is still running.") from None


def shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size, batch_count,
                    loras, vae="", clip_skip=1, step_cache="") -> dict:
    """The request fields every tab shares, from the values the page or an API call sends."""
    return dict(prompt=prompt or "", negative_prompt=negative_prompt or "", steps=steps,
                guidance_scale=guidance_scale, seed=-1 if seed is None else seed, sampler=sampler,
                batch_size=batch_size, batch_count=batch_count, loras=tuple(parse_lora_list(loras)),
                vae="" if vae in (None, OWN_VAE) else vae, clip_skip=1 if clip_skip is None else clip_skip,
                step_cache="" if step_cache in (None, NO_STEP_CACHE) else step_cache)


def run_job(studio, jobs: JobService, make_job, preset: str | None, request: gr.Request | None,
            progress: gr.Progress, styles=None, plot=None):
    """Build the job (a request with its `styles`, as an X/Y/Z `plot` of (axes, options) when
    given; bad input -> message) and run it as this user's job, streaming a rough preview to the
    gallery every few steps. Yields (gallery items, infotext of the first image, all infotexts);
    the last yield is the result."""
    job = run_safely(lambda: _job_of(studio, make_job(), preset, styles, history_owner(request), plot))
    progress(0, desc="Starting")
    updates: queue.Queue = queue.Queue()
    outcome: dict = {}
    owner = job_owner(request)

    def work():
        try:
            outcome["result"] = jobs.run(
                owner, job, history_owner=history_owner(request), on_preview=updates.put,
                on_update=lambda state: progress(state.fraction(), desc=state.text()))
        except BaseException as exc:  # handed to the event's thread, which reports it
            outcome["error"] = exc
        finally:
            updates.put(None)

    # The event's context goes along: ZeroGPU reads the Gradio request from it (whose quota).
    worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), name="generate", daemon=True)
    worker.start()
    try:
        while (preview := updates.get()) is not None:
            yield [(preview, "preview")], gr.update(), gr.update()
    finally:
        if worker.is_alive():  # the page went away or cancelled: stop
            jobs.stop(owner)
        worker.join()
    if "error" in outcome:
        run_safely(lambda: _raise(outcome["error"]))
    yield _shown(outcome["result"])


def _job_of(studio, request, preset, styles, owner, plot) -> Job:
    styles = list(styles or ())
    if plot is None:
        return studio.jobs.job_for(request, preset, styles, owner)
    axes, options = plot
    return plot_job(studio, studio.jobs.styled(request, styles, owner), preset, axes, options, owner,
                    studio.settings.max_plot_images)


def _raise(exc: BaseException):
    raise exc


def _shown(result):
    """A finished Result as the panel shows it, with its notes as pop-ups."""
    for note in result.notes:
        gr.Info(note)
    if result.stopped:
        gr.Info("Stopped." if not result.paths else f"Stopped: kept the {len(result.paths)} finished image(s).")
    items = [(path, None) for path in publish(result.paths)]
    return items, (result.infotexts[0] if result.infotexts else ""), result.infotexts


def shared_inputs(row: PromptRow, sampling: Sampling, header: Header) -> dict:
    """The components behind the API arguments every generate handler shares, by argument name."""
    return {"prompt": row.prompt, "negative_prompt": row.negative, "styles": row.styles, "steps": sampling.steps,
            "guidance_scale": sampling.guidance, "seed": sampling.seed, "sampler": sampling.sampler,
            "batch_size": sampling.batch_size, "batch_count": sampling.batch_count, "loras": sampling.loras,
            "preset": header.preset, "vae": header.vae, "clip_skip": header.clip_skip,
            "step_cache": sampling.step_cache}


def inputs_of(fn, components: dict) -> list:
    """The inputs of an event, in the order of `fn`'s parameters. The handler's signature is the
    public API (argument names and order), so the inputs list is made from it: the two cannot drift."""
    names = [name for name in inspect.signature(fn).parameters if name not in ("request", "progress")]
    missing = [name for name in names if name not in components]
    unused = sorted(set(components) - set(names))
    if missing or unused:
        raise TypeError(f"{fn.__name__}: no component for {missing}; components for no argument: {unused}")
    return [components[name] for name in names]


def wire_generate(studio, fn, prompt_row_: PromptRow, inputs: list, results: Results, api_name: str,
                  jobs: JobService):
    """Generate runs `fn` on the shared GPU queue (as many at once as the backend has workers);
    Stop stops only this user's job, running or queued."""
    event = prompt_row_.generate.click(
        fn, inputs=inputs, outputs=[results.gallery, results.info, results.infotexts], api_name=api_name,
        **gpu_event_options(studio),
    )
    if results.stats is not None:
        def show_summary(request: gr.Request):
            return jobs.summary(job_owner(request))

        # After the job, whatever its end: its own time (or nothing, when it failed).
        event.then(show_summary, outputs=results.stats, api_visibility="private", queue=False)
    generate_id = prompt_row_.generate.elem_id
    prompt_row_.prompt.submit(None, js=f"() => document.querySelector('#{generate_id}').click()",
                              api_visibility="private")

    def stop_job(request: gr.Request):
        jobs.stop(job_owner(request))  # a running job ends at its next step and frees the GPU
        return []  # take the last preview away: it is not a result

    # `cancels` also drops this user's job if it is still waiting in the queue.
    prompt_row_.stop.click(stop_job, outputs=results.gallery, cancels=[event], api_visibility="private")
    return event


def fit_to_preset(studio, preset_box: gr.Dropdown, sampling: Sampling, size: tuple | None = None,
                  row: PromptRow | None = None, task: str | None = None, image_guidance: gr.Slider | None = None):
    """Picking a model brings its defaults, limits and family to these fields (sd-turbo wants 2 steps
    and CFG 0; FLUX.1 has its own samplers, distilled guidance, sizes in 16s and no negative prompt),
    and says what the tab cannot do with it. Returns (fn, outputs) for the page's load event: it sets
    the starting model's limits only, so it never overwrites what the user may already be typing."""

    def updates(name, with_values: bool):
        try:
            preset = studio.preset(name)
        except StudioError as exc:
            raise user_error(str(exc)) from None
        d, lim, caps = preset.defaults, preset.limits, preset.capabilities

        def slider(value, maximum=None, **changes):
            update = ({"maximum": maximum} if maximum is not None else {}) | changes
            return gr.update(value=value, **update) if with_values else gr.update(**update)

        low, high = caps.guidance_range
        result = [slider(d.sampler, choices=list(caps.samplers)), slider(d.steps, lim.max_steps),
                  slider(d.guidance_scale, high, minimum=low, label=caps.guidance_label,
                         visible=caps.guidance != "none"),
                  slider(1, lim.max_batch_count), slider(1, lim.max_batch_size),
                  gr.update(choices=[NO_STEP_CACHE, *caps.step_caches], value=NO_STEP_CACHE,
                            visible=bool(caps.step_caches)),
                  gr.update(choices=[NO_SPEED, *_speed_titles(preset)], value=NO_SPEED,
                            visible=bool(preset.speed))]
        if size is not None:
            result += [slider(d.width, lim.max_width, step=lim.size_multiple),
                       slider(d.height, lim.max_height, step=lim.size_multiple)]
        if row is not None:
            note = studio.task_note(task, name) if task else ""
            result += [gr.update(visible=caps.negative_prompt), gr.update(value=note, visible=bool(note))]
        if image_guidance is not None:
            result.append(gr.update(visible=caps.image_guidance))
        return tuple(result)

    outputs = [sampling.sampler, sampling.steps, sampling.guidance, sampling.batch_count, sampling.batch_size,
               sampling.step_cache, sampling.speed]
    outputs += list(size or ())
    outputs += [row.negative, row.note] if row is not None else []
    outputs += [image_guidance] if image_guidance is not None else []
    preset_box.change(lambda name: updates(name, True), inputs=preset_box, outputs=outputs,
                      api_visibility="private", queue=False)
    return (lambda name: updates(name, False)), outputs
