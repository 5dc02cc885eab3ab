"""Control maps for the ControlNets: sketch -> scribble map, photo -> OpenPose skeleton, and poses
as editable keypoints rendered with controlnet-aux's own drawing code.

A pose is kept in the OpenPose JSON layout that pose editors exchange:
    {"canvas_width": W, "canvas_height": H, "people": [{"pose_keypoints_2d": [x0, y0, c0, x1, ...]}]}
with the 18 COCO body keypoints in pixels; a confidence of 0 marks a keypoint as missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from studio.errors import RequestError

KEYPOINT_NAMES = (
    "nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
    "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
    "right eye", "left eye", "right ear", "left ear",
)
POSES_DIR = Path(__file__).resolve().parent.parent / "assets" / "poses"


def sketch_to_scribble(drawing: Image.Image) -> Image.Image:
    """The white-lines-on-black map the scribble ControlNet expects, from a drawing.

    Dark strokes on a light (or transparent) background become white on black; a drawing that is
    already light-on-dark is kept as it is, just made binary."""
    rgba = np.asarray(drawing.convert("RGBA"))
    luminance = np.asarray(drawing.convert("RGB").convert("L"), dtype=np.int16)
    transparent = rgba[..., 3] < 128
    if transparent.any():
        strokes = ~transparent & (luminance < 200)
    elif luminance.mean() >= 128:
        strokes = luminance < 128
    else:
        strokes = luminance >= 128
    if not strokes.any():
        raise RequestError("The sketch is empty: draw some lines first.")
    map_ = np.where(strokes, 255, 0).astype(np.uint8)
    return Image.fromarray(np.stack([map_] * 3, axis=-1))


def canny_map(photo: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """The white-edges-on-black map the canny ControlNet expects: OpenCV's Canny edge detector
    (no weights to download) with hysteresis thresholds `low` < `high` on 0-255 gradients."""
    import cv2

    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= low < high <= 1000):
        raise RequestError(f"Canny thresholds must satisfy 0 <= low < high <= 1000, got {low} and {high}.")
    edges = cv2.Canny(np.asarray(photo.convert("L")), float(low), float(high))
    if not edges.any():
        raise RequestError("No edges were found in the image: use one with more contrast, or lower the thresholds.")
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


@dataclass(frozen=True)
class ControlMode:
    """A kind of ControlNet map. A preset offers a mode by naming its ControlNet under
    `[models.control]`; the studio knows how to make the map (`preprocess`). Adding a mode is one
    entry here, one line per preset and a tiny model (studio/tiny.py builds one per mode)."""

    label: str  # the Control tab's choice
    # The user's image -> the map. `detect_pose(photo)` gives pose JSON (a model: the caller's).
    preprocess: Callable[[Image.Image, Callable[[Image.Image], dict]], Image.Image]
    a1111_modules: tuple[str, ...]  # A1111's ControlNet preprocessor names that make this map


CONTROL_MODES: dict[str, ControlMode] = {
    "scribble": ControlMode(
        "Sketch (scribble)", lambda image, detect_pose: sketch_to_scribble(image),
        ("scribble_pidinet", "scribble_hed", "scribble_xdog", "invert (from white bg & black line)")),
    "openpose": ControlMode(
        "Pose (openpose)", lambda image, detect_pose: render_pose(detect_pose(image.convert("RGB"))),
        ("openpose", "openpose_full")),
    "canny": ControlMode("Edges of a photo (canny)", lambda image, detect_pose: canny_map(image), ("canny",)),
}


def mode_of_a1111_module(module: str) -> str | None:
    """The mode whose map an A1111 preprocessor name makes; None for "none" and unknown names."""
    return next((mode for mode, spec in CONTROL_MODES.items() if module in spec.a1111_modules), None)


MAX_POSE_CHARS = 200_000  # 18 keypoints of 100 people take about 60,000


def parse_pose(text: str | dict) -> dict:
    """Validate pose JSON (text or dict); returns the dict. Messages say what is wrong."""
    if isinstance(text, str) and len(text) > MAX_POSE_CHARS:
        raise RequestError(f"The pose is {len(text):,} characters of JSON; at most {MAX_POSE_CHARS:,} are read.")
    try:
        pose = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise RequestError(f"The pose is not valid JSON: {exc.msg} at line {exc.lineno}.") from None
    except RecursionError:
        raise RequestError("The pose's JSON nests too deeply: it is an object with canvas_width, canvas_height and "
                           "people.") from None
    if not isinstance(pose, dict):
        raise RequestError("The pose must be a JSON object with canvas_width, canvas_height and people.")
    width, height = pose.get("canvas_width"), pose.get("canvas_height")
    if not (isinstance(width, int) and isinstance(height, int) and 16 <= width <= 4096 and 16 <= height <= 4096):
        raise RequestError("The pose needs canvas_width and canvas_height: whole numbers from 16 to 4096.")
    people = pose.get("people")
    if not isinstance(people, list) or not people:
        raise RequestError("The pose has no people: add one with 18 keypoints in pose_keypoints_2d.")
    for n, person in enumerate(people, 1):
        points = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(points, list) or len(points) != 54 or not all(isinstance(v, (int, float)) for v in points):
            raise RequestError(
                f"Person {n}: pose_keypoints_2d must list 18 keypoints as x, y, confidence (54 numbers)."
            )
    return pose


def _keypoints(person: dict, width: int, height: int):
    """controlnet-aux Keypoints (normalised 0..1) of one person; None where missing."""
    from controlnet_aux.open_pose.body import Keypoint

    values = person["pose_keypoints_2d"]
    return [
        Keypoint(x=values[3 * i] / width, y=values[3 * i + 1] / height) if values[3 * i + 2] > 0 else None
        for i in range(18)
    ]


def render_pose(pose: str | dict) -> Image.Image:
    """The OpenPose skeleton image of a pose, drawn by controlnet-aux's `draw_bodypose`."""
    from controlnet_aux.open_pose.util import draw_bodypose

    pose = parse_pose(pose)
    width, height = pose["canvas_width"], pose["canvas_height"]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in pose["people"]:
        canvas = draw_bodypose(canvas, _keypoints(person, width, height))
    return Image.fromarray(canvas)


