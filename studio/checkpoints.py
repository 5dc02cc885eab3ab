"""Single-file checkpoints (civitai's `.safetensors`) and VAEs: what a file is, and how to load it
offline.

A checkpoint's family is read from its keys and shapes (nothing is loaded): each model family
(studio/families/) recognises its own files, says what the file does (base, inpaint, instruct)
and gives a fingerprint (e.g. the text width) that tells which preset's configs fit it. Files are
`.safetensors`, or `.gguf` (quantized transformers; no code in them either).

diffusers' `from_single_file` needs the diffusers-format configs of the family (JSON and tokenizer
files) or it goes to the hub. They ship in studio/configs/ (the CLIP tokenizer's merges once,
gzipped; its vocabulary is derived from them), are assembled once into a folder under the models
folder, and passed as `config=` with `local_files_only=True`.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from studio.errors import RequestError
from studio.families import FAMILIES, Detected, Family
from studio.folders import ModelFolder, file_sha256
from studio.presets import CONFIGS_DIR

OWN_VAE = "Automatic"  # A1111's name for "the model's own VAE" (its picker's first choice, its API's sd_vae)
CHECKPOINT_SUFFIXES = (".safetensors", ".gguf")


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # the path inside the folder, with its suffix, as A1111 titles it
    path: Path
    detected: Detected

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def family(self) -> str:
        return self.detected.family

    @property
    def kind(self) -> str:  # base | inpaint | instruct
        return self.detected.kind

    @property
    def architecture(self) -> str:
        return self.detected.architecture

    def describe(self) -> str:
        kind = {"base": "", "inpaint": " inpainting", "instruct": " InstructPix2Pix"}[self.kind]
        if self.detected.transformer_only:
            kind += " transformer" + (" (GGUF)" if self.path.suffix.lower() == ".gguf" else "")
        return f"{self.architecture}{kind}"


def _read_keys(path: Path):
    """(tensor names, shape of a name) of a .safetensors or .gguf file, reading headers only."""
    if path.suffix.lower() == ".gguf":
        from gguf import GGUFReader

        tensors = {tensor.name: tuple(int(d) for d in reversed(tensor.shape)) for tensor in GGUFReader(path).tensors}
        return list(tensors), tensors.__getitem__
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
    return keys, shapes.__getitem__


def detect(path: Path, name: str) -> CheckpointInfo:
    """What the checkpoint at `path` is, from its keys and shapes; a clear error when no family
    knows it or the file is damaged."""
    from safetensors import SafetensorError

    try:
        keys, shape = _read_keys(path)
    except (SafetensorError, OSError, ValueError, KeyError, IndexError) as exc:
        raise RequestError(
            f"Checkpoint '{name}' could not be read: the file is damaged or incomplete ({exc}). Download it again."
        ) from None
    for family in FAMILIES:
        try:
            detected = family.detect(keys, shape)
        except RequestError as exc:
            raise RequestError(f"Checkpoint '{name}': {exc}") from None
        if detected is not None:
            return CheckpointInfo(name, path, detected)
    hint = " It looks like a LoRA: put it in the LoRA folder." if any("lora" in k for k in keys[:50]) else ""
    known = ", ".join(family.title for family in FAMILIES)
    raise RequestError(f"'{name}' is not a checkpoint of a model family the studio runs ({known}).{hint}")


class CheckpointFolder:
    """The checkpoints (or VAEs) folder: names, what each file is, and A1111's short hashes."""

    def __init__(self, folder: Path, kind: str = "checkpoint", hash_cache: Path | None = None):
        self.files = ModelFolder(folder, kind, keep_suffix=True,
                                 suffixes=CHECKPOINT_SUFFIXES if kind == "checkpoint" else (".safetensors",))
        self._lock = threading.Lock()
        self._info: dict[tuple, CheckpointInfo] = {}
        # Hashing a 2-7 GB file takes seconds: the hashes are kept in a JSON file (A1111 keeps one
        # too), keyed by path, size and modification time, so each file is read once, ever.
        self._hash_cache = hash_cache
        self._hashes: dict[str, str] = {}  # what this process knows; the file may know more

    def names(self) -> list[str]:
        return self.files.names()

    def refused(self) -> list[str]:
        return self.files.refused()

    def path(self, name: str) -> Path:
        return self.files.path(name)

    def info(self, name: str) -> CheckpointInfo:
        path = self.path(name)
        key = _file_key(path)
        with self._lock:
            if key not in self._info:
                self._info[key] = detect(path, name)
            return self._info[key]

    def short_hash(self, path: Path) -> str:
        """A1111's "Model hash": the first 10 hex digits of the file's sha256."""
        key = "|".join(map(str, _file_key(path)))
        with self._lock:
            if key not in self._hashes:  # another process (or an earlier run) may have hashed it
                self._hashes.update(self._read_hash_file())
            if key not in self._hashes:
                self._hashes[key] = file_sha256(path)[:10]
                self._write_hash_file()
            return self._hashes[key]

    def _read_hash_file(self) -> dict[str, str]:
        if self._hash_cache is None:
            return {}
        try:
            known = json.loads(self._hash_cache.read_text())
            return known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_hash_file(self) -> None:
        if self._hash_cache is None:
            return
        self._hash_cache.parent.mkdir(parents=True, exist_ok=True)
        partial = self._hash_cache.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({**self._read_hash_file(), **self._hashes}, indent=0))
        os.replace(partial, self._hash_cache)


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def strip_a1111_title(name: str) -> str:
    """A1111 titles checkpoints `name.safetensors [0123456789]`; the name is what is looked up."""
    if name.endswith("]") and " [" in name:
        return name[: name.rindex(" [")]
    return name


