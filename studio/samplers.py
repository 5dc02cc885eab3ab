"""Sampler names as A1111 users know them, mapped to diffusers schedulers.

Each request gets a new scheduler object made from the base pipeline's scheduler config: a
scheduler keeps per-run state (`step_index`), so sharing one between requests is a race.
"""

from __future__ import annotations

# name -> (diffusers scheduler class, config overrides)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}

SAMPLER_NAMES = tuple(SAMPLERS)


def make_scheduler(name: str, base_config):
    """A fresh scheduler for sampler `name`, configured like the model's own scheduler."""
    import diffusers  # lazily: the request layer imports the names without loading torch

    class_name, overrides = SAMPLERS[name]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(base_config, **overrides)
