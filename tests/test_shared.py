"""Shared use: logins, the LAN warning, the queue, per-user isolation, per-user Stop, history,
PNG Info, crash-safe saving, server-side limits and ZeroGPU's decorator off a Space."""

import dataclasses
import io
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from studio.ui import close_server
from tests.conftest import REPO, free_port

FAST = dict(negative_prompt="", guidance_scale=7, width=64, height=64, sampler="Euler a", batch_size=1)


def launch(studio, **options):
    from studio.ui import build, launch_options

    demo = build(studio)
    demo.queue(max_size=studio.settings.queue_size)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **{**launch_options(studio), **options})
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def private_server(settings, tmp_path_factory):
    """A server with two logins, so history is private to each."""
    from studio.core import Studio

    studio = Studio(dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("private"),
                                        auth=(("ann", "pw-ann"), ("bob", "pw-bob"))))
    demo, url = launch(studio)
    yield studio, url
    close_server(demo)


def image_of(item) -> np.ndarray:
    with Image.open(item["image"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


# --- logins and launch modes ------------------------------------------------------------------

def test_no_page_and_no_api_without_credentials(private_server):
    _, url = private_server
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "config", timeout=10)
    assert err.value.code == 401
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("ann", "wrong"), verbose=False)
    gallery, info = Client(url, auth=("ann", "pw-ann"), verbose=False).predict(
        prompt="ann's boat", steps=2, seed=1, **FAST, api_name="/txt2img")
    assert len(gallery) == 1 and info.startswith("ann's boat")


def test_history_is_private_to_each_login(private_server):
    _, url = private_server
    ann, bob = (Client(url, auth=login, verbose=False) for login in (("ann", "pw-ann"), ("bob", "pw-bob")))
    ann.predict(prompt="ann's castle", steps=2, seed=2, **FAST, api_name="/txt2img")
    bob.predict(prompt="bob's forest", steps=2, seed=3, **FAST, api_name="/txt2img")
    ann_gallery, ann_label, ann_info = ann.predict(api_name="/history")
    bob_gallery, bob_label, bob_info = bob.predict(api_name="/history")
    assert bob_info.startswith("bob's forest") and "1 image" in bob_label and len(bob_gallery) == 1
    assert ann_info.startswith("ann's castle") and len(ann_gallery) >= 1
    assert all(item["caption"] == "txt2img" for item in ann_gallery)
    assert "bob" not in json.dumps(ann_gallery) + ann_info


@pytest.mark.slow
def test_a_user_cannot_read_anothers_images_by_path(private_server):
    """The outputs folder is in Gradio's allowed_paths (results are copied from it into Gradio's
    cache), so its own file route would serve `<task>/<date>/<nnnnn>-<seed>.png` to any login."""
    studio, url = private_server
    gallery, _ = Client(url, auth=("ann", "pw-ann"), verbose=False, download_files=False).predict(
        prompt="ann's private boat", steps=2, seed=5, **FAST, api_name="/txt2img")
    saved = next(p for p in studio.settings.outputs_dir.rglob("*.png") if "ann's private boat" in
                 Image.open(p).info.get("parameters", ""))
    ann, bob = requests.Session(), requests.Session()
    for session, user in ((ann, "ann"), (bob, "bob")):
        assert session.post(f"{url}login", data={"username": user, "password": f"pw-{user}"}).ok
    assert bob.get(f"{url}gradio_api/file={saved}").status_code == 403
    assert ann.get(f"{url}gradio_api/file={saved}").status_code == 403  # nobody reads it by its path
    served = ann.get(gallery[0]["image"]["url"])  # the page's copy, in Gradio's cache, named by its content
    assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (64, 64)
    outputs = studio.settings.outputs_dir
    for path in ("/etc/passwd", f"{outputs}/../../../../etc/passwd", f"{outputs}/%2e%2e/%2e%2e/etc/passwd",
                 "../../etc/passwd", f"{outputs}/history.sqlite3"):
        answer = bob.get(f"{url}gradio_api/file={path}")
        assert answer.status_code in (403, 404) and "root:" not in answer.text, path


@pytest.mark.slow  # starts app.py in a subprocess
def test_listen_without_auth_warns_and_prints_the_lan_url(tmp_path, models_dir):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--preset", "tiny", "--listen", "--port", str(port),
         "--outputs", str(tmp_path / "out"), "--models", str(models_dir), "--loras", str(tmp_path / "loras")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        deadline = time.monotonic() + 90
        while "WARNING" not in output and time.monotonic() < deadline:
            output += proc.stdout.readline()
        assert "Serving the LAN: http://" in output and f":{port}/" in output
        assert "asks for no login" in output and "--auth user:password" in output
        while "public link" not in output and time.monotonic() < deadline:  # launched, then stopped
            output += proc.stdout.readline()
        time.sleep(3)  # launch() ends with a few checks before it blocks on the server
    finally:
        proc.send_signal(signal.SIGTERM)  # as a service manager stops it: closed like Ctrl-C, saves awaited
        code = proc.wait(timeout=30)
    assert code == 0


