"""Output nodes: video decode (tiled) -> IMAGE, audio decode -> AUDIO, save MP4 / MOV with the audio muxed."""

from __future__ import annotations

import os

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..aiprod_core.media import VIDEO_FORMATS, write_video_file
from ..aiprod_core.pipelines import decode_audio, decode_video
from ..aiprod_core.pipelines.validation import tiling_config
from .files import filename_prefix_problem
from .inputs import choice_input, float_input, seed_input, tiling_inputs
from .problems import check_inputs
from .runtime import ComfyModelHost, DecodeProgress
from .types import AudioVAE, AudioVAESocket, LatentBundle, LatentSocket, VideoVAE, VideoVAESocket

__all__ = ["AIPRODAudioDecode", "AIPRODSaveVideo", "AIPRODVideoDecode", "save_video"]

CATEGORY = "AIPROD/output"
FORMATS = {"mp4 (H.264 + AAC)": "mp4", "mov (ProRes 422 HQ + PCM)": "mov-prores"}
MAX_CRF = 51


def vae_host() -> ComfyModelHost:
    """Decoding follows ComfyUI's VAE placement (``--cpu-vae`` decodes on the CPU, as the OOM advice suggests)."""
    return ComfyModelHost(mm.vae_device(), mm.vae_offload_device())


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
                seed_input("Seed of the LTX-2 decoder's noise (LTX-2.3 decoders use none).", control=False),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames (F, H, W, 3) in 0..1."),
                io.Float.Output(display_name="fps", tooltip="The clip's frame rate."),
            ],
        )

    @classmethod
    def execute(cls, video_vae: VideoVAE, latent: LatentBundle, spatial_tile: int, spatial_overlap: int,
                temporal_tile: int, temporal_overlap: int, seed: int) -> io.NodeOutput:
        tiling = tiling_config(spatial_tile, spatial_overlap, temporal_tile, temporal_overlap)
        host = vae_host()
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
                io.Image.Input("images", lazy=True, tooltip="Frames (F, H, W, 3)."),
                float_input("fps", 24.0, "Frame rate (connect 'AIPROD Video Decode' fps)."),
                io.String.Input("filename_prefix", default="aiprod/video",
                                tooltip="File name prefix under the output folder."),
                choice_input("format", list(FORMATS), "MP4 for sharing, MOV ProRes for editing.",
                             default="mp4 (H.264 + AAC)"),
                io.Int.Input("crf", default=19, min=0, max=MAX_CRF,
                             tooltip="H.264 quality (lower = better; MP4 only)."),
                io.Audio.Input("audio", optional=True, lazy=True,
                               tooltip="Audio to mux (fitted to the video's duration)."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str) -> bool | str:
        return filename_prefix_problem(filename_prefix) or True

    @classmethod
    def check_lazy_status(cls, fps: float | None = None, **values: object) -> list[str]:
        """The frame rate (NaN passes ComfyUI's range check) before the frames and audio are generated."""
        check_inputs({"fps": fps}, ("fps",))
        return [name for name in ("images", "audio") if name in values and values[name] is None]

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, filename_prefix: str, format: str, crf: int,
                audio: dict | None = None) -> io.NodeOutput:
        saved = save_video(images, fps, audio, filename_prefix, FORMATS[format], crf)
        return io.NodeOutput(ui=ui.PreviewVideo([saved]))
