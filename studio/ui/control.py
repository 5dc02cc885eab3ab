"""The Control tab: a ControlNet steered by a sketch (scribble), a pose (openpose) or the edges
of a photo (canny).

Poses come from a photo (OpenPose detection), from a skeleton image, or from the built-in pose
editor: 18 keypoints as JSON, rendered live; pick a joint and click on the skeleton to move it.
"""

from __future__ import annotations

import gradio as gr

from studio.control import (
    KEYPOINT_NAMES,
    canny_map,
    format_pose,
    move_keypoint,
    ready_poses,
    render_pose,
    sketch_to_scribble,
)
from studio.requests import CONTROL_MODES, ControlRequest
from studio.ui.common import (
    TabHandles,
    fit_to_preset,
    inputs_of,
    prompt_row,
    results_panel,
    run_job,
    run_safely,
    sampling_controls,
    shared_inputs,
    shared_settings,
    wire_generate,
)
from studio.ui.txt2img import size_sliders
from studio.ui.widgets import ImageInput, NamedSlider, gpu_event_options, user_error

MODE_LABELS = [(mode.label, name) for name, mode in CONTROL_MODES.items()]


def create_tab(studio, header, jobs, caps):
    preset_box = header.preset
    d = studio.default_preset.defaults
    poses = ready_poses()
    first_pose = next(iter(poses.values()), None)
    with gr.Tab("Control", id="control"):
        row = prompt_row(studio, "control", d, "a knight in armour, studio light")
        with gr.Row():
            with gr.Column():
                mode = gr.Radio(MODE_LABELS, value="scribble", label="Control mode", elem_id="control-mode")
                with gr.Group(visible=True) as sketch_group:
                    sketch = gr.Sketchpad(label="Draw (dark lines on white)", type="pil", image_mode="RGBA",
                                          canvas_size=(512, 512), height=360,
                                          brush=gr.Brush(default_size=4, colors=["#000000"], color_mode="fixed"))
                    drawing = ImageInput(label="...or upload a drawing", type="pil", sources=["upload", "clipboard"],
                                         height=180)
                    to_scribble = gr.Button("Make the scribble map")
                with gr.Group(visible=False) as pose_group:
                    with gr.Row():
                        photo = ImageInput(label="Photo to take the pose from", type="pil", image_mode="RGB",
                                           sources=["upload", "clipboard"], height=220, elem_id="control-photo")
                        skeleton = ImageInput(label="...or an OpenPose skeleton image", type="pil", image_mode="RGB",
                                              sources=["upload", "clipboard"], height=220)
                    detect = gr.Button("Detect the pose in the photo")
                    ready = gr.Dropdown(list(poses), value=next(iter(poses), None), label="Ready poses")
                    joint = gr.Dropdown(list(KEYPOINT_NAMES), value=KEYPOINT_NAMES[4], type="index",
                                        label="Pose editor: pick a joint, then click on the map to place it")
                    pose_json = gr.Code(format_pose(first_pose) if first_pose else "", language="json",
                                        label="Pose keypoints (OpenPose JSON: x, y, confidence per joint; editable)",
                                        lines=8, max_lines=14, elem_id="control-pose-json")
                with gr.Group(visible=False) as canny_group:
                    edges_photo = ImageInput(label="Photo to take the edges from", type="pil", image_mode="RGB",
                                             sources=["upload", "clipboard"], height=220, elem_id="control-edges-photo")
                    with gr.Row():
                        low = NamedSlider(1, 255, value=100, step=1, label="Canny low threshold")
                        high = NamedSlider(1, 255, value=200, step=1, label="Canny high threshold")
                    find_edges = gr.Button("Find the edges")
                weight = NamedSlider(0, 2, value=1.0, step=0.05, label="Control weight")
                with gr.Row():
                    start = NamedSlider(0, 1, value=0.0, step=0.01, label="Guidance start")
                    end = NamedSlider(0, 1, value=1.0, step=0.01, label="Guidance end")
                width, height = size_sliders(d, caps)
                sampling = sampling_controls(studio, preset_box, d, caps)
            with gr.Column():
                # Shown, and the API's `control_image` input: bad uploads get a message (ImageInput).
                control_map = ImageInput(label="Control map (what the ControlNet sees)", type="pil", format="png",
                                         image_mode="RGB", interactive=False, height=360, elem_id="control-map")
                results = results_panel("control", sampling)

    def switch_mode(new_mode, text):
        """Show the mode's inputs; in pose mode the map starts as the current pose."""
        pose_map = run_safely(lambda: render_pose(text)) if new_mode == "openpose" and text else None
        return (gr.update(visible=new_mode == "scribble"), gr.update(visible=new_mode == "openpose"),
                gr.update(visible=new_mode == "canny"), pose_map)

    mode.change(switch_mode, inputs=[mode, pose_json], outputs=[sketch_group, pose_group, canny_group, control_map],
                api_visibility="private")

    def make_edges(photo, low_threshold, high_threshold):
        if photo is None:
            raise user_error("Upload a photo to take the edges from first.")
        return run_safely(lambda: canny_map(photo, low_threshold, high_threshold))

    for trigger in (find_edges.click, edges_photo.upload):
        trigger(make_edges, inputs=[edges_photo, low, high], outputs=control_map, api_visibility="private")

    def make_scribble(sketch_value, uploaded):
        source = uploaded if uploaded is not None else (sketch_value or {}).get("composite")
        if source is None:
            raise user_error("Draw something or upload a drawing first.")
        return run_safely(lambda: sketch_to_scribble(source))

    to_scribble.click(make_scribble, inputs=[sketch, drawing], outputs=control_map, api_visibility="private")
    drawing.upload(make_scribble, inputs=[sketch, drawing], outputs=control_map, api_visibility="private")

    def render(text):
        return run_safely(lambda: render_pose(text))

    pose_json.change(render, inputs=pose_json, outputs=control_map, api_visibility="private")
    ready.change(lambda name: format_pose(poses[name]), inputs=ready, outputs=pose_json, api_visibility="private")
    skeleton.upload(lambda image: image, inputs=skeleton, outputs=control_map, api_visibility="private")

    def place_joint(text, index, evt: gr.SelectData):
        x, y = evt.index
        return format_pose(run_safely(lambda: move_keypoint(text, int(index), x, y)))

    control_map.select(place_joint, inputs=[pose_json, joint], outputs=pose_json, api_visibility="private")

    def detect_pose(photo, preset=None):
        """Photo -> (pose keypoints JSON, skeleton image)."""
        pose = run_safely(lambda: studio.detect_pose(photo, preset=preset))
        return format_pose(pose), render_pose(pose)

    detect.click(detect_pose, inputs=[photo, preset_box], outputs=[pose_json, control_map], api_name="detect_pose",
                 **gpu_event_options(studio))

    def control(control_image, prompt, negative_prompt="", control_mode="scribble", conditioning_scale=1.0,
                guidance_start=0.0, guidance_end=1.0, steps=20, guidance_scale=7.0, width=512, height=512, seed=-1,
                sampler="Euler a", batch_size=1, batch_count=1, loras="", preset=None, vae="", clip_skip=1,
                step_cache="", styles=None,
                request: gr.Request = None,
                progress=gr.Progress()):
        """`control_image`: the map itself (white scribble on black, or an OpenPose skeleton)."""
        yield from run_job(studio, jobs, lambda: ControlRequest(
            control_image=control_image, control_mode=control_mode, conditioning_scale=conditioning_scale,
            guidance_start=guidance_start, guidance_end=guidance_end, width=width, height=height,
            **shared_settings(prompt, negative_prompt, steps, guidance_scale, seed, sampler, batch_size,
                              batch_count, loras, vae, clip_skip, step_cache),
        ), preset, request, progress, styles)

    own = {"control_image": control_map, "control_mode": mode, "conditioning_scale": weight, "guidance_start": start,
           "guidance_end": end, "width": width, "height": height}
    inputs = inputs_of(control, shared_inputs(row, sampling, header) | own)
    wire_generate(studio, control, row, inputs, results, "control", jobs)
    fit = fit_to_preset(studio, preset_box, sampling, (width, height), row, "control")
    return TabHandles(results, row, sampling, fit, size=(width, height), receiver=photo, mode=mode)
