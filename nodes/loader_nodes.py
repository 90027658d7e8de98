"""Loader nodes: single-file checkpoint, split files, latent upsampler, Gemma text encoder, LoRA and IC-LoRA.

Each returns lazy handles (see `types`): weights are read when a stage first needs them, strictly, through
`loaders.component_loader` / `loaders.lora_apply` / `loaders.text_encoder_files`.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..loaders.component_loader import load_component, plan_load
from ..loaders.detect import describe_file
from ..loaders.lora import check_lora_fits, read_lora
from ..loaders.lora_apply import load_component_with_loras
from ..loaders.text_embeddings import load_text_embeddings, plan_text_embeddings
from ..loaders.text_encoder_files import check_gemma, load_gemma
from .model_files import (
    CONNECTOR_FOLDERS,
    NO_CONNECTORS,
    PROJECTION_FOLDERS,
    UPSCALE_FOLDER,
    connectors_options,
    ensure_upscale_folder,
    file_fingerprint,
    model_choice_problem,
    model_file_options,
    resolve_model_file,
    resolve_text_encoder,
    text_encoder_options,
    text_encoder_problem,
    text_projection_options,
)
from .runtime import (
    WEIGHT_DTYPES,
    WEIGHT_STREAMING,
    check_weight_streaming,
    load_device,
    mark_weight_streaming,
    weight_dtype,
    weight_streaming_problem,
)
from .types import (
    AudioVAE,
    AudioVAESocket,
    LazyModule,
    ModelSocket,
    TextEncoder,
    TextEncoderSocket,
    TransformerHandle,
    UpsamplerSocket,
    VideoVAE,
    VideoVAESocket,
)

__all__ = [
    "AIPRODAudioVAELoader",
    "AIPRODCheckpointLoader",
    "AIPRODDiffusionModelLoader",
    "AIPRODICLoraLoader",
    "AIPRODLoraLoader",
    "AIPRODTextEncoderLoader",
    "AIPRODUpsamplerLoader",
    "AIPRODVideoVAELoader",
    "make_transformer",
]

CATEGORY = "AIPROD/loaders"
CHECKPOINTS = ("checkpoints",)
DIFFUSION = ("diffusion_models",)
VAE_FILES = ("vae", "checkpoints")
AUDIO_FILES = ("checkpoints", "vae")
LORAS = ("loras",)
FP8_MODES = ("upcast", "keep")
MAX_LORA_STRENGTH = 10.0


def _dtype_input(default: str = "auto") -> io.Combo.Input:
    return io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default=default,
                          tooltip="Weight dtype: auto follows ComfyUI's settings (bf16 where the device supports it).")


def _fp8_input() -> io.Combo.Input:
    return io.Combo.Input("fp8", options=list(FP8_MODES), default="upcast",
                          tooltip="fp8 checkpoints: 'upcast' de-quantises to the weight dtype while loading; 'keep' "
                          "keeps fp8 weights (half the memory) and up-casts per layer at run time.")


def _streaming_input() -> io.Combo.Input:
    return io.Combo.Input("weight_streaming", options=list(WEIGHT_STREAMING), default="auto", optional=True,
                          tooltip="Low-VRAM mode. auto: stream the transformer's blocks from CPU memory only when it "
                          "does not fit in VRAM; on: always stream them (slower, needs ~2 blocks of VRAM for "
                          "weights); off: always load the whole transformer on the GPU. No effect on a CPU-only "
                          "ComfyUI.")


def _choice(parameter: str, choice: str, folders: tuple[str, ...]) -> str | None:
    return model_choice_problem(parameter, choice, folders)


def _fingerprint(parameter: str, choice: str | None, folders: tuple[str, ...]) -> object:
    if not isinstance(choice, str) or _choice(parameter, choice, folders):
        return choice
    return choice, file_fingerprint(resolve_model_file(parameter, choice, folders))


def _check_contents(path: str, *components: str, fp8: str = "upcast") -> None:
    """Header-only: the file holds ``components`` in a known layout, else an error naming the file, what it is
    and where it belongs (before anything is loaded, at this node)."""
    for component in components:
        plan_load(path, component, fp8=fp8)


def _generation(path: str) -> str | None:
    try:
        return describe_file(path).generation
    except ValueError:
        return None


def make_transformer(path: str, dtype_choice: str, fp8: str, loras: tuple[tuple[str, float], ...] = (),
                     generation: str | None = None, factor: int = 1, streaming: str = "auto") -> TransformerHandle:
    """A lazy transformer handle: ``path`` with ``loras`` fused (fp8-kept layers get run-time adapters), marked
    for ``streaming`` (the weight_streaming choice) when it loads."""
    dtype = weight_dtype(dtype_choice)
    check_weight_streaming(streaming)  # an unknown choice fails here, before anything loads

    def load():
        if loras:
            module = load_component_with_loras(path, "transformer", list(loras), dtype=dtype, device=load_device(),
                                               fp8=fp8).module  # fmt: skip
        else:
            module = load_component(path, "transformer", dtype=dtype, device=load_device(), fp8=fp8).module
        return mark_weight_streaming(module, streaming)

    handle = TransformerHandle(path, dtype, fp8, loras, generation, factor, streaming)
    return TransformerHandle(**{**handle.__dict__, "lazy": LazyModule(load, f"transformer {path}")})


def _video_vae(path: str, dtype_choice: str) -> VideoVAE:
    dtype = weight_dtype(dtype_choice, "vae")

    def part(component: str) -> LazyModule:
        return LazyModule(lambda: load_component(path, component, dtype=dtype, device=load_device()).module,
                          f"{component} {path}")

    return VideoVAE(part("video_encoder"), part("video_decoder"))


def _audio_vae(path: str, dtype_choice: str) -> AudioVAE:
    dtype = weight_dtype(dtype_choice, "vae")

    def part(component: str) -> LazyModule:
        return LazyModule(lambda: load_component(path, component, dtype=dtype, device=load_device()).module,
                          f"{component} {path}")

    return AudioVAE(part("audio_decoder"), part("vocoder"))


class AIPRODCheckpointLoader(io.ComfyNode):
    """The official single-file LTX-2 / LTX-2.3 checkpoint -> transformer, video VAE, audio VAE + vocoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODCheckpointLoader",
            display_name="AIPROD Checkpoint Loader",
            category=CATEGORY,
            description="Loads an official single-file LTX-2 / LTX-2.3 checkpoint (models/checkpoints). Weights are "
            "read when a stage first needs them, and ComfyUI's model management moves and evicts them.",
            inputs=[
                io.Combo.Input("checkpoint", options=model_file_options(CHECKPOINTS),
                               tooltip="A single-file LTX-2 / LTX-2.3 checkpoint from models/checkpoints."),
                _dtype_input(),
                _fp8_input(),
                _streaming_input(),
            ],
            outputs=[
                ModelSocket.Output(display_name="model", tooltip="The audio+video transformer."),
                VideoVAESocket.Output(display_name="video_vae", tooltip="Video VAE encoder + decoder."),
                AudioVAESocket.Output(display_name="audio_vae", tooltip="Audio VAE decoder + vocoder."),
            ],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str, weight_streaming: str = "auto") -> bool | str:
        return _choice("checkpoint", checkpoint, CHECKPOINTS) or weight_streaming_problem(weight_streaming) or True

    @classmethod
    def fingerprint_inputs(cls, checkpoint: str | None = None, **_: object) -> object:
        return _fingerprint("checkpoint", checkpoint, CHECKPOINTS)

    @classmethod
    def execute(cls, checkpoint: str, weight_dtype: str, fp8: str, weight_streaming: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("checkpoint", checkpoint, CHECKPOINTS)
        _check_contents(path, "transformer", "video_decoder", "audio_decoder", "vocoder", fp8=fp8)
        model = make_transformer(path, weight_dtype, fp8, generation=_generation(path), streaming=weight_streaming)
        return io.NodeOutput(model, _video_vae(path, "auto"), _audio_vae(path, "auto"))


class AIPRODDiffusionModelLoader(io.ComfyNode):
    """A transformer-only file (models/diffusion_models)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODDiffusionModelLoader",
            display_name="AIPROD Diffusion Model Loader",
            category=CATEGORY,
            description="Loads the LTX-2 / LTX-2.3 transformer from a split file in models/diffusion_models.",
            inputs=[
                io.Combo.Input("model_file", options=model_file_options(DIFFUSION),
                               tooltip="A transformer file from models/diffusion_models (needs its config metadata)."),
                _dtype_input(),
                _fp8_input(),
                _streaming_input(),
            ],
            outputs=[ModelSocket.Output(display_name="model", tooltip="The audio+video transformer.")],
        )

    @classmethod
    def validate_inputs(cls, model_file: str, weight_streaming: str = "auto") -> bool | str:
        return _choice("model_file", model_file, DIFFUSION) or weight_streaming_problem(weight_streaming) or True

    @classmethod
    def fingerprint_inputs(cls, model_file: str | None = None, **_: object) -> object:
        return _fingerprint("model_file", model_file, DIFFUSION)

    @classmethod
    def execute(cls, model_file: str, weight_dtype: str, fp8: str, weight_streaming: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("model_file", model_file, DIFFUSION)
        _check_contents(path, "transformer", fp8=fp8)
        return io.NodeOutput(make_transformer(path, weight_dtype, fp8, generation=_generation(path),
                                              streaming=weight_streaming))


class AIPRODVideoVAELoader(io.ComfyNode):
    """The video VAE from a split VAE file or a checkpoint."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODVideoVAELoader",
            display_name="AIPROD Video VAE Loader",
            category=CATEGORY,
            description="Loads the LTX video VAE (encoder + decoder) from models/vae or from a checkpoint.",
            inputs=[
                io.Combo.Input("vae", options=model_file_options(VAE_FILES),
                               tooltip="A video VAE file (models/vae) or a single-file checkpoint."),
                _dtype_input(),
            ],
            outputs=[VideoVAESocket.Output(display_name="video_vae", tooltip="Video VAE encoder + decoder.")],
        )

    @classmethod
    def validate_inputs(cls, vae: str) -> bool | str:
        return _choice("vae", vae, VAE_FILES) or True

    @classmethod
    def fingerprint_inputs(cls, vae: str | None = None, **_: object) -> object:
        return _fingerprint("vae", vae, VAE_FILES)

    @classmethod
    def execute(cls, vae: str, weight_dtype: str) -> io.NodeOutput:
        path = resolve_model_file("vae", vae, VAE_FILES)
        _check_contents(path, "video_encoder", "video_decoder")
        return io.NodeOutput(_video_vae(path, weight_dtype))


