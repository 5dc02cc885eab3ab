"""Single-file checkpoints (civitai's `.safetensors`) and VAEs: what a file is, and how to load it
offline.

A checkpoint's family is read from its keys and shapes (nothing is loaded): the text encoder's
layout tells SD 1.x (`cond_stage_model.transformer`), SD 2.x (`cond_stage_model.model`) and SDXL
(`conditioner.embedders`); the UNet's input channels tell a plain (4), InstructPix2Pix (8) or
inpainting (9) model; the cross-attention width tells which preset's configs fit it.

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
from studio.folders import ModelFolder, file_sha256
from studio.presets import CONFIGS_DIR

OWN_VAE = "Automatic"  # A1111's name for "the model's own VAE" (its picker's first choice, its API's sd_vae)
ARCHITECTURES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
KINDS = {4: "base", 9: "inpaint", 8: "instruct"}  # UNet input channels -> what the model does
_UNET = "model.diffusion_model."


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # the path inside the folder, with its suffix, as A1111 titles it
    path: Path
    architecture: str  # sd1 | sd2 | sdxl
    kind: str  # base | inpaint | instruct
    context_dim: int  # the UNet's cross-attention width (768 SD 1.x, 1024 SD 2.x, 2048 SDXL)
    in_channels: int

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def family(self) -> str:
        return "sdxl" if self.architecture == "sdxl" else "sd"

    def describe(self) -> str:
        kind = {"base": "", "inpaint": " inpainting", "instruct": " InstructPix2Pix"}[self.kind]
        return f"{ARCHITECTURES[self.architecture]}{kind}"


def detect(path: Path, name: str) -> CheckpointInfo:
    """What the checkpoint at `path` is, from its keys and shapes; a clear error when it is not a
    Stable Diffusion checkpoint or the file is damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            shapes = {key: handle.get_slice(key).get_shape() for key in keys
                      if key == f"{_UNET}input_blocks.0.0.weight" or key.endswith("attn2.to_k.weight")}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RequestError(
            f"Checkpoint '{name}' could not be read: the file is damaged or incomplete ({exc}). Download it again."
        ) from None
    if f"{_UNET}input_blocks.0.0.weight" not in shapes:
        hint = " It looks like a LoRA: put it in the LoRA folder." if any("lora" in k for k in keys[:50]) else ""
        raise RequestError(
            f"'{name}' is not a Stable Diffusion checkpoint (no 'model.diffusion_model' UNet in it).{hint}")
    if any(key.startswith("conditioner.embedders.") for key in keys):
        architecture = "sdxl"
    elif any(key.startswith("cond_stage_model.model.") for key in keys):
        architecture = "sd2"
    elif any(key.startswith("cond_stage_model.transformer.") for key in keys):
        architecture = "sd1"
    else:
        raise RequestError(f"Checkpoint '{name}' has no text encoder of SD 1.x, 2.x or SDXL; it cannot be loaded.")
    in_channels = shapes[f"{_UNET}input_blocks.0.0.weight"][1]
    if in_channels not in KINDS:
        raise RequestError(f"Checkpoint '{name}' has a UNet with {in_channels} input channels; the studio runs "
                           "4 (plain), 8 (InstructPix2Pix) and 9 (inpainting).")
    attention = sorted(key for key in shapes if key.startswith(_UNET) and key.endswith("attn2.to_k.weight"))
    context_dim = shapes[attention[0]][1] if attention else 0
    return CheckpointInfo(name, path, architecture, KINDS[in_channels], context_dim, in_channels)


class CheckpointFolder:
    """The checkpoints (or VAEs) folder: names, what each file is, and A1111's short hashes."""

    def __init__(self, folder: Path, kind: str = "checkpoint", hash_cache: Path | None = None):
        self.files = ModelFolder(folder, kind, keep_suffix=True)
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
        for folder in staging.glob("tokenizer*"):
            if not (folder / "vocab.json").exists():
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


def config_family(folder: Path) -> tuple[str, int]:
    """(family, cross-attention width) of a diffusers config folder: what checkpoints it fits."""
    index = json.loads((folder / "model_index.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    family = "sdxl" if "XL" in index.get("_class_name", "") else "sd"
    return family, int(unet["cross_attention_dim"])
