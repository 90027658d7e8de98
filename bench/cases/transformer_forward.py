"""One transformer forward (batch 1, video + audio, LTX-2.3 layout) on seeded random weights.

The timed call is a sampling step's forward: one untimed warm-up forward runs first on both sides (a fresh
process's first call also pays one-time costs, e.g. first-touch page faults of the activations and BLAS setup;
and what a side keeps between the steps of a denoising loop, such as our rotary tables, is kept).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common import build_reference, random_state_dict
from . import sizes


def video_positions(batch: int, grid: tuple[int, int, int] = sizes.VIDEO_GRID) -> torch.Tensor:
    """(B, 3, T, 2) [start, end) bounds as the video patchifier gives them: causal time in s, pixels in space."""
    frames, height, width = grid
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f.flatten() * 8.0, h.flatten() * 32.0, w.flatten() * 32.0])  # (3, T)
    bounds = torch.stack([starts, starts + torch.tensor([8.0, 32.0, 32.0])[:, None]], dim=-1)  # (3, T, 2)
    bounds[0] = (bounds[0] + 1 - 8).clamp(min=0) / sizes.FPS
    return bounds.expand(batch, -1, -1, -1).clone()


def audio_positions(batch: int, tokens: int = sizes.AUDIO_TOKENS) -> torch.Tensor:
    starts = torch.arange(tokens, dtype=torch.float32) * 0.04
    return torch.stack([starts, starts + 0.04], dim=-1)[None].expand(batch, -1, -1, -1).clone()  # (B, 1, T, 2)


def _streams(batch: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    sigma = torch.full((batch,), 0.7)
    video_tokens = sizes.VIDEO_GRID[0] * sizes.VIDEO_GRID[1] * sizes.VIDEO_GRID[2]

    def stream(tokens: int, width: int, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "latent": torch.randn(batch, tokens, 128, generator=gen),
            "sigma": sigma,
            "timesteps": sigma[:, None].expand(batch, tokens).clone(),
            "positions": positions,
            "context": torch.randn(batch, sizes.CONTEXT_TOKENS, width, generator=gen),
        }

    video = stream(video_tokens, sizes.HEADS * sizes.VIDEO_HEAD_DIM, video_positions(batch))
    audio = stream(sizes.AUDIO_TOKENS, sizes.HEADS * sizes.AUDIO_HEAD_DIM, audio_positions(batch))
    return video, audio


def ours_model() -> torch.nn.Module:
    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    config = TransformerConfig.from_metadata({"transformer": sizes.transformer_section()})
    model = AVTransformer(config, device="meta")
    model.load_state_dict(random_state_dict(model), strict=True, assign=True)
    return model.eval()


def reference_model() -> torch.nn.Module:
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    from aiprod.aiprod_core.transformer import AVTransformer, TransformerConfig

    config = {"transformer": sizes.transformer_section()}
    state = random_state_dict(AVTransformer(TransformerConfig.from_metadata(config), device="meta"))
    return build_reference(LTXModelConfigurator, config, state)


def prepare(side: str, variant: str) -> Callable[[], object]:
    video, audio = _streams(batch=1)
    if side == "ours":
        from aiprod.aiprod_core.transformer import ModalityInput

        model = ours_model()
        forward = lambda: model(ModalityInput(**video), ModalityInput(**audio))  # noqa: E731
        forward()  # warm-up (see the module doc)
        return forward
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.modality import Modality

    model = reference_model()
    forward = lambda: model(Modality(**video), Modality(**audio), BatchedPerturbationConfig.empty(1))  # noqa: E731
    forward()  # warm-up (see the module doc)
    return forward
