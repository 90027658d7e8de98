"""What each component's ``config`` says about its tensors: named facts, per component, for `config_check`.

A `Count` says how many numbered sub-modules the config builds (``transformer_blocks.<i>.``), a `Dim` which axis
of which module tensor a config value sizes. Keys are module keys (after the layout's renaming, so one table
serves the single-file and the split layouts); config keys are named as in the file, from the config's root.
Each fact is a relation of our modules' own state dicts (tests/loaders/test_config_check.py builds every module
and checks every fact against it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .safetensors_header import TensorInfo

__all__ = ["FACTS", "Count", "Dim", "gemma4_facts", "gemma_facts"]

Tensors = Mapping[str, TensorInfo]
Keys = Mapping[str, str]


@dataclass(frozen=True)
class Dim:
    """Config value ``value`` (named ``key`` as in the file) equals axis ``axis`` of module tensor ``tensor``."""

    key: str
    value: int
    tensor: str
    axis: int


@dataclass(frozen=True)
class Count:
    """Config value ``value`` equals the number of numbered sub-modules ``prefix<i>.`` (largest ``i`` + 1)."""

    key: str
    value: int
    prefix: str


Fact = Dim | Count
T = "transformer."


def _transformer(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    from ..aiprod_core.transformer import TransformerConfig

    c = TransformerConfig.from_metadata(config, with_audio=True)
    block = "transformer_blocks.0."
    facts: list[Fact] = [
        Count(T + "num_layers", c.num_layers, "transformer_blocks."),
        Dim(T + "num_attention_heads * attention_head_dim", c.inner_dim, "patchify_proj.weight", 0),
        Dim(T + "in_channels", c.in_channels, "patchify_proj.weight", 1),
        Dim(T + "out_channels", c.out_channels, "proj_out.weight", 0),
        Dim(T + "cross_attention_dim", c.cross_attention_dim, block + "attn2.to_k.weight", 1),
        Dim(T + "audio_num_attention_heads * audio_attention_head_dim", c.audio_inner_dim,
            "audio_patchify_proj.weight", 0),
        Dim(T + "audio_in_channels", c.audio_in_channels, "audio_patchify_proj.weight", 1),
        Dim(T + "audio_out_channels", c.audio_out_channels, "audio_proj_out.weight", 0),
        Dim(T + "audio_cross_attention_dim", c.audio_cross_attention_dim, block + "audio_attn2.to_k.weight", 1),
    ]
    if c.apply_gated_attention:  # one gate per head: the head counts themselves are in the file
        facts += [Dim(T + "num_attention_heads", c.num_attention_heads, block + "attn1.to_gate_logits.weight", 0),
                  Dim(T + "audio_num_attention_heads", c.audio_num_attention_heads,
                      block + "audio_attn1.to_gate_logits.weight", 0)]
    if c.caption_channels is not None:
        facts.append(Dim(T + "caption_channels", c.caption_channels, "caption_projection.linear_1.weight", 1))
    return facts


def _audio_transformer(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    """The audio-only transformer (text-to-audio) reads only the audio stream's tensors: their facts alone."""
    from ..aiprod_core.transformer import TransformerConfig

    c = TransformerConfig.from_metadata(config, with_audio=True)
    return [
        Count(T + "num_layers", c.num_layers, "transformer_blocks."),
        Dim(T + "audio_num_attention_heads * audio_attention_head_dim", c.audio_inner_dim,
            "audio_patchify_proj.weight", 0),
        Dim(T + "audio_in_channels", c.audio_in_channels, "audio_patchify_proj.weight", 1),
        Dim(T + "audio_out_channels", c.audio_out_channels, "audio_proj_out.weight", 0),
        Dim(T + "audio_cross_attention_dim", c.audio_cross_attention_dim,
            "transformer_blocks.0.audio_attn2.to_k.weight", 1),
    ]


