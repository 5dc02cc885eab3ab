"""The page in real Chromium (Debian's, headless), driven by Playwright."""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from studio.ui import close_server
from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


pytestmark = pytest.mark.slow  # a real browser: run by `bash scripts/test.sh`, not by `-m "not slow"`


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    """A fresh page (its own browser context and Gradio session) for every test: no test sees
    what another left in the page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(server)
    yield page
    context.close()


def test_type_a_prompt_generate_and_see_the_image(page):
    page.locator("#txt2img-prompt textarea").fill("a small red boat")
    page.get_by_label("Steps").first.fill("3")
    page.locator("#txt2img-generate").click()
    image = page.locator("#txt2img-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    info = page.locator("#txt2img-info textarea")
    info.wait_for(state="visible")
    page.wait_for_function(
        "() => document.querySelector('#txt2img-info textarea').value.includes('Steps: 3')", timeout=30_000
    )
    assert info.input_value().startswith("a small red boat\nSteps: 3, Sampler: Euler a")
    assert image.evaluate("img => img.naturalWidth") == 128  # the tiny preset's default size
    stats = page.locator("#txt2img-stats")
    page.wait_for_function("() => document.querySelector('#txt2img-stats').innerText.includes('Time taken')",
                           timeout=30_000)
    assert re.fullmatch(r"Time taken: \d+\.\d s", stats.inner_text().strip())  # no GPU here: no memory part
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img.png"), full_page=True)


def test_bad_input_shows_a_message_in_the_page(page):
    page.get_by_label("Width").first.fill("100")
    page.get_by_label("Width").first.press("Enter")
    page.locator("#txt2img-generate").click()
    page.get_by_text("Width must be a multiple of 8").first.wait_for(timeout=30_000)


def test_inpaint_a_painted_stroke_then_send_the_result_on(page, tmp_path):
    y, x = np.mgrid[0:128, 0:128]
    Image.fromarray(np.stack([x * 2, y * 2, x + y], axis=-1).astype(np.uint8)).save(tmp_path / "photo.png")
    page.get_by_role("tab", name="Inpaint").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#inpaint-editor button[aria-label=Upload]").click()
    chooser.value.set_files(str(tmp_path / "photo.png"))
    canvas = page.locator("#inpaint-editor canvas").first
    page.wait_for_function("() => document.querySelector('#inpaint-editor canvas').width > 0")
    page.wait_for_timeout(1500)  # the editor fits the picture to its canvas
    page.locator("#inpaint-editor button[aria-label=Brush]").click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy)
    page.mouse.down()
    for i in range(12):
        page.mouse.move(cx - 40 + i * 7, cy + i * 2)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a wooden door")
    page.locator("#inpaint-generate").click()
    page.locator("#inpaint-gallery img").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#inpaint-info textarea').value.includes('Mask blur: 4')", timeout=30_000
    )
    assert page.locator("#inpaint-info textarea").input_value().startswith("a wooden door\nSteps:")
    page.screenshot(path=str(ARTIFACTS / "inpaint.png"), full_page=True)

    page.locator("#inpaint-send-img2img").click()
    page.locator("#img2img-image img").first.wait_for(state="visible", timeout=30_000)
    assert page.locator("#img2img-prompt textarea").input_value() == "a wooden door"
    expect(page.get_by_role("tab", name="Image to Image")).to_have_attribute("aria-selected", "true")


def test_pose_editor_moves_a_joint_where_the_map_is_clicked(page):
    page.get_by_role("tab", name="Control").click()
    page.get_by_label("Pose (openpose)").check()
    skeleton = page.locator("#control-map img").first
    skeleton.wait_for(state="visible", timeout=60_000)
    skeleton.evaluate("img => img.complete && img.naturalWidth > 0 ? true : new Promise(r => img.onload = r)")
    box = skeleton.bounding_box()
    # The default joint is the right wrist; put it at a quarter of the way in from the top left.
    skeleton.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
    page.wait_for_function(
        "() => !document.querySelector('#control-pose-json .cm-content').innerText.includes('180, 60, 1')",
        timeout=30_000,
    )  # the arms-up pose had the right wrist at (180, 60)
    pose = json.loads(page.locator("#control-pose-json .cm-content").inner_text())
    x, y, confidence = pose["people"][0]["pose_keypoints_2d"][12:15]
    assert abs(x - 128) <= 2 and abs(y - 128) <= 2 and confidence == 1



def test_canny_mode_finds_the_edges_of_an_uploaded_photo_and_generates_from_them(page, tmp_path):
    photo = np.zeros((128, 128, 3), dtype=np.uint8)
    photo[32:96, 32:96] = 255  # a white square: its edges are its outline
    Image.fromarray(photo).save(tmp_path / "square.png")
    page.get_by_role("tab", name="Control").click()
    page.get_by_label("Edges of a photo (canny)").check()
    page.locator("#control-edges-photo input[type=file]").set_input_files(str(tmp_path / "square.png"))
    edges = page.locator("#control-map img").first
    edges.wait_for(state="visible", timeout=60_000)  # uploading runs "Find the edges"
    edges.evaluate("img => img.complete && img.naturalWidth > 0 ? true : new Promise(r => img.onload = r)")
    white = edges.evaluate("""img => {
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; const at = [];
        for (let i = 0; i < d.length; i += 4) if (d[i] > 128) at.push([(i / 4) % c.width, Math.floor(i / 4 / c.width)]);
        return at; }""")
    assert white and all(min(abs(x - 32), abs(x - 95), abs(y - 32), abs(y - 95)) <= 1 for x, y in white)
    page.locator("#control-prompt textarea").fill("a box")
    page.locator("#control-generate").click()
    page.locator("#control-gallery img").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        """() => document.querySelector('#control-info textarea').value.includes('ControlNet: "canny, weight 1')""",
        timeout=30_000)

def test_stop_stops_only_the_job_of_the_user_who_pressed_it(server, page, settings):
    """Two browser sessions: A starts a long job, B queues one; A presses Stop. A's job ends at
    once (and frees the GPU), B's runs to the end."""
    browser = page.context.browser
    context_a, context_b = (browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2))
    page_a, page_b = context_a.new_page(), context_b.new_page()
    for p in (page_a, page_b):
        p.goto(server)
        p.locator("#txt2img-prompt textarea").fill("a long job")
    for p, count, side in ((page_a, "4", "512"), (page_b, "1", "256")):
        p.get_by_label("Width").first.fill(side)
        p.get_by_label("Height").first.fill(side)
        p.get_by_label("Steps").first.fill("50")
        p.get_by_label("Batch count").first.fill(count)
        p.get_by_label("Batch count").first.press("Enter")
    def finished(p, previous=""):
        """Wait for a new result (a random seed makes every infotext new)."""
        p.wait_for_function(
            "previous => { const v = document.querySelector('#txt2img-info textarea').value;"
            " return v.includes('Steps: 50') && v !== previous; }", arg=previous, timeout=120_000)

    def large_images() -> list:
        return [path for path in settings.outputs_dir.rglob("*.png") if Image.open(path).size == (512, 512)]

    before = large_images()
    page_a.locator("#txt2img-generate").click()
    page_a.locator("#txt2img-gallery img").first.wait_for(state="visible", timeout=60_000)  # a preview: running
    page_b.locator("#txt2img-generate").click()
    page_b.wait_for_timeout(300)  # B's job is in the queue, behind A's
    page_a.locator("#txt2img-stop").click()
    finished(page_b)
    # Jobs hold the GPU lock one at a time and a job saves its images as soon as it lets go: had
    # A's job (four batches at 512x512) run to its end before B's, its images would be saved now.
    assert large_images() == before
    page_a.wait_for_timeout(1000)
    assert page_a.locator("#txt2img-info textarea").input_value() == ""  # A's job made no result
    assert page_a.locator("#txt2img-gallery img").count() == 0  # and its last preview was taken away
    context_a.close()
    context_b.close()


