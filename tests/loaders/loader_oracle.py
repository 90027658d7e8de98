"""Reference-side helpers for the loader tests: the reference loader's state dicts and exact comparison."""

from __future__ import annotations

import torch
from support import tiny_configs as tc
from support.reference_components import reference_components


def reference_state_dict(path, component: str, dtype: torch.dtype, loras=()) -> dict[str, torch.Tensor]:
    """The reference loader's result (SingleGPUModelBuilder, as ModelLedger wires it) on CPU."""
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder

    configurator, sd_ops = reference_components()[component]
    builder = SingleGPUModelBuilder(model_class_configurator=configurator, model_path=str(path),
                                    model_sd_ops=sd_ops, loras=tuple(loras))
    with tc.tiny_gemma_feature_config():
        model = builder.build(device=torch.device("cpu"), dtype=dtype)
    return model.state_dict()


def assert_bit_identical(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(ref)
    for key, value in ref.items():
        assert ours[key].dtype == value.dtype, key
        assert ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key


def undo_reference_lora_dtype_quirk(ref: dict[str, torch.Tensor],
                                    ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """With LoRAs, the reference leaves every weight WITHOUT a delta in its stored dtype (bf16, or fp8 in an fp8
    file) whatever dtype was asked for (ltx_core/loader/fuse_loras.py:80 `if key in sd: return {}`, sd being the
    model's own state dict: single_gpu_model_builder.py:113). We cast them like every other tensor; this maps
    the reference's leftovers to our dtype (an exact up-cast) so the rest of the comparison stays bitwise.
    """
    fixed = {}
    for key, value in ref.items():
        if value.dtype != ours[key].dtype and value.dtype in (torch.bfloat16, torch.float8_e4m3fn):
            assert ".lora" not in key, key
            fixed[key] = value.to(ours[key].dtype)
        else:
            fixed[key] = value
    return fixed
