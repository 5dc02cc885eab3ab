"""--ray-address: the studio joins a Ray cluster started apart from it (`ray start --head`, as on
a GPU cluster or KubeRay), sends its own package to the replicas and generates there."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow

JOB = """
import sys
from studio.core import Studio
from studio.requests import Txt2ImgRequest
from studio.settings import Settings
settings = Settings.from_env(preset="tiny", device="cpu", outputs_dir=sys.argv[1], ray_address=sys.argv[2],
                             models_dir=sys.argv[3])
studio = Studio(settings)
result = studio.generate(Txt2ImgRequest(prompt="a fox", steps=3, width=64, height=64, seed=2))
print("backend", type(studio.backend).__name__, studio.backend.replicas, "images", len(result.paths), flush=True)
studio.backend.close()
"""


def test_the_studio_joins_a_cluster_started_apart_and_generates_there(tmp_path, models_dir):
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    port = free_port()
    # Token auth off for this loopback-only test cluster (a real one keeps it: see README, Scale out).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    subprocess.run([*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        # Run from elsewhere than the checkout: the replicas get the studio from the job, not the disk.
        done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + JOB,
                               str(tmp_path / "outputs"), f"127.0.0.1:{port}", str(models_dir)],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert "backend RayBackend 1 images 1" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
        assert len(list((tmp_path / "outputs" / "txt2img").rglob("*.png"))) == 1
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
