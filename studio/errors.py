"""Errors whose message is meant for the user: it says what is wrong and what to change.

The UI turns every `StudioError` into a `gr.Error`; anything else is a bug and is logged.
"""


class StudioError(Exception):
    """Base class: the message is shown to the user as it is."""


class PresetError(StudioError):
    """A preset file is missing, malformed or unknown."""


class RequestError(StudioError):
    """A request's settings are out of range or inconsistent."""


class ModelUnavailableError(StudioError):
    """A model could not be loaded (not cached, not downloadable, or not in the preset)."""


class BackendError(StudioError):
    """Where generation runs cannot be set up (Ray missing, a cluster out of reach)."""