def test_history_shows_a_generation_and_reuses_its_parameters(page):
    page.get_by_role("tab", name="Text to Image").click()
    page.locator("#txt2img-prompt textarea").fill("a lantern for the history")
    for label, value in (("Steps", "4"), ("Width", "64"), ("Height", "64"), ("Batch count", "1")):
        page.get_by_label(label).first.fill(value)
        page.get_by_label(label).first.press("Enter")
    page.get_by_text("Hires. fix", exact=True).click()  # open the accordion
    hires = page.locator("#txt2img-hires input")
    hires.check()
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-info textarea').value.startsWith('a lantern for the history')",
        timeout=60_000)
    assert "Hires upscale: 2" in page.locator("#txt2img-info textarea").input_value()
    page.locator("#txt2img-prompt textarea").fill("something else")
    hires.uncheck()
    page.get_by_role("tab", name="History").click()
    page.locator("#history-gallery img").first.wait_for(state="visible", timeout=30_000)
    assert page.locator("#history-info textarea").input_value().startswith("a lantern for the history")
    page.locator("#history-reuse").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-prompt textarea').value === 'a lantern for the history'",
        timeout=30_000)
    expect(page.get_by_role("tab", name="Text to Image")).to_have_attribute("aria-selected", "true")
    expect(hires).to_be_checked()  # the image was made with Hires. fix: reusing it turns it back on


