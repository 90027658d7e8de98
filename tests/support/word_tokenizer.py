"""A word-level Gemma-style tokenizer saved as tokenizer files (the text encoder file tests' tiny vocabulary)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["WORDS", "write_word_tokenizer"]

WORDS = "a cat dog runs over the red car at night".split()


def write_word_tokenizer(folder: Path, words: list[str] = WORDS) -> None:
    """``tokenizer.json`` + configs in ``folder``: ids 0..3 are <pad> <eos> <bos> <unk>, then ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(("<pad>", "<eos>", "<bos>", "<unk>", *words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
