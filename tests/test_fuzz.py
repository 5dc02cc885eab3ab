"""Hostile input at every door: each numeric field at and beyond its limits, NaN and infinities,
wrong types, NUL bytes and 20,000-character strings, broken and oversized images, masks of another
size, names that try to leave their folder, pickles dropped into model folders.

Every input must get either a result or a message that says what to change (never Gradio's
"upstream app raised an exception", never our "Generation failed (...)" for a bug); nothing may
print a traceback on the server; the server must keep serving; and no half-written file or
history row may be left (every PNG in the outputs has its row, and no `.tmp` file remains)."""

import base64
import json
import os
import sqlite3
import struct
import zlib

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

pytestmark = pytest.mark.slow  # about 300 inputs, many of them generations: run by the full suite

NUMBERS = [0, -1, 10**12, 1.5, "abc", None, True, [], {}]
JSON_ONLY = [float("nan"), float("inf"), float("-inf")]  # gradio_client cannot send these: raw HTTP does
BUGS = ("Generation failed (", "upstream Gradio app has raised an exception", "Traceback")
FAST = {"prompt": "a boat", "steps": 1, "width": 64, "height": 64, "seed": 1}
TRIED: list[str] = []  # every input sent, for the count in the report
RAN: set[str] = set()  # the input tests that ran in this process (pytest-xdist may spread them)


