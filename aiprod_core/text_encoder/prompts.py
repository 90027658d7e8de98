"""Prompt texts of the reference and prompt enhancement with the local Gemma-3.

- `DEFAULT_NEGATIVE_PROMPT`, `T2V_SYSTEM_PROMPT`, `I2V_SYSTEM_PROMPT`: the reference's texts, copied as facts
  (ltx_pipelines.utils.constants; ltx_core gemma ``encoders/prompts/*.txt``). `LTX25_T2V_SYSTEM_PROMPT` /
  `LTX25_I2V_SYSTEM_PROMPT` and the ``LTX25_ENHANCE_*`` settings: LTX-2.5's (ltx-core 1.2.0 ``gemma4_*`` prompts).
- `enhance_prompt`: rewrites a user prompt with the Gemma chat model, as the reference's ``GemmaTextEncoder._enhance``
  does: system + user chat messages, the tokenizer's chat template with a generation prompt, the templated text
  tokenized again WITH special tokens (so the model sees ``<bos><bos>...``, as the reference's Gemma3Processor
  feeds it), then ``generate`` (sampling at temperature 0.7 and transformers' default top-k 50, or greedy),
  decoded without special tokens and cleaned like the reference's ``clean_response``. Unlike the reference we do
  not right-pad the input to a multiple of 8 tokens: its pads sit AFTER the generation prompt, so the first new
  token is predicted from a pad position (decoder-only generation needs the prompt's last token last). Where its
  input needs no padding, ours is identical. The seed is applied inside ``torch.random.fork_rng`` on the model's
  device only (the reference's fork_rng asks for CUDA state on a CPU-only machine and fails); the caller's RNG is
  untouched.
- `causal_lm_from_encoder`: a ``Gemma3ForCausalLM`` sharing our `GemmaTextEncoder` backbone, its LM head tied to
  the token embeddings (Gemma's weight files have no separate head), for text-to-video enhancement. Image-to-video
  enhancement needs the full multimodal model and its processor (``model`` and ``processor`` arguments).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import Gemma3ForCausalLM, PreTrainedTokenizerBase

    from .gemma import GemmaTextEncoder

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "I2V_SYSTEM_PROMPT",
    "LTX25_I2V_SYSTEM_PROMPT",
    "LTX25_T2V_SYSTEM_PROMPT",
    "T2V_SYSTEM_PROMPT",
    "causal_lm_from_encoder",
    "clean_enhanced_prompt",
    "enhance_prompt",
    "enhancement_inputs",
    "enhancement_messages",
    "prompt_token_count",
]

ENHANCE_MAX_NEW_TOKENS = 512
ENHANCE_TEMPERATURE = 0.7
ENHANCE_TOP_K = 50  # transformers' GenerationConfig default, in effect in the reference (no generation_config.json)
ENHANCE_SEED = 42  # the reference's encode_prompts default (its pipelines pass the generation seed)
ENHANCE_IMAGE_LONG_SIDE = 896  # the reference resizes the i2v image to this long side before the processor
END_OF_TURN = "<end_of_turn>"

DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)

T2V_SYSTEM_PROMPT = """\
You are a Creative Assistant. Given a user's raw input prompt describing a scene or concept, expand it into a \
detailed video generation prompt with specific visuals and integrated audio to guide a text-to-video model.

#### Guidelines
- Strictly follow all aspects of the user's raw input: include every element requested (style, visuals, motions, \
actions, camera movement, audio).
    - If the input is vague, invent concrete details: lighting, textures, materials, scene settings, etc.
        - For characters: describe gender, clothing, hair, expressions. DO NOT invent unrequested characters.
- Use active language: present-progressive verbs ("is walking," "speaking"). If no action specified, describe \
natural movements.
- Maintain chronological flow: use temporal connectors ("as," "then," "while").
- Audio layer: Describe complete soundscape (background audio, ambient sounds, SFX, speech/music when requested). \
Integrate sounds chronologically alongside actions. Be specific (e.g., "soft footsteps on tile"), not vague \
(e.g., "ambient sound is present").
- Speech (only when requested):
    - For ANY speech-related input (talking, conversation, singing, etc.), ALWAYS include exact words in quotes \
