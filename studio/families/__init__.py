"""The model families the studio runs, one module each, and the registry everything else reads.

A new family is a module here (a `Family` subclass: studio/families/base.py), one line below, its
presets and its tests; no task, UI or API module changes.
"""

from __future__ import annotations

from studio.families.base import Capabilities, Detected, Encoded, Family, LatentFormat, Registry
from studio.families.flux import Flux
from studio.families.sd1 import SD1
from studio.families.sdxl import SDXL

FAMILIES = Registry()
for _family in (SD1(), SDXL(), Flux()):
    FAMILIES.add(_family)


def family_of(name: str) -> Family:
    return FAMILIES.get(name)


__all__ = ["FAMILIES", "Capabilities", "Detected", "Encoded", "Family", "LatentFormat", "family_of"]
