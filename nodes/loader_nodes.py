"""Loader nodes: single-file checkpoint, split files, latent upsampler, Gemma text encoder, LoRA and IC-LoRA.

Each returns lazy handles (see `types`): weights are read when a stage first needs them, strictly, through
`loaders.component_loader` / `loaders.lora_apply` / `loaders.text_encoder_files`.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..aiprod_core.pipelines.validation import check_lora_generation
from ..loaders.component_loader import check_component, load_component
from ..loaders.detect import DIFFUSION_DECODER_KINDS, describe_file
from ..loaders.lora import read_lora
from ..loaders.lora_apply import check_transformer_lora, load_component_with_loras
from ..loaders.text_embeddings import (
    check_split_text_embeddings,
    load_split_text_embeddings,
    load_text_embeddings,
    plan_text_embeddings,
)
from ..loaders.text_encoder_generation import check_text_encoder, load_text_encoder
from .inputs import choice_input
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
    unchanged_files,
)
from .problems import raise_problems
from .quant_inputs import QUANT_INPUT, QUANT_MODES
from .quant_inputs import quant_input as _quant_input
from .quant_inputs import quant_mode as _quant_mode
from .quant_inputs import quant_problem as _quant_problem
from .runtime import (
    WEIGHT_DTYPES,
    WEIGHT_STREAMING,
    check_weight_streaming,
    load_device,
    mark_weight_streaming,
    weight_dtype,
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
MAX_LORA_STRENGTH = 10.0
DECODERS = {"diffusion": "LTX-2.5 diffusion (a few denoising steps, sharper)", "conv": "convolutional"}
DECODER_CHOICES = ("auto", *DECODERS)
DECODER_FILES = {"diffusion": "ltx-2.5-video-vae-bf16.safetensors", "conv": "ltx-2.5-video-vae-conv-bf16.safetensors"}


def _dtype_input(default: str = "auto") -> io.Combo.Input:
    return choice_input("weight_dtype", WEIGHT_DTYPES, default=default,
                        tooltip="Weight dtype: auto follows ComfyUI's settings (bf16 where the device supports it).")


def _streaming_input() -> io.Combo.Input:
    return choice_input("weight_streaming", WEIGHT_STREAMING, default="auto", optional=True,
                        tooltip="Low-VRAM mode. auto: stream the transformer's blocks from CPU memory only when it "
                          "does not fit in VRAM; on: always stream them (slower, needs ~2 blocks of VRAM for "
                          "weights); off: always load the whole transformer on the GPU. No effect on a CPU-only "
                          "ComfyUI.")


def _files_input(name: str, folders: tuple[str, ...], tooltip: str) -> io.Combo.Input:
    """A model-file combo (file name first) that ComfyUI checks against the listed files itself."""
    return choice_input(name, model_file_options(folders), tooltip)


def _fingerprint(parameter: str, choice: str | None, folders: tuple[str, ...]) -> object:
    if not isinstance(choice, str) or model_choice_problem(parameter, choice, folders):
        return choice
    return choice, file_fingerprint(resolve_model_file(parameter, choice, folders))


def _check_contents(path: str, *components: str, quantized_weights: str = "upcast") -> None:
    """Every check of a load, without reading weights: the file holds ``components`` in a known layout, with the
    keys, shapes and quantized formats their configs describe (modules built on the meta device), else an error
    naming the file, what it is and where it belongs (before anything is loaded, at this node)."""
    for component in components:
        check_component(path, component, quantized_weights=quantized_weights)  # type: ignore[arg-type]




def _generation(path: str) -> str | None:
    try:
        return describe_file(path).generation
    except ValueError:
        return None


def make_transformer(path: str, dtype_choice: str, quantized_weights: str, loras: tuple[tuple[str, float], ...] = (),
                     generation: str | None = None, factor: int = 1, streaming: str = "auto") -> TransformerHandle:
    """A lazy transformer handle: ``path`` with ``loras`` fused (layers kept quantized get run-time adapters),
    marked for ``streaming`` (the weight_streaming choice) when it loads, its quantized layers de-quantised or kept
    (``quantized_weights``: "upcast" / "keep")."""
    dtype = weight_dtype(dtype_choice)
    check_weight_streaming(streaming)  # an unknown choice fails here, before anything loads

    def load():
        if loras:
            module = load_component_with_loras(path, "transformer", list(loras), dtype=dtype, device=load_device(),
                                               quantized_weights=quantized_weights).module  # type: ignore[arg-type]
        else:
            module = load_component(path, "transformer", dtype=dtype, device=load_device(),
                                    quantized_weights=quantized_weights).module  # type: ignore[arg-type]
        return mark_weight_streaming(module, streaming)

    handle = TransformerHandle(path, dtype, quantized_weights, loras, generation, factor, streaming)
    lazy = LazyModule(unchanged_files((path, *(lora for lora, _ in loras)), load), f"transformer {path}")
    return TransformerHandle(**{**handle.__dict__, "lazy": lazy})


def _video_vae(path: str, dtype_choice: str, decoder: str = "video_decoder") -> VideoVAE:
    dtype = weight_dtype(dtype_choice, "vae")

    def part(component: str) -> LazyModule:
        return LazyModule(unchanged_files((path,), lambda: load_component(path, component, dtype=dtype,
                                                                      device=load_device()).module),
                          f"{component} {path}")

    return VideoVAE(part("video_encoder"), part(decoder))


def _file_decoder(path: str) -> str:
    """The video decoder a VAE file holds: "diffusion" (LTX-2.5's ltx-2.5-video-vae) or "conv" (every other)."""
    try:
        kind = describe_file(path).kind
    except ValueError:
        return "conv"  # the content check names the problem
    return "diffusion" if kind in DIFFUSION_DECODER_KINDS else "conv"


def _decoder_component(vae: str, path: str, decoder: str | None) -> str:
    """The component to load for the ``decoder`` choice; a choice the file cannot serve is refused by name."""
    held = _file_decoder(path)
    wanted = held if decoder in (None, "auto") else decoder
    if wanted not in DECODERS:
        raise ValueError(f"decoder={decoder!r}, expected one of {', '.join(DECODER_CHOICES)}")
    if wanted != held:
        raise ValueError(
            f"decoder={decoder!r}: vae={vae!r} holds the {DECODERS[held]} video decoder, not the {DECODERS[wanted]} "
            f"one. LTX-2.5 ships them as two files: {DECODER_FILES['diffusion']} (diffusion) and "
            f"{DECODER_FILES['conv']} (conv); choose that file, or decoder 'auto'.")
    return "diffusion_video_decoder" if wanted == "diffusion" else "video_decoder"


def _audio_vae(path: str, dtype_choice: str) -> AudioVAE:
    dtype = weight_dtype(dtype_choice, "vae")

    def part(component: str) -> LazyModule:
        return LazyModule(unchanged_files((path,), lambda: load_component(path, component, dtype=dtype,
                                                                      device=load_device()).module),
                          f"{component} {path}")

    return AudioVAE(part("audio_decoder"), part("vocoder"), part("audio_encoder"))


class AIPRODCheckpointLoader(io.ComfyNode):
    """The official single-file LTX-2 / LTX-2.3 checkpoint -> transformer, video VAE, audio VAE + vocoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODCheckpointLoader",
            display_name="AIPROD Checkpoint Loader",
            category=CATEGORY,
            description="Loads an official single-file LTX-2 / LTX-2.3 checkpoint (models/checkpoints), bf16, fp8 or "
            "quantized (ComfyUI comfy_quant formats, NVFP4). Every key, shape and format is checked here; weights "
            "are read when a stage first needs them, and ComfyUI's model management moves and evicts them.",
            inputs=[
                _files_input("checkpoint", CHECKPOINTS,
                             "A single-file LTX-2 / LTX-2.3 checkpoint from models/checkpoints."),
                _dtype_input(),
                _quant_input(),
                _streaming_input(),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            outputs=[
                ModelSocket.Output(display_name="model", tooltip="The audio+video transformer."),
                VideoVAESocket.Output(display_name="video_vae", tooltip="Video VAE encoder + decoder."),
                AudioVAESocket.Output(display_name="audio_vae", tooltip="Audio VAE decoder + vocoder."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, checkpoint: str | None = None, **_: object) -> object:
        return _fingerprint("checkpoint", checkpoint, CHECKPOINTS)

    @classmethod
    def execute(cls, checkpoint: str, weight_dtype: str, quantized_weights: str | None = None,
                weight_streaming: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("checkpoint", checkpoint, CHECKPOINTS)
        mode = _quant_mode(cls, quantized_weights)
        _check_contents(path, "transformer", "video_decoder", "audio_decoder", "vocoder", quantized_weights=mode)
        model = make_transformer(path, weight_dtype, mode, generation=_generation(path), streaming=weight_streaming)
        return io.NodeOutput(model, _video_vae(path, "auto"), _audio_vae(path, "auto"))


class AIPRODDiffusionModelLoader(io.ComfyNode):
    """A transformer-only file (models/diffusion_models)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODDiffusionModelLoader",
            display_name="AIPROD Diffusion Model Loader",
            category=CATEGORY,
            description="Loads the LTX-2 / LTX-2.3 / LTX-2.5 transformer (LTX-2.5: ltx-2.5-22b-dev / -distilled"
            "-transformer-bf16, or Comfy-Org's int8-convrot repack) from a transformer-only file in "
            "models/diffusion_models "
            "(or models/unet): safetensors (bf16, fp8, ComfyUI-quantized, NVFP4, MXFP8) or GGUF (Q4_0 ... Q8_0, "
            "K-quants, F16). Every key, shape and format is checked here, before anything is loaded.",
            inputs=[
                _files_input("model_file", DIFFUSION,
                             "A transformer file from models/diffusion_models: .safetensors with its config "
                             "metadata, or .gguf (config from its metadata, else inferred from the tensor shapes)."),
                _dtype_input(),
                _quant_input(),
                _streaming_input(),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            outputs=[ModelSocket.Output(display_name="model", tooltip="The audio+video transformer.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_file: str | None = None, **_: object) -> object:
        return _fingerprint("model_file", model_file, DIFFUSION)

    @classmethod
    def execute(cls, model_file: str, weight_dtype: str, quantized_weights: str | None = None,
                weight_streaming: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("model_file", model_file, DIFFUSION)
        mode = _quant_mode(cls, quantized_weights)
        _check_contents(path, "transformer", quantized_weights=mode)
        return io.NodeOutput(make_transformer(path, weight_dtype, mode, generation=_generation(path),
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
                _files_input("vae", VAE_FILES,
                             "A video VAE file (models/vae) or a single-file checkpoint."),
                _dtype_input(),
                choice_input("decoder", DECODER_CHOICES, default="auto", optional=True,
                             tooltip="The video decoder. LTX-2.5 has two, in two files: diffusion "
                             f"({DECODER_FILES['diffusion']}: a few denoising steps with neighborhood attention, "
                             f"sharper) and conv ({DECODER_FILES['conv']}: one pass, faster). auto: the one the file "
                             "holds; diffusion / conv: refuse a file that holds the other. LTX-2 / 2.3: conv."),
            ],
            outputs=[VideoVAESocket.Output(display_name="video_vae", tooltip="Video VAE encoder + decoder.")],
        )

    @classmethod
    def fingerprint_inputs(cls, vae: str | None = None, **_: object) -> object:
        return _fingerprint("vae", vae, VAE_FILES)

    @classmethod
    def execute(cls, vae: str, weight_dtype: str, decoder: str = "auto") -> io.NodeOutput:
        path = resolve_model_file("vae", vae, VAE_FILES)
        component = _decoder_component(vae, path, decoder)
        _check_contents(path, "video_encoder", component)
        return io.NodeOutput(_video_vae(path, weight_dtype, component))


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
                _files_input("audio_vae", AUDIO_FILES,
                             "A checkpoint (models/checkpoints) or audio VAE file (models/vae) holding "
                               "the audio VAE and the vocoder."),
                _dtype_input(),
            ],
            outputs=[AudioVAESocket.Output(display_name="audio_vae", tooltip="Audio VAE decoder + vocoder.")],
        )

    @classmethod
    def fingerprint_inputs(cls, audio_vae: str | None = None, **_: object) -> object:
        return _fingerprint("audio_vae", audio_vae, AUDIO_FILES)

    @classmethod
    def execute(cls, audio_vae: str, weight_dtype: str) -> io.NodeOutput:
        path = resolve_model_file("audio_vae", audio_vae, AUDIO_FILES)
        _check_contents(path, "audio_decoder", "vocoder")
        return io.NodeOutput(_audio_vae(path, weight_dtype))


class AIPRODUpsamplerLoader(io.ComfyNode):
    """A latent upsampler (spatial x2 / x1.5, or LTX-2.5's temporal x2) from models/latent_upscale_models."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        ensure_upscale_folder()
        return io.Schema(
            node_id="AIPRODUpsamplerLoader",
            display_name="AIPROD Latent Upsampler Loader",
            category=CATEGORY,
            description="Loads an LTX latent upsampler from models/latent_upscale_models: spatial (x2 or x1.5, for "
            "'AIPROD Latent Upsample') or LTX-2.5's temporal x2 (for 'AIPROD Temporal Upsample').",
            inputs=[
                _files_input("upsampler", (UPSCALE_FOLDER,),
                             "A latent upsampler file from models/latent_upscale_models."),
                _dtype_input(),
            ],
            outputs=[UpsamplerSocket.Output(display_name="upsampler", tooltip="The latent upsampler.")],
        )

    @classmethod
    def fingerprint_inputs(cls, upsampler: str | None = None, **_: object) -> object:
        return _fingerprint("upsampler", upsampler, (UPSCALE_FOLDER,))

    @classmethod
    def execute(cls, upsampler: str, weight_dtype: str) -> io.NodeOutput:
        ensure_upscale_folder()
        path = resolve_model_file("upsampler", upsampler, (UPSCALE_FOLDER,))
        _check_contents(path, "latent_upsampler")
        dtype = _vae_dtype(weight_dtype)
        return io.NodeOutput(LazyModule(unchanged_files((path,), lambda: load_component(
            path, "latent_upsampler", dtype=dtype, device=load_device()).module), f"upsampler {path}"))


def _vae_dtype(choice: str):
    return weight_dtype(choice, "vae")


class AIPRODTextEncoderLoader(io.ComfyNode):
    """Gemma 3 or Gemma 4 (models/text_encoders) plus the text projection and connectors, from one file or two."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextEncoderLoader",
            display_name="AIPROD Text Encoder Loader",
            category=CATEGORY,
            description="Loads the text encoder: Gemma 3 for LTX-2 / LTX-2.3 (a folder with its tokenizer, "
            "ComfyUI's single file with the tokenizer embedded, bf16 or quantized (_fp8_scaled, _fp4_mixed), or one "
            ".safetensors file with the tokenizer beside it) or LTX-2.5's Gemma 4, from models/text_encoders; and "
            "the text projection + connectors: from the LTX checkpoint, or from split files (Kijai's "
            "embeddings_connector / text_projection file, with the connectors from the transformer file). A text "
            "encoder of another generation than the model is refused here. Gemma is only loaded while encoding; "
            "ComfyUI evicts it before sampling when memory is short.",
            inputs=[
                choice_input("gemma", text_encoder_options(),
                             "The Gemma text encoder from models/text_encoders: a folder holding the weights, config "
                             "and tokenizer files, or a single .safetensors file (ComfyUI's gemma_3_12B_it*"
                             ".safetensors carry their tokenizer inside; LTX-2.5: gemma4-12b-with-proj-ltx-2.5)."),
                choice_input("checkpoint", text_projection_options(),
                             "The file with the text projection: the LTX checkpoint (models/checkpoints), Kijai's "
                             "embeddings_connector or text_projection file (models/text_encoders), or a transformer "
                             "file (models/diffusion_models)."),
                _dtype_input(),
                choice_input("connectors", connectors_options(), default=NO_CONNECTORS, optional=True,
                             tooltip="Where the text connectors are when the checkpoint input's file lacks them "
                             "(LTX-2.3's text_projection file: choose the transformer file from "
                             "models/diffusion_models). 'none': in the same file."),
                choice_input(QUANT_INPUT, QUANT_MODES, default="upcast", optional=True,
                             tooltip="Quantized Gemma files (ComfyUI's _fp8_scaled / _fp4_mixed: fp8, NVFP4): "
                             "'upcast' de-quantises the weights to the weight dtype while loading; 'keep' holds the "
                             "quantized bytes and de-quantises each layer for its own matmul. No effect on files "
                             "without quantized layers."),
            ],
            outputs=[TextEncoderSocket.Output(display_name="text_encoder",
                                              tooltip="Gemma + text projection and connectors.")],
        )

    @classmethod
    def fingerprint_inputs(cls, gemma: str | None = None, checkpoint: str | None = None,
                           connectors: str | None = NO_CONNECTORS, **_: object) -> object:
        gemma_part = gemma if not isinstance(gemma, str) or text_encoder_problem("gemma", gemma) else (
            gemma, file_fingerprint(resolve_text_encoder("gemma", gemma)))
        connector_part = connectors if connectors in (None, NO_CONNECTORS) else _fingerprint(
            "connectors", connectors, CONNECTOR_FOLDERS)
        return gemma_part, _fingerprint("checkpoint", checkpoint, PROJECTION_FOLDERS), connector_part

    @classmethod
    def execute(cls, gemma: str, checkpoint: str, weight_dtype: str, connectors: str = NO_CONNECTORS,
                quantized_weights: str = "upcast") -> io.NodeOutput:
        gemma_path, plan = _text_encoder_plans(gemma, checkpoint, connectors, quantized_weights)  # every problem
        dtype = _text_dtype(weight_dtype)

        def gemma_with(transform=None):  # a text-encoder LoRA node passes its fusing transform
            return load_text_encoder(gemma_path, dtype=dtype, device=load_device(), transform=transform,
                                     quantized_weights=quantized_weights)

        loaded = LazyModule(unchanged_files((gemma_path,), gemma_with), f"gemma {gemma}")
        if isinstance(plan, tuple):  # LTX-2.5: projection in the Gemma-4 file, connectors in the transformer
            processor = LazyModule(unchanged_files(plan, lambda: load_split_text_embeddings(
                *plan, dtype=dtype, device=load_device()).module), f"text projection {plan[0]} + connectors {plan[1]}")
        else:
            files = tuple(dict.fromkeys((plan.projection.path, plan.connectors.path)))
            processor = LazyModule(unchanged_files(files, lambda: load_text_embeddings(plan, dtype=dtype,
                                                                                  device=load_device())),
                                   f"text projection {plan.projection.path}")
        return io.NodeOutput(TextEncoder(loaded, processor, gemma, gemma_path=gemma_path, load_gemma=gemma_with))


def _text_encoder_plans(gemma: str, checkpoint: str, connectors: str | None, quantized_weights: str):
    """Every check of the text encoder loader's files, header-only; all problems reported together, each naming
    its input, the file, what it is and what to use instead. The Gemma generation is checked against the
    transformer the projection / connectors files belong to, when their headers tell it."""
    problems: list[str | None] = [_quant_problem(quantized_weights)]
    causes: list[ValueError] = []

    def attempt(parameter: str, choice: str, check):
        try:
            return check()
        except ValueError as exc:  # CheckpointFormatError included
            message = str(exc)
            problems.append(message if message.startswith(f"{parameter}=") else f"{parameter}={choice!r}: {message}")
            causes.append(exc)
            return None

    gemma_path = attempt("gemma", gemma, lambda: resolve_text_encoder("gemma", gemma))
    projection = attempt("checkpoint", checkpoint, lambda: resolve_model_file("checkpoint", checkpoint,
                                                                              PROJECTION_FOLDERS))
    second = None
    if connectors not in (None, NO_CONNECTORS):
        second = attempt("connectors", connectors, lambda: resolve_model_file("connectors", connectors,
                                                                              CONNECTOR_FOLDERS))
    mode = quantized_weights if quantized_weights in QUANT_MODES else "upcast"
    transformers = [p for p in (second, projection) if p]
    checked = attempt("gemma", gemma, lambda: check_text_encoder(gemma_path, mode, transformers)) \
        if gemma_path else None
    plan = None
    if checked is not None and checked.kind.family == "gemma4" and projection and second:
        plan = attempt("connectors", connectors, lambda: (check_split_text_embeddings(projection, second),
                                                          (projection, second))[1])
    elif projection and (second or connectors in (None, NO_CONNECTORS)):
        dims = {"gemma_hidden": checked.hidden_size, "gemma_layers": checked.num_layers} if checked else {}
        try:
            plan = plan_text_embeddings(projection, second, **dims)
        except ValueError as exc:
            on_connectors = second is not None and getattr(exc, "path", None) == second
            parameter, choice = ("connectors", connectors) if on_connectors else ("checkpoint", checkpoint)
            problems.append(f"{parameter}={choice!r}: {exc}")
            causes.append(exc)
    raise_problems(problems, causes)
    return gemma_path, plan



def _text_dtype(choice: str):
    return weight_dtype(choice, "text_encoder")


def _lora_inputs() -> list:
    return [
        ModelSocket.Input("model", tooltip="The transformer to apply the LoRA to (chain LoRA nodes to stack them)."),
        _files_input("lora", LORAS, "A LoRA file from models/loras."),
        io.Float.Input("strength", default=1.0, min=-MAX_LORA_STRENGTH, max=MAX_LORA_STRENGTH, step=0.01,
                       tooltip="LoRA strength (0 disables it, negative inverts it)."),
    ]


class AIPRODLoraLoader(io.ComfyNode):
    """Adds a LoRA to a transformer handle (stackable; fused at load time)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODLoraLoader",
            display_name="AIPROD LoRA Loader",
            category=CATEGORY,
            description="Adds a LoRA to the transformer (ComfyUI, PEFT, kohya or bare key names; LoRA with alpha, "
            "DoRA, LoHa, LoKr, .diff; fp8 / fp16 / bf16 files) at a strength. Chain several; the model is loaded "
            "once with every LoRA fused. Unmatched keys are logged by name. Text-encoder (Gemma) LoRAs go to the "
            "AIPROD Text Encoder LoRA Loader.",
            inputs=_lora_inputs(),
            outputs=[ModelSocket.Output(display_name="model", tooltip="The transformer with the LoRA added.")],
        )

    @classmethod
    def fingerprint_inputs(cls, lora: str | None = None, strength: object = None, **_: object) -> object:
        return _fingerprint("lora", lora, LORAS), strength

    @classmethod
    def execute(cls, model: TransformerHandle, lora: str, strength: float) -> io.NodeOutput:
        path = resolve_model_file("lora", lora, LORAS)
        if strength != 0:  # a LoRA for another model (or the text encoder) fails here, not after text encoding
            _check_lora_generation(lora, path, model)
            check_transformer_lora(path, model.path, model.quantized_weights)
        return io.NodeOutput(make_transformer(model.path, _choice_of(model), model.quantized_weights,
                                              (*model.loras, (path, strength)), model.generation,
                                              model.reference_downscale_factor, model.weight_streaming))


def _check_lora_generation(lora: str, path: str, model: TransformerHandle) -> None:
    """A LoRA of another generation (an LTX-2.5 LoRA on an LTX-2.3 model, or the reverse: same 22B shapes, so the
    key match alone would take it) is refused naming both, from the headers' model_version."""
    check_lora_generation(_generation(path), model.generation or _generation(model.path), f"lora={lora!r}")


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
    def fingerprint_inputs(cls, lora: str | None = None, strength: object = None, **_: object) -> object:
        return _fingerprint("lora", lora, LORAS), strength

    @classmethod
    def execute(cls, model: TransformerHandle, lora: str, strength: float) -> io.NodeOutput:
        path = resolve_model_file("lora", lora, LORAS)
        if strength != 0:
            _check_lora_generation(lora, path, model)
        shallow = (check_transformer_lora(path, model.path, model.quantized_weights) if strength != 0
                   else read_lora(path, shapes_only=True))
        factor = shallow.reference_downscale_factor or 1
        if not float(factor).is_integer():
            raise ValueError(f"lora={lora!r}: reference_downscale_factor={factor!r} in its metadata; only whole "
                             "factors are supported")
        factor = int(factor)
        handle = make_transformer(model.path, _choice_of(model), model.quantized_weights,
                                  (*model.loras, (path, strength)), model.generation, factor, model.weight_streaming)
        return io.NodeOutput(handle, factor)
