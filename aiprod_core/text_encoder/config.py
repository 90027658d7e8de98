"""Configuration of the text path after Gemma: feature extractor (text projection) and embeddings connectors.

Both are read from the single-file checkpoint's ``config["transformer"]`` section, with the reference's defaults.
LTX-2 ("2.0", 19B) projects the stacked Gemma hidden states back to the Gemma width (``aggregate_embed``) and the
transformer holds the caption projection; LTX-2.3 (22B) has ``caption_proj_before_connector`` and projects to the
video / audio widths (``video_aggregate_embed`` / ``audio_aggregate_embed``) before the connectors. LTX-2.5 keeps
2.3's text path (its Gemma 4 has Gemma 3's width and depth) with the projection saved in the text encoder file and
the connectors in the transformer file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..config_reader import ConfigSection, reject

__all__ = ["ConnectorConfig", "FeatureExtractorKind", "TextEmbeddingsConfig"]

# The reference builds the connector registers, rope theta and output norm with fixed values.
CONNECTOR_NUM_REGISTERS = 128
CONNECTOR_ROPE_THETA = 10000.0
ROPE_TYPES = ("interleaved", "split")

# LTX-2.3 ("V2") projection keys and the only values the reference implements (encoder_configurator.py).
_V2_PROJECTION_KEYS: dict[str, bool] = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}
_V2_NORM_TYPE = "per_token_rms"


class FeatureExtractorKind(str, Enum):
    """``AGGREGATE`` (LTX-2): per-sample min/max norm -> ``aggregate_embed``. ``DUAL`` (LTX-2.3): per-token RMS
    norm -> ``video_aggregate_embed`` and ``audio_aggregate_embed``."""

    AGGREGATE = "aggregate"
    DUAL = "dual"


# Sanity bounds (the published connectors: 2-8 layers of 30 / 32 heads of 128 / 64, Gemma width 3840).
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_CONNECTOR_LAYERS = 256
MAX_CHANNELS = 65536
MAX_POSITION = 10**7


def _reject(key: str, actual: Any, expected: Any) -> None:
    raise reject(key, actual, expected)


@dataclass(frozen=True)
class ConnectorConfig:
    """One 1-D embeddings connector (video or audio): width = ``num_heads * head_dim``."""

    num_heads: int
    head_dim: int
    num_layers: int
    num_registers: int
    rope_type: str
    double_precision_rope: bool
    rope_max_pos: int
    gated_attention: bool
    rope_theta: float = CONNECTOR_ROPE_THETA
    ff_bias: bool = True  # ``connector_ff_bias`` (the reference's option; every published file has the biases)

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class TextEmbeddingsConfig:
    """Feature extractor kind and output widths plus the two connectors, from ``config["transformer"]``."""

    kind: FeatureExtractorKind
    caption_channels: int
    video_dim: int  # inner width of the video stream (LTX-2.3 projection target)
    audio_dim: int
    video_connector: ConnectorConfig
    audio_connector: ConnectorConfig

    @classmethod
    def from_metadata(cls, config: dict[str, Any]) -> TextEmbeddingsConfig:
        """Build from the checkpoint's whole ``config`` metadata (its ``transformer`` section is read)."""
        section = ConfigSection(config).section("transformer")
        kind = _feature_extractor_kind(section)
        section.pinned("connector_norm_output", True, absent=True)
        section.pinned("connector_num_learnable_registers", CONNECTOR_NUM_REGISTERS,  # always 128 upstream
                       absent=CONNECTOR_NUM_REGISTERS)
        shared = {
            "ff_bias": section.flag("connector_ff_bias", True),
            "num_registers": CONNECTOR_NUM_REGISTERS,
            "rope_type": section.choice("rope_type", "interleaved", ROPE_TYPES),
            "double_precision_rope": section.get("frequencies_precision") == "float64",
            "rope_max_pos": section.integers("connector_positional_embedding_max_pos", (1,), length=1,
                                             high=MAX_POSITION)[0],
            "gated_attention": section.flag("connector_apply_gated_attention", False),
        }
        heads = section.integer("connector_num_attention_heads", 30, high=MAX_HEADS)
        head_dim = section.integer("connector_attention_head_dim", 128, high=MAX_HEAD_DIM)
        layers = section.integer("connector_num_layers", 2, high=MAX_CONNECTOR_LAYERS)
        video = ConnectorConfig(num_heads=heads, head_dim=head_dim, num_layers=layers, **shared)
        audio = ConnectorConfig(
            num_heads=section.integer("audio_connector_num_attention_heads", heads, high=MAX_HEADS),
            head_dim=section.integer("audio_connector_attention_head_dim", head_dim, high=MAX_HEAD_DIM),
            num_layers=section.integer("audio_connector_num_layers", layers, high=MAX_CONNECTOR_LAYERS),
            **shared,
        )
        widths = {key: section.integer(key, default, high=bound) for key, default, bound in (
            ("caption_channels", 3840, MAX_CHANNELS), ("num_attention_heads", 32, MAX_HEADS),
            ("attention_head_dim", 128, MAX_HEAD_DIM), ("audio_num_attention_heads", 32, MAX_HEADS),
            ("audio_attention_head_dim", 64, MAX_HEAD_DIM))}
        made = cls(
            kind=kind,
            caption_channels=widths["caption_channels"],
            video_dim=widths["num_attention_heads"] * widths["attention_head_dim"],
            audio_dim=widths["audio_num_attention_heads"] * widths["audio_attention_head_dim"],
            video_connector=video,
            audio_connector=audio,
        )
        made.validate()
        return made

    @property
    def video_features_dim(self) -> int:
        """Width of the feature extractor's video output (= the video connector's width)."""
        return self.caption_channels if self.kind is FeatureExtractorKind.AGGREGATE else self.video_dim

    @property
    def audio_features_dim(self) -> int:
        return self.caption_channels if self.kind is FeatureExtractorKind.AGGREGATE else self.audio_dim

    def validate(self) -> None:
        """The connectors must run at the widths the feature extractor produces."""
        if self.video_connector.inner_dim != self.video_features_dim:
            _reject("transformer.connector_num_attention_heads * connector_attention_head_dim",
                    self.video_connector.inner_dim, self.video_features_dim)  # fmt: skip
        if self.audio_connector.inner_dim != self.audio_features_dim:
            _reject("transformer.audio_connector_num_attention_heads * audio_connector_attention_head_dim",
                    self.audio_connector.inner_dim, self.audio_features_dim)  # fmt: skip
        for connector in (self.video_connector, self.audio_connector):
            if connector.head_dim % 2:
                _reject("transformer.connector_attention_head_dim", connector.head_dim, "an even number")


def _feature_extractor_kind(section: ConfigSection) -> FeatureExtractorKind:
    if not section.keys() & _V2_PROJECTION_KEYS.keys():
        return FeatureExtractorKind.AGGREGATE
    for key in sorted(_V2_PROJECTION_KEYS):
        section.pinned(key, _V2_PROJECTION_KEYS[key])
    norm_type = section.get("text_encoder_norm_type", _V2_NORM_TYPE)
    # LTX-2.5 files spell it "PER_TOKEN_RMS" (the reference does not read the key at all)
    if not isinstance(norm_type, str) or norm_type.lower() != _V2_NORM_TYPE:
        raise reject(section.key("text_encoder_norm_type"), norm_type, _V2_NORM_TYPE)
    return FeatureExtractorKind.DUAL