@pytest.fixture(autouse=True)
def _record(request):
    RAN.add(request.node.originalname)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    good = folder / "good.png"
    Image.new("RGB", (64, 64), (20, 80, 160)).save(good)
    (folder / "zero.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])
    (folder / "text.png").write_text("not an image at all")
    (folder / "huge-header.png").write_bytes(_png_header_only(30000, 30000))
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    Image.new("L", (32, 48), 255).save(folder / "small-mask.png")
    return folder


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and whose data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def gradio(client, api: str, **kwargs):
    """A Gradio API call that must end in a result or in a message; returns the message or None."""
    TRIED.append(f"{api} {kwargs}")
    try:
        client.predict(**kwargs, api_name=api)
        return None
    except AppError as exc:
        message = str(exc)
    assert message and not any(bug in message for bug in BUGS), (api, kwargs, message)
    return message


def sdapi(url: str, path: str, payload) -> dict:
    """An A1111 API call (raw JSON, NaN allowed) that must end in 200 or a 4xx with a message."""
    TRIED.append(f"{path} {str(payload)[:200]}")
    answer = requests.post(f"{url}sdapi/v1/{path}", data=json.dumps(payload), timeout=300,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code in (200, 422), (path, payload, answer.status_code, answer.text[:300])
    body = answer.json()
    if answer.status_code == 422:
        assert body["detail"] and not any(bug in body["detail"] for bug in BUGS), (payload, body)
    return body


def no_traceback(capfd) -> None:
    """No traceback printed by the server. (A library logger that kept a handle on a stream pytest
    has since closed prints "--- Logging error ---" with a traceback of its own: not the server's.)"""
    out, err = capfd.readouterr()
    text = out + err
    assert text.count("Traceback") == text.count("--- Logging error ---"), text[-3000:]


TXT2IMG_FIELDS = ["steps", "guidance_scale", "width", "height", "seed", "batch_size", "batch_count", "hires_scale",
                  "hires_steps", "hires_denoising", "clip_skip"]


@pytest.mark.parametrize("name", TXT2IMG_FIELDS)
def test_every_txt2img_number_over_the_gradio_api(client, capfd, name):
    for value in NUMBERS:
        hires = {"hires_fix": True} if name.startswith("hires") else {}
        gradio(client, "/txt2img", **{**FAST, **hires, name: value})
    no_traceback(capfd)


@pytest.mark.parametrize("name", TXT2IMG_FIELDS)
def test_nan_and_infinity_over_gradios_raw_http_api(server, capfd, name):
    """gradio_client refuses to encode NaN; any other client can send it."""
    order = ["prompt", "negative_prompt", "steps", "guidance_scale", "width", "height", "seed", "sampler",
             "batch_size", "batch_count", "loras", "preset", "hires_fix", "hires_scale", "hires_steps",
             "hires_denoising", "vae", "clip_skip"]
    values = {"prompt": "a boat", "negative_prompt": "", "steps": 1, "guidance_scale": 7, "width": 64, "height": 64,
              "seed": 1, "sampler": "Euler a", "batch_size": 1, "batch_count": 1, "loras": "", "preset": "tiny",
              "hires_fix": name.startswith("hires"), "hires_scale": 2, "hires_steps": 0, "hires_denoising": 0.7,
              "vae": "Automatic", "clip_skip": 1}
    for value in JSON_ONLY:
        TRIED.append(f"raw /txt2img {name}={value}")
        data = [value if key == name else values[key] for key in order]
        call = requests.post(f"{server}gradio_api/call/txt2img", data=json.dumps({"data": data}), timeout=60,
                             headers={"Content-Type": "application/json"})
        assert call.status_code == 200, call.text
        stream = requests.get(f"{server}gradio_api/call/txt2img/{call.json()['event_id']}", timeout=120).text
        events = [line for line in stream.splitlines() if line.startswith("event:")]
        last_data = [line for line in stream.splitlines() if line.startswith("data:")][-1]
        if events[-1] == "event: error":
            assert last_data != "data: null" and not any(bug in last_data for bug in BUGS), (name, value, stream)
    no_traceback(capfd)


A1111_FIELDS = ["steps", "cfg_scale", "width", "height", "seed", "batch_size", "n_iter", "hr_scale",
                "hr_second_pass_steps", "denoising_strength", "sampler_name", "prompt", "override_settings",
                "alwayson_scripts"]


@pytest.mark.parametrize("name", A1111_FIELDS)
def test_every_a1111_field_over_sdapi(server, capfd, name):
    base = {"prompt": "a boat", "steps": 1, "width": 64, "height": 64, "seed": 1, "enable_hr": name.startswith("hr")}
    for value in NUMBERS + JSON_ONLY:
        sdapi(server, "txt2img", {**base, name: value})
    no_traceback(capfd)


def test_strings_with_nul_and_20000_characters(client, server, capfd):
    for text in ("a\x00boat", "\x00" * 50, "b" * 20_000, "(" * 5000, "[" * 5000 + "BREAK " * 500, "\\" * 999,
                 "<lora:", "<lora:../../etc/passwd:1>", "é" * 3000):
        gradio(client, "/txt2img", **{**FAST, "prompt": text})
        gradio(client, "/txt2img", **{**FAST, "negative_prompt": text})
        sdapi(server, "txt2img", {**FAST, "prompt": text})
    long = gradio(client, "/txt2img", **{**FAST, "prompt": "b" * 20_000})
    assert long == "Prompt is 20000 characters; at most 10000 are read. Shorten it."
    no_traceback(capfd)


HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "..", "", " ", "nope", "evil.ckpt", "a\x00b",
                 "loras/../../x.safetensors", "C:\\Windows\\win.ini", "outside-link"]


def test_hostile_model_names(client, server, settings, tmp_path, capfd):
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"secret")
    for folder in (settings.loras_dir, settings.checkpoints_dir, settings.vaes_dir, settings.embeddings_dir):
        (folder / "outside-link.safetensors").symlink_to(secret)  # a symlink that leads out of the folder
        (folder / "evil.ckpt").write_bytes(b"\x80\x04K\x01.")  # a pickle dropped in
        (folder / "evil.pt").write_bytes(b"\x80\x04K\x01.")
    try:
        for name in HOSTILE_NAMES:
            assert gradio(client, "/txt2img", **{**FAST, "loras": f"{name}:1"})
            assert gradio(client, "/txt2img", **{**FAST, "preset": name}) or name == ""  # "": the default
            if name.strip():
                assert gradio(client, "/txt2img", **{**FAST, "vae": name})
            answer = sdapi(server, "txt2img", {**FAST, "override_settings": {"sd_model_checkpoint": name}})
            assert "detail" in answer or name == ""  # "": the caller's own model
            assert "detail" in sdapi(server, "txt2img", {**FAST, "override_settings": {"sd_vae": name or "x"}})
        from studio.core import Studio

        studio = Studio(settings)
        assert not any("outside-link" in name or name.endswith((".ckpt", ".pt")) for name in studio.model_names())
        assert "outside-link" not in studio.lora_names() and not studio.user_models.vaes.names()
        assert studio.user_models.embeddings.by_trigger() == {}  # a symlink out and pickles: nothing
        assert gradio(client, "/txt2img", **{**FAST, "prompt": "outside-link evil"}) is None  # plain words
    finally:
        for folder in (settings.loras_dir, settings.checkpoints_dir, settings.vaes_dir, settings.embeddings_dir):
            for name in ("outside-link.safetensors", "evil.ckpt", "evil.pt"):
                (folder / name).unlink()
    no_traceback(capfd)


