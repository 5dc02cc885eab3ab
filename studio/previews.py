"""Cheap previews while an image is being made.

With the preset's preview VAE (TAESD, `AutoencoderTiny`: about 1% of the real VAE's work) the
preview is a full-size picture. Without one, a linear map of the latents gives a rough 1/2-scale
one: the factors are the least-squares fit of RGB to the latent channels that A1111 and ComfyUI
use for their "approximate" previews, each family's own (studio/families/: LatentFormat).
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from studio.errors import ModelUnavailableError
from studio.families import LatentFormat

log = logging.getLogger(__name__)

PREVIEW_EVERY = 3  # steps between previews: a preview costs a few ms, sending it to the page more
PREVIEW_BUDGET_S = 0.25  # the most one live preview through the preview VAE may take


class PreviewPolicy:
    """Whether live previews go through the preview VAE. A generation must never fail for its
    preview: a preview VAE that cannot be loaded, or is slow next to the steps it interrupts (the
    real TAESD takes about 1.3 s at 512x512 on a 2-core CPU), gives way to the latent approximation
    from then on. The first decode is not judged: it pays one-time set-up costs."""

    def __init__(self, budget_s: float = PREVIEW_BUDGET_S):
        self.budget_s = budget_s
        self._decoder = None  # once loaded; False when it could not be, or was too slow
        self._decodes = 0

    def decoder(self, load):
        """The preview VAE (loaded by `load()` the first time), or None: use the approximation."""
        if self._decoder is None:
            try:
                self._decoder = load()
            except ModelUnavailableError as exc:
                log.warning("live previews use the latent approximation: %s", exc)
                self._decoder = False
        return self._decoder or None

    def note_time(self, seconds: float) -> None:
        self._decodes += 1
        if self._decodes > 1 and seconds > self.budget_s and self._decoder:
            log.info("the preview VAE took %.2f s; live previews use the latent approximation", seconds)
            self._decoder = False


def latents_to_preview(latents: torch.Tensor, latent: LatentFormat, decoder=None) -> Image.Image:
    """The first image of an unpacked latent batch (B, C, h, w) as an RGB picture: 8h x 8w through
    `decoder` (an AutoencoderTiny), else 4h x 4w from the family's linear approximation."""
    if decoder is not None:
        with torch.no_grad():
            image = decoder.decode(latents[:1].to(decoder.device, decoder.dtype)).sample[0]
        rgb = ((image.float() + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(rgb)
    factors = torch.tensor(latent.rgb_factors, dtype=torch.float32)
    first = latents[0, : latent.channels].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", first, factors) + torch.tensor(latent.rgb_bias)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(rgb).resize((rgb.shape[1] * 4, rgb.shape[0] * 4), Image.Resampling.NEAREST)