# --- many users at once -----------------------------------------------------------------------

@pytest.mark.slow
def test_two_clients_with_different_loras_and_presets_each_get_their_own_image(server):
    slow = dict(FAST, width=128, height=128)
    requests = {
        "a": dict(prompt="a harbour", steps=6, seed=5, loras="tiny-style:0.9", preset="tiny", **slow),
        "b": dict(prompt="a harbour", steps=6, seed=5, loras="tiny-kohya:1.1", preset="tiny-base-inpaint", **slow),
    }
    alone = {key: image_of(Client(server, verbose=False).predict(**req, api_name="/txt2img")[0][0])
             for key, req in requests.items()}
    assert not np.array_equal(alone["a"], alone["b"])
    clients = {key: Client(server, verbose=False) for key in requests}
    jobs = {key: clients[key].submit(**req, api_name="/txt2img") for key, req in requests.items() for _ in (0,)}
    more = {key: clients[key].submit(**req, api_name="/txt2img") for key, req in requests.items()}
    for key in requests:
        for job in (jobs[key], more[key]):
            gallery, info = job.result(timeout=120)
            assert np.array_equal(image_of(gallery[0]), alone[key]), key
    assert "Model: ./tiny/base" in info


@pytest.mark.slow
def test_waiting_users_see_their_place_in_the_queue(server):
    """One job renders, the next waits for the GPU in the studio (it may save beside a render: the
    page lets one more event through), the others in Gradio's queue: each is told its place."""
    clients = [Client(server, verbose=False) for _ in range(4)]
    jobs = [c.submit(prompt="queue", steps=12, seed=i, **dict(FAST, width=192, height=192), api_name="/txt2img")
            for i, c in enumerate(clients)]
    ranks, told = set(), set()
    deadline = time.monotonic() + 60
    while not all(job.done() for job in jobs) and time.monotonic() < deadline:
        for job in jobs:
            status = job.status()
            if status.code.name == "IN_QUEUE" and status.rank is not None:
                ranks.add(status.rank)
            told |= {unit.desc for unit in status.progress_data or [] if unit.desc}
        time.sleep(0.05)
    for job in jobs:
        job.result(timeout=120)
    assert ranks and max(ranks) >= 1  # someone was told they were behind another job
    assert "Waiting for the GPU: number 1 in the queue" in told


# --- history, PNG info, saving -----------------------------------------------------------------

def test_history_add_page_and_delete(tmp_path):
    from studio.history import History

    history = History(tmp_path / "history.sqlite3")
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(b"png")
        history.add_many("user:zed", "txt2img", [(files[-1], i, f"h{i}\nSteps: 2")])
    history.add_many("user:amy", "inpaint", [(tmp_path / "amy.png", 9, "amy")])
    entries = history.page("user:zed", 0, per_page=2)
    assert [e.infotext.split("\n")[0] for e in entries] == ["h2", "h1"]  # newest first, a page of two
    assert [e.infotext for e in history.page("user:zed", 1, per_page=2)] == ["h0\nSteps: 2"]
    assert history.count("user:zed") == 3 and history.count("user:amy") == 1 and history.count("nobody") == 0
    newest = entries[0]
    assert not history.delete("user:amy", newest.id)  # not hers to delete
    assert newest.path.exists()
    assert history.delete("user:zed", newest.id)
    assert not newest.path.exists() and history.get("user:zed", newest.id) is None
    assert history.count("user:zed") == 2 and files[1].exists()
    reopened = History(tmp_path / "history.sqlite3", shared=True)  # a single-user install sees all
    assert reopened.count("anyone") == 3
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_png_info_reads_an_a1111_png_and_fills_text_to_image(client, tmp_path):
    text = ("portrait of a cat, <lora:tiny-kohya:0.6>\nNegative prompt: blurry\n"
            "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3021766423, "
            "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (32, 32)).save(tmp_path / "a1111.png", pnginfo=info)
    raw, readable = client.predict(path=handle_file(tmp_path / "a1111.png"), api_name="/png_info")
    assert raw == text
    assert "**Steps:** 28" in readable and "**Negative prompt:** blurry" in readable
    from studio.requests import txt2img_settings_from_infotext

    settings = txt2img_settings_from_infotext(raw)
    assert (settings["sampler"], settings["width"], settings["height"]) == ("DPM++ 2M Karras", 512, 768)


@pytest.mark.slow
def test_a_save_killed_before_the_rename_leaves_no_half_file_and_no_row(settings, tmp_path):
    outputs = tmp_path / "outputs"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
from PIL import Image
from studio.outputs import OutputStore
real_replace = os.replace
def stall(src, dst):
    print("written", flush=True)
    time.sleep(60)
os.replace = stall
OutputStore(__import__("pathlib").Path({str(outputs)!r})).save(Image.new("RGB", (64, 64)), "p", "txt2img", 1)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    assert list(outputs.rglob("*.png.tmp"))  # the half-saved file is there...
    proc.kill()
    proc.wait()
    from studio.core import Studio

    studio = Studio(dataclasses.replace(settings, outputs_dir=outputs))
    assert not list(outputs.rglob("*.png.tmp")) and not list(outputs.rglob("*.png"))  # ...and gone
    assert studio.history.count("local") == 0


# --- limits -----------------------------------------------------------------------------------

def test_server_caps_apply_over_the_api(settings, tmp_path):
    from studio.core import Studio

    studio = Studio(dataclasses.replace(settings, outputs_dir=tmp_path / "o", cap_width=128, cap_steps=5,
                                        max_upload_mb=1))
    demo, url = launch(studio)
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="Width must be between 64 and 128"):
            client.predict(prompt="x", steps=2, **dict(FAST, width=256), api_name="/txt2img")
        with pytest.raises(AppError, match="Steps must be between 1 and 5"):
            client.predict(prompt="x", steps=6, **FAST, api_name="/txt2img")
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(big)
        assert big.stat().st_size > 2**20
        # gradio_client checks the size itself; the server's own check is what holds for any client.
        with open(big, "rb") as handle:
            answer = requests.post(f"{url}gradio_api/upload", files={"files": ("big.png", handle, "image/png")})
        assert answer.status_code == 413 and "maximum allowed size of 1048576 bytes" in answer.text
        assert len(client.predict(prompt="x", steps=2, **FAST, api_name="/txt2img")[0]) == 1  # still serving
    finally:
        close_server(demo)


