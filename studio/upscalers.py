"""Model upscalers (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT and the rest spandrel knows from their
weights) from a folder (`--upscalers`, A1111's `models/ESRGAN`), and the tiled upscale that lets a
4x of a 2048x2048 image fit in memory.

Files: `.safetensors`; `.pth`/`.pt`/`.ckpt` only through torch's `weights_only` loader, which
builds tensors and refuses every other object (no code runs). A file that cannot be used is
listed with the reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from studio.errors import RequestError

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
PLAIN = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
MAX_SCALE = 8.0
DEFAULT_TILE = 512
TILE_OVERLAP = 32


@dataclass(frozen=True)
class UpscalerFile:
    name: str  # the file's stem, as A1111 lists it
    path: Path


def read_weights(path: Path) -> dict:
    """The file's tensors: safetensors, or a pickle read by torch's weights-only unpickler."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params", "state_dict"):  # BasicSR's and Lightning's wrappers
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError("it holds no state dict of tensors")
    return loaded


class UpscalerLibrary:
    def __init__(self, folder: Path, device="cpu"):  # torch is imported when a model loads, not before
        self.folder = folder
        self.device = device
        self._lock = threading.Lock()
        self._models: dict[Path, tuple[float, object]] = {}  # path -> (mtime, spandrel descriptor)
        self._refused: dict[Path, tuple[float, str]] = {}

    def files(self) -> dict[str, UpscalerFile]:
        if not self.folder.is_dir():
            return {}
        found = {}
        root = self.folder.resolve()
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() in SUFFIXES and path.is_file() and path.resolve().parent == root:
                found.setdefault(path.stem, UpscalerFile(path.stem, path))
        return found

    def names(self) -> list[str]:
        """What the pickers offer: the plain resizers, then every model file that loads."""
        usable = [name for name, file in self.files().items() if self._try(file) is None]
        return [*PLAIN, *usable]

    def refused(self) -> dict[str, str]:
        """{file name: why it cannot be used} for the files of the folder that do not load."""
        reasons = {}
        for file in self.files().values():
            reason = self._try(file)
            if reason is not None:
                reasons[file.path.name] = reason
        return reasons

    def _try(self, file: UpscalerFile) -> str | None:
        try:
            self.model(file.name)
        except RequestError as exc:
            return str(exc)
        return None

    def model(self, name: str):
        """The spandrel descriptor of a model file (loaded once, again when the file changes)."""
        file = self.files().get(name)
        if file is None:
            raise RequestError(f"There is no upscaler {name!r}. Upscalers: {', '.join(self.names_without_loading())}.")
        mtime = file.path.stat().st_mtime
        with self._lock:
            if file.path in self._models and self._models[file.path][0] == mtime:
                return self._models[file.path][1]
            if file.path in self._refused and self._refused[file.path][0] == mtime:
                raise RequestError(self._refused[file.path][1])
            try:
                from spandrel import ImageModelDescriptor, ModelLoader

                descriptor = ModelLoader().load_from_state_dict(read_weights(file.path))
                if not isinstance(descriptor, ImageModelDescriptor) or descriptor.input_channels != 3:
                    raise ValueError("it is not an RGB image-to-image model")
            except Exception as exc:  # pickle refused, unknown architecture, a damaged file
                reason = f"{file.path.name} cannot be used as an upscaler ({type(exc).__name__}: {str(exc)[:200]})."
                self._refused[file.path] = (mtime, reason)
                raise RequestError(reason) from None
            descriptor.to(self.device).eval()
            self._models[file.path] = (mtime, descriptor)
            return descriptor

    def names_without_loading(self) -> list[str]:
        return [*PLAIN, *self.files()]


def run_model(model, image: Image.Image, tile: int = DEFAULT_TILE, overlap: int = TILE_OVERLAP) -> Image.Image:
    """One pass of a model over `image`, in tiles of `tile` pixels (0: whole) that overlap by
    `overlap`; each tile's border is cut away before it is pasted, so seams do not show."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    scale = model.scale
    height, width = tensor.shape[2:]
    device = next(model.model.parameters()).device
    out = torch.zeros(1, 3, height * scale, width * scale)
    step = tile if tile and tile < max(height, width) else max(height, width)
    with torch.inference_mode():
        for top in range(0, height, step):
            for left in range(0, width, step):
                y0, x0 = max(0, top - overlap), max(0, left - overlap)
                y1, x1 = min(height, top + step + overlap), min(width, left + step + overlap)
                piece = model(tensor[:, :, y0:y1, x0:x1].to(device)).float().cpu()
                bottom, right = min(height, top + step), min(width, left + step)
                out[:, :, top * scale:bottom * scale, left * scale:right * scale] = piece[
                    :, :, (top - y0) * scale:(bottom - y0) * scale, (left - x0) * scale:(right - x0) * scale]
    pixels = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)


def build_tiny_upscaler(path: Path, scale: int = 2, seed: int = 0) -> Path:
    """A small random-weight Real-ESRGAN Compact (SRVGGNetCompact, 2.3 k weights) that spandrel
    detects from its keys: the offline twin of a real upscaler, for tests and `--preset tiny`."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


if __name__ == "__main__":  # python -m studio.upscalers models/upscalers/tiny-x2.safetensors
    import sys

    if len(sys.argv) != 2 or not sys.argv[1].endswith(".safetensors"):
        sys.exit("usage: python -m studio.upscalers FOLDER/NAME.safetensors  (writes a tiny random 2x upscaler)")
    print(f"wrote {build_tiny_upscaler(Path(sys.argv[1]))}")
