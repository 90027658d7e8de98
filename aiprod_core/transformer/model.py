"""The LTX-2 / LTX-2.3 / LTX-2.5 audio+video diffusion transformer (velocity prediction)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..modules import Linear
from .blocks import AV_SCALE_SHIFT_ROWS, AVTransformerBlock, StreamArgs, StreamDims
from .config import TransformerConfig
from .embeddings import AdaLNSingle, CaptionProjection
from .inputs import ModalityInput, TransformerOutput
from .perturbations import Perturbations
from .prompt_kv import PromptKV, PromptKVCache, distinct_rows
from .rope import HeadRotation, RotaryTables, head_rotation, rotary_tables
from .sharing import SharingPlan, run_blocks

__all__ = ["AVTransformer"]


VIDEO, AUDIO = "", "audio_"  # state-dict prefixes of the two streams' modules
Rotation = RotaryTables | HeadRotation


def _context_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) bool / 0-1 integer keep-mask -> (B, 1, 1, S) additive bias: 0 kept, -finfo.max dropped."""
    if mask is None:
        return None
    if mask.is_floating_point():
        raise TypeError(f"context_mask dtype {mask.dtype}, expected bool or an integer 0/1 mask")
    return ((mask.to(dtype) - 1) * torch.finfo(dtype).max).reshape(mask.shape[0], 1, 1, -1)


