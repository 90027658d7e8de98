"""Output nodes: video decode (tiled) -> IMAGE, audio decode -> AUDIO, save MP4 / MOV with the audio muxed."""

from __future__ import annotations

import os

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..aiprod_core.media import VIDEO_FORMATS, write_video_file
from ..aiprod_core.pipelines import decode_audio, decode_video
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.video_vae import TilingConfig
from ..aiprod_core.video_vae.tiling import SpatialTiling, TemporalTiling
from .files import filename_prefix_problem
from .latent_nodes import first_problem
from .runtime import ComfyModelHost, DecodeProgress
from .types import AudioVAE, AudioVAESocket, LatentBundle, LatentSocket, VideoVAE, VideoVAESocket

__all__ = ["AIPRODAudioDecode", "AIPRODSaveVideo", "AIPRODVideoDecode", "save_video", "tiling_config"]

CATEGORY = "AIPROD/output"
MAX_SEED = 2**64 - 1
FORMATS = {"mp4 (H.264 + AAC)": "mp4", "mov (ProRes 422 HQ + PCM)": "mov-prores"}
SPATIAL_TILE, SPATIAL_OVERLAP, TEMPORAL_TILE, TEMPORAL_OVERLAP = 512, 64, 64, 24  # fits 24 GB GPUs
MAX_TILE = 8192
_TILING_NAMES = {"tile_size_in_pixels": "spatial_tile", "tile_overlap_in_pixels": "spatial_overlap",
                 "tile_size_in_frames": "temporal_tile", "tile_overlap_in_frames": "temporal_overlap"}


def vae_host() -> ComfyModelHost:
    """Decoding follows ComfyUI's VAE placement (``--cpu-vae`` decodes on the CPU, as the OOM advice suggests)."""
    return ComfyModelHost(mm.vae_device(), mm.vae_offload_device())


def tiling_config(spatial_tile: int, spatial_overlap: int, temporal_tile: int, temporal_overlap: int
                  ) -> TilingConfig | None:
    """Tiles in pixels / frames (0 = no tiling on that axis); `TilingConfig` checks the grid rules (its messages
    name the core's fields: they are renamed to this node's inputs)."""
    try:
        spatial = SpatialTiling(spatial_tile, spatial_overlap) if spatial_tile else None
        temporal = TemporalTiling(temporal_tile, temporal_overlap) if temporal_tile else None
    except ValueError as exc:
        message = str(exc)
        for core_name, name in _TILING_NAMES.items():
            message = message.replace(core_name, name)
        raise ValueError(message) from exc
    return None if spatial is None and temporal is None else TilingConfig(spatial, temporal)


def tiling_inputs() -> list:
    return [
        io.Int.Input("spatial_tile", default=SPATIAL_TILE, min=0, max=MAX_TILE, step=32,
                     tooltip="Spatial tile size in pixels (multiple of 32, >= 64; 0 = decode whole frames)."),
        io.Int.Input("spatial_overlap", default=SPATIAL_OVERLAP, min=0, max=MAX_TILE, step=32,
                     tooltip="Spatial tile overlap in pixels (multiple of 32), blended at the seams."),
        io.Int.Input("temporal_tile", default=TEMPORAL_TILE, min=0, max=MAX_TILE, step=8,
                     tooltip="Temporal tile size in frames (multiple of 8, >= 16; 0 = all frames at once). Keeps "
                     "memory flat with clip length."),
        io.Int.Input("temporal_overlap", default=TEMPORAL_OVERLAP, min=0, max=MAX_TILE, step=8,
                     tooltip="Temporal tile overlap in frames (multiple of 8), blended."),
    ]


def check_tiling(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap) -> str | None:
    if None in (spatial_tile, spatial_overlap, temporal_tile, temporal_overlap):
        return None
    return first_problem(lambda: tiling_config(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap))


