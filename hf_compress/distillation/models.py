"""What distillation needs to know about the teacher and the student: loading, probing, output fields."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def load_teacher(teacher: nn.Module | str | os.PathLike, dtype: torch.dtype | None = None) -> nn.Module:
    """The teacher module: a model as given, or loaded with ``from_pretrained`` from a local folder (never the hub).

    A path is loaded with the class its config names in ``architectures`` (falling back to
    ``AutoModelForCausalLM``), directly in ``dtype`` when one is given.
    """
    if isinstance(teacher, nn.Module):
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError(f"teacher must be a PreTrainedModel or a path to one; got {type(teacher).__name__}")
    import transformers

    from hf_compress.local_models import check_local_model

    teacher = check_local_model(teacher, "teacher")
    config = transformers.AutoConfig.from_pretrained(teacher, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if model_class is None:
        model_class = transformers.AutoModelForCausalLM
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return model_class.from_pretrained(teacher, local_files_only=True, **kwargs)


def prepare_teacher(teacher: nn.Module, device: torch.device, dtype: torch.dtype | None) -> set[str] | None:
    """Cast, move once, eval mode, frozen; returns the names its forward takes (None when it takes ``**kwargs``)."""
    if dtype is not None:
        teacher.to(dtype=dtype)
    if device_of(teacher) != device:
        teacher.to(device)
    teacher.eval()
    teacher.requires_grad_(False)
    forward_params = inspect.signature(teacher.forward).parameters
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in forward_params.values())
    return None if takes_any else set(forward_params)


# Inputs that only concern the student's loss or its output format; the teacher gets the rest.
STUDENT_ONLY_INPUTS = frozenset(
    {
        "labels",
        "shift_labels",
        "num_items_in_batch",
        "fused_lm_head",
        "output_hidden_states",
        "output_attentions",
        "output_router_logits",
        "return_dict",
        "use_cache",
        "cache",
        "past_key_values",
        "logits_to_keep",
    }
)


def teacher_inputs(kwargs: dict[str, Any], accepts: set[str] | None, hidden_states: bool) -> dict[str, Any]:
    """The student's forward kwargs the teacher takes (``accepts``: its forward's names, None for ``**kwargs``)."""
    inputs = {key: value for key, value in kwargs.items() if key not in STUDENT_ONLY_INPUTS}
    if accepts is not None:
        inputs = {key: value for key, value in inputs.items() if key in accepts}
    if accepts is None or "use_cache" in accepts:
        inputs["use_cache"] = False
    if hidden_states:
        inputs["output_hidden_states"] = True
    return inputs


def check_not_own_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse a teacher that is the student (or shares its parameters), before anything is frozen."""
    student_params = {id(param) for param in student.parameters()}
    if teacher is student or any(id(param) in student_params for param in teacher.parameters()):
        raise ValueError(
            "teacher: the teacher is the student itself (or shares its parameters); distillation would freeze the "
            "model being trained. Pass a separate teacher model (e.g. a copy loaded with from_pretrained)"
        )


@dataclass
class ModelFacts:
    """What a probe forward reveals: logit width and per-index hidden-state widths (None when not returned)."""

    output_width: int | None
    hidden_widths: list[int] | None


def probe_model(model: nn.Module, device: torch.device) -> ModelFacts:
    """Run a 2-token forward in eval mode under ``no_grad`` asking for hidden states; restore the mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            input_ids = torch.zeros(1, 2, dtype=torch.long, device=device)
            outputs = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True)
    finally:
        model.train(was_training)
    logits = field_of(outputs, "logits")
    hidden = field_of(outputs, "hidden_states")
    return ModelFacts(
        output_width=None if logits is None else int(logits.shape[-1]),
        hidden_widths=None if not hidden else [int(state.shape[-1]) for state in hidden],
    )


def is_causal_lm(model: nn.Module) -> bool:
    """Whether the Trainer's task loss for ``model`` shifts labels (decoder-only causal LM heads)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    inner = transformers_model(model)
    if getattr(getattr(inner, "config", None), "is_encoder_decoder", False):
        return False
    causal_names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return type(inner).__name__ in causal_names or getattr(inner, "loss_type", None) == "ForCausalLM"


def transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def field_of(outputs: Any, name: str) -> Any:
    if isinstance(outputs, dict):
        return outputs.get(name)
    return getattr(outputs, name, None)


def device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def check_models(student: nn.Module, teacher: nn.Module, config, device: torch.device) -> dict | None:
    """Probe both models; raise a ValueError naming what does not fit. Returns ``{student_layer: (student_width,
    teacher_width)}`` for ``layer_map`` (None without one)."""
    student_facts = probe_model(student, device)
    teacher_facts = probe_model(teacher, device)
    student_name, teacher_name = type(student).__name__, type(teacher).__name__
    if student_facts.output_width is None or teacher_facts.output_width is None:
        missing = student_name if student_facts.output_width is None else teacher_name
        raise ValueError(f"DistillationCallback: {missing} returns no `logits`; distillation needs them")
    if student_facts.output_width != teacher_facts.output_width:
        raise ValueError(
            f"teacher and student vocabularies differ: the student ({student_name}) outputs "
            f"{student_facts.output_width} logits per position, the teacher ({teacher_name}) "
            f"{teacher_facts.output_width}. Distill between models that share a tokenizer and vocabulary."
        )
    layer_map = config.layer_map
    if not layer_map:
        return None
    for role, name, facts in (("student", student_name, student_facts), ("teacher", teacher_name, teacher_facts)):
        if facts.hidden_widths is None:
            raise ValueError(
                f"hidden_loss={config.hidden_loss!r} with layer_map needs hidden states, but the {role} "
                f"({name}) returns none when called with output_hidden_states=True. Remove layer_map."
            )
    widths = {}
    for student_layer, teacher_layer in layer_map.items():
        for role, name, index, facts in (
            ("student", student_name, student_layer, student_facts),
            ("teacher", teacher_name, teacher_layer, teacher_facts),
        ):
            count = len(facts.hidden_widths)
            if index >= count:
                raise ValueError(
                    f"layer_map: {role} layer {index} is out of range; the {role} ({name}) returns {count} "
                    f"hidden states, indices 0..{count - 1} (0 = embedding output, i = output of block i)"
                )
        widths[student_layer] = (
            student_facts.hidden_widths[student_layer],
            teacher_facts.hidden_widths[teacher_layer],
        )
    return widths