class AIPRODAudioVAELoader(io.ComfyNode):
    """The audio VAE decoder and vocoder from a checkpoint or a split file."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODAudioVAELoader",
            display_name="AIPROD Audio VAE Loader",
            category=CATEGORY,
            description="Loads the LTX audio VAE decoder and vocoder from a checkpoint or models/vae.",
            inputs=[
                io.Combo.Input("audio_vae", options=model_file_options(AUDIO_FILES),
                               tooltip="A checkpoint (models/checkpoints) or audio VAE file (models/vae) holding "
                               "the audio VAE and the vocoder."),
                _dtype_input(),
            ],
            outputs=[AudioVAESocket.Output(display_name="audio_vae", tooltip="Audio VAE decoder + vocoder.")],
        )

    @classmethod
    def validate_inputs(cls, audio_vae: str) -> bool | str:
        return _choice("audio_vae", audio_vae, AUDIO_FILES) or True

    @classmethod
    def fingerprint_inputs(cls, audio_vae: str | None = None, **_: object) -> object:
        return _fingerprint("audio_vae", audio_vae, AUDIO_FILES)

    @classmethod
    def execute(cls, audio_vae: str, weight_dtype: str) -> io.NodeOutput:
        path = resolve_model_file("audio_vae", audio_vae, AUDIO_FILES)
        _check_contents(path, "audio_decoder", "vocoder")
        return io.NodeOutput(_audio_vae(path, weight_dtype))


class AIPRODUpsamplerLoader(io.ComfyNode):
    """The spatial latent upsampler (x2 or x1.5) from models/latent_upscale_models."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        ensure_upscale_folder()
        return io.Schema(
            node_id="AIPRODUpsamplerLoader",
            display_name="AIPROD Latent Upsampler Loader",
            category=CATEGORY,
            description="Loads an LTX spatial latent upsampler (x2 or x1.5) from models/latent_upscale_models.",
            inputs=[
                io.Combo.Input("upsampler", options=model_file_options((UPSCALE_FOLDER,)),
                               tooltip="A latent upsampler file from models/latent_upscale_models."),
                _dtype_input(),
            ],
            outputs=[UpsamplerSocket.Output(display_name="upsampler", tooltip="The latent upsampler.")],
        )

    @classmethod
    def validate_inputs(cls, upsampler: str) -> bool | str:
        ensure_upscale_folder()
        return _choice("upsampler", upsampler, (UPSCALE_FOLDER,)) or True

    @classmethod
    def fingerprint_inputs(cls, upsampler: str | None = None, **_: object) -> object:
        return _fingerprint("upsampler", upsampler, (UPSCALE_FOLDER,))

    @classmethod
    def execute(cls, upsampler: str, weight_dtype: str) -> io.NodeOutput:
        ensure_upscale_folder()
        path = resolve_model_file("upsampler", upsampler, (UPSCALE_FOLDER,))
        _check_contents(path, "latent_upsampler")
        dtype = _vae_dtype(weight_dtype)
        return io.NodeOutput(LazyModule(
            lambda: load_component(path, "latent_upsampler", dtype=dtype, device=load_device()).module,
            f"upsampler {path}"))


