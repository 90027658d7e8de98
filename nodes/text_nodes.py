"""Text nodes: encode prompts (Gemma -> projection -> connectors), save / load encoded prompts, enhance a prompt."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..aiprod_core.pipelines import PromptContexts, prompt_contexts
from ..aiprod_core.pipelines.validation import check_problems
from ..aiprod_core.sampling import Prompt
from ..aiprod_core.text_encoder.prompts import DEFAULT_NEGATIVE_PROMPT, causal_lm_from_encoder, enhance_prompt
from .files import (
    filename_prefix_problem,
    read_tensors,
    resolve_saved_file,
    saved_file_options,
    saved_file_problem,
    write_tensors,
)
from .inputs import choice_input, seed_input
from .runtime import ComfyModelHost, release
from .types import ConditioningSocket, TextEncoder, TextEncoderSocket

__all__ = ["AIPRODEnhancePrompt", "AIPRODLoadPrompt", "AIPRODSavePrompt", "AIPRODTextEncode", "encode_text"]

CATEGORY = "AIPROD/text"
PROMPT_KIND = "prompt_contexts"


def encode_text(encoder: TextEncoder, prompt: str, negative: str | None, host: ComfyModelHost) -> PromptContexts:
    """Prompt (and negative prompt) -> transformer contexts: Gemma hidden states, then projection + connectors."""
    loaded = encoder.gemma.get()

    def hidden(text: str):
        ids, mask = loaded.tokenizer([text])
        with host.use(loaded.encoder) as gemma:
            states = gemma(ids.to(host.device), mask.to(host.device))
        return tuple(states), mask

    with torch.no_grad():
        positive = hidden(prompt)
        negative_states = None if negative is None else hidden(negative)
        release(loaded.encoder)  # Gemma is done: free its memory before the connectors and the sampling
        contexts = prompt_contexts(encoder.processor.get(), positive, negative_states, host)
    return _to_cpu(contexts)


def _to_cpu(contexts: PromptContexts) -> PromptContexts:
    def move(prompt: Prompt | None) -> Prompt | None:
        if prompt is None:
            return None
        return Prompt(*(None if t is None else t.detach().cpu() for t in
                        (prompt.video, prompt.audio, prompt.video_mask, prompt.audio_mask)))

    return PromptContexts(move(contexts.positive), move(contexts.negative))  # type: ignore[arg-type]


class AIPRODTextEncode(io.ComfyNode):
    """Positive + negative prompt -> AIPROD conditioning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODTextEncode",
            display_name="AIPROD Text Encode",
            category=CATEGORY,
            description="Encodes the prompt and the negative prompt with Gemma-3 and the checkpoint's connectors. "
            "Gemma is unloaded right after encoding. Save the result with 'AIPROD Save Prompt' to skip Gemma on later "
            "runs.",
            inputs=[
                TextEncoderSocket.Input("text_encoder", tooltip="From 'AIPROD Text Encoder Loader'."),
                io.String.Input("prompt", multiline=True, default="", tooltip="What to generate (video and sound)."),
                io.String.Input("negative_prompt", multiline=True, default=DEFAULT_NEGATIVE_PROMPT,
                                tooltip="What to avoid (used by CFG; distilled pipelines ignore it)."),
                io.Boolean.Input("encode_negative", default=True,
                                 tooltip="Off: positive prompt only (distilled / IC-LoRA pipelines need no negative)."),
            ],
            outputs=[ConditioningSocket.Output(display_name="conditioning",
                                               tooltip="Positive and negative prompt contexts.")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoder, prompt: str, negative_prompt: str,
                encode_negative: bool) -> io.NodeOutput:
        contexts = encode_text(text_encoder, prompt, negative_prompt if encode_negative else None, ComfyModelHost())
        return io.NodeOutput(contexts)


_FIELDS = ("video", "audio", "video_mask", "audio_mask")


def _tensors(contexts: PromptContexts) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, prompt in (("positive", contexts.positive), ("negative", contexts.negative)):
        if prompt is None:
            continue
        for field in _FIELDS:
            value = getattr(prompt, field)
            if value is not None:
                tensors[f"{name}.{field}"] = value
    return tensors


