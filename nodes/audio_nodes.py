"""Audio nodes: audio-to-video and text-to-audio as one-node pipelines and as stages (encode an audio track into
the latents, an empty audio-only latent, an audio-only model), and a WAV / FLAC saver."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..aiprod_core.conditioning import Frozen
from ..aiprod_core.media import AUDIO_FORMATS, write_audio_file
from ..aiprod_core.pipelines import (
    AudioRequest,
    PipelineModels,
    PromptContexts,
    audio_to_video,
    clip_rules,
    empty_latents,
    encode_audio,
    text_to_audio,
    text_to_audio_defaults,
)
from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.run import GuidedSampling
from ..aiprod_core.pipelines.validation import PipelineKind
from ..aiprod_core.sampling import StreamGuider
from ..loaders.lora_apply import load_component_with_loras
from .clip_inputs import audio_clip, audio_output
from .files import filename_prefix_problem
from .inputs import choice_input, float_input, int_input, seed_input, tiling_inputs
from .pipeline_base import (
    REFINER_TOOLTIP,
    PipelineNode,
    common_inputs,
    generation_request,
    guided_inputs,
    guided_sampling,
    image_conditions,
    image_inputs,
    pipeline_models,
    pipeline_outputs,
    pipeline_problems,
    wrap_result,
)
from .problems import guider_model_problems, input_problems
from .runtime import ComfyModelHost, StepProgress, load_device, mark_weight_streaming
from .types import (
    AudioVAE,
    AudioVAESocket,
    ConditioningSocket,
    GuiderSettings,
    GuiderSocket,
    LatentBundle,
    LatentSocket,
    LazyModule,
    ModelSocket,
    TransformerHandle,
)

__all__ = [
    "AIPRODAudioOnlyModel",
    "AIPRODAudioToVideoPipeline",
    "AIPRODEmptyAudioLatent",
    "AIPRODEncodeAudio",
    "AIPRODSaveAudio",
    "AIPRODTextToAudioPipeline",
]

CATEGORY = "AIPROD/audio"
REFINE_STEPS = 3
FORMATS = {"wav (16-bit PCM)": "wav", "flac (16-bit, lossless)": "flac"}


def _audio_window_inputs() -> list:
    return [
        float_input("start_time", 0.0, "Where in the track the clip starts, seconds.", step=0.01),
        float_input("max_duration", 0.0, "How much of the track to use, seconds (0 = the clip's duration; it must "
                    "cover the clip).", step=0.01),
    ]


def _audio_problems(values: dict[str, Any]) -> list[str]:
    track, frames, fps = values.get("audio"), values.get("frames"), values.get("fps")
    if track is None or not isinstance(frames, int) or not fps:
        return []
    try:
        clip = audio_clip(track)
    except ValueError as exc:
        return [str(exc)]
    return clip_rules.audio_window_problems(clip.waveform, clip.sample_rate, values.get("start_time", 0.0),
                                            values.get("max_duration", 0.0), frames / fps)  # fmt: skip


class AIPRODAudioToVideoPipeline(PipelineNode):
    """A video driven by an audio track: the audio frozen, the video generated in two stages; the output audio is
    the input track itself."""

    KIND = PipelineKind.AUDIO_TO_VIDEO

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODAudioToVideoPipeline",
            display_name="AIPROD Audio to Video (two stages)",
            category=CATEGORY,
            description="The track (any sample rate, mono or stereo), from start_time, is encoded by the audio VAE "
            "and frozen: never noised or denoised. The video is generated at half size with the guider's video "
            "guidance, x2-upsampled and refined by 'refiner' (ltx-pipelines A2VidPipelineTwoStage). The audio "
            "output is the input track, sample for sample. Width and height: multiples of 64; frames 8k+1.",
            inputs=[*common_inputs(cls.KIND), ModelSocket.Input("refiner", tooltip=REFINER_TOOLTIP), *guided_inputs(),
                    io.Audio.Input("audio", tooltip="The track that drives the video (e.g. core 'Load Audio')."),
                    *_audio_window_inputs(), *image_inputs(), *tiling_inputs()],
            outputs=[*_outputs_a2v()],
        )

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is not None:
            return []
        rules.check_problems(pipeline_problems(cls.KIND, values) + _audio_problems(values))
        return ["conditioning"]

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        request = generation_request(values, image_conditions(values),
                           values["steps"] + REFINE_STEPS)  # fmt: skip
        audio_vae: AudioVAE = values["audio_vae"]
        models = replace(pipeline_models(values, values["refiner"]), audio_encoder=_encoder(audio_vae))
        guided = guided_sampling(values.get("guider"), values["steps"], values["model"])
        result = audio_to_video(models, values["conditioning"], request, audio_clip(values["audio"]), guided,
                                ComfyModelHost(), start_time=values["start_time"],
                                max_duration=values["max_duration"])  # fmt: skip
        return wrap_result(result)


def _outputs_a2v() -> list:
    outputs = pipeline_outputs()
    outputs[1] = io.Audio.Output(display_name="audio", tooltip="The input track from start_time, unchanged.")
    return outputs


def _encoder(audio_vae: AudioVAE) -> torch.nn.Module:
    if audio_vae.encoder is None:
        raise ValueError("audio_vae: this audio VAE has no encoder; load it from a checkpoint that holds one")
    return audio_vae.encoder.get()


def _t2a_guided(guider: GuiderSettings | None, steps: int, model: TransformerHandle) -> GuidedSampling:
    if guider is None:
        defaults = text_to_audio_defaults(rules.generation_family(model.generation) != "2.0")
        return GuidedSampling(steps, defaults.video, defaults.audio)
    return GuidedSampling(steps, guider.video, guider.audio)


class AIPRODTextToAudioPipeline(io.ComfyNode):
    """Audio alone from the prompt: no video stream, the video branch never called."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextToAudioPipeline",
            display_name="AIPROD Text to Audio",
            category=CATEGORY,
            description="One guided stage on the audio stream only (ltx-pipelines T2AOneStagePipeline); the "
            "duration is frames / fps. Give it the model through 'AIPROD Audio-Only Model' so the video weights "
            "are never loaded. The guider's audio settings apply (default: CFG 7, STG on block 28 / 29, rescale "
            "0.7, no modality guidance).",
            inputs=[ModelSocket.Input("model", tooltip="The transformer (best: from 'AIPROD Audio-Only Model')."),
                    AudioVAESocket.Input("audio_vae", tooltip="The audio VAE decoder + vocoder."),
                    ConditioningSocket.Input("conditioning", lazy=True, tooltip="Encoded prompts (encoded only "
                                             "once the other inputs passed their checks)."),
                    int_input("frames", 121, "Length as video frames: 8k+1 (the duration is frames / fps)."),
                    float_input("fps", 24.0, "Frames per second (the duration is frames / fps)."),
                    int_input("steps", 30, "Steps (LTX-2.3: 30, LTX-2: 40)."),
                    GuiderSocket.Input("guider", optional=True, tooltip="Audio guidance; default: ltx-pipelines'."),
                    seed_input()],
            outputs=[io.Audio.Output(display_name="audio", tooltip="Exactly frames / fps seconds."),
                     LatentSocket.Output(display_name="latent", tooltip="The audio latent (no video).")],
        )

    @classmethod
    def check_lazy_status(cls, conditioning: PromptContexts | None = None, **values: Any) -> list[str]:
        if conditioning is not None:
            return []
        problems = rules.fields_problems({k: values.get(k) for k in ("frames", "fps", "steps", "seed")})
        model = values.get("model")
        if model is not None and not problems:
            guided = _t2a_guided(values.get("guider"), values.get("steps") or 1, model)
            problems += guider_model_problems(GuiderSettings(StreamGuider(), guided.audio), model)
        rules.check_problems(problems)
        return ["conditioning"]

    @classmethod
    def execute(cls, model: TransformerHandle, audio_vae: AudioVAE, conditioning: PromptContexts, frames: int,
                fps: float, steps: int, seed: int, guider: GuiderSettings | None = None) -> io.NodeOutput:
        models = PipelineModels(transformer=model.module(), audio_decoder=audio_vae.decoder.get(),
                                vocoder=audio_vae.vocoder.get(), dtype=model.dtype)  # fmt: skip
        request = AudioRequest(frames, fps, seed, callback=StepProgress(steps))
        result = text_to_audio(models, conditioning, request, _t2a_guided(guider, steps, model), ComfyModelHost())
        latents = empty_latents(0, 0, frames, fps)
        return io.NodeOutput({"waveform": result.waveform.unsqueeze(0).cpu(), "sample_rate": int(result.sample_rate)},
                             LatentBundle(latents.with_audio(result.latent.cpu()), denoised=True))


