"""The OpenPose annotator (controlnet-aux's detector) that finds the pose of the people in a photo."""

from __future__ import annotations

import logging
from pathlib import Path

from studio.errors import ModelUnavailableError

log = logging.getLogger(__name__)

ANNOTATOR_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")


def load_annotator(ref: str, device):
    """The detector from a folder holding ANNOTATOR_FILES or a hub id (lllyasviel/Annotators), on `device`."""
    folder = Path(ref)
    if folder.is_dir():
        missing = [name for name in ANNOTATOR_FILES if not (folder / name).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"The OpenPose annotator weights are missing from '{folder}': {', '.join(missing)}. "
                "Download them from lllyasviel/Annotators into that folder, or upload a ready "
                "skeleton image or edit a pose instead of detecting one."
            )
    from controlnet_aux import OpenposeDetector

    try:
        detector = OpenposeDetector.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        log.warning("loading pose annotator %s failed: %s", ref, exc)
        raise ModelUnavailableError(
            f"Could not load the OpenPose annotator '{ref}' ({', '.join(ANNOTATOR_FILES)}): it is not cached "
            "and could not be downloaded. Connect to the internet once, point pose_annotator at a folder "
            "holding those files, or upload a ready skeleton image instead of detecting one."
        ) from None
    return detector.to(device)
