"""AIPROD Text Encoder Loader through its schema: ComfyUI's Gemma file (embedded tokenizer) and every split
projection / connectors layout give the prompt embeddings of the single-file checkpoint bit for bit; every problem
of the node is reported at once, at the node, naming the input, the file and what to use instead."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file
from support import comfy_gemma as cg
from support import split_files as sf
from support import tiny_configs as tc
from support.workflows import api_workflows

GEMMA = "text_encoders/gemma_3_12B_it_tiny.safetensors"
QUANTIZED_GEMMA = "text_encoders/gemma_3_12B_it_fp4_mixed_tiny.safetensors"
CKPT = {tc.LTX2: "checkpoints/ltx-2-19b-tiny.safetensors", tc.LTX23: "checkpoints/ltx-2.3-22b-tiny.safetensors"}
FILES = {  # combo value -> (generation, converter)
    "text_encoders/ltx-2-19b-embeddings_connector_dev_tiny.safetensors": (tc.LTX2, sf.embeddings_connector),
    "text_encoders/ltx-2-19b-embeddings_connector_bare_tiny.safetensors":
        (tc.LTX2, lambda t, m: sf.embeddings_connector(t, m, prefixed=False)),
    "text_encoders/ltx-2.3_text_projection_tiny.safetensors": (tc.LTX23, sf.text_projection),
    "diffusion_models/ltx-2.3-22b_transformer_only_tiny.safetensors": (tc.LTX23, sf.transformer_only),
    "diffusion_models/ltx-2.3-22b_transformer_only_bare_tiny.safetensors":
        (tc.LTX23, lambda t, m: sf.transformer_only(t, m, prefixed=False)),
}
PROMPT, NEGATIVE = "A red fox trots through fresh snow, Ünïcödé 😀", "blurry, low contrast"


@pytest.fixture
def folders(demo_folders, tiny_set, tmp_path):
    """The demo model folders plus a second root holding the tiny checkpoints, a ComfyUI-layout Gemma (nothing
    beside it) and the split files converted from the checkpoints."""
    root = tmp_path / "more-models"
    model = cg.spiece_model()
    text = cg.gemma_text_tensors(cg.piece_count(model) + 16)
    (root / "text_encoders").mkdir(parents=True)
    save_file(cg.comfy_gemma_tensors(model, text), str(root / GEMMA))
    quantized = cg.comfy_gemma_tensors(model, text)
    layer = "model.layers.0.self_attn.q_proj"
    quantized[layer + ".weight"] = torch.zeros(quantized[layer + ".weight"].shape[0], 32, dtype=torch.uint8)
    quantized[layer + ".weight_scale_2"] = torch.ones((), dtype=torch.float32)
    quantized[layer + ".comfy_quant"] = torch.frombuffer(bytearray(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    save_file(quantized, str(root / QUANTIZED_GEMMA))
    read = {gen: sf.read_checkpoint(tiny_set.checkpoint(gen)) for gen in tc.GENERATIONS}
    for gen, choice in CKPT.items():
        (root / choice).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tiny_set.checkpoint(gen), root / choice)
    for choice, (gen, convert) in FILES.items():
        sf.write(root / choice, convert(*read[gen]))
    for folder in ("checkpoints", "text_encoders", "diffusion_models"):
        demo_folders.folder_names_and_paths[folder][0].append(str(root / folder))
    demo_folders.filename_list_cache.clear()
    return demo_folders


@pytest.fixture
def nodes(folders):
    from aiprod.nodes import inspect_nodes, loader_nodes, text_nodes

    return type("Nodes", (), {"loader": loader_nodes.AIPRODTextEncoderLoader, "encode": text_nodes.AIPRODTextEncode,
                              "enhance": text_nodes.AIPRODEnhancePrompt,
                              "inspect": inspect_nodes.AIPRODCheckpointInspect})


def _contexts(nodes, checkpoint: str, connectors: str = "none"):
    assert nodes.loader.validate_inputs(GEMMA, checkpoint, connectors) is True
    (encoder,) = nodes.loader.execute(GEMMA, checkpoint, "fp32", connectors).args
    assert not encoder.gemma.loaded and not encoder.processor.loaded  # checks only; weights load when encoding
    (contexts,) = nodes.encode.execute(encoder, PROMPT, NEGATIVE, True).args
    return contexts


def _assert_same(contexts, reference) -> None:
    for which in ("positive", "negative"):
        for field in ("video", "audio", "video_mask", "audio_mask"):
            ours, ref = getattr(getattr(contexts, which), field), getattr(getattr(reference, which), field)
            assert (ours is None and ref is None) or torch.equal(ours, ref), (which, field)


SPLIT = [
    (tc.LTX2, "text_encoders/ltx-2-19b-embeddings_connector_dev_tiny.safetensors", "none"),
    (tc.LTX2, "text_encoders/ltx-2-19b-embeddings_connector_bare_tiny.safetensors", "none"),
    (tc.LTX23, "text_encoders/ltx-2.3_text_projection_tiny.safetensors",
     "diffusion_models/ltx-2.3-22b_transformer_only_tiny.safetensors"),
    (tc.LTX23, "text_encoders/ltx-2.3_text_projection_tiny.safetensors",
     "diffusion_models/ltx-2.3-22b_transformer_only_bare_tiny.safetensors"),
    (tc.LTX23, CKPT[tc.LTX23], "diffusion_models/ltx-2.3-22b_transformer_only_bare_tiny.safetensors"),
]


@pytest.mark.parametrize(("generation", "checkpoint", "connectors"), SPLIT,
                         ids=[f"{g}-{os.path.basename(c)}-{os.path.basename(n)}" for g, c, n in SPLIT])
def test_split_setups_give_the_checkpoints_embeddings(nodes, generation, checkpoint, connectors):
    reference = _contexts(nodes, CKPT[generation])
    assert reference.positive.video.abs().sum() > 0
    _assert_same(_contexts(nodes, checkpoint, connectors), reference)


def test_comfy_gemma_enhances_prompts_and_inspects(nodes):
    (encoder,) = nodes.loader.execute(GEMMA, CKPT[tc.LTX23], "fp32", "none").args
    out = nodes.enhance.execute(encoder, "a fox in the snow", 3, 8)
    assert isinstance(out.args[0], str)
    assert encoder.gemma.get().tokenizer.tokenizer.chat_template  # the built-in Gemma chat format
    report = nodes.inspect.execute(GEMMA).args[0]
    for line in ("Kind: Gemma-3 text encoder (ComfyUI layout, embedded tokenizer)",
                 "Tokenizer: embedded SentencePiece model (spiece_model,",
                 "Loads with: AIPROD Text Encoder Loader (`gemma`)"):
        assert line in report, report


def test_every_problem_is_reported_at_once(nodes):
    problem = nodes.loader.validate_inputs("text_encoders/missing-gemma", "checkpoints/missing.safetensors",
                                           "diffusion_models/missing.safetensors")
    assert "gemma='text_encoders/missing-gemma'" in problem
    assert "checkpoint='checkpoints/missing.safetensors'" in problem
    assert "connectors='diffusion_models/missing.safetensors'" in problem
    with pytest.raises(ValueError) as info:  # swapped inputs: both named, each with what to use instead
        nodes.loader.execute("text_encoders/ltx-2.3_text_projection_tiny.safetensors", GEMMA, "fp32", "none")
    message = str(info.value)
    assert message.count("\n") == 1, message
    gemma_line, checkpoint_line = message.split("\n")
    assert gemma_line.startswith("gemma='text_encoders/ltx-2.3_text_projection_tiny.safetensors': ")
    assert "not Gemma: choose it as the text encoder loader's `checkpoint`" in gemma_line
    assert checkpoint_line.startswith(f"checkpoint={GEMMA!r}: ")
    assert "It is a Gemma text encoder: choose it as `gemma`." in checkpoint_line
    assert "choose it in the text encoder loader" not in message


def test_projection_only_file_asks_for_the_connectors(nodes):
    with pytest.raises(ValueError, match=r"checkpoint='text_encoders/ltx-2\.3_text_projection_tiny\.safetensors': "
                                         r".*holds the text projection only, not the text connectors\. Choose as "
                                         r"`connectors` the file that holds them"):
        nodes.loader.execute(GEMMA, "text_encoders/ltx-2.3_text_projection_tiny.safetensors", "fp32", "none")
    with pytest.raises(ValueError, match=r"checkpoint='text_encoders/ltx-2\.3_text_projection_tiny\.safetensors': "
                                         r".*holds an LTX-2\.3 text projection, but the `config` metadata of "
                                         r".*ltx-2-19b-tiny\.safetensors describes LTX-2 connectors\. Choose the "
                                         r"`checkpoint` and `connectors` files of one model generation"):
        nodes.loader.execute(GEMMA, "text_encoders/ltx-2.3_text_projection_tiny.safetensors", "fp32",
                             CKPT[tc.LTX2])


def test_quantized_gemma_is_refused_at_the_node(nodes):
    with pytest.raises(ValueError, match=rf"gemma={QUANTIZED_GEMMA!r}: .*is a quantized Gemma-3 file \(nvfp4 "
                                         r"\(packed uint8\) x1 layers\); AIPROD does not load quantized Gemma "
                                         r"weights yet\. Use ComfyUI's bf16 gemma_3_12B_it\.safetensors"):
        nodes.loader.execute(QUANTIZED_GEMMA, CKPT[tc.LTX23], "fp32", "none")


def test_old_workflows_still_validate(nodes, demo_models):
    for name, workflow in api_workflows().items():
        for node in workflow.values():
            if node["class_type"] == "AIPRODTextEncoderLoader":
                inputs = {k: v for k, v in node["inputs"].items() if k in ("gemma", "checkpoint", "connectors")}
                assert nodes.loader.validate_inputs(**inputs) is True, name
                inputs.pop("connectors")  # as saved before the input existed
                assert nodes.loader.validate_inputs(**inputs) is True, name


def test_fingerprint_follows_the_files(nodes, folders):
    before = nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none")
    assert before == nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none")
    path = folders.get_full_path_or_raise("text_encoders", GEMMA.partition("/")[2])
    os.utime(path, ns=(1, 1))  # the file replaced under its name: ComfyUI must run the loader again
    assert nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none") != before