def move_keypoint(pose: str | dict, index: int, x: float, y: float, person: int = 0) -> dict:
    """The pose with keypoint `index` of `person` placed at pixel (x, y) and marked present."""
    pose = json.loads(json.dumps(parse_pose(pose)))  # a copy: callers keep theirs
    if not 0 <= index < 18:
        raise RequestError(f"Keypoint index must be 0-17, got {index}.")
    points = pose["people"][person]["pose_keypoints_2d"]
    points[3 * index:3 * index + 3] = [round(float(x), 1), round(float(y), 1), 1.0]
    return pose


def poses_from_detection(results, width: int, height: int) -> dict:
    """controlnet-aux PoseResults (normalised) -> pose JSON in pixels of a width x height canvas."""
    people = []
    for result in results:
        values: list[float] = []
        for point in result.body.keypoints:
            values += [0.0, 0.0, 0.0] if point is None else [round(point.x * width, 1), round(point.y * height, 1), 1.0]
        people.append({"pose_keypoints_2d": values})
    return {"canvas_width": width, "canvas_height": height, "people": people}


def format_pose(pose: dict) -> str:
    """Pose JSON with one keypoint (x, y, confidence) per line, so it can be read and edited by hand."""
    people = []
    for person in pose["people"]:
        values = person["pose_keypoints_2d"]
        rows = ",\n".join(
            f"    {values[i]:g}, {values[i + 1]:g}, {values[i + 2]:g}" for i in range(0, len(values), 3)
        )
        people.append(f'  {{"pose_keypoints_2d": [\n{rows}\n  ]}}')
    body = ",\n".join(people)
    return (f'{{\n "canvas_width": {pose["canvas_width"]},\n "canvas_height": {pose["canvas_height"]},\n'
            f' "people": [\n{body}\n ]\n}}')


def ready_poses() -> dict[str, dict]:
    """The poses shipped in assets/poses/*.json, by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(POSES_DIR.glob("*.json"))}