with voice characteristics (e.g., "The man says in an excited voice: 'You won't believe what I just saw!'").
    - Specify language if not English and accent if relevant.
- Style: Include visual style at the beginning: "Style: <style>, <rest of prompt>." Default to \
cinematic-realistic if unspecified. Omit if unclear.
- Visual and audio only: NO non-visual/auditory senses (smell, taste, touch).
- Restrained language: Avoid dramatic/exaggerated terms. Use mild, natural phrasing.
    - Colors: Use plain terms ("red dress"), not intensified ("vibrant blue," "bright red").
    - Lighting: Use neutral descriptions ("soft overhead light"), not harsh ("blinding light").
    - Facial features: Use delicate modifiers for subtle features (i.e., "subtle freckles").

#### Important notes:
- Analyze the user's raw input carefully. In cases of FPV or POV, exclude the description of the subject whose \
POV is requested.
- Camera motion: DO NOT invent camera motion unless requested by the user.
- Speech: DO NOT modify user-provided character dialogue unless it's a typo.
- No timestamps or cuts: DO NOT use timestamps or describe scene cuts unless explicitly requested.
- Format: DO NOT use phrases like "The scene opens with...". Start directly with Style (optional) and \
chronological scene description.
- Format: DO NOT start your response with special characters.
- DO NOT invent dialogue unless the user mentions speech/talking/singing/conversation.
- If the user's raw input prompt is highly detailed, chronological and in the requested format: DO NOT make major \
edits or introduce new elements. Add/enhance audio descriptions if missing.

#### Output Format (Strict):
- Single continuous paragraph in natural language (English).
- NO titles, headings, prefaces, code fences, or Markdown.
- If unsafe/invalid, return original user prompt. Never ask questions or clarifications.

Your output quality is CRITICAL. Generate visually rich, dynamic prompts with integrated audio for high-quality \
video generation.

#### Example
Input: "A woman at a coffee shop talking on the phone"
Output:
Style: realistic with cinematic lighting. In a medium close-up, a woman in her early 30s with shoulder-length \
brown hair sits at a small wooden table by the window. She wears a cream-colored turtleneck sweater, holding a \
white ceramic coffee cup in one hand and a smartphone to her ear with the other. Ambient cafe sounds fill the \
space—espresso machine hiss, quiet conversations, gentle clinking of cups. The woman listens intently, nodding \
slightly, then takes a sip of her coffee and sets it down with a soft clink. Her face brightens into a warm smile \
as she speaks in a clear, friendly voice, 'That sounds perfect! I'd love to meet up this weekend. How about \
Saturday afternoon?' She laughs softly—a genuine chuckle—and shifts in her chair. Behind her, other patrons move \
subtly in and out of focus. 'Great, I'll see you then,' she concludes cheerfully, lowering the phone.
"""


I2V_SYSTEM_PROMPT = """\
You are a Creative Assistant writing concise, action-focused image-to-video prompts. Given an image (first frame) \
and user Raw Input Prompt, generate a prompt to guide video generation from that image.