def _tensor_problems(tensors: dict[str, torch.Tensor], name: str) -> list[str]:
    """A saved prompt file: positive video and audio contexts (B, S, D), an optional negative pair of the same kind,
    masks (B, S) matching their context; float contexts (a file from elsewhere fails here, not in the sampler)."""
    problems = [f"{name}: no {key} tensor; expected a file 'AIPROD Save Prompt' wrote"
                for key in ("positive.video", "positive.audio") if key not in tensors]
    if ("negative.video" in tensors) != ("negative.audio" in tensors):
        problems.append(f"{name}: negative.video and negative.audio must both be present or both absent")
    for key, tensor in tensors.items():
        label, _, field = key.partition(".")
        context = tensors.get(f"{label}.{field.removesuffix('_mask')}")
        if label not in ("positive", "negative") or field not in _FIELDS:
            problems.append(f"{name}: unexpected tensor {key!r} (expected {', '.join(_FIELDS)} per prompt)")
        elif not field.endswith("_mask") and (tensor.ndim != 3 or not tensor.is_floating_point()):
            problems.append(f"{name}: {key} is a {tuple(tensor.shape)} {tensor.dtype} tensor, expected float (B, S, D)")
        elif field.endswith("_mask") and (context is None or tuple(tensor.shape) != tuple(context.shape[:2])):
            problems.append(f"{name}: {key} has shape {tuple(tensor.shape)}, expected (B, S) of its context")
    return problems



def _contexts(tensors: dict[str, torch.Tensor], name: str = "prompt file") -> PromptContexts:
    check_problems(_tensor_problems(tensors, name))

    def prompt(label: str) -> Prompt | None:
        if f"{label}.video" not in tensors:
            return None
        return Prompt(*(tensors.get(f"{label}.{f}") for f in _FIELDS))

    return PromptContexts(prompt("positive"), prompt("negative"))  # type: ignore[arg-type]


class AIPRODSavePrompt(io.ComfyNode):
    """Writes encoded prompts to a .safetensors file in the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODSavePrompt",
            display_name="AIPROD Save Prompt",
            category=CATEGORY,
            description="Saves encoded prompts (conditioning) to output/<prefix>_NNNNN_.safetensors; load them with "
            "'AIPROD Load Prompt' so Gemma need not be loaded again.",
            inputs=[
                ConditioningSocket.Input("conditioning", tooltip="Encoded prompts to save."),
                io.String.Input("filename_prefix", default="aiprod/prompt",
                                tooltip="File name prefix under the output folder."),
            ],
            outputs=[io.String.Output(display_name="file", tooltip="The saved file as a 'AIPROD Load Prompt' choice.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str) -> bool | str:
        return filename_prefix_problem(filename_prefix) or True

    @classmethod
    def execute(cls, conditioning: PromptContexts, filename_prefix: str) -> io.NodeOutput:
        choice = write_tensors(_tensors(conditioning), filename_prefix, PROMPT_KIND)
        return io.NodeOutput(choice, ui=ui.PreviewText(choice))


class AIPRODLoadPrompt(io.ComfyNode):
    """Reads encoded prompts that 'AIPROD Save Prompt' wrote."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODLoadPrompt",
            display_name="AIPROD Load Prompt",
            category=CATEGORY,
            description="Loads encoded prompts from a .safetensors file in the output or input folder.",
            inputs=[choice_input("prompt_file", saved_file_options(),
                                 "A file written by 'AIPROD Save Prompt' (output/ or input/).")],
            outputs=[ConditioningSocket.Output(display_name="conditioning", tooltip="The encoded prompts.")],
        )

    @classmethod
    def validate_inputs(cls, prompt_file: str) -> bool | str:
        return saved_file_problem("prompt_file", prompt_file) or True

    @classmethod
    def execute(cls, prompt_file: str) -> io.NodeOutput:
        tensors = read_tensors(resolve_saved_file("prompt_file", prompt_file), PROMPT_KIND)
        return io.NodeOutput(_contexts(tensors, prompt_file))


class AIPRODEnhancePrompt(io.ComfyNode):
    """Rewrites a short prompt into a detailed one with Gemma (seeded)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIPRODEnhancePrompt",
            display_name="AIPROD Enhance Prompt",
            category=CATEGORY,
            description="Uses the Gemma text encoder as a language model to expand a prompt the way LTX-2 was "
            "trained on (same seed, same text).",
            inputs=[
                TextEncoderSocket.Input("text_encoder", tooltip="From 'AIPROD Text Encoder Loader'."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt to enhance."),
                seed_input("Sampling seed of the enhancement.", default=42),
                io.Int.Input("max_new_tokens", default=512, min=1, max=2048,
                             tooltip="Upper bound on the enhanced prompt's length in tokens."),
            ],
            outputs=[io.String.Output(display_name="prompt", tooltip="The enhanced prompt.")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoder, prompt: str, seed: int, max_new_tokens: int) -> io.NodeOutput:
        loaded = text_encoder.gemma.get()
        with ComfyModelHost().use(loaded.encoder) as encoder:
            text = enhance_prompt(causal_lm_from_encoder(encoder), loaded.tokenizer.tokenizer, prompt, seed=seed,
                                  max_new_tokens=max_new_tokens)
        return io.NodeOutput(text, ui=ui.PreviewText(text))