# --- configs for from_single_file ------------------------------------------------------------------

def _clip_tokenizer_files() -> tuple[str, str]:
    """(vocab.json, merges.txt) of the CLIP BPE tokenizer that SD 1.x, 2.x and SDXL share, from the
    merges shipped in studio/configs. The vocabulary is the 256 byte symbols, the same with `</w>`,
    every merge in order, then the two special tokens (that order is CLIP's)."""
    merges_text = gzip.decompress((CONFIGS_DIR / "clip-merges.txt.gz").read_bytes()).decode("utf-8")
    merges = [line for line in merges_text.splitlines()[1:] if line]
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = [chr(b) for b in printable]
    symbols += [chr(256 + i) for i in range(256 - len(printable))]  # the other bytes, in order
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False), merges_text


def config_folder(source: Path, cache_root: Path) -> Path:
    """A folder of `source`'s configs only (JSON and tokenizer files, no weights), for
    `from_single_file(config=...)`. Built once under `cache_root`, atomically."""
    target = cache_root / f"{source.name}-{_config_fingerprint(source)}"
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".config-", dir=cache_root))
    try:
        tokenizer_files = None
        for file in source.rglob("*"):
            if file.suffix not in (".json", ".txt") or file.name.startswith("diffusion_pytorch_model"):
                continue
            destination = staging / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)
        for folder in staging.glob("tokenizer*"):  # CLIP's BPE files, where a config names it (not T5's)
            config = folder / "tokenizer_config.json"
            clip = config.is_file() and "CLIPTokenizer" in config.read_text(encoding="utf-8")
            if clip and not (folder / "vocab.json").exists():
                tokenizer_files = tokenizer_files or _clip_tokenizer_files()
                (folder / "vocab.json").write_text(tokenizer_files[0], encoding="utf-8")
                (folder / "merges.txt").write_text(tokenizer_files[1], encoding="utf-8")
        try:
            os.replace(staging, target)
        except OSError:  # built meanwhile by another thread or process: theirs is the same
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _config_fingerprint(source: Path) -> str:
    """Changes when a config file of `source` changes, so a stale assembled folder is not reused."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(source.rglob("*.json")):
        digest.update(file.relative_to(source).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def fits_config(info: CheckpointInfo, family: Family, folder: Path) -> bool:
    """Whether a config folder of `family` loads the checkpoint `info`."""
    return family.name == info.family and family.config_fingerprint(folder) == info.detected.fingerprint