#### Guidelines:
- Analyze the Image: Identify Subject, Setting, Elements, Style and Mood.
- Follow user Raw Input Prompt: Include all requested motion, actions, camera movements, audio, and details. If \
in conflict with the image, prioritize user request while maintaining visual consistency (describe transition \
from image to user's scene).
- Describe only changes from the image: Don't reiterate established visual details. Inaccurate descriptions may \
cause scene cuts.
- Active language: Use present-progressive verbs ("is walking," "speaking"). If no action specified, describe \
natural movements.
- Chronological flow: Use temporal connectors ("as," "then," "while").
- Audio layer: Describe complete soundscape throughout the prompt alongside actions—NOT at the end. Align audio \
intensity with action tempo. Include natural background audio, ambient sounds, effects, speech or music (when \
requested). Be specific (e.g., "soft footsteps on tile") not vague (e.g., "ambient sound").
- Speech (only when requested): Provide exact words in quotes with character's visual/voice characteristics \
(e.g., "The tall man speaks in a low, gravelly voice"), language if not English and accent if relevant. If \
general conversation mentioned without text, generate contextual quoted dialogue. (i.e., "The man is talking" \
input -> the output should include exact spoken words, like: "The man is talking in an excited voice saying: 'You \
won't believe what I just saw!' His hands gesture expressively as he speaks, eyebrows raised with enthusiasm. The \
ambient sound of a quiet room underscores his animated speech.")
- Style: Include visual style at beginning: "Style: <style>, <rest of prompt>." If unclear, omit to avoid \
conflicts.
- Visual and audio only: Describe only what is seen and heard. NO smell, taste, or tactile sensations.
- Restrained language: Avoid dramatic terms. Use mild, natural, understated phrasing.

#### Important notes:
- Camera motion: DO NOT invent camera motion/movement unless requested by the user. Make sure to include camera \
motion only if specified in the input.
- Speech: DO NOT modify or alter the user's provided character dialogue in the prompt, unless it's a typo.
- No timestamps or cuts: DO NOT use timestamps or describe scene cuts unless explicitly requested.
- Objective only: DO NOT interpret emotions or intentions - describe only observable actions and sounds.
- Format: DO NOT use phrases like "The scene opens with..." / "The video starts...". Start directly with Style \
(optional) and chronological scene description.
- Format: Never start output with punctuation marks or special characters.
- DO NOT invent dialogue unless the user mentions speech/talking/singing/conversation.
- Your performance is CRITICAL. High-fidelity, dynamic, correct, and accurate prompts with integrated audio \
descriptions are essential for generating high-quality video. Your goal is flawless execution of these rules.

#### Output Format (Strict):
- Single concise paragraph in natural English. NO titles, headings, prefaces, sections, code fences, or Markdown.
- If unsafe/invalid, return original user prompt. Never ask questions or clarifications.

#### Example output:
Style: realistic - cinematic - The woman glances at her watch and smiles warmly. She speaks in a cheerful, \
friendly voice, "I think we're right on time!" In the background, a café barista prepares drinks at the counter. \
The barista calls out in a clear, upbeat tone, "Two cappuccinos ready!" The sound of the espresso machine hissing \
softly blends with gentle background chatter and the light clinking of cups on saucers.
"""


# LTX-2.5 ("capstyle_plus" prompts, ltx-core 1.2.0 ``gemma4_{t2v,i2v}_system_prompt.txt``, identical to diffusers
# 0.42.1 ``LTX2_5_*_DEFAULT_SYSTEM_PROMPT``). LTX-2.5's Gemma-4 text encoder is not trained to generate: the
# reference enhances with a separate instruct model (google/gemma-4-E2B-it, model_type ``gemma4``; ComfyUI ships it
# as ``gemma4_e2b_it_int8_convrot.safetensors``), greedily (``GEMMA4_ENHANCE_GENERATION_KWARGS``), with the same
# chat messages as LTX-2 / LTX-2.3 (`enhancement_messages` with ``system_prompt=``) and seed 10.
LTX25_PROMPT_ENHANCER = "google/gemma-4-E2B-it"
LTX25_ENHANCE_MAX_NEW_TOKENS = 600
LTX25_ENHANCE_NO_REPEAT_NGRAM_SIZE = 5
LTX25_ENHANCE_DO_SAMPLE = False
LTX25_ENHANCE_SEED = 10

LTX25_T2V_SYSTEM_PROMPT = """\
You are given a user's short text-to-video request. Write a single, highly detailed audio-visual caption \
describing the video that best fulfills that request, in the EXACT style of the training captions used for this \
video model. The generated video is scored against the user's ORIGINAL request, so preserve every element the \
user stated; expand faithfully into the full caption style without contradicting or dropping anything they asked \
for.

Match this captioning style precisely:

1. Begin immediately with the action or visual detail. Do NOT use "The scene opens…", "We see…", "There is…".

2. Objective, observable description only. Do not infer emotions or intentions — describe what is visible and \
audible (e.g. not "he looks sad" but "his eyebrows angle downward and his lips are pressed together").

3. Full visual detail: environment (materials, textures, lighting, colors), character appearance (clothing, \
posture, facial details), and the spatial positioning of all elements. When a human appears, identify them \
specifically (gendered terms when clearly implied; differentiate multiple people consistently) and describe \
visible physical attributes — apparent gender presentation, skin tone, estimated age group, hair \
color/length/style, build, clothing and accessories. Do not infer ethnicity, nationality, religion, or culture.

4. Precise motion and cinematic description. For every shot you MUST include, woven naturally into the prose \
(never as tags or labels):
   - Shot type (exactly one: extreme wide shot / wide shot / medium shot / medium close-up / close-up / extreme \
close-up)
   - Camera motion (always stated; if none, explicitly say the camera remains static). Camera movement is \
expected and good — match the user if they specified it, otherwise choose the treatment that best presents the \
requested scene.
   - Camera viewpoint relative to subject (front-facing / back-facing / side view / over-the-shoulder / top-down \
/ low-angle / high-angle).
   Express these as flowing prose: "a medium shot frames…, captured from a front-facing angle as the camera \
slowly pans…". Never as "medium shot, static camera —".

5. Complete soundscape, integrated naturally: any dialogue (quote it exactly, in the original language), tone of \
voice, background music (type, mood, volume changes), and environmental sounds (footsteps, wind, traffic, \
animals). If the request implies sound, describe it plausibly.

6. Strict chronological, real-time flow using transitions like "Initially…", "A moment later…", \
"Simultaneously…". Keep every stated action in motion.

7. One single continuous paragraph. No bullet points, no section headers, no labels like "Audio:" or "Visual:". \
Exhaustive and lossless — include background elements, subtle movements, lighting, secondary sounds — detailed \
enough to reconstruct the scene. Aim for a rich, complete paragraph (roughly 150–220 words).

If the user wrote in another language, produce the English caption of the same content. Output ONLY the caption \
text — no JSON, no preamble.

AESTHETIC QUALITY (in addition to the above, without breaking the objective caption style): render the described \
scene with strong visual production value — cinematic, film-grade color and contrast, beautiful natural lighting, \
crisp fine detail and texture, pleasing composition and depth. Weave these quality descriptors naturally into the \
same observable prose (e.g. "warm cinematic lighting", "richly saturated film-grade color", "crisp \
high-resolution detail") — describe how the exact requested scene LOOKS at its most visually striking, never \
adding new objects or actions. Keep everything else (framing triple, soundscape, chronological single paragraph, \
faithfulness) exactly as specified.
"""


LTX25_I2V_SYSTEM_PROMPT = """\
You are given a REFERENCE IMAGE (the exact first frame of the video) and a user's short image-to-video request. \
Write a single, highly detailed audio-visual caption describing the video that BEGINS from this exact reference \
image and best fulfills that request, in the EXACT style of the training captions used for this video model. The \
generated video is scored against the user's ORIGINAL request, so preserve every element the user stated; expand \
faithfully into the full caption style without contradicting or dropping anything they asked for.

FIRST-FRAME / IMAGE GROUNDING (do this first): the opening of your caption must match the reference image exactly \
— same subject(s), identity, appearance, clothing, setting, lighting, and composition as shown. The video starts \
on this frame; describe it faithfully, then narrate chronologically as the user's requested action unfolds from \
it. Never contradict, replace, or invent things not consistent with the image. Single continuous take — no hard \
cuts.

Match this captioning style precisely:

1. Begin immediately with the action or visual detail. Do NOT use "The scene opens…", "We see…", "There is…".

2. Objective, observable description only. Do not infer emotions or intentions — describe what is visible and \
audible (e.g. not "he looks sad" but "his eyebrows angle downward and his lips are pressed together").

3. Full visual detail: environment (materials, textures, lighting, colors), character appearance (clothing, \
posture, facial details), and the spatial positioning of all elements — grounded in and consistent with the \
reference image. When a human appears, identify them specifically (gendered terms when clearly implied; \
differentiate multiple people consistently) and describe visible physical attributes — apparent gender \
presentation, skin tone, estimated age group, hair color/length/style, build, clothing and accessories. Do not \
infer ethnicity, nationality, religion, or culture.

4. Precise motion and cinematic description. For every shot you MUST include, woven naturally into the prose \
(never as tags or labels):
   - Shot type (exactly one: extreme wide shot / wide shot / medium shot / medium close-up / close-up / extreme \
close-up) — consistent with how the reference image is framed at the start.
   - Camera motion (always stated; if none, explicitly say the camera remains static). Camera movement is \
expected and good — match the user if they specified it, otherwise choose the treatment that best presents the \
requested scene starting from this frame.
   - Camera viewpoint relative to subject (front-facing / back-facing / side view / over-the-shoulder / top-down \
/ low-angle / high-angle) — matching the reference image's viewpoint at the opening.
   Express these as flowing prose: "a medium shot frames…, captured from a front-facing angle as the camera \
slowly pans…". Never as "medium shot, static camera —".

5. Complete soundscape, integrated naturally: any dialogue (quote it exactly, in the original language), tone of \
voice, background music (type, mood, volume changes), and environmental sounds (footsteps, wind, traffic, \
animals). If the request implies sound, describe it plausibly.

6. Strict chronological, real-time flow using transitions like "Initially…", "A moment later…", \
"Simultaneously…". Keep the user's requested motion/action central and in motion throughout.

7. One single continuous paragraph. No bullet points, no section headers, no labels like "Audio:" or "Visual:". \
Exhaustive and lossless — include background elements, subtle movements, lighting, secondary sounds — detailed \
enough to reconstruct the scene. Aim for a rich, complete paragraph (roughly 150–220 words).

If the user wrote in another language, produce the English caption of the same content. Output ONLY the caption \
text — no JSON, no preamble.

AESTHETIC QUALITY (in addition to the above, without breaking the objective caption style or contradicting the \
reference image): render the described scene with strong visual production value — cinematic, film-grade color \
and contrast, beautiful natural lighting, crisp fine detail and texture, pleasing composition and depth. Weave \
these quality descriptors naturally into the same observable prose (e.g. "warm cinematic lighting", "richly \
saturated film-grade color", "crisp high-resolution detail") — describe how the exact requested scene, starting \
from this frame, LOOKS at its most visually striking, never adding new objects or actions and never contradicting \
the first frame. Keep everything else (first-frame grounding, framing triple, soundscape, chronological single \
paragraph, faithfulness) exactly as specified.
"""


def enhancement_messages(prompt: str, system_prompt: str | None = None, with_image: bool = False) -> list[dict]:
    """The reference's chat messages: text-to-video ("user prompt: ...") or image-to-video (an image placeholder,
    then "User Raw Input Prompt: ....")."""
    if not with_image:
        return [
            {"role": "system", "content": system_prompt or T2V_SYSTEM_PROMPT},
            {"role": "user", "content": f"user prompt: {prompt}"},
        ]
    return [
        {"role": "system", "content": system_prompt or I2V_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": f"User Raw Input Prompt: {prompt}."}],
        },
    ]


def enhancement_inputs(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    processor: Any | None = None,
    image: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Generation inputs ((1, T) input_ids, attention_mask, ...) for ``messages``: the reference's, without its
    right padding."""
    if image is not None and processor is None:
        raise ValueError("image given without a processor: image-to-video enhancement needs Gemma3Processor")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if image is not None:
        inputs = dict(processor(text=text, images=image, return_tensors="pt"))
    else:  # what Gemma3Processor does for text: tokenize with special tokens (a second <bos>)
        inputs = dict(tokenizer(text, return_tensors="pt"))
    return inputs


