"""Sampler names as A1111 and Forge users know them, mapped to diffusers schedulers: one table for
the noise-prediction (DDPM-trained) families, one for the flow-matching ones. A family names its table
(studio/families/).

Each request gets a new scheduler object made from the base pipeline's scheduler config: a
scheduler keeps per-run state (`step_index`), so sharing one between requests is a race.
"""

from __future__ import annotations

# name -> (diffusers scheduler class, config overrides)
DIFFUSION_SAMPLERS: dict[str, tuple[str, dict]] = {
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
    # For the few-step LoRAs: TCD's own sampler, and DDIM on trailing timesteps (Hyper-SD's).
    "TCD": ("TCDScheduler", {}),
    "DDIM Trailing": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
}

# Flow matching (FLUX.1): schedulers whose set_timesteps takes the pipeline's sigmas and its
# resolution-dependent shift `mu`. The "Beta" schedule is Forge's name for beta-distributed sigmas.
# The multistep solvers work on flow sigmas with dynamic shifting (without it DPM++ asserts).
_FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True}
FLOW_SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "Euler Beta": ("FlowMatchEulerDiscreteScheduler", {"use_beta_sigmas": True}),
    "Euler Karras": ("FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, **_FLOW}),
    "UniPC": ("UniPCMultistepScheduler", _FLOW),
}

# Every name some family offers (the A1111 API's /samplers, reading infotexts).
SAMPLER_NAMES = tuple(dict.fromkeys([*DIFFUSION_SAMPLERS, *FLOW_SAMPLERS]))


def make_scheduler(name: str, base_config, table: dict[str, tuple[str, dict]] = DIFFUSION_SAMPLERS):
    """A fresh scheduler for sampler `name` of `table`, configured like the model's own scheduler."""
    import diffusers  # lazily: the request layer imports the names without loading torch

    class_name, overrides = table[name]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(base_config, **overrides)
