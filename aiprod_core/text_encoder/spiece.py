"""Gemma's tokenizer from a serialized SentencePiece model held in memory (ComfyUI's embedded ``spiece_model``).

ComfyUI's Gemma-3 files carry their tokenizer as a uint8 tensor holding the SentencePiece ``ModelProto``. This
module builds a prompt tokenizer from those bytes (never writing them anywhere) that gives the same ids as
transformers' tokenizer made from Google's ``tokenizer.model`` / ``tokenizer.json``: the text is first split on
the special tokens (SentencePiece control and unknown pieces, which SentencePiece never matches in text, and the
named Gemma tokens; matched leftmost-longest on the raw text, as the ``tokenizers`` library matches added
tokens), each piece between them is encoded by SentencePiece itself (user-defined pieces are kept whole there),
and ``<bos>`` is prepended. `SentencePieceGemmaTokenizer` implements the part of transformers' tokenizer API the
prompt paths use (batch call with padding / truncation, ``decode``, ``apply_chat_template`` for the Gemma chat
format, token <-> id lookups), so `GemmaPromptTokenizer` and prompt enhancement run on it unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "GEMMA3_TOKENIZER",
    "GemmaTokenizerSpec",
    "SentencePieceGemmaTokenizer",
    "gemma_chat_text",
]

SPACE_MARK = "\u2581"  # SentencePiece's whitespace symbol
MAX_MODEL_BYTES = 64 * 1024 * 1024  # Gemma-3's model is 4.7 MB; anything this large is not a tokenizer


@dataclass(frozen=True)
class GemmaTokenizerSpec:
    """The named tokens and chat format of one Gemma generation's tokenizer.

    ``extra_tokens`` are added after the SentencePiece vocabulary when the model lacks them (Google's
    ``tokenizer.json`` for Gemma-3 adds ``<image_soft_token>`` at id 262144, the first id past the model's pieces).
    The chat format folds a system message into the first user turn and names the assistant ``model_role``.
    """

    name: str
    bos: str
    eos: str
    pad: str
    unk: str
    mask: str
    start_of_turn: str
    end_of_turn: str
    start_of_image: str
    model_role: str = "model"
    extra_tokens: tuple[str, ...] = ()

    @property
    def special_names(self) -> tuple[str, ...]:
        return self.bos, self.eos, self.pad, self.unk, self.mask


GEMMA3_TOKENIZER = GemmaTokenizerSpec(
    name="Gemma-3", bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", mask="<mask>",
    start_of_turn="<start_of_turn>", end_of_turn="<end_of_turn>", start_of_image="<start_of_image>",
    extra_tokens=("<image_soft_token>",),
)


def gemma_chat_text(messages: Sequence[Mapping[str, Any]], spec: GemmaTokenizerSpec = GEMMA3_TOKENIZER,
                    add_generation_prompt: bool = False) -> str:
    """Gemma's chat format: ``<bos>`` then ``<start_of_turn>{role}\\n{content}<end_of_turn>\\n`` per turn, a system
    message folded into the first user turn (followed by a blank line), contents stripped, images as
    ``<start_of_image>``, and ``<start_of_turn>model\\n`` to ask for the reply."""

    def text_of(content: Any) -> str:
        if isinstance(content, str):
            return content.strip()
        parts = []
        for item in content:
            if item.get("type") == "image":
                parts.append(spec.start_of_image)
            elif item.get("type") == "text":
                parts.append(item["text"].strip())
        return "".join(parts)

    turns = list(messages)
    prefix = ""
    if turns and turns[0]["role"] == "system":
        system = turns.pop(0)["content"]
        prefix = (system if isinstance(system, str) else system[0]["text"]) + "\n\n"
    out = [spec.bos]
    for index, message in enumerate(turns):
        if (message["role"] == "user") != (index % 2 == 0):
            raise ValueError("chat roles must alternate user / assistant, starting with user")
        role = spec.model_role if message["role"] == "assistant" else message["role"]
        out.append(f"{spec.start_of_turn}{role}\n{prefix if index == 0 else ''}{text_of(message['content'])}"
                   f"{spec.end_of_turn}\n")
    if add_generation_prompt:
        out.append(f"{spec.start_of_turn}{spec.model_role}\n")
    return "".join(out)


class Encoding(dict):
    """What a tokenizer call returns: ``input_ids`` / ``attention_mask`` as keys and attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class SentencePieceGemmaTokenizer:
    """Gemma's tokenizer over a SentencePiece model given as bytes: text -> ids equal to transformers' tokenizer
    made from the same model, with the transformers calling conventions the prompt paths use.

    ``__call__(text or list of texts, add_special_tokens=True, padding=False | "max_length" | "longest",
    max_length=None, truncation=False, return_tensors=None | "pt")``: ids (B, T) and attention mask (B, T),
    padded on ``padding_side`` ("left" or "right") with ``pad_token``; truncation keeps the first ``max_length``
    ids (``<bos>`` included).
    """

    def __init__(self, model: bytes, spec: GemmaTokenizerSpec = GEMMA3_TOKENIZER) -> None:
        self._sp = self.load(model, spec)
        self.spec = spec
        size = self._sp.get_piece_size()
        self._pieces = list(self._sp.id_to_piece(list(range(size))))
        self._extra = {t: size + i for i, t in enumerate(self._missing_extras(self._sp, spec))}
        self._pieces.extend(self._extra)
        bytes_ids = (self._sp.piece_to_id(f"<0x{value:02X}>") for value in range(256))
        self._byte_values = {i: int(self._pieces[i][3:-1], 16) for i in bytes_ids if self._sp.is_byte(i)}
        # transformers' added tokens: control and unknown pieces (special), the named and extra tokens; the
        # user-defined pieces it also adds are kept whole by SentencePiece itself, so they need no pre-split.
        self._special_ids = {i for i in range(size) if self._sp.is_control(i) or self._sp.is_unknown(i)}
        self._special_ids |= {self.convert_tokens_to_ids(p) for p in (*spec.special_names, *spec.extra_tokens)}
        added = sorted({self._pieces[i] for i in self._special_ids}, key=len, reverse=True)
        self._split = re.compile("|".join(re.escape(t) for t in added))
        self.padding_side = "left"
        self.pad_token: str | None = spec.pad
        self.bos_token, self.eos_token, self.unk_token = spec.bos, spec.eos, spec.unk
        self.model_max_length = 1_000_000
        self.chat_template = f"{spec.name} chat format (built in)"

    @staticmethod
    def load(model: bytes, spec: GemmaTokenizerSpec = GEMMA3_TOKENIZER) -> Any:
        """The ``sentencepiece.SentencePieceProcessor`` of ``model`` (bytes, never a file), checked to be a
        tokenizer of ``spec``'s generation; ``ValueError`` naming what is wrong otherwise."""
        import sentencepiece

        if not isinstance(model, bytes | bytearray) or not 0 < len(model) <= MAX_MODEL_BYTES:
            raise ValueError(f"SentencePiece model of {len(model)} bytes, expected 1 to {MAX_MODEL_BYTES}")
        try:
            processor = sentencepiece.SentencePieceProcessor(model_proto=bytes(model))
        except RuntimeError as exc:
            raise ValueError(f"not a SentencePiece model ({exc})") from exc
        missing = [name for name in spec.special_names if processor.piece_to_id(name) == processor.unk_id()
                   and name != spec.unk]
        if missing or processor.id_to_piece(processor.unk_id()) != spec.unk:
            raise ValueError(f"no {', '.join(missing or [spec.unk])} piece: not a {spec.name} tokenizer")
        return processor

    @staticmethod
    def _missing_extras(processor: Any, spec: GemmaTokenizerSpec) -> list[str]:
        return [t for t in spec.extra_tokens if processor.piece_to_id(t) == processor.unk_id() and t != spec.unk]

    @classmethod
    def token_count(cls, model: bytes, spec: GemmaTokenizerSpec = GEMMA3_TOKENIZER) -> int:
        """How many token ids the tokenizer of ``model`` has (its pieces plus ``spec``'s extra tokens), checking
        it loads, without building the tables (cheap enough for a loader node's checks)."""
        processor = cls.load(model, spec)
        return processor.get_piece_size() + len(cls._missing_extras(processor, spec))

    # ---- vocabulary ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def convert_tokens_to_ids(self, token: str) -> int:
        """The id of ``token`` (the unknown token's id for a token not in the vocabulary)."""
        return self._extra.get(token) or self._sp.piece_to_id(token)

    def convert_ids_to_tokens(self, index: int) -> str:
        return self._pieces[index]

    @property
    def bos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.eos_token)

    @property
    def unk_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.unk_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.convert_tokens_to_ids(self.pad_token)

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._special_ids)

    # ---- encoding --------------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """``text`` -> ids: added tokens matched first, SentencePiece between them, ``<bos>`` in front."""
        ids = [self.bos_token_id] if add_special_tokens else []
        start = 0
        for match in self._split.finditer(text):
            ids.extend(self._sp.encode(text[start : match.start()]))
            ids.append(self.convert_tokens_to_ids(match.group()))
            start = match.end()
        ids.extend(self._sp.encode(text[start:]))
        return ids

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, padding: bool | str = False,
                 max_length: int | None = None, truncation: bool = False, return_tensors: str | None = None,
                 **_: Any) -> Encoding:
        batch = [text] if isinstance(text, str) else list(text)
        rows = [self.encode(t, add_special_tokens) for t in batch]
        if truncation and max_length is not None:
            rows = [row[:max_length] for row in rows]
        masks = [[1] * len(r) for r in rows]
        longest = max((len(r) for r in rows), default=0)
        width = {"max_length": max(longest, max_length or 0), "longest": longest, True: longest}.get(padding)
        if width:
            padded = [self._pad(r, m, width) for r, m in zip(rows, masks, strict=True)]
            rows, masks = [r for r, _ in padded], [m for _, m in padded]
        if return_tensors == "pt":
            return Encoding(input_ids=torch.tensor(rows, dtype=torch.long),
                            attention_mask=torch.tensor(masks, dtype=torch.long))
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}, expected None or 'pt'")
        if isinstance(text, str):
            return Encoding(input_ids=list(rows[0]), attention_mask=list(masks[0]))
        return Encoding(input_ids=[list(r) for r in rows], attention_mask=[list(m) for m in masks])

    def _pad(self, row: list[int], mask: list[int], width: int) -> tuple[list[int], list[int]]:
        count = width - len(row)
        if count and self.pad_token_id is None:
            raise ValueError("padding needs a pad token")
        pads, zeros = [self.pad_token_id] * count, [0] * count
        if self.padding_side == "left":
            return pads + row, zeros + mask
        return row + pads, mask + zeros

    # ---- decoding and chat -----------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False, **_: Any) -> str:
        """ids -> text as transformers' Gemma decoder gives it: ``▁`` -> space, runs of byte pieces joined as
        UTF-8 (one U+FFFD per byte piece when a run is not valid UTF-8), added tokens written as they are, special
        ones left out with ``skip_special_tokens``, ids outside the vocabulary dropped."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        parts: list[str] = []
        run = bytearray()

        def flush() -> None:
            if run:
                try:
                    parts.append(run.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append("\ufffd" * len(run))
                run.clear()

        for index in values:
            if not 0 <= index < len(self._pieces) or (skip_special_tokens and index in self._special_ids):
                continue
            byte = self._byte_values.get(index)
            if byte is not None:
                run.append(byte)
                continue
            flush()
            parts.append(self._pieces[index].replace(SPACE_MARK, " "))
        flush()
        return "".join(parts)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], tokenize: bool = False,
                            add_generation_prompt: bool = False, **_: Any) -> str | list[int]:
        """The Gemma chat text of ``messages`` (`gemma_chat_text`); its ids without a second ``<bos>`` when
        ``tokenize``."""
        text = gemma_chat_text(messages, self.spec, add_generation_prompt)
        return self.encode(text, add_special_tokens=False) if tokenize else text