class AIPRODAudioOnlyModel(io.ComfyNode):
    """The audio stream of a transformer alone: its video weights are never read."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODAudioOnlyModel",
            display_name="AIPROD Audio-Only Model",
            category=CATEGORY,
            description="Loads only the audio branch of the model's file (with the model's LoRAs, dtype and fp8 "
            "mode): the video weights are never read, so text-to-audio needs a fraction of the memory. For "
            "'AIPROD Text to Audio' and samplers on an 'AIPROD Empty Audio Latent'.",
            inputs=[ModelSocket.Input("model", tooltip="From a checkpoint / diffusion model loader (not loaded).")],
            outputs=[ModelSocket.Output(display_name="model", tooltip="The audio-only transformer.")],
        )

    @classmethod
    def execute(cls, model: TransformerHandle) -> io.NodeOutput:
        def load():
            module = load_component_with_loras(model.path, "audio_transformer", list(model.loras), dtype=model.dtype,
                                               device=load_device(),
                                               quantized_weights=model.quantized_weights).module  # fmt: skip
            return mark_weight_streaming(module, model.weight_streaming)

        lazy = LazyModule(load, f"audio-only transformer {model.path}")
        return io.NodeOutput(replace(model, lazy=lazy))


class AIPRODEncodeAudio(io.ComfyNode):
    """Stage node (audio-to-video): the track encoded into the latents' audio and frozen."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODEncodeAudio",
            display_name="AIPROD Encode Audio (freeze)",
            category=CATEGORY,
            description="Encodes the track from start_time with the audio VAE into the latents' audio and freezes "
            "it: samplers never noise or denoise it (the transformer sees it at sigma 0), also after an upsample. "
            "The audio output is the track cut to the clip, unchanged, for 'AIPROD Save Video'.",
            inputs=[LatentSocket.Input("latent", tooltip="The clip's latents (e.g. an empty latent at stage-1 size)."),
                    AudioVAESocket.Input("audio_vae", tooltip="The audio VAE (its encoder)."),
                    io.Audio.Input("audio", tooltip="The track (any sample rate, mono or stereo)."),
                    *_audio_window_inputs()],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The latents with the frozen audio."),
                     io.Audio.Output(display_name="audio", tooltip="The track from start_time for the clip, "
                                     "sample for sample.")],
        )

    @classmethod
    def execute(cls, latent: LatentBundle, audio_vae: AudioVAE, audio: dict, start_time: float,
                max_duration: float) -> io.NodeOutput:
        lat, clip = latent.latents, audio_clip(audio)
        rules.check_problems(clip_rules.audio_window_problems(clip.waveform, clip.sample_rate, start_time,
                                                              max_duration, lat.duration))  # fmt: skip
        used = clip.cut(start_time, max_duration or lat.duration)
        encoded = encode_audio(_encoder(audio_vae), used, ComfyModelHost(), lat.audio.shape[2])
        bundle = replace(latent, latents=lat.with_audio(encoded.to(lat.audio.dtype).cpu()), audio_items=(Frozen(),))
        return io.NodeOutput(bundle, audio_output(used))


