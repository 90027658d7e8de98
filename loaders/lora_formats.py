"""LoRA adapter kinds: the tensors one LoRA module name holds and the change each makes to its target tensor.

One frozen dataclass per kind, each with ``diff()`` (the un-scaled weight difference) and ``apply(weight,
strength)`` (a float32 weight -> the patched float32 weight). The formulas are ComfyUI's (ComfyUI 0.3.75
``comfy/weight_adapter/{lora,loha,lokr,base}.py`` and ``comfy/lora.py:calculate_weight``), computed in float32,
ComfyUI's intermediate dtype; LoRA tensors stored in fp8 (or any dtype without CPU arithmetic) are up-cast to
float32 before any arithmetic:

- low rank (LoRA, LoCon on Linear): diff = up @ down, scale = alpha / rank (no alpha: 1), for every naming style;
- LoHa: diff = (w1_a @ w1_b) * (w2_a @ w2_b) (CP: ``einsum('i j ..., j r, i p -> p r ...', t, b, a)``), scale =
  alpha / w1_b.shape[0];
- LoKr: diff = kron(w1, w2), each factor full or ``_a @ _b`` (w2 also CP via ``lokr_t2``), scale = alpha / the
  rank of the factorised factor (w2's when both are), 1 when neither is factorised or there is no alpha;
- DoRA (``dora_scale`` beside a low-rank, LoHa or LoKr patch): `weight_decompose`;
- ``.diff`` / ``.diff_b`` (also ``.w_norm`` / ``.b_norm``): full weight / bias differences, W + strength * diff;
- ``.set_weight``: the weight replaced (ComfyUI ignores the strength for it, so do we).

The plain low-rank patch also has `LowRankPatch.reference_delta`: ltx-core's order of operations (``((strength *
scale) * up) @ down`` in the LoRA's dtype), used when every patch of a weight is plain so that the official LoRAs
stay bit-identical to the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

__all__ = [
    "ARITHMETIC_DTYPES",
    "UNSUPPORTED_SUFFIXES",
    "DiffPatch",
    "LoHaPatch",
    "LoKrPatch",
    "LowRankPatch",
    "Patch",
    "SetPatch",
    "upcast",
    "weight_decompose",
]

# dtypes the LoRA arithmetic may run in as stored (CPU and CUDA kernels exist); others (fp8, ...) are up-cast.
ARITHMETIC_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
COMPUTE_DTYPE = torch.float32  # ComfyUI's intermediate dtype for every adapter formula

# Adapter kinds ComfyUI knows that AIPROD does not apply: key suffix -> format name (refused at the LoRA node).
UNSUPPORTED_SUFFIXES = {
    ".oft_blocks": "OFT / BOFT",
    ".rescale": "OFT / BOFT",
    ".a1.weight": "GLoRA",
    ".a2.weight": "GLoRA",
    ".b1.weight": "GLoRA",
    ".b2.weight": "GLoRA",
    ".lora_mid.weight": "LoCon with a Tucker mid weight (convolutions)",
    ".reshape_weight": "LoRA with reshape_weight (padded weights)",
    ".lora_magnitude_vector": "PEFT DoRA (lora_magnitude_vector)",
}


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 (ComfyUI's intermediate dtype); fp8 has no CPU arithmetic at all."""
    return tensor.to(COMPUTE_DTYPE)


