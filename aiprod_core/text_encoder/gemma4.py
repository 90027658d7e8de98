"""Gemma-4 text backbone of LTX-2.5 (``transformers.Gemma4UnifiedTextModel``) and its prompt tokenizer.

LTX-2.5 encodes prompts with a Gemma 4 12B (``model_type`` ``gemma4_unified``) fine-tuned for LTX. As for Gemma 3
(`gemma.GemmaTextEncoder`), only the language model is built (no vision / audio embedders, no LM head) and the
encoder returns all L = num_hidden_layers + 1 hidden states (B, T, D) for the text projection, which normalises
and projects them (``TextEmbeddingsProcessor``).

Facts (Lightricks ltx-core 1.2.0 ``LTXGemmaTextEncoder.encode`` / ``LTXGemmaTokenizer``, diffusers 0.42.1
``LTX2Pipeline._get_gemma_prompt_embeds``): the prompt is stripped, tokenized without padding, truncated to 1024
tokens, a ``<bos>`` is put first when the tokenizer did not (Gemma 4's tokenizer does not; the Lightricks reference
adds it, diffusers does not: the Lightricks fact is used), then left-padded to 1024; the hidden states are those of
``Gemma4UnifiedModel(input_ids, attention_mask, output_hidden_states=True)`` (the last one after the final norm).
The multimodal model swaps image / video / audio placeholder ids for the pad id before embedding; so do we.

transformers: the Gemma-4 classes exist from `GEMMA4_MIN_TRANSFORMERS` on (checked only when a Gemma-4 file is
loaded, so Gemma 3 keeps working with transformers 4.5x); ``transformers`` is imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .gemma import _parameters_on

if TYPE_CHECKING:
    from transformers import Gemma4UnifiedTextConfig, PreTrainedTokenizerBase

__all__ = [
    "GEMMA4_MIN_TRANSFORMERS",
    "Gemma4PromptTokenizer",
    "Gemma4TextEncoder",
    "TransformersVersionError",
    "gemma4_placeholder_ids",
    "gemma4_text_config",
    "require_gemma4_transformers",
]

logger = logging.getLogger(__name__)

# First transformers release with ``models/gemma4_unified`` (5.8.x / 5.9.0 have only the dense ``gemma4``; 5.10.0
# was never published). Checked on the wheels of 5.8.0, 5.8.1, 5.9.0 (absent) and 5.10.1, 5.12.0, 5.15.0, 5.24.0.
GEMMA4_MIN_TRANSFORMERS = "5.10.1"
DEFAULT_MAX_LENGTH = 1024  # ltx-core TOKENIZER_MAX_LENGTH
ENCODER_MODEL_TYPES = ("gemma4_unified", "gemma4_unified_text")
# transformers' Gemma4UnifiedConfig defaults for the multimodal placeholder ids (used when a config omits them).
PLACEHOLDER_DEFAULTS = {"image_token_id": 258_880, "video_token_id": 258_884, "audio_token_id": 258_881}
# tokenizer_config.json entries not passed to the tokenizer (ltx-core ``_TOKENIZER_CONFIG_SKIP``: file-loading
# and class-selection keys; ``added_tokens_decoder`` is already in tokenizer.json and fails as a keyword).
TOKENIZER_CONFIG_SKIP = frozenset({"tokenizer_class", "auto_map", "model_max_length", "backend", "is_local",
                                   "local_files_only", "processor_class", "added_tokens_decoder"})


class TransformersVersionError(ImportError):
    """The installed transformers has no Gemma-4 (``gemma4_unified``) classes."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def require_gemma4_transformers() -> None:
    """Raise `TransformersVersionError` unless transformers >= `GEMMA4_MIN_TRANSFORMERS` (with Gemma 4 unified)."""
    import transformers

    installed = getattr(transformers, "__version__", "unknown")
    new_enough = _version_tuple(installed) >= _version_tuple(GEMMA4_MIN_TRANSFORMERS)
    if not new_enough or not hasattr(transformers, "Gemma4UnifiedTextModel"):
        raise TransformersVersionError(
            f"transformers=={installed} cannot run Gemma 4 (gemma4_unified), the LTX-2.5 text encoder: it needs "
            f"transformers>={GEMMA4_MIN_TRANSFORMERS}. Upgrade it in ComfyUI's Python environment "
            f"(pip install -U \"transformers>={GEMMA4_MIN_TRANSFORMERS}\"); Gemma 3 (LTX-2 / LTX-2.3) keeps "
            "working with transformers>=4.50.3."
        )


def _reject(key: str, actual: Any, expected: Any) -> None:
    raise ValueError(f"{key}={actual!r}, expected {expected!r}")