def _vae_dtype(choice: str):
    return weight_dtype(choice, "vae")


class AIPRODTextEncoderLoader(io.ComfyNode):
    """Gemma-3 (models/text_encoders) plus the text projection and connectors, from one file or two."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextEncoderLoader",
            display_name="AIPROD Text Encoder Loader",
            category=CATEGORY,
            description="Loads the Gemma-3 text encoder (a folder with its tokenizer, ComfyUI's single file with "
            "the tokenizer embedded, or one .safetensors file with the tokenizer beside it, in models/text_encoders) "
            "and the text projection + connectors: from the LTX checkpoint, or from split files (Kijai's "
            "embeddings_connector / text_projection file, with the connectors from the transformer file). Gemma is "
            "only loaded while encoding; ComfyUI evicts it before sampling when memory is short.",
            inputs=[
                io.Combo.Input("gemma", options=text_encoder_options(),
                               tooltip="The Gemma-3 text encoder from models/text_encoders: a folder holding the "
                               "weights, config and tokenizer files, or a single .safetensors file (ComfyUI's "
                               "gemma_3_12B_it.safetensors carries its tokenizer inside)."),
                io.Combo.Input("checkpoint", options=text_projection_options(),
                               tooltip="The file with the text projection: the LTX checkpoint (models/checkpoints), "
                               "Kijai's embeddings_connector or text_projection file (models/text_encoders), or a "
                               "transformer file (models/diffusion_models)."),
                _dtype_input(),
                io.Combo.Input("connectors", options=connectors_options(), default=NO_CONNECTORS, optional=True,
                               tooltip="Where the text connectors are when the checkpoint input's file lacks them "
                               "(LTX-2.3's text_projection file: choose the transformer file from "
                               "models/diffusion_models). 'none': in the same file."),
            ],
            outputs=[TextEncoderSocket.Output(display_name="text_encoder",
                                              tooltip="Gemma + text projection and connectors.")],
        )

    @classmethod
    def validate_inputs(cls, gemma: str, checkpoint: str, connectors: str = NO_CONNECTORS) -> bool | str:
        problems = [text_encoder_problem("gemma", gemma), _choice("checkpoint", checkpoint, PROJECTION_FOLDERS),
                    None if connectors in (None, NO_CONNECTORS) else _choice("connectors", connectors,
                                                                             CONNECTOR_FOLDERS)]
        return "\n".join(p for p in problems if p) or True

    @classmethod
    def fingerprint_inputs(cls, gemma: str | None = None, checkpoint: str | None = None,
                           connectors: str | None = NO_CONNECTORS, **_: object) -> object:
        gemma_part = gemma if not isinstance(gemma, str) or text_encoder_problem("gemma", gemma) else (
            gemma, file_fingerprint(resolve_text_encoder("gemma", gemma)))
        connector_part = connectors if connectors in (None, NO_CONNECTORS) else _fingerprint(
            "connectors", connectors, CONNECTOR_FOLDERS)
        return gemma_part, _fingerprint("checkpoint", checkpoint, PROJECTION_FOLDERS), connector_part

    @classmethod
    def execute(cls, gemma: str, checkpoint: str, weight_dtype: str, connectors: str = NO_CONNECTORS) -> io.NodeOutput:
        _, plan = _text_encoder_plans(gemma, checkpoint, connectors)  # raises listing every problem
        dtype = _text_dtype(weight_dtype)
        gemma_path = resolve_text_encoder("gemma", gemma)
        loaded = LazyModule(lambda: load_gemma(gemma_path, dtype=dtype, device=load_device()), f"gemma {gemma}")
        processor = LazyModule(lambda: load_text_embeddings(plan, dtype=dtype, device=load_device()),
                               f"text projection {plan.projection.path}")
        return io.NodeOutput(TextEncoder(loaded, processor, gemma))


def _text_encoder_plans(gemma: str, checkpoint: str, connectors: str | None):
    """Every check of the text encoder loader's files, header-only; all problems reported together, each naming
    its input, the file, what it is and what to use instead."""
    problems: list[str] = []

    def attempt(parameter: str, choice: str, check):
        try:
            return check()
        except ValueError as exc:  # CheckpointFormatError included
            message = str(exc)
            problems.append(message if message.startswith(f"{parameter}=") else f"{parameter}={choice!r}: {message}")
            return None

    gemma_path = attempt("gemma", gemma, lambda: resolve_text_encoder("gemma", gemma))
    projection = attempt("checkpoint", checkpoint, lambda: resolve_model_file("checkpoint", checkpoint,
                                                                              PROJECTION_FOLDERS))
    second = None
    if connectors not in (None, NO_CONNECTORS):
        second = attempt("connectors", connectors, lambda: resolve_model_file("connectors", connectors,
                                                                              CONNECTOR_FOLDERS))
    gemma_plan = attempt("gemma", gemma, lambda: check_gemma(gemma_path)) if gemma_path else None
    plan = None
    if projection and (second or connectors in (None, NO_CONNECTORS)):
        dims = {"gemma_hidden": gemma_plan.hidden_size, "gemma_layers": gemma_plan.num_layers} if gemma_plan else {}
        try:
            plan = plan_text_embeddings(projection, second, **dims)
        except ValueError as exc:
            on_connectors = second is not None and getattr(exc, "path", None) == second
            parameter, choice = ("connectors", connectors) if on_connectors else ("checkpoint", checkpoint)
            problems.append(f"{parameter}={choice!r}: {exc}")
    if problems:
        raise ValueError("\n".join(problems))
    return gemma_plan, plan


def _text_dtype(choice: str):
    return weight_dtype(choice, "text_encoder")


def _lora_inputs() -> list:
    return [
        ModelSocket.Input("model", tooltip="The transformer to apply the LoRA to (chain LoRA nodes to stack them)."),
        io.Combo.Input("lora", options=model_file_options(LORAS), tooltip="A LoRA file from models/loras."),
        io.Float.Input("strength", default=1.0, min=-MAX_LORA_STRENGTH, max=MAX_LORA_STRENGTH, step=0.01,
                       tooltip="LoRA strength (0 disables it, negative inverts it)."),
    ]


def _check_strength(strength: float) -> str | None:
    if not isinstance(strength, int | float) or not -MAX_LORA_STRENGTH <= strength <= MAX_LORA_STRENGTH:
        return f"strength={strength!r}: must be in [-{MAX_LORA_STRENGTH}, {MAX_LORA_STRENGTH}]"
    return None


class AIPRODLoraLoader(io.ComfyNode):
    """Adds a LoRA to a transformer handle (stackable; fused at load time)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODLoraLoader",
            display_name="AIPROD LoRA Loader",
            category=CATEGORY,
            description="Adds a LoRA (ComfyUI, PEFT, kohya or bare key formats) at a strength. Chain several; the "
            "model is loaded once with every LoRA fused. Unmatched keys are logged by name.",
            inputs=_lora_inputs(),
            outputs=[ModelSocket.Output(display_name="model", tooltip="The transformer with the LoRA added.")],
        )

    @classmethod
    def validate_inputs(cls, lora: str, strength: float) -> bool | str:
        return _choice("lora", lora, LORAS) or _check_strength(strength) or True

    @classmethod
    def execute(cls, model: TransformerHandle, lora: str, strength: float) -> io.NodeOutput:
        path = resolve_model_file("lora", lora, LORAS)
        if strength != 0:  # a LoRA for another model fails here, not after text encoding (0 = disabled)
            check_lora_fits(path, model.path)
        return io.NodeOutput(make_transformer(model.path, _choice_of(model), model.fp8,
                                              (*model.loras, (path, strength)), model.generation,
                                              model.reference_downscale_factor, model.weight_streaming))


