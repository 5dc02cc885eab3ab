"""At start: one line when the installed packages differ from the tested set (requirements.lock)
in a way known to break the studio, with the command that repairs it, instead of a failure at the
first generation."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path
from typing import Callable

from packaging.markers import Marker
from packaging.version import InvalidVersion, Version

from studio.settings import REPO_ROOT

# STUDIO_LOCK_FILE: the lock being tried (scripts/update-lock.sh runs the suite on a new one before writing it).
LOCK = Path(os.environ.get("STUDIO_LOCK_FILE") or REPO_ROOT / "requirements.lock")
REPAIR = "bash scripts/setup-venv.sh (or: pip install -r requirements.txt)"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$", re.M)


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """{package: version} of the lock for this Python and platform (the lock is universal: a
    package may be pinned once per Python version, each pin with its marker)."""
    if not lock.is_file():
        return {}
    pins: dict[str, str] = {}
    for name, version, marker in _PIN.findall(lock.read_text(encoding="utf-8")):
        if not marker or Marker(marker).evaluate():
            pins[_normal(name)] = version
    return pins


def known_breaks(installed: Callable[[str], str | None] | None = None, locked: dict[str, str] | None = None,
                 min_peft: str | None = None) -> list[str]:
    """What is installed that the studio knows will fail. `installed(name)` gives a package's
    version (None when absent); `min_peft` is transformers' own minimum (read from it by default)."""
    installed = installed or _installed
    locked = locked_versions() if locked is None else locked
    problems = []
    peft, transformers = installed("peft"), installed("transformers")
    if peft and transformers:
        needed = min_peft or _transformers_min_peft()
        if needed and _older(peft, needed):
            problems.append(f"transformers {transformers} needs peft >= {needed}, but peft {peft} is installed "
                            "(LoRAs fail to load)")
    gradio = installed("gradio")
    if gradio and locked.get("gradio") and gradio != locked["gradio"]:
        problems.append(f"gradio {gradio} is installed, the studio was tested with {locked['gradio']} (the page and "
                        "its route guard are built for that version)")
    return problems


def startup_warning(**kwargs) -> str | None:
    """The one line to print at start, or None when nothing known breaks."""
    problems = known_breaks(**kwargs)
    if not problems:
        return None
    return f"WARNING: {'; '.join(problems)}. Repair with: {REPAIR}"


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _transformers_min_peft() -> str | None:
    try:
        from transformers.integrations import peft as transformers_peft
    except Exception:  # transformers broken or absent: the import error will say so itself
        return None
    return getattr(transformers_peft, "MIN_PEFT_VERSION", None)


def _older(version: str, minimum: str) -> bool:
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return False


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