class AIPRODVideoDecode(io.ComfyNode):
    """Video latent -> frames (IMAGE) and the clip's fps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODVideoDecode",
            display_name="AIPROD Video Decode",
            category=CATEGORY,
            description="Decodes the video latent to frames with tiling (on by default; blended seams; memory does "
            "not grow with clip length).",
            inputs=[
                VideoVAESocket.Input("video_vae", tooltip="The video VAE."),
                LatentSocket.Input("latent", tooltip="Sampled latents."),
                *tiling_inputs(),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED,
                             tooltip="Seed of the LTX-2 decoder's noise (LTX-2.3 decoders use none)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames (F, H, W, 3) in 0..1."),
                io.Float.Output(display_name="fps", tooltip="The clip's frame rate."),
            ],
        )

    @classmethod
    def validate_inputs(cls, spatial_tile: int, spatial_overlap: int, temporal_tile: int,
                        temporal_overlap: int) -> bool | str:
        return check_tiling(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap) or True

    @classmethod
    def execute(cls, video_vae: VideoVAE, latent: LatentBundle, spatial_tile: int, spatial_overlap: int,
                temporal_tile: int, temporal_overlap: int, seed: int) -> io.NodeOutput:
        host = vae_host()
        tiling = tiling_config(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap)
        generator = torch.Generator(device=host.device).manual_seed(seed)
        frames = decode_video(video_vae.decoder.get(), latent.latents.video, host, generator=generator, tiling=tiling,
                              on_chunk=DecodeProgress())
        return io.NodeOutput(frames[0].cpu(), latent.latents.fps)


class AIPRODAudioDecode(io.ComfyNode):
    """Audio latent -> AUDIO covering exactly the clip's duration."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODAudioDecode",
            display_name="AIPROD Audio Decode",
            category=CATEGORY,
            description="Decodes the audio latent (audio VAE -> mel -> vocoder) to a waveform of exactly "
            "frames / fps seconds at the vocoder's sample rate.",
            inputs=[
                AudioVAESocket.Input("audio_vae", tooltip="The audio VAE decoder + vocoder."),
                LatentSocket.Input("latent", tooltip="Sampled latents."),
            ],
            outputs=[io.Audio.Output(display_name="audio", tooltip="{'waveform': (1, C, S), 'sample_rate': int}.")],
        )

    @classmethod
    def execute(cls, audio_vae: AudioVAE, latent: LatentBundle) -> io.NodeOutput:
        lat = latent.latents
        waveform, rate = decode_audio(audio_vae.decoder.get(), audio_vae.vocoder.get(), lat.audio, vae_host(),
                                      duration=lat.duration)  # fmt: skip
        return io.NodeOutput({"waveform": waveform[:1].cpu(), "sample_rate": int(rate)})


def save_video(images: torch.Tensor, fps: float, audio: dict | None, prefix: str, fmt: str, crf: int
               ) -> ui.SavedResult:
    """Write the clip under the output folder (never outside it) and return its UI record."""
    out_dir = folder_paths.get_output_directory()
    full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, images.shape[2],
                                                                              images.shape[1])
    os.makedirs(full_dir, exist_ok=True)
    filename = f"{name}_{counter:05}_{VIDEO_FORMATS[fmt].suffix}"
    waveform = None if audio is None else audio["waveform"][0].float()
    rate = None if audio is None else int(audio["sample_rate"])
    write_video_file(os.path.join(full_dir, filename), images.float().cpu(), fps, waveform, rate, fmt=fmt, crf=crf)
    return ui.SavedResult(filename, subfolder, io.FolderType.output)


class AIPRODSaveVideo(io.ComfyNode):
    """Saves frames + audio as MP4 (H.264 + AAC) or MOV (ProRes 422 HQ + PCM) of exactly frames / fps seconds."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODSaveVideo",
            display_name="AIPROD Save Video",
            category=CATEGORY,
            description="Writes the clip with its audio muxed (audio fitted to the video's exact duration) to the "
            "output folder, atomically.",
            inputs=[
                io.Image.Input("images", tooltip="Frames (F, H, W, 3)."),
                io.Float.Input("fps", default=24.0, min=rules.MIN_FRAME_RATE, max=rules.MAX_FRAME_RATE, step=0.01,
                               tooltip="Frame rate (connect 'AIPROD Video Decode' fps)."),
                io.String.Input("filename_prefix", default="aiprod/video",
                                tooltip="File name prefix under the output folder."),
                io.Combo.Input("format", options=list(FORMATS), default="mp4 (H.264 + AAC)",
                               tooltip="MP4 for sharing, MOV ProRes for editing."),
                io.Int.Input("crf", default=19, min=0, max=51, tooltip="H.264 quality (lower = better; MP4 only)."),
                io.Audio.Input("audio", optional=True, tooltip="Audio to mux (fitted to the video's duration)."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, fps: float, format: str, crf: int, filename_prefix: str) -> bool | str:
        if format is not None and format not in FORMATS:
            return f"format={format!r}: expected one of {list(FORMATS)!r}"
        if crf is not None and not 0 <= crf <= 51:
            return f"crf={crf!r}: must be in [0, 51]"
        if fps is not None:
            problem = first_problem(lambda: rules.check_frame_rate(fps))
            if problem:
                return problem
        return filename_prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, filename_prefix: str, format: str, crf: int,
                audio: dict | None = None) -> io.NodeOutput:
        saved = save_video(images, fps, audio, filename_prefix, FORMATS[format], crf)
        return io.NodeOutput(ui=ui.PreviewVideo([saved]))
