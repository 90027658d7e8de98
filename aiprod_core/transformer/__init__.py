"""LTX-2 / LTX-2.3 / LTX-2.5 audio+video diffusion transformer (our own implementation, checkpoint-compatible keys)."""

from .config import TransformerConfig
from .inputs import ModalityInput, TransformerOutput
from .model import AVTransformer
from .perturbations import EVERY_BLOCK, Perturbations, SamplePerturbation, Skip

__all__ = [
    "EVERY_BLOCK",
    "AVTransformer",
    "ModalityInput",
    "Perturbations",
    "SamplePerturbation",
    "Skip",
    "TransformerConfig",
    "TransformerOutput",
]
