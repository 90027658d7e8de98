"""Duration head (LTX-2.5): the natural length of the clip a prompt describes, predicted from the text connectors."""

from .model import DurationHead, DurationHeadConfig, frames_for_seconds

__all__ = ["DurationHead", "DurationHeadConfig", "frames_for_seconds"]
