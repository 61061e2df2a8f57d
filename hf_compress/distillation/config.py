"""`DistillationConfig`: what the student learns from the teacher, and how much.

Example:

```python
>>> from hf_compress.distillation.config import DistillationConfig
>>> config = DistillationConfig(loss="kl", temperature=2.0, alpha=0.5, layer_map={1: 3}, hidden_loss="cosine")
>>> config.layer_map
{1: 3}
>>> DistillationConfig(alpha=1.5)
Traceback (most recent call last):
...
ValueError: alpha must be a number in [0.0, 1.0]; got 1.5

```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hf_compress.config_base import CompressionConfig, check_bool, check_choice, check_number
from hf_compress.registry import validate_name

HIDDEN_LOSSES = ("mse", "cosine")
TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Upper bounds: past them the softened distributions are uniform to float precision (temperature), or the hidden
# loss drowns every other term (hidden_weight); a value that large is a typo, not a setting.
MAX_TEMPERATURE = 100.0
MAX_HIDDEN_WEIGHT = 1000.0


@dataclass
class DistillationConfig(CompressionConfig):
    """Settings of `DistillationCallback`.

    The training loss becomes ``alpha * distillation_loss + (1 - alpha) * task_loss`` where
    ``distillation_loss = loss(student_logits, teacher_logits) + hidden_weight * hidden_loss(...)``.

    Args:
        loss (`str`, *optional*, defaults to `"kl"`): registry name (kind ``distillation_loss``) of the logit loss:
            ``"kl"``, ``"reverse_kl"``, ``"jsd"``, ``"mse"``, ``"cosine"`` or one a plugin adds.
        temperature (`float`, *optional*, defaults to `1.0`): softens both distributions; in (0, 100].
        alpha (`float`, *optional*, defaults to `0.5`): weight of the distillation term, in [0, 1]. ``1.0`` also
            trains on unlabelled data (pure distillation); ``0.0`` turns distillation off (the teacher never runs).
        jsd_beta (`float`, *optional*, defaults to `0.5`): mixture weight of the generalised JSD, in (0, 1).
        layer_map (`dict[int, int]`, *optional*): ``{student_layer: teacher_layer}`` indices into the models'
            ``hidden_states`` (0 = embedding output, i = output of block i). Checked against the models when
            training starts. Where widths differ, a learned linear projection maps the student onto the teacher.
        hidden_loss (`str`, *optional*, defaults to `"mse"`): ``"mse"`` or ``"cosine"``, for ``layer_map``.
        hidden_weight (`float`, *optional*, defaults to `1.0`): weight of the hidden-state loss, in [0, 1000].
        teacher_dtype (`str`, *optional*): ``"float32"``, ``"bfloat16"`` or ``"float16"``; the teacher is cast to it
            (or loaded in it, when given as a path). Default: leave the teacher's dtype alone.
        causal_shift (`bool`, *optional*): shift logits like a causal LM's task loss (logit t is scored against
            token t+1). Default: detected like the Trainer does (causal-LM model classes).
        loss_kwargs (`dict`, *optional*): extra keyword options passed to the logit loss (for plugin losses).
    """

    loss: str = "kl"
    temperature: float = 1.0
    alpha: float = 0.5
    jsd_beta: float = 0.5
    layer_map: dict[int, int] | None = None
    hidden_loss: str = "mse"
    hidden_weight: float = 1.0
    teacher_dtype: str | None = None
    causal_shift: bool | None = None
    loss_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loss = validate_name("distillation_loss", self.loss, "loss")
        check_number("temperature", self.temperature, low=0.0, high=MAX_TEMPERATURE, low_inclusive=False)
        check_number("alpha", self.alpha, low=0.0, high=1.0)
        check_number("jsd_beta", self.jsd_beta, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        self.hidden_loss = check_choice("hidden_loss", self.hidden_loss, HIDDEN_LOSSES)
        check_number("hidden_weight", self.hidden_weight, low=0.0, high=MAX_HIDDEN_WEIGHT)
        if self.teacher_dtype is not None:
            self.teacher_dtype = check_choice(
                "teacher_dtype", str(self.teacher_dtype).replace("torch.", ""), TEACHER_DTYPES
            )
        check_bool("causal_shift", self.causal_shift, allow_none=True)
        if not isinstance(self.loss_kwargs, dict):
            raise ValueError(f"loss_kwargs must be a dict of keyword options; got {type(self.loss_kwargs).__name__}")
        _check_loss_kwargs(self.loss, self.loss_kwargs)
        self.layer_map = _check_layer_map(self.layer_map)

    @property
    def torch_teacher_dtype(self) -> torch.dtype | None:
        return None if self.teacher_dtype is None else TEACHER_DTYPES[self.teacher_dtype]

    def loss_options(self) -> dict[str, Any]:
        """Keyword options for the logit loss: ``beta`` (= jsd_beta) plus ``loss_kwargs``."""
        return {"beta": self.jsd_beta, **self.loss_kwargs}


def _check_loss_kwargs(loss: str, loss_kwargs: dict[str, Any]) -> None:
    """Refuse options the loss does not name: keyword parameters after ``normalizer`` (``temperature`` and ``beta``
    are set from the config), or those a plugin lists in its function's ``loss_options`` attribute."""
    if not loss_kwargs:
        return
    import inspect

    from hf_compress.registry import get_registry

    function = get_registry().get("distillation_loss", loss)
    try:
        parameters = list(inspect.signature(function).parameters.values())[3:]
    except (TypeError, ValueError):  # no introspectable signature: the loss checks its own options
        return
    named = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    accepted = (named | set(getattr(function, "loss_options", ()))) - {"temperature", "beta"}
    unknown = sorted(str(key) for key in loss_kwargs if key not in accepted)
    if unknown:
        raise ValueError(
            f"loss_kwargs: unknown option(s) {', '.join(map(repr, unknown))} for loss {loss!r}; it takes: "
            f"{', '.join(sorted(accepted)) or '(no options)'}"
        )


def _check_layer_map(layer_map: Any) -> dict[int, int] | None:
    if layer_map is None:
        return None
    if not isinstance(layer_map, dict) or not layer_map:
        raise ValueError(f"layer_map must be a non-empty dict {{student_layer: teacher_layer}}; got {layer_map!r}")
    checked = {}
    for student_layer, teacher_layer in layer_map.items():
        # JSON round trips turn int keys into strings
        student_index = _layer_index(student_layer, "student")
        teacher_index = _layer_index(teacher_layer, "teacher")
        checked[student_index] = teacher_index
    return checked


def _layer_index(value: Any, side: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"layer_map: {side} layer indices must be integers >= 0 (0 = embedding output, i = block i); got {value!r}"
        )
    return value