def _self_attention_bias(strength: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T, T) strengths in [0, 1] -> (B, 1, T, T) additive bias log(strength); 0 -> finfo.min (blocked)."""
    if strength is None:
        return None
    finfo = torch.finfo(dtype)
    log_strength = torch.log(strength.clamp(min=finfo.tiny)).to(dtype)
    return torch.where(strength > 0, log_strength, torch.full_like(log_strength, finfo.min)).unsqueeze(1)


class AVTransformer(nn.Module):
    """LTX audio+video transformer: patchified latents -> velocities, one pass over both streams.

    Inputs are ``ModalityInput`` (latent (B, T, C), positions (B, n_dims, T, 2), context (B, S, D) ...); the
    output is ``TransformerOutput(video (B, T_v, out_channels), audio (B, T_a, audio_out_channels))``. The video
    stream has ``inner_dim`` channels, the audio stream ``audio_inner_dim``; ``config.with_audio=False`` builds
    the video-only model, ``config.with_video=False`` the audio-only one (no video weights). State-dict keys are
    those of the checkpoint under ``model.diffusion_model.`` (without the text connectors).

    ``reuse_prompt_kv`` (default True): the text keys / values are computed once per distinct prompt row of a
    call and, where they do not depend on the timestep, kept between calls while the prompt contexts stay the
    same (`prompt_kv`); `clear_prompt_kv` releases what is kept (moving or reloading the weights does it).
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.config = config
        # Last rotary tables per stream / kind: (positions, dtype, rotation). Not state: never saved or loaded.
        self._rope_cache: dict[str, tuple[torch.Tensor, torch.dtype, Rotation]] = {}
        self.reuse_prompt_kv = True
        self._prompt_cache = PromptKVCache()
        factory = {"dtype": dtype, "device": device}
        video = StreamDims(config.inner_dim, config.num_attention_heads, config.attention_head_dim)
        audio = StreamDims(config.audio_inner_dim, config.audio_num_attention_heads, config.audio_attention_head_dim)
        if config.with_video:
            self._add_stream(VIDEO, config.in_channels, config.out_channels, video.dim, factory)
        if config.with_audio:
            self._add_stream(AUDIO, config.audio_in_channels, config.audio_out_channels, audio.dim, factory)
        if config.with_audio and config.with_video:
            # AdaLNs of the audio<->video attention, driven by the other stream's sigma.
            self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(video.dim, AV_SCALE_SHIFT_ROWS, **factory)
            self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(audio.dim, AV_SCALE_SHIFT_ROWS, **factory)
            self.av_ca_a2v_gate_adaln_single = AdaLNSingle(video.dim, 1, **factory)
            self.av_ca_v2a_gate_adaln_single = AdaLNSingle(audio.dim, 1, **factory)
        self.transformer_blocks = nn.ModuleList(
            AVTransformerBlock(
                index,
                video if config.with_video else None,
                audio if config.with_audio else None,
                rope_type=config.rope_type,
                gated=config.apply_gated_attention,
                cross_attention_adaln=config.cross_attention_adaln,
                norm_eps=config.norm_eps,
                ff_bias=(config.ff_bias, config.audio_ff_bias),
                **factory,
            )
            for index in range(config.num_layers)
        )
        if config.use_keyframes_abs_pos_embedding and config.with_video:
            # (1, D) learned marker of the video tokens whose latent holds a single pixel frame (LTX-2.5).
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.empty(1, video.dim, **factory))

    def clear_prompt_kv(self) -> None:
        """Drop the text keys / values kept between calls (they are found again only for equal prompts)."""
        self._prompt_cache.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> AVTransformer:
        self.clear_prompt_kv()  # .to() / .half() / .cuda(): the kept keys / values belong to the old weights
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.clear_prompt_kv()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _add_stream(self, prefix: str, in_channels: int, out_channels: int, dim: int, factory: dict[str, Any]) -> None:
        config = self.config
        setattr(self, f"{prefix}patchify_proj", Linear(in_channels, dim, **factory))
        if config.caption_projection_in_transformer:
            projection = CaptionProjection(config.caption_channels, dim, **factory)
            setattr(self, f"{prefix}caption_projection", projection)
        setattr(self, f"{prefix}adaln_single", AdaLNSingle(dim, config.adaln_params, **factory))
        if config.prompt_adaln:
            setattr(self, f"{prefix}prompt_adaln_single", AdaLNSingle(dim, 2, **factory))
        setattr(self, f"{prefix}scale_shift_table", nn.Parameter(torch.empty(2, dim, **factory)))
        setattr(self, f"{prefix}proj_out", Linear(dim, out_channels, **factory))

    def forward(
        self,
        video: ModalityInput | None = None,
        audio: ModalityInput | None = None,
        perturbations: Perturbations | None = None,
    ) -> TransformerOutput:
        """Velocities of the given streams; ``perturbations`` (one entry per sample) default to none."""
        batch = self._check_inputs(video, audio)
        perturbations = Perturbations.none(batch) if perturbations is None else perturbations
        if len(perturbations.samples) != batch:
            raise ValueError(f"perturbations for {len(perturbations.samples)} samples, expected batch size {batch}")
        video_x, video_args = self._prepare(VIDEO, video, audio) if video is not None else (None, None)
        audio_x, audio_args = self._prepare(AUDIO, audio, video) if audio is not None else (None, None)
        plan = SharingPlan.find((video, audio), perturbations, len(self.transformer_blocks)) if batch > 1 else None
        if plan is not None:
            video_x, audio_x = run_blocks(
                self.transformer_blocks, (video_x, audio_x), (video_args, audio_args), perturbations, plan
            )
        for block in self.transformer_blocks if plan is None else ():
            video_x, audio_x = block(video_x, audio_x, video_args, audio_args, perturbations)
        return TransformerOutput(
            video=self._output(VIDEO, video_x, video_args) if video_args is not None else None,
            audio=self._output(AUDIO, audio_x, audio_args) if audio_args is not None else None,
        )

    def _check_inputs(self, video: ModalityInput | None, audio: ModalityInput | None) -> int:
        if video is None and audio is None:
            raise ValueError("video=None and audio=None, expected at least one stream")
        if audio is not None and not self.config.with_audio:
            raise ValueError("audio input given to a video-only transformer")
        if video is not None and not self.config.with_video:
            raise ValueError("video input given to an audio-only transformer")
        if video is not None and audio is not None and video.batch_size != audio.batch_size:
            raise ValueError(f"video batch {video.batch_size} != audio batch {audio.batch_size}")
        return (video if video is not None else audio).batch_size

    def _embed(
        self, adaln: AdaLNSingle, timesteps: torch.Tensor, batch: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps (B * T',) -> (modulation (B, T'', rows * D), embedding (B, T'', D)).

        T'' is 1 when every token of a sample shares its timestep (the modulation then broadcasts over the
        tokens); otherwise the AdaLN runs once per distinct timestep value and is gathered per token.
        """
        per_sample = timesteps.reshape(batch, -1)  # (B, T')
        if per_sample.shape[1] > 1 and bool((per_sample == per_sample[:, :1]).all()):
            per_sample = per_sample[:, :1]
        flat = per_sample.reshape(-1)
        values, inverse = torch.unique(flat, return_inverse=True)
        if values.numel() < flat.numel():
            modulation, embedded = adaln(values, dtype)
            modulation, embedded = modulation[inverse], embedded[inverse]
        else:
            modulation, embedded = adaln(flat, dtype)
        return modulation.view(batch, -1, modulation.shape[-1]), embedded.view(batch, -1, embedded.shape[-1])

    def _rotation(self, key: str, positions: torch.Tensor, dtype: torch.dtype, **table_args: Any) -> Rotation:
        """Rotary tables of ``positions`` (B, n_dims, T, 2), computed once per distinct positions tensor.

        Samples with equal positions share one table row (broadcast over the batch). The ``split`` layout is
        prepared for the attention's head layout (``HeadRotation``). The last result per ``key`` is kept, so the
        steps of a denoising loop (positions fixed) reuse it.
        """
        if positions.shape[0] > 1 and (positions.stride(0) == 0 or bool((positions == positions[:1]).all())):
            positions = positions[:1]  # a broadcast view (stride 0) repeats its first row by construction
        cached = self._rope_cache.get(key)
        if (
            cached is not None
            and cached[0].shape == positions.shape
            and cached[0].device == positions.device
            and cached[1] == dtype
            and torch.is_inference(cached[0]) == torch.is_inference_mode_enabled()
            and torch.equal(cached[0], positions)
        ):
            return cached[2]
        tables = rotary_tables(positions, dtype=dtype, rope_type=self.config.rope_type, **table_args)
        rotation: Rotation = head_rotation(tables) if self.config.rope_type == "split" else tables
        self._rope_cache[key] = (positions.clone(), dtype, rotation)
        return rotation

    def _prepare(
        self, prefix: str, stream: ModalityInput, other: ModalityInput | None
    ) -> tuple[torch.Tensor, StreamArgs]:
        """Input projection and every per-call constant of one stream (timestep embeddings, rope, masks)."""
        config = self.config
        is_audio = prefix == AUDIO
        dim = config.audio_inner_dim if is_audio else config.inner_dim
        dtype, batch = stream.latent.dtype, stream.batch_size
        multiplier = config.timestep_scale_multiplier
        x = getattr(self, f"{prefix}patchify_proj")(stream.latent)  # (B, T, D)
        if not is_audio:
            x = self._mark_keyframes(x, stream.keyframes_mask)
        timestep, embedded = self._embed(
            getattr(self, f"{prefix}adaln_single"), stream.timesteps * multiplier, batch, dtype
        )
        prompt_timestep = None
        if config.prompt_adaln:
            prompt_adaln = getattr(self, f"{prefix}prompt_adaln_single")
            prompt_timestep = self._embed(prompt_adaln, stream.sigma_per_sample() * multiplier, batch, dtype)[0]
        context, prompt = self._prompt(prefix, stream, prompt_timestep, dim)
        rope = self._rotation(
            f"{prefix}self",
            stream.positions,
            dtype,
            inner_dim=dim,
            heads=config.audio_num_attention_heads if is_audio else config.num_attention_heads,
            max_pos=config.audio_positional_embedding_max_pos if is_audio else config.positional_embedding_max_pos,
            theta=config.positional_embedding_theta,
            double_precision=config.double_precision_rope,
        )
        args = StreamArgs(
            timestep=timestep,
            embedded_timestep=embedded,
            context=context,
            rope=rope,
            enabled=stream.enabled,
            context_mask=_context_bias(stream.context_mask, dtype),
            self_mask=_self_attention_bias(stream.attention_mask, dtype),
            prompt_timestep=prompt_timestep,
            prompt=prompt,
        )
        if other is not None:
            args = self._with_cross_modal(prefix, stream, other, args)
        return x, args

    def _mark_keyframes(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D) plus the learned keyframe marker on the tokens where ``mask`` (B, T[, 1]) is > 0."""
        embedding = getattr(self, "keyframes_abs_pos_embedding", None)
        if mask is None or embedding is None:
            return x  # models without the marker ignore the mask, as the reference does
        if mask.shape[0] not in (1, x.shape[0]) or mask.shape[1] != x.shape[1] or mask[0, 0].numel() != 1:
            raise ValueError(f"keyframes_mask shape {tuple(mask.shape)}, expected (B, {x.shape[1]}) or (B, T, 1)")
        marker = (mask.reshape(mask.shape[0], -1, 1) > 0).to(x.dtype)  # (B, T, 1)
        return x + marker * embedding.to(device=x.device, dtype=x.dtype)

    def _project_context(self, prefix: str, context: torch.Tensor, dim: int) -> torch.Tensor:
        """The stream's text context (B, S, C) at its inner width D (LTX-2 projects it here)."""
        raw_shape = tuple(context.shape)
        if self.config.caption_projection_in_transformer and context.ndim == 3:
            context = getattr(self, f"{prefix}caption_projection")(context)
        if context.ndim != 3 or context.shape[-1] != dim:
            raise ValueError(f"{prefix}context shape {raw_shape} does not give (B, S, {dim})")
        return context

    def _trains(self, context: torch.Tensor) -> bool:
        """Whether autograd tracks the text keys / values (kept ones would hold on to graphs): never cached then."""
        blocks = self.transformer_blocks
        return context.requires_grad or (len(blocks) > 0 and blocks[0].attn2.to_k.weight.requires_grad)

    def _prompt(
        self, prefix: str, stream: ModalityInput, prompt_timestep: torch.Tensor | None, dim: int
    ) -> tuple[torch.Tensor, PromptKV | None]:
        """The context (B, S, D) and, with ``reuse_prompt_kv``, its distinct rows for the text keys / values."""
        raw, batch = stream.context, stream.batch_size
        if raw.ndim != 3 or raw.shape[0] != batch:
            raise ValueError(f"{prefix}context shape {tuple(raw.shape)} does not give (B={batch}, S, {dim})")
        if not self.reuse_prompt_kv:
            return self._project_context(prefix, raw, dim), None
        ids, firsts = distinct_rows(raw, stream.sigma_per_sample() if self.config.prompt_adaln else None)
        index = list(firsts)
        distinct = raw if firsts == tuple(range(batch)) else raw[index]  # (U, S, C)
        timestep = None if prompt_timestep is None else prompt_timestep[index]  # (U, 1, 2 D)
        cacheable = self.config.timestep_free_prompt_kv and not (torch.is_grad_enabled() and self._trains(raw))
        cached = self._prompt_cache.find(prefix, distinct) if cacheable else None
        if cached is not None:
            prompt = PromptKV(ids, cached.context, None, cached.kv)
        else:
            prompt = PromptKV(ids, self._project_context(prefix, distinct, dim), timestep)
            if cacheable:
                self._prompt_cache.add(prefix, distinct, prompt)
        return prompt.gather(prompt.context), prompt

    def _with_cross_modal(
        self, prefix: str, stream: ModalityInput, other: ModalityInput, args: StreamArgs
    ) -> StreamArgs:
        """Temporal rope and AdaLN inputs of the audio<->video attention (modulated by the OTHER stream's sigma)."""
        config = self.config
        dtype, batch = stream.latent.dtype, stream.batch_size
        # Both directions attend at the audio width with the audio head count (the reference takes the query
        # stream's head count for the split-rope layout; the official models have equal counts).
        cross_rope = self._rotation(
            f"{prefix}cross",
            stream.positions[:, :1],
            dtype,
            inner_dim=config.audio_cross_attention_dim,
            heads=config.audio_num_attention_heads,
            max_pos=(config.cross_modal_max_pos,),
            theta=config.positional_embedding_theta,
            double_precision=config.double_precision_rope,
        )
        scaled_sigma = other.sigma_per_sample() * config.timestep_scale_multiplier  # (B,)
        gate_factor = config.av_ca_timestep_scale_multiplier / config.timestep_scale_multiplier
        scale_shift = getattr(self, f"av_ca_{'audio' if prefix else 'video'}_scale_shift_adaln_single")
        gate = getattr(self, f"av_ca_{'v2a' if prefix else 'a2v'}_gate_adaln_single")
        return replace(
            args,
            cross_rope=cross_rope,
            cross_scale_shift=self._embed(scale_shift, scaled_sigma, batch, dtype)[0],  # (B, 1, 4 D)
            cross_gate=self._embed(gate, scaled_sigma * gate_factor, batch, dtype)[0],  # (B, 1, D)
        )

    def _output(self, prefix: str, x: torch.Tensor, args: StreamArgs) -> torch.Tensor:
        """Final AdaLN (shift, scale from the embedded timestep) and projection: (B, T, D) -> (B, T, out)."""
        table = getattr(self, f"{prefix}scale_shift_table")
        values = table[None, None].to(device=x.device, dtype=x.dtype) + args.embedded_timestep[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]  # (B, T', D)
        x = nn.functional.layer_norm(x, (x.shape[-1],), eps=self.config.norm_eps)
        return getattr(self, f"{prefix}proj_out")(x * (1 + scale) + shift)
