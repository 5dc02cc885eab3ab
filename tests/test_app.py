"""app.py as a user runs it: flags, a bad preset, and a start-up that loads no weights."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO, free_port


def run_app(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, str(REPO / "app.py"), *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_unknown_preset_exits_with_a_clear_message():
    proc = run_app("--preset", "nope")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert ("Unknown preset 'nope'. Available presets: flux-dev, flux-schnell, sd-turbo, sd15, sdxl, tiny, tiny-flux, "
            "tiny-sdxl.") in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_page_comes_up_without_loading_any_weights(tmp_path):
    models = tmp_path / "models"
    port = free_port()
    proc = run_app("--preset", "tiny", "--port", str(port), "--outputs", str(tmp_path / "out"),
                   "--models", str(models), "--device", "cpu")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the page did not come up"
                time.sleep(0.5)
        # The page is up and nothing was loaded or built: the first generation does that.
        assert not models.exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_front_matter_makes_the_repo_a_space():
    import re

    import gradio
    import yaml

    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (REPO / meta["app_file"]).is_file()
    pinned = re.search(r"^gradio==([\d.]+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert meta["sdk_version"] == pinned == gradio.__version__
    assert str(meta["python_version"]).startswith("3.") and meta["suggested_hardware"]
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in meta["models"]


@pytest.mark.slow
def test_share_offline_says_so_and_keeps_serving_locally(tmp_path):
    port = free_port()
    proc = run_app("--preset", "tiny", "--share", "--port", str(port), "--outputs", str(tmp_path / "out"),
                   "--models", str(tmp_path / "models"), "--loras", str(tmp_path / "loras"))
    try:
        output, deadline = "", time.monotonic() + 120
        while "share link" not in output.lower() and time.monotonic() < deadline:
            output += proc.stdout.readline()
        assert "Could not create share link" in output or "The share link could not be made" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_ui_layer_imports_neither_torch_nor_diffusers():
    """DESIGN invariant 3: UI modules build widgets and call the studio; models stay behind it."""
    code = "import sys, studio.ui; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_memory_flags_and_their_variables_reach_the_settings(monkeypatch):
    import app

    for name in ("STUDIO_LOWVRAM", "STUDIO_MODEL_CACHE_MB", "STUDIO_VRAM_RESERVE_MB"):
        monkeypatch.delenv(name, raising=False)
    defaults = app.settings_from_args(app.parse_args([]))
    assert (defaults.lowvram, defaults.model_cache_mb, defaults.vram_reserve_mb) == (False, None, 2048)
    flagged = app.settings_from_args(app.parse_args(["--lowvram", "--model-cache-mb", "0"]))
    assert flagged.lowvram and flagged.model_cache_mb == 0  # 0: no limit, not "the preset's"
    monkeypatch.setenv("STUDIO_LOWVRAM", "1")
    monkeypatch.setenv("STUDIO_MODEL_CACHE_MB", "1500")
    monkeypatch.setenv("STUDIO_VRAM_RESERVE_MB", "512")
    from_env = app.settings_from_args(app.parse_args([]))
    assert (from_env.lowvram, from_env.model_cache_mb, from_env.vram_reserve_mb) == (True, 1500, 512)
    assert app.settings_from_args(app.parse_args(["--model-cache-mb", "900"])).model_cache_mb == 900
    assert defaults.attention == "sdpa"
    assert app.settings_from_args(app.parse_args(["--attention", "sdpa-math"])).attention == "sdpa-math"
    monkeypatch.setenv("STUDIO_ATTENTION", "sdpa-flash")
    assert app.settings_from_args(app.parse_args([])).attention == "sdpa-flash"


def test_model_folder_prompt_and_api_flags_and_their_variables_reach_the_settings(monkeypatch, tmp_path):
    import app

    for name in ("STUDIO_CHECKPOINTS", "STUDIO_VAES", "STUDIO_EMBEDDINGS", "STUDIO_PROMPT_SYNTAX", "STUDIO_DTYPE",
                 "STUDIO_API"):
        monkeypatch.delenv(name, raising=False)
    defaults = app.settings_from_args(app.parse_args([]))
    assert (defaults.checkpoints_dir.name, defaults.vaes_dir.name, defaults.embeddings_dir.name) == \
        ("checkpoints", "vae", "embeddings")
    assert (defaults.prompt_syntax, defaults.dtype, defaults.api) == ("a1111", "auto", True)
    flagged = app.settings_from_args(app.parse_args([
        "--checkpoints", str(tmp_path / "c"), "--vaes", str(tmp_path / "v"), "--embeddings", str(tmp_path / "e"),
        "--prompt-syntax", "plain", "--dtype", "bfloat16", "--api", "off"]))
    assert (flagged.checkpoints_dir, flagged.vaes_dir, flagged.embeddings_dir) == \
        (tmp_path / "c", tmp_path / "v", tmp_path / "e")
    assert (flagged.prompt_syntax, flagged.dtype, flagged.api) == ("plain", "bfloat16", False)
    monkeypatch.setenv("STUDIO_CHECKPOINTS", str(tmp_path / "env-c"))
    monkeypatch.setenv("STUDIO_API", "0")
    monkeypatch.setenv("STUDIO_PROMPT_SYNTAX", "plain")
    from_env = app.settings_from_args(app.parse_args([]))
    assert (from_env.checkpoints_dir, from_env.api, from_env.prompt_syntax) == (tmp_path / "env-c", False, "plain")
    assert app.settings_from_args(app.parse_args(["--api", "on"])).api is True  # the flag over the variable

