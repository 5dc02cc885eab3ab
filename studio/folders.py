"""A folder of user files of one kind (LoRAs, checkpoints, VAEs, embeddings), read safely.

- Only `.safetensors` files are offered. `.ckpt`, `.pt`, `.pth` and `.bin` are pickles, which can
  run code when loaded: they are listed as refused, with the reason, and never opened.
- A name is looked up among the files found; it is never joined to a path, so `../x`, absolute
  paths and symlinks that lead out of the folder cannot reach a file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from studio.errors import RequestError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
PICKLE_REASON = "pickles can run code when loaded"


def scan(folder: Path, suffixes: tuple[str, ...], keep_suffix: bool = False) -> dict[str, Path]:
    """name -> file for the files under `folder` (any depth) with these suffixes. The name is the
    path relative to the folder (without the suffix unless `keep_suffix`). Symlinks that lead out
    of the folder are skipped."""
    if not folder.is_dir():
        return {}
    root = folder.resolve()
    found = {}
    for path in sorted(folder.rglob("*")):
        real = path.resolve()
        if path.suffix.lower() in suffixes and real.is_file() and real.is_relative_to(root):
            relative = path.relative_to(folder)
            found[(relative if keep_suffix else relative.with_suffix("")).as_posix()] = real
    return found


class ModelFolder:
    """The `.safetensors` files (and `.gguf` where a folder takes them) of one kind, by name."""

    def __init__(self, folder: Path, kind: str, keep_suffix: bool = False,
                 suffixes: tuple[str, ...] = (".safetensors",)):
        self.folder = Path(folder)
        self.kind = kind  # "LoRA", "checkpoint", ...: for messages
        self.keep_suffix = keep_suffix
        self.suffixes = suffixes  # never a pickle's: PICKLE_SUFFIXES are refused

    def files(self) -> dict[str, Path]:
        return scan(self.folder, self.suffixes, self.keep_suffix)

    def names(self) -> list[str]:
        return sorted(self.files())

    def refused(self) -> list[str]:
        """Pickle files found in the folder, which are never loaded."""
        return sorted(path.name for path in scan(self.folder, PICKLE_SUFFIXES).values())

    def path(self, name: str, other_names: tuple[str, ...] = ()) -> Path:
        """The file of `name`, or a RequestError that says what to pick instead (among the files
        and `other_names`, names known elsewhere)."""
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f"A {self.kind} name is empty: pick one from the list.")
        files = self.files()
        if name in files:
            return files[name]
        if Path(name).suffix.lower() in PICKLE_SUFFIXES or name in scan(self.folder, PICKLE_SUFFIXES):
            raise RequestError(
                f"The {self.kind} '{name}' is a pickle file (.ckpt/.pt/.pth/.bin); {PICKLE_REASON}, so only "
                ".safetensors files are used. Convert it to .safetensors or download that version."
            )
        known = ", ".join(sorted({*files, *other_names})) or f"none yet: put .safetensors files in {self.folder}"
        raise RequestError(f"Unknown {self.kind} '{name}'. Available {self.kind}s: {known}.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