def _video_vae(decoder: bool) -> Callable[[dict[str, Any], Keys, Tensors], list[Fact]]:
    def facts(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
        from ..aiprod_core.video_vae import VideoVAEConfig, is_diffusion_vae, video_encoder_config

        if decoder and is_diffusion_vae(config):
            return []  # the LTX-2.5 diffusion decoder is another component: the builder says so by name
        c = VideoVAEConfig.from_metadata(config) if decoder else video_encoder_config(config)
        blocks, name, stage = ((c.decoder_blocks, "decoder_blocks", "up_blocks.") if decoder
                               else (c.encoder_blocks, "encoder_blocks", "down_blocks."))
        found: list[Fact] = [Count(f"len(vae.{name})", len(blocks), stage)]
        found += [Count(f"vae.{name}[{i}].num_layers", b.num_layers, f"{stage}{i}.res_blocks.")
                  for i, b in enumerate(blocks) if b.name == "res_x"]
        found.append(Dim("vae.latent_channels", c.latent_channels, "per_channel_statistics.mean-of-means", 0))
        pixels = c.patch_size**2
        if decoder:
            found += [Dim("vae.latent_channels", c.latent_channels, "conv_in.conv.weight", 1),
                      Dim("vae.out_channels * patch_size ** 2", c.out_channels * pixels, "conv_out.conv.weight", 0)]
        else:
            found.append(Dim("vae.in_channels * patch_size ** 2", c.in_channels * pixels, "conv_in.conv.weight", 1))
        return found

    return facts


DD = "audio_vae.model.params.ddconfig."


def _audio_vae(decoder: bool) -> Callable[[dict[str, Any], Keys, Tensors], list[Fact]]:
    def facts(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
        from ..aiprod_core.audio_vae import AudioVAEConfig

        c = AudioVAEConfig.from_metadata(config)
        statistics = Dim(DD + "ch", c.ch, "per_channel_statistics.mean-of-means", 0)
        if decoder:
            return [
                statistics,
                Count(f"len({DD}ch_mult)", len(c.ch_mult), "up."),
                Count(f"{DD}num_res_blocks + 1", c.num_res_blocks + 1, "up.0.block."),
                Dim(DD + "z_channels", c.z_channels, "conv_in.conv.weight", 1),
                Dim(DD + "out_ch", c.out_ch, "conv_out.conv.weight", 0),
            ]
        return [
            statistics,
            Count(f"len({DD}ch_mult)", len(c.ch_mult), "down."),
            Count(DD + "num_res_blocks", c.num_res_blocks, "down.0.block."),
            Dim(DD + "ch", c.ch, "conv_in.conv.weight", 0),
            Dim(DD + "in_channels", c.in_channels, "conv_in.conv.weight", 1),
            Dim(f"{DD}z_channels x {2 if c.double_z else 1} (double_z={c.double_z})",
                c.z_channels * (2 if c.double_z else 1), "conv_out.conv.weight", 0),
        ]

    return facts


def _generator(generator: Any, key: str, module: str) -> list[Fact]:
    """Facts of one HiFi-GAN / BigVGAN generator (``key``: its config path, ``module``: its module prefix)."""
    ups, kernels = generator.upsample_rates, generator.resblock_kernel_sizes
    facts: list[Fact] = [
        Count(f"len({key}upsample_rates)", len(ups), module + "ups."),
        Dim(key + "upsample_initial_channel", generator.upsample_initial_channel, module + "conv_pre.weight", 0),
        Count(f"len({key}upsample_rates) * len({key}resblock_kernel_sizes)", len(ups) * len(kernels),
              module + "resblocks."),
    ]
    facts += [Dim(f"{key}upsample_kernel_sizes[{i}]", k, f"{module}ups.{i}.weight", 2)
              for i, k in enumerate(generator.upsample_kernel_sizes)]
    facts += [Dim(f"{key}resblock_kernel_sizes[{j}]", k, f"{module}resblocks.{j}.convs1.0.weight", 2)
              for j, k in enumerate(kernels)]
    facts += [Count(f"len({key}resblock_dilation_sizes[{j}])", len(d), f"{module}resblocks.{j}.convs1.")
              for j, d in enumerate(generator.resblock_dilation_sizes)]
    return facts


def _vocoder(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    from ..aiprod_core.audio_vae import VocoderConfig

    c = VocoderConfig.from_metadata(config)
    if c.bwe is None:
        return _generator(c.generator, "vocoder.", "")
    bwe = c.bwe
    return [
        *_generator(c.generator, "vocoder.vocoder.", "vocoder."),
        *_generator(bwe.generator, "vocoder.bwe.", "bwe_generator."),
        # The STFT / mel bases the bandwidth extension computes when it is built: sized by the file's.
        Dim("vocoder.bwe.n_fft", bwe.n_fft, "mel_stft.stft_fn.forward_basis", 2),
        Dim("vocoder.bwe.n_fft // 2 + 1", bwe.n_fft // 2 + 1, "mel_stft.mel_basis", 1),
        Dim("vocoder.bwe.num_mels", bwe.num_mels, "mel_stft.mel_basis", 0),
    ]


def _projection_width(keys: Keys, tensors: Tensors, prefix: str) -> int | None:
    for name in ("aggregate_embed.weight", "video_aggregate_embed.weight"):
        file_key = keys.get(prefix + name)
        if file_key is not None and len(tensors[file_key].shape) == 2:
            return tensors[file_key].shape[1]
    return None


def _connector_facts(config: dict[str, Any]) -> list[Fact]:
    from ..aiprod_core.text_encoder.config import TextEmbeddingsConfig

    c = TextEmbeddingsConfig.from_metadata(config)
    facts: list[Fact] = []
    for stream, connector, name in (("video_connector.", c.video_connector, "connector_"),
                                    ("audio_connector.", c.audio_connector, "audio_connector_")):
        blocks = stream + "transformer_1d_blocks."
        facts += [Count(f"{T}{name}num_layers", connector.num_layers, blocks),
                  Dim(f"{T}{name}num_attention_heads * {name}attention_head_dim", connector.inner_dim,
                      stream + "learnable_registers", 1)]
        if connector.gated_attention:
            facts.append(Dim(f"{T}{name}num_attention_heads", connector.num_heads,
                             blocks + "0.attn1.to_gate_logits.weight", 0))
    return facts


def _projection_facts(config: dict[str, Any], keys: Keys, tensors: Tensors, prefix: str) -> list[Fact]:
    """The projection's facts; ``prefix``: its module's key prefix (``feature_extractor.`` inside the text
    embeddings module, none when it is loaded alone)."""
    from ..aiprod_core.text_encoder.config import FeatureExtractorKind, TextEmbeddingsConfig
    from .components import gemma_dims

    c = TextEmbeddingsConfig.from_metadata(config)
    gemma_dims(config, _projection_width(keys, tensors, prefix))  # its input: Gemma width x (layers + 1)
    if c.kind is FeatureExtractorKind.AGGREGATE:
        return [Dim(T + "caption_channels", c.caption_channels, prefix + "aggregate_embed.weight", 0)]
    return [Dim(T + "num_attention_heads * attention_head_dim", c.video_dim, prefix + "video_aggregate_embed.weight",
                0),
            Dim(T + "audio_num_attention_heads * audio_attention_head_dim", c.audio_dim,
                prefix + "audio_aggregate_embed.weight", 0)]


def _text_embeddings(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    return _connector_facts(config) + _projection_facts(config, keys, tensors, "feature_extractor.")


def _text_connectors(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    """LTX-2.5's connectors alone (in the transformer file)."""
    return _connector_facts(config)


def _text_projection(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    """LTX-2.5's projection alone (in the text encoder file; the config is the transformer file's)."""
    return _projection_facts(config, keys, tensors, "")


def _duration_head(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    from ..aiprod_core.duration_head import DurationHeadConfig

    c = DurationHeadConfig.from_metadata(config)
    h = "duration_head."
    return [
        Dim(T + "cross_attention_dim", c.video_dim, "video_input_proj.weight", 1),
        Dim(T + "audio_cross_attention_dim", c.audio_dim, "audio_input_proj.weight", 1),
        Dim(h + "pooler_hidden_dim", c.pooler_dim, "video_input_proj.weight", 0),
        Dim(h + "num_queries", c.num_queries, "attention_pooler.query_tokens", 0),
        Dim(h + "mlp_hidden", c.mlp_hidden, "mlp_hidden.weight", 0),
        Dim(h + "pooler_hidden_dim * num_queries", c.pooler_dim * c.num_queries, "mlp_hidden.weight", 1),
    ]


def _diffusion_video_decoder(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    """The LTX-2.5 diffusion decoder: four deterministic stages (``det_stages.<i>.<block>``) and the diffusion
    blocks (``diff_blocks.<block>``), their depths and widths from ``vae.decoder`` (or a flat ``vae``)."""
    from ..aiprod_core.video_vae import DiffusionDecoderConfig

    c = DiffusionDecoderConfig.from_metadata(config)
    d = "vae.decoder." if "decoder" in config["vae"] else "vae."
    stages = len(c.upsamples)
    found: list[Fact] = [
        Dim(d + "in_channels", c.in_channels, "conv_in.weight", 1),
        Dim(d + "in_channels", c.in_channels, "per_channel_statistics.mean-of-means", 0),
        Dim(d + "stage_channels[0]", c.stage_channels[0], "conv_in.weight", 0),
        Count(f"len({d}upsamples)", stages, "det_stages."),
        Count(f"{d}stage_depths[{stages}]", c.stage_depths[stages], "diff_blocks."),
        Dim(d + "stage5_channels", c.stage5_channels, "conv_in_x_t.weight", 0),
        Dim(d + "out_channels * patch_size ** 2", c.out_channels * c.patch_size**2, "conv_in_x_t.weight", 1),
        Dim(d + "t_emb_dim", c.t_emb_dim, "t_embedder.timestep_embedder.linear_1.weight", 0),
    ]
    for i in range(stages):
        found += [Count(f"{d}stage_depths[{i}]", c.stage_depths[i], f"det_stages.{i}."),
                  Dim(f"{d}stage_channels[{i}]", c.stage_channels[i], f"det_stages.{i}.0.norm1.weight", 0)]
    return found


def _upsampler(config: dict[str, Any], keys: Keys, tensors: Tensors) -> list[Fact]:
    from ..aiprod_core.upsampler import LatentUpsamplerConfig

    c = LatentUpsamplerConfig.from_metadata(config)
    return [
        Dim("mid_channels", c.mid_channels, "initial_conv.weight", 0),
        Dim("in_channels", c.in_channels, "initial_conv.weight", 1),
        Count("num_blocks_per_stage", c.num_blocks_per_stage, "res_blocks."),
        Count("num_blocks_per_stage", c.num_blocks_per_stage, "post_upsample_res_blocks."),
    ]


FACTS: dict[str, Callable[[dict[str, Any], Keys, Tensors], list[Fact]]] = {
    "transformer": _transformer,
    "audio_transformer": _audio_transformer,
    "video_encoder": _video_vae(decoder=False),
    "video_decoder": _video_vae(decoder=True),
    "diffusion_video_decoder": _diffusion_video_decoder,
    "audio_encoder": _audio_vae(decoder=False),
    "audio_decoder": _audio_vae(decoder=True),
    "vocoder": _vocoder,
    "text_embeddings": _text_embeddings,
    "text_connectors": _text_connectors,
    "text_projection": _text_projection,
    "duration_head": _duration_head,
    "latent_upsampler": _upsampler,
}

# Gemma-3 text config values: (key, upper bound); the 12B model LTX-2 uses has 48 layers, 262,208 tokens,
# width 3840, 16 heads / 8 key-value heads of 256, MLP 15,360.
_GEMMA_INTS: tuple[tuple[str, int], ...] = (
    ("num_hidden_layers", 512), ("vocab_size", 2**21), ("hidden_size", 65536), ("intermediate_size", 2**20),
    ("num_attention_heads", 1024), ("num_key_value_heads", 1024), ("head_dim", 4096),
    ("max_position_embeddings", 2**24), ("sliding_window", 2**24), ("sliding_window_pattern", 1024),
)
_GEMMA_NUMBERS: tuple[tuple[str, float], ...] = (
    ("rope_theta", 1e12), ("rope_local_base_freq", 1e12), ("query_pre_attn_scalar", 1e6), ("rms_norm_eps", 1.0),
)


def gemma_facts(config: Mapping[str, Any]) -> list[Fact]:
    """Bounds on a Gemma-3 ``config.json`` and the facts it states about the text backbone's tensors (module keys
    ``model.layers.<i>.``, ``model.embed_tokens.weight``); keys it leaves to transformers' defaults are skipped."""
    from ..aiprod_core.config_reader import ConfigSection

    nested = config.get("model_type") == "gemma3"
    section = ConfigSection(config).section("text_config") if nested else ConfigSection(config)
    values = {k: section.integer(k, high=bound) for k, bound in _GEMMA_INTS if k in section}
    for key, bound in _GEMMA_NUMBERS:
        if key in section:
            section.number(key, above=0.0, high=bound)
    section.section("rope_scaling").number("factor", 1.0, above=0.0, high=1024.0)
    name, layer = section.key, "model.layers.0."
    facts: list[Fact] = []
    if "num_hidden_layers" in values:
        facts.append(Count(name("num_hidden_layers"), values["num_hidden_layers"], "model.layers."))
    for key, tensor, axis in (("vocab_size", "model.embed_tokens.weight", 0),
                              ("hidden_size", "model.embed_tokens.weight", 1),
                              ("intermediate_size", layer + "mlp.gate_proj.weight", 0),
                              ("head_dim", layer + "self_attn.q_norm.weight", 0)):
        if key in values:
            facts.append(Dim(name(key), values[key], tensor, axis))
    if "head_dim" in values:
        for heads, projection in (("num_attention_heads", "q_proj"), ("num_key_value_heads", "k_proj")):
            if heads in values:
                facts.append(Dim(f"{name(heads)} * head_dim", values[heads] * values["head_dim"],
                                 f"{layer}self_attn.{projection}.weight", 0))
    return facts


def gemma4_facts(config: Mapping[str, Any]) -> list[Fact]:
    """Bounds on a Gemma-4 config (``gemma4_unified`` with its ``text_config``, or ``gemma4_unified_text``) and
    the facts every Gemma-4 layout shares: the layer count and the embedding table (vocabulary x width)."""
    from ..aiprod_core.config_reader import ConfigSection

    nested = config.get("model_type") == "gemma4_unified"
    section = ConfigSection(config).section("text_config") if nested else ConfigSection(config)
    values = {k: section.integer(k, high=bound) for k, bound in _GEMMA_INTS if k in section}
    facts: list[Fact] = []
    if "num_hidden_layers" in values:
        facts.append(Count(section.key("num_hidden_layers"), values["num_hidden_layers"], "model.layers."))
    for key, axis in (("vocab_size", 0), ("hidden_size", 1)):
        if key in values:
            facts.append(Dim(section.key(key), values[key], "model.embed_tokens.weight", axis))
    return facts