def _meta(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else torch.empty(tensor.shape, dtype=COMPUTE_DTYPE, device="meta")


def _fits(diff_shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """ComfyUI reshapes a diff to its weight: allow trailing size-1 dims (1x1 CP cores) beyond the target's."""
    return tuple(diff_shape[:len(target)]) == tuple(target) and all(d == 1 for d in diff_shape[len(target):])


def weight_decompose(weight: torch.Tensor, diff: torch.Tensor, dora_scale: torch.Tensor,
                     strength: float) -> torch.Tensor:
    """DoRA with ComfyUI's semantics (comfy/weight_adapter/base.py ``weight_decompose``), all float32.

    ``weight`` W (out, in), ``diff`` the already alpha-scaled difference, ``dora_scale`` m: V = W + diff. When m
    has one value per output row (``wd_on_output``: m (out, 1)), the norm is that of W's rows (ComfyUI takes the
    ORIGINAL weight's row norm there); otherwise (m (1, in), LyCORIS' default) the norm of V's columns. W' = V * m
    / (norm + eps); the result is W' at strength 1, else W + strength * (W' - W).
    """
    scale = upcast(dora_scale)
    calc = weight + diff
    if scale.shape[0] == calc.shape[0]:  # wd_on_output
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    norm = norm + torch.finfo(weight.dtype).eps
    calc = calc * (scale / norm)
    if strength != 1.0:
        return weight + strength * (calc - weight)
    return calc


@dataclass(frozen=True, eq=False)
class Patch:
    """One change to one tensor: ``stem`` is the LoRA's module name, ``param`` the target tensor ("weight" or
    "bias"), ``source_key`` the first of its keys in the file (for reports); ``kind`` names the format."""

    kind: ClassVar[str] = "patch"
    stem: str
    source_key: str
    param: str = field(default="weight", kw_only=True)

    @property
    def is_plain(self) -> bool:
        """A plain low-rank pair in an arithmetic dtype: fused in the reference's order (bit parity)."""
        return False

    @property
    def runtime_capable(self) -> bool:
        """Whether the patch can run beside a weight that stays quantized (a low-rank run-time adapter)."""
        return False

    def shape(self) -> tuple[int, ...]:
        """The shape of the tensor this patch fits (computed on the meta device: costs nothing)."""
        raise NotImplementedError

    def fits(self, target: tuple[int, ...]) -> bool:
        return _fits(self.shape(), target)

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """float32 ``weight`` -> the patched float32 weight (ComfyUI's formula for this kind)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class _Factorised(Patch):
    """A patch whose difference comes from factors: alpha / rank scaling and an optional DoRA magnitude."""

    alpha: float | None = field(default=None, kw_only=True)
    dora_scale: torch.Tensor | None = field(default=None, repr=False, kw_only=True)

    @property
    def rank(self) -> int | None:
        raise NotImplementedError

    @property
    def scale(self) -> float:
        """alpha / rank, as ComfyUI applies it to every naming style; 1.0 without alpha (or without a rank)."""
        rank = self.rank
        return self.alpha / rank if self.alpha is not None and rank else 1.0

    def diff(self, meta: bool = False) -> torch.Tensor:
        """The un-scaled difference in float32 (``meta``: on the meta device, for its shape)."""
        raise NotImplementedError

    def shape(self) -> tuple[int, ...]:
        return tuple(self.diff(meta=True).shape)

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        diff = self.diff().reshape(weight.shape)
        if self.dora_scale is not None:
            return weight_decompose(weight, diff * self.scale, self.dora_scale, strength)
        return weight + (strength * self.scale) * diff


@dataclass(frozen=True, eq=False)
class LowRankPatch(_Factorised):
    """LoRA: ``down`` A (rank, in), ``up`` B (out, rank); delta (out, in) = strength * alpha / rank * B @ A."""

    kind: ClassVar[str] = "LoRA"
    down: torch.Tensor = field(repr=False, kw_only=True)
    up: torch.Tensor = field(repr=False, kw_only=True)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def is_plain(self) -> bool:
        return self.dora_scale is None and self.down.dtype in ARITHMETIC_DTYPES and self.up.dtype in ARITHMETIC_DTYPES

    @property
    def runtime_capable(self) -> bool:
        return self.dora_scale is None

    def diff(self, meta: bool = False) -> torch.Tensor:
        if meta:
            return torch.matmul(_meta(self.up), _meta(self.down))
        return torch.matmul(upcast(self.up), upcast(self.down))

    def reference_delta(self, strength: float, dtype: torch.dtype) -> torch.Tensor:
        """ltx-core's fusion order: ``((strength * scale) * B) @ A`` in the LoRA's dtype, returned as ``dtype``."""
        return torch.matmul(self.up * (strength * self.scale), self.down).to(dtype)


def _product(a: torch.Tensor, b: torch.Tensor, core: torch.Tensor | None, meta: bool) -> torch.Tensor:
    """a @ b, or the CP (Tucker) form ``einsum('i j ..., j r, i p -> p r ...', core, b, a)`` when ``core`` is set."""
    cast = _meta if meta else upcast
    if core is None:
        return torch.matmul(cast(a), cast(b))
    return torch.einsum("i j ..., j r, i p -> p r ...", cast(core), cast(b), cast(a))


@dataclass(frozen=True, eq=False)
class LoHaPatch(_Factorised):
    """LoHa (Hadamard product of two low-rank products): diff = (w1_a @ w1_b) * (w2_a @ w2_b)."""

    kind: ClassVar[str] = "LoHa"
    w1_a: torch.Tensor = field(repr=False, kw_only=True)
    w1_b: torch.Tensor = field(repr=False, kw_only=True)
    w2_a: torch.Tensor = field(repr=False, kw_only=True)
    w2_b: torch.Tensor = field(repr=False, kw_only=True)
    t1: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    t2: torch.Tensor | None = field(default=None, repr=False, kw_only=True)

    @property
    def rank(self) -> int:
        return self.w1_b.shape[0]

    def diff(self, meta: bool = False) -> torch.Tensor:
        use_cp = self.t1 is not None and self.t2 is not None  # ComfyUI uses the CP form only with both cores
        first = _product(self.w1_a, self.w1_b, self.t1 if use_cp else None, meta)
        second = _product(self.w2_a, self.w2_b, self.t2 if use_cp else None, meta)
        return first * second


@dataclass(frozen=True, eq=False)
class LoKrPatch(_Factorised):
    """LoKr (Kronecker product): diff = kron(w1, w2); each factor stored whole or as ``_a @ _b`` (w2 also CP)."""

    kind: ClassVar[str] = "LoKr"
    w1: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    w1_a: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    w1_b: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    w2: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    w2_a: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    w2_b: torch.Tensor | None = field(default=None, repr=False, kw_only=True)
    t2: torch.Tensor | None = field(default=None, repr=False, kw_only=True)

    @property
    def rank(self) -> int | None:
        """ComfyUI's ``dim``: w2_b's rank if w2 is factorised, else w1_b's, else none (alpha then unused)."""
        if self.w2 is None and self.w2_b is not None:
            return self.w2_b.shape[0]
        if self.w1 is None and self.w1_b is not None:
            return self.w1_b.shape[0]
        return None

    def _factor(self, whole: torch.Tensor | None, a: torch.Tensor | None, b: torch.Tensor | None,
                core: torch.Tensor | None, meta: bool) -> torch.Tensor:
        if whole is not None:
            return _meta(whole) if meta else upcast(whole)
        if a is None or b is None:
            raise ValueError(f"{self.stem}: LoKr factor has neither the whole matrix nor both _a and _b")
        return _product(a, b, core, meta)

    def _factors(self, meta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        w1 = self._factor(self.w1, self.w1_a, self.w1_b, None, meta)
        w2 = self._factor(self.w2, self.w2_a, self.w2_b, self.t2, meta)
        if w2.dim() == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        return w1, w2

    def diff(self, meta: bool = False) -> torch.Tensor:
        w1, w2 = self._factors(meta)
        return torch.kron(w1.contiguous(), w2.contiguous())  # the CP einsum result is not contiguous

    def shape(self) -> tuple[int, ...]:
        w1, w2 = self._factors(meta=True)  # (torch.kron has no meta kernel for 4-D factors)
        if w1.dim() != w2.dim():
            raise ValueError(f"{self.stem}: LoKr factors of {w1.dim()} and {w2.dim()} dimensions")
        return tuple(a * b for a, b in zip(w1.shape, w2.shape, strict=True))


@dataclass(frozen=True, eq=False)
class DiffPatch(Patch):
    """A full difference of the target (``.diff`` on a weight, ``.diff_b`` on a bias): W + strength * diff."""

    kind: ClassVar[str] = "diff"
    tensor: torch.Tensor = field(repr=False, kw_only=True)

    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def fits(self, target: tuple[int, ...]) -> bool:
        return self.shape() == tuple(target)  # ComfyUI merges a diff only when the shapes are equal

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        return weight + strength * upcast(self.tensor)


@dataclass(frozen=True, eq=False)
class SetPatch(Patch):
    """``.set_weight``: the target replaced by the stored tensor (strength ignored, as in ComfyUI)."""

    kind: ClassVar[str] = "set_weight"
    tensor: torch.Tensor = field(repr=False, kw_only=True)

    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def fits(self, target: tuple[int, ...]) -> bool:
        return self.shape() == tuple(target)

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        return upcast(self.tensor).clone()
