"""Control maps: sketch -> scribble, keypoints -> skeleton, photo -> pose (tiny annotator)."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.control import canny_map, move_keypoint, parse_pose, ready_poses, render_pose, sketch_to_scribble
from studio.errors import ModelUnavailableError, RequestError


def test_a_dark_drawing_on_white_becomes_white_lines_on_black():
    drawing = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(drawing).line((4, 16, 27, 16), fill=(20, 20, 20), width=3)
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[15:18, 4:28] = 255
    result = np.asarray(sketch_to_scribble(drawing))
    assert result.shape == (32, 32, 3)
    assert np.array_equal(result[..., 0], expected)


def test_strokes_on_a_transparent_canvas_and_ready_maps():
    canvas = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).rectangle((2, 2, 5, 5), fill=(0, 0, 0, 255))
    result = np.asarray(sketch_to_scribble(canvas))[..., 0]
    assert result[2:6, 2:6].min() == 255 and result.sum() == 16 * 255
    ready = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(ready).line((0, 8, 15, 8), fill=255)
    assert np.array_equal(np.asarray(sketch_to_scribble(ready))[..., 0], np.asarray(ready))


def test_an_empty_sketch_gets_a_message():
    with pytest.raises(RequestError, match="The sketch is empty"):
        sketch_to_scribble(Image.new("RGB", (16, 16), "white"))


def test_canny_edges_are_white_on_black_along_the_outlines_only():
    photo = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(photo).rectangle((16, 16, 47, 47), fill=(230, 230, 230))
    edges = np.asarray(canny_map(photo))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    on = edges[..., 0] > 0
    assert on[14:18, 16:48].any() and on[46:50, 16:48].any()  # the top and bottom sides
    assert not on[22:42, 22:42].any() and not on[:8].any()  # nothing inside the square or far outside it
    with pytest.raises(RequestError, match="No edges were found in the image"):
        canny_map(Image.new("RGB", (64, 64), (128, 128, 128)))
    with pytest.raises(RequestError, match="Canny thresholds must satisfy 0 <= low < high <= 1000, got 200 and 100"):
        canny_map(photo, 200, 100)


def test_keypoints_render_exactly_as_controlnet_aux_draws_them():
    from controlnet_aux.open_pose.body import Keypoint
    from controlnet_aux.open_pose.util import draw_bodypose

    pose = ready_poses()["sitting"]  # has a missing keypoint (an ear) too
    width, height = pose["canvas_width"], pose["canvas_height"]
    values = pose["people"][0]["pose_keypoints_2d"]
    keypoints = [Keypoint(values[3 * i] / width, values[3 * i + 1] / height) if values[3 * i + 2] else None
                 for i in range(18)]
    expected = draw_bodypose(np.zeros((height, width, 3), dtype=np.uint8), keypoints)
    assert np.array_equal(np.asarray(render_pose(json.dumps(pose))), expected)
    assert expected.any()


def test_ready_poses_ship_and_keypoints_move():
    poses = ready_poses()
    assert {"standing", "sitting", "arms-up"} <= set(poses)
    moved = move_keypoint(poses["standing"], 4, 100, 50)
    assert moved["people"][0]["pose_keypoints_2d"][12:15] == [100.0, 50.0, 1.0]
    assert poses["standing"]["people"][0]["pose_keypoints_2d"][12:15] != [100.0, 50.0, 1.0]
    assert not np.array_equal(np.asarray(render_pose(moved)), np.asarray(render_pose(poses["standing"])))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"canvas_width": 512, "canvas_height": 512, "people": []}', "no people"),
        ('{"canvas_width": 5, "canvas_height": 512, "people": [{}]}', "canvas_width and canvas_height"),
        ('{"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [1, 2]}]}', "54 numbers"),
    ],
)
def test_bad_pose_json_gets_a_message(text, message):
    with pytest.raises(RequestError, match=message):
        parse_pose(text)


def test_pose_detection_loads_the_annotator_folder(studio):
    """The tiny annotator's weights are random but fixed (tiny.SEED): on this photo it finds nobody,
    every time, and says so. The real controlnet-aux from_pretrained(folder) path ran."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 64, 3), dtype=np.uint8))
    for _ in range(2):
        with pytest.raises(RequestError) as err:
            studio.detect_pose(photo)
        assert str(err.value) == "No person was found in the photo. Try one where the whole body is visible."
    assert type(studio.manager().annotator()).__name__ == "OpenposeDetector"


def test_pose_detection_without_weights_names_the_missing_files(settings, tmp_path):
    import dataclasses

    from studio.models import ModelManager
    from studio.presets import load_preset

    preset = load_preset("tiny", settings.presets_dir)
    empty = tmp_path / "annotators"
    empty.mkdir()
    (empty / "facenet.pth").write_bytes(b"")
    preset = dataclasses.replace(preset, models={**preset.models, "pose_annotator": str(empty)})
    manager = ModelManager(preset, settings)
    with pytest.raises(ModelUnavailableError) as err:
        manager.annotator()
    assert "body_pose_model.pth, hand_pose_model.pth" in str(err.value) and str(empty) in str(err.value)


def test_every_control_mode_comes_from_one_registry(settings):
    """A mode is one entry in studio/control.py: the presets accept its ControlNet, the tiny set
    builds one, the A1111 API lists its preprocessors, and the Control tab offers it."""
    from studio.control import CONTROL_MODES, mode_of_a1111_module
    from studio.presets import ROLES, load_preset
    from studio.sdapi.payloads import CONTROL_MODULES
    from studio.ui.control import MODE_LABELS

    tiny, sd15 = load_preset("tiny", settings.presets_dir), load_preset("sd15", settings.presets_dir)
    for name, mode in CONTROL_MODES.items():
        assert f"control.{name}" in ROLES and tiny.model(f"control.{name}") and sd15.model(f"control.{name}")
        assert (settings.models_dir / "tiny" / f"control-{name}" / "config.json").is_file()
        assert all(module in CONTROL_MODULES and mode_of_a1111_module(module) == name for module in mode.a1111_modules)
        assert (mode.label, name) in MODE_LABELS
    assert mode_of_a1111_module("none") is None