def gemma4_text_config(config_json: Mapping[str, Any], attn_implementation: str = "sdpa") -> Gemma4UnifiedTextConfig:
    """A ``transformers.Gemma4UnifiedTextConfig`` from a Gemma-4 ``config.json`` / ``gemma_config`` dict
    (``gemma4_unified`` with its ``text_config``, or ``gemma4_unified_text``)."""
    model_type = config_json.get("model_type")
    if model_type == "gemma4":
        raise ValueError("model_type='gemma4', expected 'gemma4_unified': the dense gemma4 (E2B / E4B) models are "
                         "LTX-2.5's optional prompt enhancer, not its text encoder")
    if model_type not in ENCODER_MODEL_TYPES:
        _reject("model_type", model_type, ENCODER_MODEL_TYPES)
    text = dict(config_json.get("text_config") or {}) if model_type == "gemma4_unified" else dict(config_json)
    if not text:
        _reject("text_config", None, "the Gemma-4 language model's config")
    require_gemma4_transformers()
    from transformers import Gemma4UnifiedTextConfig

    text.pop("model_type", None)
    try:
        config = Gemma4UnifiedTextConfig.from_dict(text)
    except (TypeError, ValueError, _strict_config_error()) as exc:
        raise ValueError(f"text_config is not a valid Gemma-4 text config: {exc}") from exc
    config._attn_implementation = attn_implementation
    return config


def _strict_config_error() -> type[Exception]:
    """huggingface_hub's error for a config value of the wrong type (an ``Exception``, not a ``ValueError``)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: transformers raised ValueError / TypeError itself
        return ValueError
    return StrictDataclassError


def gemma4_placeholder_ids(config_json: Mapping[str, Any]) -> tuple[int, ...]:
    """Image / video / audio placeholder token ids of a ``gemma4_unified`` config (transformers' defaults when
    absent): the multimodal model embeds them as the pad token when no media is given."""
    return tuple(int(config_json.get(name, default)) for name, default in PLACEHOLDER_DEFAULTS.items())


class Gemma4TextEncoder(nn.Module):
    """Gemma-4 language model: token ids (B, T) and mask (B, T) -> L = layers + 1 hidden states (B, T, D).

    Keys: ``model.*`` = the transformers ``Gemma4UnifiedTextModel`` keys (``layers.N.layer_scalar`` is a stored
    buffer). Built with ``device="meta"`` only the parameters are meta; computed buffers (rope tables, embedding
    scale) are real CPU tensors. ``placeholder_ids`` are replaced by the pad id before embedding.
    """

    def __init__(
        self,
        config: Gemma4UnifiedTextConfig,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        placeholder_ids: Sequence[int] = (),
    ) -> None:
        super().__init__()
        require_gemma4_transformers()
        from transformers import Gemma4UnifiedTextModel

        with _parameters_on(device, dtype):
            self.model = Gemma4UnifiedTextModel(config)
        self.model.eval()
        self.placeholder_ids = tuple(int(i) for i in placeholder_ids)
        self.pad_token_id = int(config.pad_token_id if config.pad_token_id is not None else 0)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.placeholder_ids:
            placeholders = torch.tensor(self.placeholder_ids, device=input_ids.device)
            input_ids = torch.where(torch.isin(input_ids, placeholders), self.pad_token_id, input_ids)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states)


class Gemma4PromptTokenizer:
    """Prompts -> (input_ids (B, T), attention_mask (B, T)): stripped, truncated to ``max_length``, ``<bos>`` first,
    left-padded to ``max_length`` (EOS as the pad token when none). Warns when a prompt is clipped."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 2:
            raise ValueError(f"max_length={max_length!r}, expected >= 2 (<bos> and one token)")
        if tokenizer.bos_token_id is None:
            raise ValueError("tokenizer has no bos_token; the Gemma-4 encoder needs a leading <bos>")
        tokenizer.padding_side = "left"
        tokenizer.model_max_length = max_length
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_tokenizer_json(
        cls,
        tokenizer_json: bytes,
        tokenizer_config: Mapping[str, Any] | None = None,
        chat_template: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> Gemma4PromptTokenizer:
        """Build from ``tokenizer.json`` bytes (data only, no code) and the ``tokenizer_config.json`` entries."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        kwargs = {k: v for k, v in (tokenizer_config or {}).items() if k not in TOKENIZER_CONFIG_SKIP}
        if chat_template is not None:
            kwargs.setdefault("chat_template", chat_template)
        backend = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **kwargs)
        return cls(tokenizer, max_length)

    def token_ids(self, prompt: str) -> list[int]:
        """One prompt's ids before padding: truncated to ``max_length``, with a single leading ``<bos>``."""
        text = prompt.strip()
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length).input_ids
        bos = self.tokenizer.bos_token_id
        if not ids or ids[0] != bos:
            ids = [bos, *ids][: self.max_length]
        if len(ids) == self.max_length:  # maybe clipped: count the whole prompt (validation rule: a warning)
            full = self.tokenizer(text, truncation=False, verbose=False).input_ids
            count = len(full) + (0 if full and full[0] == bos else 1)
            if count > self.max_length:
                logger.warning("prompt: %d tokens; only the first %d reach the model (the tokenizer clips the "
                               "rest): %.60r...", count, self.max_length, prompt)
        return ids

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        rows = [self.token_ids(p) for p in prompts]
        padded = self.tokenizer.pad({"input_ids": rows}, padding="max_length", max_length=self.max_length,
                                    return_tensors="pt", return_attention_mask=True)
        return padded.input_ids, padded.attention_mask
