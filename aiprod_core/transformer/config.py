"""Configuration of the LTX-2 / LTX-2.3 / LTX-2.5 audio+video transformer, read from the checkpoint's ``config``
metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config_reader import ConfigSection, reject

__all__ = ["TransformerConfig"]

ROPE_TYPES = ("interleaved", "split")
# Every backend the reference accepts computes the same softmax attention; ours always uses SDPA.
ATTENTION_TYPES = ("default", "pytorch", "xformers", "flash_attention_3")

# Values the reference pins (a missing key reads as None and fails like a wrong value).
_PINNED: tuple[tuple[str, Any], ...] = (
    ("dropout", 0.0),
    ("attention_bias", True),
    ("num_vector_embeds", None),
    ("activation_fn", "gelu-approximate"),
    ("num_embeds_ada_norm", 1000),
    ("use_linear_projection", False),
    ("only_cross_attention", False),
    ("cross_attention_norm", True),
    ("double_self_attention", False),
    ("upcast_attention", False),
    ("standardization_norm", "rms_norm"),
    ("norm_elementwise_affine", False),
    ("qk_norm", "rms_norm"),
    ("positional_embedding_type", "rope"),
    ("use_middle_indices_grid", True),
)
# Pinned only when the audio stream is built (the video-only model ignores them).
_PINNED_AUDIO_VIDEO: tuple[tuple[str, Any], ...] = (
    ("use_audio_video_cross_attention", True),
    ("share_ff", False),
    ("av_cross_ada_norm", True),
)


# Sanity bounds (the published models: 48 layers, 32 heads of 128 / 64, 128 channels, 4096 / 2048 wide).
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_CHANNELS = 65536
MAX_POSITION = 10**7
MAX_THETA = 1e9
MAX_TIMESTEP_SCALE = 1e6

_SIZES: tuple[tuple[str, int, int], ...] = (  # (key, default, upper bound)
    ("num_layers", 48, MAX_LAYERS),
    ("num_attention_heads", 32, MAX_HEADS),
    ("attention_head_dim", 128, MAX_HEAD_DIM),
    ("in_channels", 128, MAX_CHANNELS),
    ("out_channels", 128, MAX_CHANNELS),
    ("cross_attention_dim", 4096, MAX_CHANNELS),
    ("audio_num_attention_heads", 32, MAX_HEADS),
    ("audio_attention_head_dim", 64, MAX_HEAD_DIM),
    ("audio_in_channels", 128, MAX_CHANNELS),
    ("audio_out_channels", 128, MAX_CHANNELS),
    ("audio_cross_attention_dim", 2048, MAX_CHANNELS),
)


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and switches of the audio+video transformer (``config["transformer"]`` of the checkpoint).

    Video stream: ``num_attention_heads`` x ``attention_head_dim`` = ``inner_dim``; audio stream likewise
    (``audio_inner_dim``). ``with_audio=False`` builds the video-only model, ``with_video=False`` the audio-only
    one. LTX-2 ("2.0") projects the caption inside the transformer (``caption_proj_before_connector=False``, sized
    by ``caption_channels``); LTX-2.3 moves that projection into the text-encoder path and adds gated attention
    and the cross-attention AdaLN. LTX-2.5 drops the video feed-forward biases (``ff_bias``) and adds the learned
    keyframe marker added to the tokens of single-pixel-frame latents (``use_keyframes_abs_pos_embedding``);
    ``use_prompt_adaln_single=False`` (a reference option no published file sets) makes the text keys / values
    independent of the timestep.
    """

    with_audio: bool
    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    in_channels: int
    out_channels: int
    cross_attention_dim: int
    audio_num_attention_heads: int
    audio_attention_head_dim: int
    audio_in_channels: int
    audio_out_channels: int
    audio_cross_attention_dim: int
    norm_eps: float
    positional_embedding_theta: float
    positional_embedding_max_pos: tuple[int, ...]
    audio_positional_embedding_max_pos: tuple[int, ...]
    timestep_scale_multiplier: float
    av_ca_timestep_scale_multiplier: float
    rope_type: str
    # The reference's "float64" frequencies: only the frequency table is computed in float64 (then float32).
    double_precision_rope: bool
    apply_gated_attention: bool
    cross_attention_adaln: bool
    caption_proj_before_connector: bool
    caption_channels: int | None
    attention_type: str = "default"
    ff_bias: bool = True
    audio_ff_bias: bool = True
    use_prompt_adaln_single: bool = True
    use_keyframes_abs_pos_embedding: bool = False
    with_video: bool = True  # False: the audio-only build (text-to-audio), no video stream modules at all

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def adaln_params(self) -> int:
        """AdaLN rows per block: shift/scale/gate for self-attention and FF, plus 3 for the text cross-attention."""
        return 9 if self.cross_attention_adaln else 6

    @property
    def prompt_adaln(self) -> bool:
        """Whether the text keys / values are modulated by the sigma (the ``prompt_adaln_single`` MLPs)."""
        return self.cross_attention_adaln and self.use_prompt_adaln_single

    @property
    def timestep_free_prompt_kv(self) -> bool:
        """Whether the text cross-attention keys / values depend on the prompt alone (not on the timestep), so
        they can be computed once per prompt and reused across denoising steps."""
        return not self.prompt_adaln

    @property
    def caption_projection_in_transformer(self) -> bool:
        return not self.caption_proj_before_connector

    @property
    def cross_modal_max_pos(self) -> int:
        """Temporal max position of the audio<->video rope: the larger of the two streams' temporal ones."""
        return max(self.positional_embedding_max_pos[0], self.audio_positional_embedding_max_pos[0])

    @classmethod
    def from_metadata(cls, config: dict[str, Any], *, with_audio: bool = True, with_video: bool = True
                      ) -> TransformerConfig:
        """Read ``config["transformer"]`` (the checkpoint's ``config`` JSON) with the reference's defaults.

        Raises ``ValueError("key=actual, expected expected")`` for any value the model does not support.
        """
        section = ConfigSection(config).section("transformer")
        for key, expected in _PINNED + (_PINNED_AUDIO_VIDEO if with_audio else ()):
            section.pinned(key, expected)
        before_connector = section.flag("caption_proj_before_connector", False)
        values = {key: section.integer(key, default, high=bound) for key, default, bound in _SIZES}
        result = cls(
            with_audio=with_audio,
            **values,
            norm_eps=section.number("norm_eps", 1e-6, above=0.0, high=1.0),
            positional_embedding_theta=section.number("positional_embedding_theta", 10000.0, above=0.0,
                                                      high=MAX_THETA),
            positional_embedding_max_pos=section.integers("positional_embedding_max_pos", (20, 2048, 2048),
                                                          length=3, high=MAX_POSITION),
            audio_positional_embedding_max_pos=section.integers("audio_positional_embedding_max_pos", (20,),
                                                                length=1, high=MAX_POSITION),
            timestep_scale_multiplier=section.number("timestep_scale_multiplier", 1000, above=0.0,
                                                     high=MAX_TIMESTEP_SCALE),
            av_ca_timestep_scale_multiplier=section.number("av_ca_timestep_scale_multiplier", 1, above=0.0,
                                                           high=MAX_TIMESTEP_SCALE),
            rope_type=section.choice("rope_type", "interleaved", ROPE_TYPES),
            double_precision_rope=section.get("frequencies_precision") == "float64",
            apply_gated_attention=section.flag("apply_gated_attention", False),
            cross_attention_adaln=section.flag("cross_attention_adaln", False),
            caption_proj_before_connector=before_connector,
            caption_channels=None if before_connector else section.integer("caption_channels", high=MAX_CHANNELS),
            attention_type=section.choice("attention_type", "default", ATTENTION_TYPES),
            ff_bias=section.flag("ff_bias", True),
            audio_ff_bias=section.flag("audio_ff_bias", True),
            use_prompt_adaln_single=section.flag("use_prompt_adaln_single", True),
            use_keyframes_abs_pos_embedding=section.flag("use_keyframes_abs_pos_embedding", False),
            with_video=with_video,
        )
        result._check_widths()
        return result

    def _check_widths(self) -> None:
        # The text context reaches attn2 at the stream's width (projected here for 2.0, by the connector for 2.3).
        if self.cross_attention_dim != self.inner_dim:
            raise reject("transformer.cross_attention_dim", self.cross_attention_dim, self.inner_dim)
        if self.with_audio and self.audio_cross_attention_dim != self.audio_inner_dim:
            # Also the width of the audio<->video attention and of its rope.
            raise reject("transformer.audio_cross_attention_dim", self.audio_cross_attention_dim,
                         self.audio_inner_dim)