def _choice_of(model: TransformerHandle) -> str:
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}[str(model.dtype)]


class AIPRODICLoraLoader(io.ComfyNode):
    """Adds an IC-LoRA and reads its reference downscale factor from the file's metadata."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODICLoraLoader",
            display_name="AIPROD IC-LoRA Loader",
            category=CATEGORY,
            description="Adds an IC-LoRA (control LoRA) and outputs the reference downscale factor stored in its "
            "metadata (1 when absent), so the reference video is sized right without setting it by hand.",
            inputs=_lora_inputs(),
            outputs=[
                ModelSocket.Output(display_name="model", tooltip="The transformer with the IC-LoRA added."),
                io.Int.Output(display_name="reference_downscale_factor",
                              tooltip="How much smaller than the output the reference video is encoded."),
            ],
        )

    @classmethod
    def validate_inputs(cls, lora: str, strength: float) -> bool | str:
        return _choice("lora", lora, LORAS) or _check_strength(strength) or True

    @classmethod
    def execute(cls, model: TransformerHandle, lora: str, strength: float) -> io.NodeOutput:
        path = resolve_model_file("lora", lora, LORAS)
        shallow = check_lora_fits(path, model.path) if strength != 0 else read_lora(path, shapes_only=True)
        factor = shallow.reference_downscale_factor or 1
        if not float(factor).is_integer():
            raise ValueError(f"lora={lora!r}: reference_downscale_factor={factor!r} in its metadata; only whole "
                             "factors are supported")
        factor = int(factor)
        handle = make_transformer(model.path, _choice_of(model), model.fp8, (*model.loras, (path, strength)),
                                  model.generation, factor, model.weight_streaming)
        return io.NodeOutput(handle, factor)
