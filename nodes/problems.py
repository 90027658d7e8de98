"""Problem helpers of the nodes: ``*_problems`` return text (an empty list when all is well), ``check_*`` raise one
``ValueError`` listing every problem, `answer` is what a ``validate_inputs`` returns. Messages name the node's own
inputs; the rules are the core's (`inputs.input_rule`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..aiprod_core.pipelines import validation as rules
from ..aiprod_core.pipelines.validation import PipelineKind, check_problems
from ..loaders.errors import CheckpointFormatError
from .inputs import input_rule
from .types import GuiderSettings, TransformerHandle

__all__ = ["answer", "check_inputs", "contexts_model_problems", "guider_model_problems", "input_problems",
           "raise_problems"]


def input_problems(values: dict[str, object], names: Iterable[str], kind: PipelineKind | None = None) -> list[str]:
    """The rule problems of the node inputs ``names`` in ``values`` (a missing or None value is linked from another
    node and not known yet: skipped)."""
    return [problem for name in names if values.get(name) is not None
            and (problem := input_rule(name, kind).problem(name, values[name]))]


def check_inputs(values: dict[str, object], names: Iterable[str], kind: PipelineKind | None = None) -> None:
    check_problems(input_problems(values, names, kind))


def answer(problems: Sequence[str | None]) -> bool | str:
    """``validate_inputs``' reply: True, or every problem on its own line."""
    found = [p for p in problems if p]
    return "\n".join(found) if found else True


def guider_model_problems(guider: GuiderSettings | None, model: TransformerHandle) -> list[str]:
    """Where model and guider meet (sampler, pipelines): the guider's STG blocks must exist in the model (its block
    count read from the file's header, before any weights or the text encoder load)."""
    if guider is None:
        return []
    layers = getattr(model.config(), "num_layers", None)
    return [*rules.guider_problems(guider.video, "video", layers),
            *rules.guider_problems(guider.audio, "audio", layers)]


def contexts_model_problems(contexts: object, model: TransformerHandle | None, guided: object = None) -> list[str]:
    """Prompt contexts against the model they condition (widths from its header, a negative where CFG needs one):
    a prompt file from another model fails here, before the transformer's weights load."""
    if contexts is None or model is None:
        return []
    return rules.contexts_problems(contexts, guided, model.config())


def raise_problems(problems: Sequence[str | None], causes: Sequence[ValueError]) -> None:
    """Every problem in one error; a single file problem keeps its own type (``AIPROD.WrongComponentError``),
    with the message that names the input."""
    found = [p for p in problems if p]
    if len(found) == 1 and len(causes) == 1 and isinstance(causes[0], CheckpointFormatError):
        cause = causes[0]
        error = type(cause).__new__(type(cause), found[0])  # its type and attributes, the message naming the input
        error.__dict__.update(cause.__dict__)
        raise error from causes[0]
    check_problems(found)
