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
from support import tiny_gemma4 as tg
from support.workflows import TEMPLATE_NAMES, api_workflows

GEMMA = "text_encoders/gemma_3_12B_it_tiny.safetensors"
QUANTIZED_GEMMA = {"fp4_mixed": "gemma_3_12B_it_fp4_mixed_tiny.safetensors",
                   "fp8_scaled": "gemma_3_12B_it_fp8_scaled_tiny.safetensors"}
GEMMA4 = "gemma4-12b-with-proj-ltx-2.5-tiny.safetensors"
LTX25 = "ltx-2.5-22b_transformer_only_tiny.safetensors (diffusion_models)"
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
    for recipe, name in QUANTIZED_GEMMA.items():
        quantized, metadata, _ = cg.quantize_comfy_gemma(cg.comfy_gemma_tensors(model, text), recipe)
        save_file(quantized, str(root / "text_encoders" / name), metadata=metadata)
    tg.write_ltx_bundle(root / "text_encoders" / GEMMA4, tg.build_model(seed=4))
    (root / "diffusion_models").mkdir()
    tg.transformer_header_file(root / "diffusion_models" / LTX25.partition(" ")[0], "2.5")
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


def _contexts(nodes, checkpoint: str, connectors: str = "none", gemma: str = GEMMA, quantized: str = "upcast"):
    (encoder,) = nodes.loader.execute(gemma, checkpoint, "fp32", connectors, quantized).args
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
                 "Loads with: AIPROD Text Encoder Loader (`gemma`"):
        assert line in report, report


def test_every_problem_is_reported_at_once(nodes):
    with pytest.raises(ValueError) as info:
        nodes.loader.execute("text_encoders/missing-gemma", "checkpoints/missing.safetensors", "fp32",
                             "diffusion_models/missing.safetensors", "fp4")
    problem = str(info.value)
    assert "quantized_weights='fp4', expected one of upcast, keep" in problem
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


@pytest.mark.parametrize("recipe", sorted(QUANTIZED_GEMMA))
def test_quantized_comfy_gemma_loads_at_the_node(nodes, recipe):
    """ComfyUI's quantized Gemma files load at the node in both modes with the same prompt embeddings (keep
    de-quantises each layer for its matmul, upcast at load: the same weights); against the bf16 file they stay
    within the formats' rounding (mean relative error of the video context: fp8 < 5 %, nvfp4 < 25 %)."""
    gemma = QUANTIZED_GEMMA[recipe]  # the choice as the combo lists it (file name only)
    upcast = _contexts(nodes, CKPT[tc.LTX23], gemma=gemma, quantized="upcast")
    _assert_same(_contexts(nodes, CKPT[tc.LTX23], gemma=gemma, quantized="keep"), upcast)
    dense = _contexts(nodes, CKPT[tc.LTX23]).positive.video
    error = ((upcast.positive.video - dense).norm() / dense.norm()).item()
    assert 0 < error < (0.05 if recipe == "fp8_scaled" else 0.25), error


def test_generations_are_checked_at_the_node(nodes):
    """A Gemma 3 file with an LTX-2.5 transformer and LTX-2.5's Gemma 4 with an LTX-2.3 checkpoint are refused at
    the node, naming both generations."""
    with pytest.raises(ValueError, match=r"gemma='text_encoders/gemma_3_12B_it_tiny\.safetensors': .*is Gemma 3 "
                                         r"\(the text encoder of LTX-2 / LTX-2\.3\), but the transformer "
                                         r"ltx-2\.5-22b_transformer_only_tiny\.safetensors is LTX-2\.5, which needs "
                                         r"Gemma 4"):
        nodes.loader.execute(GEMMA, "text_encoders/ltx-2.3_text_projection_tiny.safetensors", "fp32", LTX25)
    with pytest.raises(ValueError, match=rf"gemma={GEMMA4!r}: .*is Gemma 4 \(the text encoder of LTX-2\.5\), but "
                                         r"the transformer ltx-2\.3-22b-tiny\.safetensors is LTX-2\.3, which needs "
                                         r"Gemma 3"):
        nodes.loader.execute(GEMMA4, CKPT[tc.LTX23], "fp32", "none")


def test_templates_carry_every_input_and_old_values_resolve(nodes):
    """The templates' API twins give every input of the node (ComfyUI checks the values against the option
    lists); a value saved as ``checkpoints/<file>`` (before the input spanned three folders) resolves to the file
    the new ``<file> (checkpoints)`` choice names."""
    from aiprod.nodes import model_files

    schema = nodes.loader.define_schema()
    names = [i.id for i in schema.inputs]
    for name, workflow in api_workflows().items():
        for node in workflow.values():
            if node["class_type"] != "AIPRODTextEncoderLoader":
                continue
            inputs = node["inputs"]
            assert list(inputs) == names, name
            # LTX-2.5: the projection in the Gemma-4 file, connectors in the transformer
            if TEMPLATE_NAMES[name].startswith("LTX-2.5"):
                (model,) = [n["inputs"]["model_file"] for n in workflow.values()
                            if n["class_type"] == "AIPRODDiffusionModelLoader"]
                assert inputs["checkpoint"] == f"{inputs['gemma']} (text_encoders)", name
                assert inputs["connectors"] == f"{model} (diffusion_models)", name
            else:
                assert inputs["checkpoint"].endswith(" (checkpoints)"), name
    new = "ltx-2.3-22b-tiny.safetensors (checkpoints)"
    assert new in model_files.text_projection_options()
    resolved = {model_files.resolve_model_file("checkpoint", choice, model_files.PROJECTION_FOLDERS)
                for choice in (new, CKPT[tc.LTX23])}
    assert len(resolved) == 1


def test_fingerprint_follows_the_files(nodes, folders):
    before = nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none")
    assert before == nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none")
    path = folders.get_full_path_or_raise("text_encoders", GEMMA.partition("/")[2])
    os.utime(path, ns=(1, 1))  # the file replaced under its name: ComfyUI must run the loader again
    assert nodes.loader.fingerprint_inputs(gemma=GEMMA, checkpoint=CKPT[tc.LTX23], connectors="none") != before


def test_gemma4_passes_the_node_checks_with_an_ltx25_transformer(folders):
    """LTX-2.5's Gemma 4 goes through the same node-time check (`check_gemma4` after the generation check)."""
    from aiprod.loaders.text_encoder_generation import check_text_encoder

    path = folders.get_full_path_or_raise("text_encoders", GEMMA4)
    ltx25 = folders.get_full_path_or_raise("diffusion_models", LTX25.partition(" ")[0])
    checked = check_text_encoder(path, "keep", [ltx25])
    assert (checked.kind.family, checked.hidden_size, checked.num_layers) == ("gemma4", tg.HIDDEN, tg.LAYERS)


def test_inspect_reports_the_quantized_gemma(nodes):
    report = nodes.inspect.execute(f"{QUANTIZED_GEMMA['fp4_mixed']} (text_encoders)").args[0]
    for line in ("Kind: Gemma-3 text encoder (ComfyUI layout, embedded tokenizer)",
                 "Quantization: gemma_language_model: nvfp4 x10, float8_e4m3fn x2",
                 "Tokenizer: embedded SentencePiece model (spiece_model,",
                 "Loads with: AIPROD Text Encoder Loader (`gemma`"):
        assert line in report, report
