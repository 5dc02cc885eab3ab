"""Shared fixtures: one tiny model set per test session, a Studio on it, and a live server."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

# Before anything imports huggingface_hub or gradio: never reach for the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# One thread for torch per test process: the tiny models' ops are too small to gain from two, and
# with `-n 2` (pytest-xdist) two processes of two threads each fought over two cores (130 s -> 56 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def _gradio_temp(tmp_path_factory):
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The tiny models, built (about 10 s) through the project's own builder when missing or stale."""
    from studio import tiny

    # Kept between runs (the builder rebuilds when tiny.VERSION changes), so a quick `-m "not slow"`
    # run does not spend 10 s building; CI starts from a clean machine and builds once.
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sd-studio" / "test-models"
    root = Path(os.environ.get("STUDIO_TEST_MODELS") or default)
    tiny.ensure_built(root / "tiny")
    return root


@pytest.fixture(scope="session")
def settings(models_dir, tmp_path_factory):
    """Settings on the tiny preset. The presets are a copy of the shipped ones plus
    `tiny-base-inpaint`: tiny without an inpaint model, so inpaint runs on the 4-channel base UNet,
    and `tiny-flux-no-fill`: the tiny FLUX.1 without its Fill transformer."""
    from studio.settings import REPO_ROOT, Settings

    presets = tmp_path_factory.mktemp("presets")
    for path in (REPO_ROOT / "presets").glob("*.toml"):
        shutil.copy(path, presets)
    tiny_text = (presets / "tiny.toml").read_text()
    (presets / "tiny-base-inpaint.toml").write_text(tiny_text.replace('inpaint = "./tiny/inpaint"\n', ""))
    flux_text = (presets / "tiny-flux.toml").read_text()  # and FLUX.1 without Fill: FluxInpaintPipeline
    (presets / "tiny-flux-no-fill.toml").write_text(flux_text.replace('inpaint = "./tiny/flux/fill"\n', ""))
    return Settings(preset="tiny", models_dir=models_dir, outputs_dir=tmp_path_factory.mktemp("outputs"),
                    presets_dir=presets, loras_dir=tmp_path_factory.mktemp("loras"), device="cpu",
                    checkpoints_dir=tmp_path_factory.mktemp("checkpoints"), vaes_dir=tmp_path_factory.mktemp("vae"),
                    embeddings_dir=tmp_path_factory.mktemp("embeddings"),
                    styles_file=tmp_path_factory.mktemp("styles") / "styles.csv",
                    wildcards_dir=tmp_path_factory.mktemp("wildcards"),
                    upscalers_dir=tmp_path_factory.mktemp("upscalers"))


@pytest.fixture(scope="session")
def studio(settings):
    from studio.core import Studio

    return Studio(settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(studio, settings):
    """The real Gradio app on a free loopback port; yields its URL."""
    from studio.ui import CSS, build, close_server, launch_options

    demo = build(studio)
    demo.queue(max_size=settings.queue_size)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                css=CSS, **launch_options(studio))
    yield f"http://127.0.0.1:{port}/"
    close_server(demo)


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)



@pytest.fixture(scope="session")
def base_inpaint_preset() -> str:
    return "tiny-base-inpaint"
