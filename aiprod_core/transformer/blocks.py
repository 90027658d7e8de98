"""One audio+video transformer block: per-stream self-attention, text cross-attention, audio<->video
cross-attention and feed-forward, each modulated by AdaLN values derived from the timesteps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .attention import Attention, FeedForward
from .perturbations import Perturbations, Skip
from .prompt_kv import PromptKV
from .rope import HeadRotation, RotaryTables

__all__ = ["AVTransformerBlock", "StreamArgs", "StreamDims"]

# Rows of a block's AdaLN table: self-attention, feed-forward, then (LTX-2.3) the text cross-attention query.
SELF_ATTENTION_ROWS, FEED_FORWARD_ROWS, TEXT_ATTENTION_ROWS = slice(0, 3), slice(3, 6), slice(6, 9)
# Rows of the audio<->video tables (5, D): (scale, shift) for a2v, (scale, shift) for v2a, then the gate.
AV_SCALE_SHIFT_ROWS = 4
A2V_ROWS, V2A_ROWS = slice(0, 2), slice(2, 4)


@dataclass(frozen=True)
class StreamDims:
    """Width of one stream: ``dim`` = ``heads`` x ``head_dim``."""

    dim: int
    heads: int
    head_dim: int


@dataclass(frozen=True)
class StreamArgs:
    """Per-call constants of one stream, shared by all blocks (T' is 1 or T: one timestep per sample or token).

    timestep (B, T', rows * D) AdaLN input; embedded_timestep (B, T', D) for the output modulation; context
    (B, S, D); context_mask (B, 1, 1, S) and self_mask (B, 1, T, T) additive biases; prompt_timestep (B, 1, 2 D)
    (LTX-2.3, LTX-2.5); cross_scale_shift (B, 1, 4 D) and cross_gate (B, 1, D) from the other stream's sigma;
    prompt: the distinct prompt rows whose text keys / values the blocks compute once (None: per row, as given).
    """

    timestep: torch.Tensor
    embedded_timestep: torch.Tensor
    context: torch.Tensor
    rope: RotaryTables | HeadRotation
    enabled: bool = True
    context_mask: torch.Tensor | None = None
    self_mask: torch.Tensor | None = None
    prompt_timestep: torch.Tensor | None = None
    cross_rope: RotaryTables | HeadRotation | None = None
    cross_scale_shift: torch.Tensor | None = None
    cross_gate: torch.Tensor | None = None
    prompt: PromptKV | None = None


class _StreamModules(NamedTuple):
    self_attention: Attention
    text_attention: Attention
    feed_forward: FeedForward
    table: torch.Tensor
    prompt_table: torch.Tensor | None
    skip_self_attention: Skip


def _modulation(table: torch.Tensor, timestep: torch.Tensor, rows: slice) -> tuple[torch.Tensor, ...]:
    """table (N, D) + timestep (B, T', N * D) viewed as (B, T', N, D), rows ``rows`` -> tuple of (B, T', D)."""
    batch, tokens = timestep.shape[:2]
    learned = table[rows].to(device=timestep.device, dtype=timestep.dtype)[None, None]
    return (learned + timestep.reshape(batch, tokens, table.shape[0], -1)[:, :, rows]).unbind(dim=2)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift in one pass over x (B, T, D); shift / scale (B, T' , D) broadcast."""
    return torch.addcmul(shift, x, 1 + scale)


def _index(flags: tuple[bool, ...], value: bool, device: torch.device) -> torch.Tensor:
    return torch.tensor([i for i, flag in enumerate(flags) if flag == value], dtype=torch.long, device=device)


def _rows(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[index]


class AVTransformerBlock(nn.Module):
    """Block ``index`` of the transformer: video x (B, T_v, D_v) and audio x (B, T_a, D_a) -> same shapes.

    Either stream may be absent (``video``/``audio`` dims None at construction: the video-only model).
    ``ff_bias``: whether the (video, audio) feed-forward layers have biases (LTX-2.5: video without).
    """

    def __init__(
        self,
        index: int,
        video: StreamDims | None,
        audio: StreamDims | None,
        *,
        rope_type: str,
        gated: bool,
        cross_attention_adaln: bool,
        norm_eps: float,
        ff_bias: tuple[bool, bool] = (True, True),
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.index, self.norm_eps = index, norm_eps
        factory = {"dtype": dtype, "device": device}
        options = {"rope_type": rope_type, "gated": gated, "norm_eps": norm_eps, **factory}
        rows = 9 if cross_attention_adaln else 6
        for prefix, dims, bias in (("", video, ff_bias[0]), ("audio_", audio, ff_bias[1])):
            if dims is None:
                continue
            setattr(self, f"{prefix}attn1", Attention(dims.dim, dims.heads, dims.head_dim, **options))
            setattr(self, f"{prefix}attn2", Attention(dims.dim, dims.heads, dims.head_dim, **options))
            setattr(self, f"{prefix}ff", FeedForward(dims.dim, bias=bias, **factory))
            setattr(self, f"{prefix}scale_shift_table", nn.Parameter(torch.empty(rows, dims.dim, **factory)))
            if cross_attention_adaln:
                setattr(self, f"{prefix}prompt_scale_shift_table", nn.Parameter(torch.empty(2, dims.dim, **factory)))
        if video is not None and audio is not None:
            # Both directions run at the audio width: queries of one stream, keys / values of the other.
            self.audio_to_video_attn = Attention(
                video.dim, audio.heads, audio.head_dim, context_dim=audio.dim, **options
            )
            self.video_to_audio_attn = Attention(
                audio.dim, audio.heads, audio.head_dim, context_dim=video.dim, **options
            )
            av_rows = AV_SCALE_SHIFT_ROWS + 1
            self.scale_shift_table_a2v_ca_audio = nn.Parameter(torch.empty(av_rows, audio.dim, **factory))
            self.scale_shift_table_a2v_ca_video = nn.Parameter(torch.empty(av_rows, video.dim, **factory))

    def _stream(self, prefix: str) -> _StreamModules:
        return _StreamModules(
            self_attention=getattr(self, f"{prefix}attn1"),
            text_attention=getattr(self, f"{prefix}attn2"),
            feed_forward=getattr(self, f"{prefix}ff"),
            table=getattr(self, f"{prefix}scale_shift_table"),
            prompt_table=getattr(self, f"{prefix}prompt_scale_shift_table", None),
            skip_self_attention=Skip.AUDIO_SELF_ATTENTION if prefix else Skip.VIDEO_SELF_ATTENTION,
        )

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(x, (x.shape[-1],), eps=self.norm_eps)

    def forward(
        self,
        video_x: torch.Tensor | None,
        audio_x: torch.Tensor | None,
        video: StreamArgs | None,
        audio: StreamArgs | None,
        perturbations: Perturbations,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        has_video = video is not None and video_x is not None and video_x.numel() > 0
        has_audio = audio is not None and audio_x is not None and audio_x.numel() > 0
        run_video = has_video and video.enabled
        run_audio = has_audio and audio.enabled
        if run_video:
            video_x = self._attention_part(video_x, video, self._stream(""), perturbations)
        if run_audio:
            audio_x = self._attention_part(audio_x, audio, self._stream("audio_"), perturbations)
        audio_to_video, video_to_audio = run_video and has_audio, run_audio and has_video
        if audio_to_video or video_to_audio:
            video_x, audio_x = self._cross_modal(
                video_x, audio_x, video, audio, (audio_to_video, video_to_audio), perturbations
            )
        if run_video:
            video_x = self._feed_forward(video_x, video, self._stream(""))
        if run_audio:
            audio_x = self._feed_forward(audio_x, audio, self._stream("audio_"))
        return video_x, audio_x

    def _attention_part(
        self, x: torch.Tensor, args: StreamArgs, modules: _StreamModules, perturbations: Perturbations
    ) -> torch.Tensor:
        """Modulated self-attention (per-sample STG skip) then text cross-attention; x (B, T, D)."""
        shift, scale, gate = _modulation(modules.table, args.timestep, SELF_ATTENTION_ROWS)
        hidden = _modulate(self._norm(x), shift, scale)
        skip = perturbations.flags(modules.skip_self_attention, self.index)
        x = torch.addcmul(x, _self_attention(modules.self_attention, hidden, args, skip), gate)
        return self._text_attention(x, args, modules)

    def _text_attention(self, x: torch.Tensor, args: StreamArgs, modules: _StreamModules) -> torch.Tensor:
        """x (B, T, D) plus its (gated) text cross-attention."""
        kv = None if args.prompt is None else self._prompt_kv(args.prompt, modules)
        context = args.context if kv is None else None
        if modules.prompt_table is None:
            return x + modules.text_attention(self._norm(x), context, mask=args.context_mask, kv=kv)
        # LTX-2.3 / 2.5: the query is AdaLN-modulated and gated, the context modulated by the prompt table (plus the
        # sigma's prompt AdaLN where the model has it).
        shift_q, scale_q, gate = _modulation(modules.table, args.timestep, TEXT_ATTENTION_ROWS)
        queries = _modulate(self._norm(x), shift_q, scale_q)
        if kv is None:
            context = _modulate(args.context, *_prompt_modulation(modules.prompt_table, args.prompt_timestep, x))
        return torch.addcmul(x, modules.text_attention(queries, context, mask=args.context_mask, kv=kv), gate)

    def _prompt_kv(self, prompt: PromptKV, modules: _StreamModules) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's text keys / values for the call's rows, computed once per distinct prompt row."""

        def project(context: torch.Tensor, timestep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if modules.prompt_table is not None:
                context = _modulate(context, *_prompt_modulation(modules.prompt_table, timestep, context))
            return modules.text_attention.project_kv(context)

        return prompt.keys_values(self.index, project)

    def _feed_forward(self, x: torch.Tensor, args: StreamArgs, modules: _StreamModules) -> torch.Tensor:
        shift, scale, gate = _modulation(modules.table, args.timestep, FEED_FORWARD_ROWS)
        return torch.addcmul(x, modules.feed_forward(_modulate(self._norm(x), shift, scale)), gate)

    def _cross_modal(
        self,
        video_x: torch.Tensor,
        audio_x: torch.Tensor,
        video: StreamArgs,
        audio: StreamArgs,
        directions: tuple[bool, bool],
        perturbations: Perturbations,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio->video then video->audio attention (``directions`` says which run), both computed from the
        streams as they entered this step."""
        audio_to_video, video_to_audio = directions
        video_norm, audio_norm = self._norm(video_x), self._norm(audio_x)
        video_table, audio_table = self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio
        new_video_x = video_x
        if audio_to_video:
            scale_v, shift_v, gate = _av_modulation(video_table, video, A2V_ROWS)
            scale_a, shift_a, _ = _av_modulation(audio_table, audio, A2V_ROWS)
            new_video_x = _gated_cross_attention(
                self.audio_to_video_attn,
                video_x,
                queries=_modulate(video_norm, shift_v, scale_v),
                context=_modulate(audio_norm, shift_a, scale_a),
                gate=gate,
                ropes=(video.cross_rope, audio.cross_rope),
                skip=perturbations.flags(Skip.AUDIO_TO_VIDEO, self.index),
            )
        if video_to_audio:
            scale_a, shift_a, gate = _av_modulation(audio_table, audio, V2A_ROWS)
            scale_v, shift_v, _ = _av_modulation(video_table, video, V2A_ROWS)
            audio_x = _gated_cross_attention(
                self.video_to_audio_attn,
                audio_x,
                queries=_modulate(audio_norm, shift_a, scale_a),
                context=_modulate(video_norm, shift_v, scale_v),
                gate=gate,
                ropes=(audio.cross_rope, video.cross_rope),
                skip=perturbations.flags(Skip.VIDEO_TO_AUDIO, self.index),
            )
        return new_video_x, audio_x


def _prompt_modulation(
    table: torch.Tensor, timestep: torch.Tensor | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) of the text context from the prompt table (2, D): plus the prompt AdaLN rows
    ``timestep`` (B, 1, 2 D) -> (B, 1, D) each, or the table alone (1, 1, D) without the prompt AdaLN MLP."""
    if timestep is not None:
        shift, scale = _modulation(table, timestep, slice(None))
        return shift, scale
    learned = table.to(device=like.device, dtype=like.dtype)[None, None]  # (1, 1, 2, D)
    return learned[:, :, 0], learned[:, :, 1]


def _av_modulation(table: torch.Tensor, args: StreamArgs, rows: slice) -> tuple[torch.Tensor, ...]:
    """(scale, shift, gate), each (B, 1, D), from an audio<->video table (5, D)."""
    scale, shift = _modulation(table[:AV_SCALE_SHIFT_ROWS], args.cross_scale_shift, rows)
    (gate,) = _modulation(table[AV_SCALE_SHIFT_ROWS:], args.cross_gate, slice(None))
    return scale, shift, gate


def _self_attention(
    attention: Attention, hidden: torch.Tensor, args: StreamArgs, skip: tuple[bool, ...]
) -> torch.Tensor:
    """Self-attention of hidden (B, T, D); samples flagged in ``skip`` get the value pass-through (STG)."""
    if not any(skip):
        return attention(hidden, mask=args.self_mask, rope=args.rope)
    if all(skip):
        return attention(hidden, value_only=True)
    keep, drop = _index(skip, False, hidden.device), _index(skip, True, hidden.device)
    attended = attention(hidden[keep], mask=_rows(args.self_mask, keep), rope=args.rope.rows(keep))
    passed = attention(hidden[drop], value_only=True)
    return torch.empty_like(hidden).index_copy(0, keep, attended).index_copy(0, drop, passed)


def _gated_cross_attention(
    attention: Attention,
    x: torch.Tensor,
    *,
    queries: torch.Tensor,
    context: torch.Tensor,
    gate: torch.Tensor,
    ropes: tuple[RotaryTables | HeadRotation, RotaryTables | HeadRotation],
    skip: tuple[bool, ...],
) -> torch.Tensor:
    """x + attention(queries, context) * gate for the samples not flagged in ``skip`` (modality isolation).

    x, queries (B, T, D_q); context (B, S, D_kv); gate (B, 1, D_q); ropes: (query rope, key rope).
    """
    if all(skip):
        return x
    rope, key_rope = ropes
    if not any(skip):
        return torch.addcmul(x, attention(queries, context, rope=rope, key_rope=key_rope), gate)
    keep = _index(skip, False, x.device)
    delta = attention(queries[keep], context[keep], rope=rope.rows(keep), key_rope=key_rope.rows(keep)) * gate[keep]
    return x.index_add(0, keep, delta)