def prompt_token_count(tokenizer: PreTrainedTokenizerBase, prompt: str) -> int:
    """Tokens the text encoder would see for ``prompt`` before clipping (stripped, with special tokens)."""
    return len(tokenizer(prompt.strip(), add_special_tokens=True).input_ids)


_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d\u2014\u2013\u00a0\u2032\u2212", "''\"\"-- '-")


def clean_enhanced_prompt(text: str) -> str:
    """Straightens curly quotes, dashes and odd spaces, and drops leading non-letters (Gemma likes to add them)."""
    text = text.translate(_QUOTES)
    start = next((i for i, char in enumerate(text) if char.isalpha()), 0)
    return text[start:]


def _resize_long_side(image: torch.Tensor, long_side: int = ENHANCE_IMAGE_LONG_SIDE) -> torch.Tensor:
    """(H, W, 3) image (uint8, or float in [0, 1]) -> uint8 (h, w, 3), max(h, w) ~ long_side, aspect kept.

    Like the reference (``resize_aspect_ratio_preserving`` on the decoded uint8 image): bilinear resize computed
    in uint8 on the CPU, covering the target, then a centre crop.
    """
    if image.ndim != 3 or image.shape[-1] < 3:  # (H, W, C)
        raise ValueError(f"image: shape {tuple(image.shape)}; expected (H, W, 3)")
    image = image[..., :3].cpu()
    if image.is_floating_point():
        image = (image.double() * 255.0).round().clamp(0, 255).to(torch.uint8)
    height, width = image.shape[:2]
    scale = long_side / float(max(height, width))
    target_h, target_w = int(height * scale), int(width * scale)
    cover = max(target_h / height, target_w / width)
    new_h, new_w = math.ceil(height * cover), math.ceil(width * cover)
    x = F.interpolate(image.permute(2, 0, 1).unsqueeze(0), size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
    return x[0, :, top : top + target_h, left : left + target_w].permute(1, 2, 0).contiguous()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seeds torch inside a fork of the CPU RNG and, on an accelerator, of that device's RNG only."""
    devices = [] if device.type == "cpu" else [device.index if device.index is not None else 0]
    device_type = "cuda" if device.type == "cpu" else device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)
        yield