BROKEN = ["zero.png", "corrupt.png", "truncated.png", "text.png", "huge-header.png", "dot.png"]


def test_broken_images_at_every_image_input(client, server, bad_files, capfd):
    good = handle_file(bad_files / "good.png")
    for name in BROKEN:
        bad = handle_file(bad_files / name)
        assert gradio(client, "/img2img", image=bad, prompt="x", steps=1)
        assert gradio(client, "/inpaint", image={"background": bad, "layers": [], "composite": None},
                      mask=good, prompt="x", steps=1)
        assert gradio(client, "/inpaint", image={"background": good, "layers": [], "composite": None},
                      mask=bad, prompt="x", steps=1) or name == "dot.png"  # a 1x1 mask is resized: fine
        assert gradio(client, "/outpaint", image=bad, prompt="x", steps=1, right=64)
        assert gradio(client, "/instruct", image=bad, prompt="x", steps=1)
        assert gradio(client, "/control", control_image=bad, prompt="x", steps=1, width=64, height=64)
        assert gradio(client, "/detect_pose", photo=bad)
        gradio(client, "/png_info", path=bad)  # any file: "no parameters" is an answer
        data = base64.b64encode((bad_files / name).read_bytes()).decode()
        assert "detail" in sdapi(server, "img2img", {**FAST, "init_images": [data]})
        # A 1x1 mask is resized to the image; an empty one ("" once encoded) is no mask, as in A1111.
        assert "detail" in sdapi(server, "img2img", {**FAST, "init_images": [_b64(bad_files / "good.png")],
                                                     "mask": data}) or name in ("dot.png", "zero.png")
        sdapi(server, "png-info", {"image": data})
    for payload in ({"init_images": []}, {"init_images": ["x"]}, {"init_images": [None]}, {"init_images": "abc"},
                    {"init_images": [_b64(bad_files / "good.png")], "resize_mode": 9}):
        assert "detail" in sdapi(server, "img2img", {**FAST, **payload})
    no_traceback(capfd)


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_a_mask_of_another_size_is_fitted_to_the_image(client, bad_files):
    gallery, _ = client.predict(image={"background": handle_file(bad_files / "good.png"), "layers": [],
                                       "composite": None}, mask=handle_file(bad_files / "small-mask.png"),
                                prompt="x", steps=1, seed=1, api_name="/inpaint")
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (64, 64)


def test_after_all_that_the_server_serves_and_nothing_is_half_written(client, server, settings):
    """Runs last in this module: every PNG in the outputs has its history row, no temp file is
    left, and a normal request works."""
    gallery, info = client.predict(**FAST, api_name="/txt2img")
    assert len(gallery) == 1 and info.startswith("a boat")
    assert sdapi(server, "txt2img", FAST)["images"]
    pngs = {str(path) for path in settings.outputs_dir.rglob("*.png")}
    with sqlite3.connect(settings.outputs_dir / "history.sqlite3") as db:
        rows = {path for (path,) in db.execute("SELECT path FROM generations")}
    assert pngs == rows
    assert not list(settings.outputs_dir.rglob("*.tmp"))
    print(f"\nfuzz: {len(TRIED)} inputs tried")
    inputs = {"test_every_txt2img_number_over_the_gradio_api", "test_nan_and_infinity_over_gradios_raw_http_api",
              "test_every_a1111_field_over_sdapi", "test_strings_with_nul_and_20000_characters",
              "test_hostile_model_names", "test_broken_images_at_every_image_input"}
    if inputs <= RAN:  # all of them ran here (one process, as in CI): the table really was sent
        assert len(TRIED) > 250
