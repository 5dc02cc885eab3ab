"""Copies of saved images for the page to show.

No Gradio route may serve the outputs folder (it holds every user's images and the history
database), so it is in `blocked_paths` and Gradio refuses to take files from it. A result is shown
from a hard link (a copy across file systems) in a folder of Gradio's own cache, named by a random
token that only the page it was sent to learns. Gradio copies it into its cache from there; the
links are removed once they are an hour old.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

KEEP_SECONDS = 3600


def staging_root() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "studio-published"


def publish(paths) -> list[str]:
    """Paths Gradio may serve for the saved images `paths`, with the same names and bytes."""
    root = staging_root()
    _remove_old(root)
    folder = root / secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    published, names = [], set()
    for index, path in enumerate(paths):
        path = Path(path)
        name = path.name if path.name not in names else f"{index}-{path.name}"  # history: same name, two days
        names.add(name)
        target = folder / name
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not supported
            shutil.copyfile(path, target)
        published.append(str(target))
    return published


def _remove_old(root: Path) -> None:
    if not root.is_dir():
        return
    cutoff = time.time() - KEEP_SECONDS
    for folder in root.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