# --- ZeroGPU ----------------------------------------------------------------------------------

def test_zerogpu_backend_streams_progress_and_gives_the_local_pixels(studio, settings):
    """Without `spaces` the decorator is a no-op, so the ZeroGPU path (events pickled, played back
    on the front end) runs here in-process: same pixels as the local backend, progress on the way,
    and Stop between two batches keeps the finished one."""
    import dataclasses
    import pickle
    import threading

    from studio import zerogpu
    from studio.core import Studio
    from studio.requests import Txt2ImgRequest

    assert zerogpu.spaces is None and not zerogpu.ENABLED
    zero = Studio(dataclasses.replace(settings, outputs_dir=studio.settings.outputs_dir / "zerogpu"))
    zero.backend = zerogpu.ZeroGPUBackend(zero.pool)
    request = Txt2ImgRequest(prompt="zero", steps=2, width=64, height=64, seed=3)
    steps = []
    result = zero.generate(request, on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 2), (2, 2)] and len(result.paths) == 1
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(studio.generate(request).images[0]))
    assert pickle.loads(pickle.dumps(request)) == request  # what ZeroGPU sends to its worker
    assert 20 <= zerogpu.estimate_seconds(request) <= 300

    stop = threading.Event()
    stopped = zero.generate(dataclasses.replace(request, batch_count=3),
                            on_step=lambda done, total: stop.set() if done == 2 else None, stop=stop)
    assert stopped.stopped and len(stopped.paths) == 0  # the worker's stream is closed, nothing half kept
    flux = Txt2ImgRequest(prompt="zero", steps=2, width=64, height=64, seed=3, sampler="Euler", guidance_scale=3.5)
    assert np.array_equal(np.asarray(zero.generate(flux, preset="tiny-flux").images[0]),
                          np.asarray(studio.generate(flux, preset="tiny-flux").images[0]))


def test_zerogpu_asks_for_more_time_for_bigger_work():
    from studio import zerogpu
    from studio.presets import load_preset
    from studio.requests import Txt2ImgRequest

    small = Txt2ImgRequest(steps=20, width=512, height=512)
    assert zerogpu.estimate_seconds(small) == 22  # 20 s for loading, 0.1 s a 512x512 step
    assert zerogpu.estimate_seconds(Txt2ImgRequest(steps=20, width=512, height=512, batch_size=4)) == 28
    hires = Txt2ImgRequest(steps=20, width=512, height=512, hires_fix=True, hires_scale=2, hires_denoising=0.5)
    assert zerogpu.estimate_seconds(hires) == 22 + 4  # 10 steps more, at four times the pixels
    flux = zerogpu.estimate_seconds(small, preset=load_preset("flux-dev", REPO / "presets"))
    assert flux == 20 + 8  # a FLUX.1 step costs four of SD's
