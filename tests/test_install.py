"""The install reproduces the tested set: requirements.lock, requirements.txt's pins, this venv,
and the start-up line that names a known-broken combination with its repair."""

import re
from importlib import metadata

from studio.install_check import REPAIR, known_breaks, locked_versions, startup_warning
from tests.conftest import REPO

PLATFORM_BUILD = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def test_the_lock_pins_the_tested_set_and_leaves_torch_to_the_machine():
    locked = locked_versions()
    assert {"gradio", "diffusers", "transformers", "peft", "pytest", "starlette"} <= set(locked)
    assert not [name for name in locked if PLATFORM_BUILD.match(name)]
    assert "-c requirements.lock" in (REPO / "requirements-dev.txt").read_text()
    assert "torch" in (REPO / "requirements.lock").read_text().split("\n", 3)[1]  # the header names it


def test_requirements_txt_pins_the_same_versions_as_the_lock():
    """A Space installs requirements.txt alone: its pins must be the lock's."""
    text = (REPO / "requirements.txt").read_text()
    marker = next(line for line in text.splitlines() if line.startswith("# --- tested set"))
    pin = re.compile(r"^([A-Za-z0-9][\w.-]*==[^\s;]+(?: ; .+)?)$", re.M)
    pinned = set(pin.findall(text.split(marker, 1)[1]))
    assert len(pinned) > 60
    assert pinned <= set(pin.findall((REPO / "requirements.lock").read_text()))


def test_this_venv_holds_the_locked_versions():
    """What the tests run on is what the lock says (setup-venv.sh installs with it as constraints)."""
    differing = {}
    for name, version in locked_versions().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # another platform's or Python's package
        if installed != version:
            differing[name] = (installed, version)
    assert differing == {}


def test_no_warning_on_the_tested_set():
    assert known_breaks() == [] and startup_warning() is None


def test_transformers_newer_than_its_peft_is_named_with_the_repair():
    installed = {"transformers": "5.24.0", "peft": "0.21.2", "gradio": locked_versions()["gradio"]}.get
    line = startup_warning(installed=installed, min_peft="0.22.0")
    assert line.startswith("WARNING: transformers 5.24.0 needs peft >= 0.22.0, but peft 0.21.2 is installed")
    assert line.endswith(f"Repair with: {REPAIR}") and "\n" not in line


def test_another_gradio_than_the_guard_was_built_for_is_named():
    installed = {"gradio": "6.40.0"}.get
    (problem,) = known_breaks(installed=installed, locked={"gradio": "6.31.0"})
    assert "gradio 6.40.0 is installed, the studio was tested with 6.31.0" in problem
