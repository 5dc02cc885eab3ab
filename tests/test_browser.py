"""The page in real Chromium (Debian's, headless), driven by Playwright."""

import shutil

import pytest

from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        yield page
        browser.close()


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
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img.png"), full_page=True)


def test_bad_input_shows_a_message_in_the_page(page):
    page.get_by_label("Width").first.fill("100")
    page.get_by_label("Width").first.press("Enter")
    page.locator("#txt2img-generate").click()
    page.get_by_text("Width must be a multiple of 8").first.wait_for(timeout=30_000)
