"""LTX-2.5's prompt-enhancement texts and settings, as facts checked against diffusers 0.42.1 (the same texts as
ltx-core 1.2.0's ``gemma4_{t2v,i2v}_system_prompt.txt``)."""

from __future__ import annotations

import pytest

from aiprod.aiprod_core.text_encoder import prompts


@pytest.mark.oracle
def test_system_prompts_are_the_references() -> None:
    from diffusers.pipelines.ltx2.utils import LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT, LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT

    assert prompts.LTX25_T2V_SYSTEM_PROMPT == LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT
    assert prompts.LTX25_I2V_SYSTEM_PROMPT == LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT
    assert prompts.LTX25_T2V_SYSTEM_PROMPT != prompts.T2V_SYSTEM_PROMPT


@pytest.mark.oracle
def test_enhancement_settings_are_the_references() -> None:
    from diffusers.pipelines.ltx2.utils import GEMMA4_PROMPT_ENHANCEMENT_CONFIG as ref

    assert prompts.LTX25_ENHANCE_MAX_NEW_TOKENS == ref.max_new_tokens
    assert prompts.LTX25_ENHANCE_SEED == ref.seed
    assert {"do_sample": prompts.LTX25_ENHANCE_DO_SAMPLE,
            "no_repeat_ngram_size": prompts.LTX25_ENHANCE_NO_REPEAT_NGRAM_SIZE} == ref.generation_kwargs


def test_messages_carry_the_ltx25_system_prompt() -> None:
    t2v = prompts.enhancement_messages("a cat", prompts.LTX25_T2V_SYSTEM_PROMPT)
    assert t2v == [{"role": "system", "content": prompts.LTX25_T2V_SYSTEM_PROMPT},
                   {"role": "user", "content": "user prompt: a cat"}]
    i2v = prompts.enhancement_messages("a cat", prompts.LTX25_I2V_SYSTEM_PROMPT, with_image=True)
    assert i2v[0]["content"] == prompts.LTX25_I2V_SYSTEM_PROMPT
    assert i2v[1]["content"][1] == {"type": "text", "text": "User Raw Input Prompt: a cat."}
