"""Gemma-3 text backbone (``transformers.Gemma3TextModel``) and the prompt tokenizer wrapper.

Only the language model's hidden states are used, so only the text backbone is built, sized from the Gemma
folder's ``config.json`` (any Gemma-3 size, not the 12B one hard-coded elsewhere). The module works with
transformers 4.5x and 5.x: it touches no vision tower and no rope attribute; ``transformers`` is imported lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .embeddings import TextEmbeddings, TextEmbeddingsProcessor

if TYPE_CHECKING:
    from transformers import Gemma3TextConfig, PreTrainedTokenizerBase

__all__ = [
    "GEMMA_TEXT_PREFIXES",
    "GemmaPromptTokenizer",
    "GemmaTextEncoder",
    "encode_prompts",
    "gemma_text_config",
    "gemma_text_state_dict",
]


# The reference loads its tokenizer with 1024 tokens (module_ops_from_gemma_root).
DEFAULT_MAX_LENGTH = 1024
# Gemma weight-file prefixes of the text backbone, most specific first -> our module prefix.
GEMMA_TEXT_PREFIXES: dict[str, str] = {
    "language_model.model.": "model.",  # Gemma3ForConditionalGeneration saved by transformers < 4.52
    "model.language_model.": "model.",  # ... saved by transformers >= 4.52
    "model.": "model.",  # Gemma3ForCausalLM (text only)
}
_EMBED_KEY = "embed_tokens.weight"


def gemma_text_config(config_json: Mapping[str, Any], attn_implementation: str = "sdpa") -> Gemma3TextConfig:
    """A ``transformers.Gemma3TextConfig`` from a Gemma folder's ``config.json`` (``gemma3`` or ``gemma3_text``)."""
    from transformers import Gemma3TextConfig

    model_type = config_json.get("model_type")
    if model_type == "gemma3":
        text = dict(config_json.get("text_config") or {})
    elif model_type == "gemma3_text":
        text = dict(config_json)
    else:
        raise ValueError(f"model_type={model_type!r}, expected 'gemma3' or 'gemma3_text'")
    text.pop("model_type", None)
    config = Gemma3TextConfig.from_dict(text)
    config._attn_implementation = attn_implementation  # public setter in 4.5x and 5.x
    return config


def gemma_text_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Select and rename the text-backbone tensors of a Gemma weight set for `GemmaTextEncoder`.

    Vision tower, projector and LM head are dropped (the head is tied to the embeddings).
    """
    for prefix, ours in GEMMA_TEXT_PREFIXES.items():
        if prefix + _EMBED_KEY in state_dict:
            return {ours + k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    raise KeyError(f"no Gemma text backbone: none of {[p + _EMBED_KEY for p in GEMMA_TEXT_PREFIXES]} found")


@contextlib.contextmanager
def _parameters_on(device: torch.device | str | None, dtype: torch.dtype | None) -> Iterator[None]:
    """Create module parameters on ``device`` / ``dtype`` while buffers (rope tables, embedding scale) are
    computed on the CPU as usual: a meta-built model then loads with ``assign=True`` and keeps real buffers.

    Not thread-safe: it swaps ``nn.Module.register_parameter`` for the duration of the construction.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            target = dtype if dtype is not None and param.is_floating_point() else param.dtype
            param = nn.Parameter(param.to(device=device, dtype=target), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


class GemmaTextEncoder(nn.Module):
    """Gemma-3 text backbone: token ids (B, T) and mask (B, T) -> L = layers + 1 hidden states (B, T, D).

    Keys: ``model.*`` = the transformers ``Gemma3TextModel`` keys (see `gemma_text_state_dict`). Built with
    ``device="meta"`` only the parameters are meta; the non-persistent buffers are real CPU tensors. Pick the
    weight dtype with ``dtype`` (or the state dict's dtype): ``.to(torch.bfloat16)`` would also round the float32
    rope frequency buffers.
    """

    def __init__(
        self, config: Gemma3TextConfig, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        from transformers import Gemma3TextModel

        with _parameters_on(device, dtype):
            self.model = Gemma3TextModel(config)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states)


class GemmaPromptTokenizer:
    """Prompts -> (input_ids (B, T), attention_mask (B, T)): stripped, left-padded to ``max_length``, truncated.

    Wraps a transformers tokenizer the way the reference does (left padding, EOS as pad token when none), or the
    SentencePiece tokenizer embedded in ComfyUI's Gemma files (`from_sentencepiece`), which follows the same calls.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> GemmaPromptTokenizer:
        """Load the tokenizer files of a local Gemma folder (no network)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=max_length)
        return cls(tokenizer, max_length)

    @classmethod
    def from_sentencepiece(cls, model: bytes, max_length: int = DEFAULT_MAX_LENGTH) -> GemmaPromptTokenizer:
        """From a serialized SentencePiece model in memory (ComfyUI's embedded ``spiece_model``); same ids as the
        tokenizer files made from that model (see `spiece.SentencePieceGemmaTokenizer`)."""
        from .spiece import SentencePieceGemmaTokenizer

        return cls(SentencePieceGemmaTokenizer(model), max_length)

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        encoded = self.tokenizer(
            [p.strip() for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return encoded.input_ids, encoded.attention_mask


@torch.no_grad()
def encode_prompts(
    prompts: Sequence[str],
    tokenizer: GemmaPromptTokenizer,
    encoder: GemmaTextEncoder,
    processor: TextEmbeddingsProcessor,
) -> TextEmbeddings:
    """Prompts -> video (B, T, Cv) / audio (B, T, Ca) text embeddings and their mask (B, T), one batch."""
    input_ids, attention_mask = tokenizer(prompts)
    device = encoder.model.embed_tokens.weight.device
    hidden_states = encoder(input_ids.to(device), attention_mask.to(device))
    target = next(processor.parameters()).device
    return processor(tuple(h.to(target) for h in hidden_states), attention_mask.to(target))