@pytest.fixture(scope="module")
def logins_server(settings, tmp_path_factory):
    import dataclasses

    from studio.core import Studio
    from tests.test_shared import launch

    studio = Studio(dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("browser-logins"),
                                        auth=(("ann", "pw-ann"),)))
    demo, url = launch(studio)
    yield url
    close_server(demo)


def test_log_in_through_the_page_then_generate_behind_the_guard(browser, logins_server):
    """The guard lets an anonymous browser reach the login page and nothing else: the page must
    still load, take the login and then work (its results served from their published copies)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    refused = []
    page.on("response", lambda response: refused.append(response.url) if response.status in (401, 403) else None)
    page.goto(logins_server)
    page.get_by_label("username").fill("ann")
    page.get_by_label("password").fill("pw-ann")
    page.get_by_role("button", name="Login").click()
    page.locator("#txt2img-prompt textarea").fill("a lantern")
    page.get_by_label("Steps").first.fill("2")
    page.locator("#txt2img-generate").click()
    image = page.locator("#txt2img-gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    assert image.evaluate("img => img.naturalWidth") == 128
    assert refused == []  # nothing the page asked for, before or after the login, was refused
    context.close()


def test_picking_flux_fits_the_page_to_its_family_and_generates(page):
    """FLUX.1 has no negative prompt, no CFG (a distilled guidance instead) and no Clip skip: the
    page hides them when the model is picked, and shows them again for an SD model."""
    def slider(label):
        return page.get_by_role("slider", name=f"range slider for {label}")

    negative, clip_skip = page.locator("#txt2img-negative"), slider("Clip skip")
    expect(negative).to_be_visible()
    expect(clip_skip).to_be_visible()
    picker = page.locator("#model-picker input")
    picker.fill("tiny-flux")
    page.get_by_role("option", name="tiny-flux", exact=True).click()
    expect(negative).to_be_hidden()
    expect(clip_skip).to_be_hidden()
    expect(slider("CFG scale")).to_have_count(0)
    expect(slider("Distilled CFG Scale").first).to_be_visible()
    page.get_by_role("tab", name="Instruct").click()
    expect(slider("Image CFG scale")).to_be_hidden()
    page.get_by_role("tab", name="Text to Image").click()
    page.locator("#txt2img-prompt textarea").fill("a lighthouse at night")
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-info textarea').value.includes('Distilled CFG Scale: 3.5')",
        timeout=60_000)
    info = page.locator("#txt2img-info textarea").input_value()
    assert "Sampler: Euler," in info and "Negative prompt" not in info and "Model: ./tiny/flux/base" in info
    picker.fill("tiny")
    page.get_by_role("option", name="tiny", exact=True).click()
    expect(negative).to_be_visible()
    expect(slider("CFG scale").first).to_be_visible()


def test_a_speed_preset_sets_its_lora_sampler_steps_and_cfg_in_one_pick(page):
    """Picking "LCM-LoRA" puts the preset's few-step LoRA in the LoRA picker and its sampler, steps and
    CFG in the sliders; the image is made with them; "off" takes the LoRA out and brings the defaults back."""
    page.get_by_label("Speed preset").first.click()
    page.get_by_role("option", name="LCM-LoRA · 4 steps").click()
    page.locator("#txt2img-prompt textarea").fill("a lighthouse at night")
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-info textarea').value.includes('Sampler: LCM')", timeout=60_000)
    info = page.locator("#txt2img-info textarea").input_value()
    assert "<lora:tiny-style:0.8>" in info and "Steps: 4," in info and "CFG scale: 1.5" in info
    page.get_by_label("Speed preset").first.click()
    page.get_by_role("option", name="off").click()
    page.locator("#txt2img-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img-info textarea').value.includes('Sampler: Euler a')", timeout=60_000)
    info = page.locator("#txt2img-info textarea").input_value()
    assert "lora" not in info.lower() and "Steps: 8," in info and "CFG scale: 7" in info
