"""Prompt styles in A1111's `styles.csv` (`name,prompt,negative_prompt`): a style's prompt holds
`{prompt}` where the user's prompt goes, or is appended to it after a comma; its negative prompt
likewise. Several styles apply in the order given.

The styles file is the server's (A1111's place: beside app.py); with logins each user saves their
own styles in their own file under the outputs folder (never served), and sees the server's and
their own.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from studio.errors import RequestError

PLACEHOLDER = "{prompt}"
MAX_STYLES = 1000
MAX_STYLE_CHARS = 5000
FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def apply_text(style_text: str, text: str) -> str:
    """`text` with a style's text applied: into its `{prompt}`, or after a comma."""
    if not style_text:
        return text
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, text)
    return f"{text}, {style_text}" if text else style_text


def read_styles(path: Path) -> dict[str, Style]:
    """A styles.csv as {name: Style}; a missing file is no styles. Rows without a name are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"The styles file {path} cannot be read ({exc}). Fix or remove it.") from None
    styles: dict[str, Style] = {}
    for row in csv.DictReader(io.StringIO(text)):
        name = (row.get("name") or "").strip()
        if name and len(styles) < MAX_STYLES:
            styles[name] = Style(name, (row.get("prompt") or "").strip(), (row.get("negative_prompt") or "").strip())
    return styles


class StyleLibrary:
    def __init__(self, shared_file: Path, own_dir: Path, per_user: bool):
        self.shared_file = shared_file
        self.own_dir = own_dir  # per-login files, when `per_user`
        self.per_user = per_user
        self._lock = threading.Lock()

    def _own_file(self, owner: str) -> Path:
        """`owner`'s file: named by a hash, so no login name reaches a path."""
        if not self.per_user:
            return self.shared_file
        digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:24]
        return self.own_dir / f"{digest}.csv"

    def styles(self, owner: str = "local") -> dict[str, Style]:
        """The server's styles, then `owner`'s own (an own style of the same name wins)."""
        styles = read_styles(self.shared_file)
        if self.per_user:
            styles |= read_styles(self._own_file(owner))
        return styles

    def names(self, owner: str = "local") -> list[str]:
        return list(self.styles(owner))

    def apply(self, prompt: str, negative_prompt: str, names, owner: str = "local") -> tuple[str, str]:
        """(prompt, negative prompt) with the named styles applied in order; an unknown name says so."""
        if not names:
            return prompt, negative_prompt
        if isinstance(names, str) or not all(isinstance(name, str) for name in names):
            raise RequestError("Styles must be a list of style names.")
        styles = self.styles(owner)
        for name in names:
            style = styles.get(name)
            if style is None:
                known = ", ".join(list(styles)[:20]) or f"none yet: add them to {self.shared_file.name}"
                raise RequestError(f"There is no style named {name[:80]!r}. Styles: {known}.")
            prompt = apply_text(style.prompt, prompt)
            negative_prompt = apply_text(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def save(self, owner: str, name: str, prompt: str, negative_prompt: str) -> None:
        """Save (or replace) a style from the current prompts, written whole or not at all."""
        name = (name or "").strip()
        if not name:
            raise RequestError("Give the style a name.")
        for label, text in (("Style name", name), ("Prompt", prompt), ("Negative prompt", negative_prompt)):
            if not isinstance(text, str) or len(text) > MAX_STYLE_CHARS or "\x00" in text:
                raise RequestError(f"{label} must be text of at most {MAX_STYLE_CHARS} characters.")
        path = self._own_file(owner)
        with self._lock:
            styles = read_styles(path)
            if name not in styles and len(styles) >= MAX_STYLES:
                raise RequestError(f"At most {MAX_STYLES} styles can be saved; delete some from {path.name}.")
            styles[name] = Style(name, prompt.strip(), negative_prompt.strip())
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            for style in styles.values():
                writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
            partial = path.with_name(path.name + ".partial")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(buffer.getvalue(), encoding="utf-8")
                os.replace(partial, path)  # whole or not at all
            except OSError as exc:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
                raise RequestError(f"The style could not be saved in {path.parent} ({exc.strerror or exc}).") from None