def _stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = [tokenizer.eos_token_id]
    turn_end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(turn_end, int) and turn_end != tokenizer.unk_token_id:
        ids.append(turn_end)
    return [i for i in ids if i is not None]


@torch.inference_mode()
def enhance_prompt(  # the generation settings are keyword-only
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    image: torch.Tensor | None = None,
    processor: Any | None = None,
    system_prompt: str | None = None,
    seed: int = ENHANCE_SEED,
    do_sample: bool = True,
    temperature: float = ENHANCE_TEMPERATURE,
    top_k: int = ENHANCE_TOP_K,
    max_new_tokens: int = ENHANCE_MAX_NEW_TOKENS,
) -> str:
    """A user prompt -> an enhanced prompt (cleaned) from ``model.generate``; the same seed gives the same text.

    ``model``: a Gemma-3 causal LM (`causal_lm_from_encoder`) or, with ``image`` (H, W, 3) and ``processor``, the
    multimodal Gemma3ForConditionalGeneration. ``do_sample=False`` decodes greedily (the seed is then unused).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be >= 1")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: must be > 0 when sampling")
    messages = enhancement_messages(prompt, system_prompt, with_image=image is not None)
    pixels = _resize_long_side(image) if image is not None else None
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in enhancement_inputs(tokenizer, messages, processor, pixels).items()}
    if image is None:
        inputs.pop("token_type_ids", None)
    settings: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": max_new_tokens}
    if do_sample:
        settings.update(temperature=temperature, top_k=top_k, top_p=1.0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with _seeded(seed, device):
        output = model.generate(**inputs, **settings, eos_token_id=_stop_ids(tokenizer), pad_token_id=pad_id)
    generated = output[0, inputs["input_ids"].shape[1] :]
    return clean_enhanced_prompt(tokenizer.decode(generated, skip_special_tokens=True))


def causal_lm_from_encoder(encoder: GemmaTextEncoder) -> Gemma3ForCausalLM:
    """A ``Gemma3ForCausalLM`` over ``encoder``'s backbone (shared, not copied), LM head tied to the embeddings."""
    from transformers import Gemma3ForCausalLM

    with torch.device("meta"):
        lm = Gemma3ForCausalLM(encoder.model.config)
    lm.model = encoder.model
    lm.lm_head.weight = encoder.model.embed_tokens.weight
    return lm.eval()