class AIPRODEmptyAudioLatent(io.ComfyNode):
    """Stage node (text-to-audio): a zero audio latent of frames / fps seconds and no video."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODEmptyAudioLatent",
            display_name="AIPROD Empty Audio Latent",
            category=CATEGORY,
            description="An audio latent of frames / fps seconds with no video stream: 'AIPROD Sampler' samples "
            "the audio alone (the video branch never runs); decode with 'AIPROD Audio Decode'.",
            inputs=[int_input("frames", 121, "Length as video frames: 8k+1."),
                    float_input("fps", 24.0, "Frames per second (the duration is frames / fps).")],
            outputs=[LatentSocket.Output(display_name="latent", tooltip="The empty audio-only latent.")],
        )

    @classmethod
    def execute(cls, frames: int, fps: float) -> io.NodeOutput:
        rules.check_problems(input_problems({"frames": frames, "fps": fps}, ("frames", "fps")))
        return io.NodeOutput(LatentBundle(empty_latents(0, 0, frames, fps)))


class AIPRODSaveAudio(io.ComfyNode):
    """Saves AUDIO as WAV or FLAC in the output folder (atomically)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODSaveAudio",
            display_name="AIPROD Save Audio (WAV / FLAC)",
            category=CATEGORY,
            description="Writes the audio as 16-bit WAV or FLAC at its own sample rate (no resampling) to the output "
            "folder; nothing half-written is left on an error.",
            inputs=[io.Audio.Input("audio", tooltip="The audio to save."),
                    io.String.Input("filename_prefix", default="aiprod/audio",
                                    tooltip="File name prefix under the output folder."),
                    choice_input("format", list(FORMATS), "WAV (16-bit PCM) or FLAC (lossless, smaller).",
                                 default="wav (16-bit PCM)")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        """Only filename_prefix is declared (ComfyUI pins a failure to every declared input)."""
        return True if filename_prefix is None else filename_prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, audio: dict, filename_prefix: str, format: str) -> io.NodeOutput:
        clip = audio_clip(audio)
        fmt = FORMATS[format]
        out_dir = folder_paths.get_output_directory()
        full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        os.makedirs(full_dir, exist_ok=True)
        filename = f"{name}_{counter:05}_{AUDIO_FORMATS[fmt].suffix}"
        write_audio_file(os.path.join(full_dir, filename), clip.waveform, clip.sample_rate, fmt)
        return io.NodeOutput(ui=ui.SavedAudios([ui.SavedResult(filename, subfolder, io.FolderType.output)]))
