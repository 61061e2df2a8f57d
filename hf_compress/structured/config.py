"""`StructuredPruningConfig`: which structures go, to what size, by which importance, on what schedule.

```python
>>> from hf_compress.structured.config import StructuredPruningConfig
>>> StructuredPruningConfig(shape={"num_key_value_heads": 2, "intermediate_size": 256}).mode
'one_shot'
>>> StructuredPruningConfig(target_params=0.5, round_to=8).target_params
0.5
>>> StructuredPruningConfig(shape={"num_attention_heads": 0})
Traceback (most recent call last):
...
ValueError: shape.num_attention_heads=0 would remove every attention head of a block; structured pruning keeps at least one

```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_compress.config_base import CompressionConfig, check_choice, check_number, check_step_spec
from hf_compress.registry import validate_name
from hf_compress.structured.selection import SHAPE_FIELDS

MODES = ("one_shot", "gradual")
HIDDEN_ROTATIONS = ("auto", "pca", "none")
WHAT = {
    "num_hidden_layers": "layer",
    "num_attention_heads": "attention head",
    "num_key_value_heads": "KV group",
    "intermediate_size": "MLP neuron",
    "hidden_size": "hidden channel",
}


@dataclass
class StructuredPruningConfig(CompressionConfig):
    """Settings of the structured pruning callbacks (:mod:`hf_compress.structured.callback`).

    Args:
        shape (`dict[str, int]`, *optional*): target sizes by config field name: ``num_hidden_layers``,
            ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``, ``hidden_size``. Fields left out
            keep the model's size. Snapped to what the architecture expresses (GQA groups, derived ``head_dim``,
            ``round_to``), with a message.
        target_params (`float` or `int`, *optional*): instead of ``shape``, a parameter budget: a fraction of the
            model's parameters in (0, 1) or an absolute count; a small search over width/depth candidates picks the
            shape (scored on calibration loss after a short distillation).
        mode (`str`, *optional*, defaults to `"one_shot"`): ``"one_shot"`` (score on calibration batches at train
            begin, mask, recover) or ``"gradual"`` (masks on whole structures follow ``schedule``).
        criterion (`str`, *optional*, defaults to `"activation"`): width importance, registry kind
            ``structure_criterion``: ``"activation"``, ``"taylor"``, ``"magnitude"`` or a plugin's.
        depth_criterion (`str`, *optional*, defaults to `"block_influence"`): layer importance:
            ``"block_influence"`` or ``"skip_loss"`` (or a plugin's).
        criterion_kwargs (`dict`, *optional*): options of the width criterion (``aggregate="mean"|"l2"`` for
            ``activation``).
        calibration_batches (`int`, *optional*, defaults to 8): training batches used to score (one-shot and the
            budget search).
        round_to (`int`, *optional*, defaults to 1): MLP neurons and hidden channels kept in multiples of this.
        schedule (`str`, *optional*, defaults to `"cubic"`): gradual mode: registry schedule (``sparsity_at``).
        start_step, end_step (`int` or `float`, *optional*): gradual mode: where the schedule runs (steps, or
            fractions of the run). Defaults 0 and 0.6.
        update_every (`int`, *optional*, defaults to 10): gradual mode: steps between mask updates.
        search_candidates (`int`, *optional*, defaults to 3): budget search: depths tried, from all layers down to
            half. At each, a shape cutting heads, MLP and hidden size by one ratio, and (see ``search_keep_heads``)
            one keeping every attention head at that hidden size with a smaller MLP.
        search_keep_heads (`bool`, *optional*, defaults to `True`): budget search: also try the shapes that keep
            every attention head (explicit ``head_dim`` families: Llama, Qwen2, Mistral). They recover better at the
            same parameter count, but attention is then the model's: on CPU they ran 0.74-1.00x the speed of the
            uniform cut (BENCHMARKS.md, issue 13). ``False`` when latency matters more than quality.
        search_steps (`int`, *optional*, defaults to 20): budget search: distillation steps per candidate.
        shrink_at_end (`bool`, *optional*, defaults to `True`): physically remove the structures at train end, so
            ``trainer.save_model()`` writes the smaller model.
        hidden_rotation (`str`, *optional*, defaults to `"auto"`): when hidden channels go (both modes): ``"pca"``
            first rotates the residual stream onto the principal axes of its calibration activations (outputs
            unchanged; :mod:`hf_compress.structured.rotation`), so the cut removes the least-used directions rather
            than the least-used coordinates; RMSNorm families with untied embeddings only (an error otherwise).
            ``"auto"``: ``"pca"`` where the model supports it, else ``"none"``.
        refit_writers (`bool`, *optional*, defaults to `True`): one-shot mode: refit each layer's attention output
            and MLP down projection by least squares on the calibration batches, so the kept heads and neurons stand
            in for the removed ones (:mod:`hf_compress.structured.refit`). It holds one float32 Gram matrix per layer
            and projection in CPU memory, ``intermediate_size**2 + (num_attention_heads * head_dim)**2`` floats a
            layer (about 18 GB for a Llama-2-7B); ``False`` where that does not fit.
    """

    shape: dict[str, int] | None = None
    target_params: float | int | None = None
    mode: str = "one_shot"
    criterion: str = "activation"
    depth_criterion: str = "block_influence"
    criterion_kwargs: dict[str, Any] = field(default_factory=dict)
    calibration_batches: int = 8
    round_to: int = 1
    schedule: str = "cubic"
    start_step: int | float = 0
    end_step: int | float = 0.6
    update_every: int = 10
    search_candidates: int = 3
    search_steps: int = 20
    search_keep_heads: bool = True
    shrink_at_end: bool = True
    hidden_rotation: str = "auto"
    refit_writers: bool = True

    def __post_init__(self) -> None:
        if (self.shape is None) == (self.target_params is None):
            raise ValueError("give exactly one of shape (target sizes) and target_params (a parameter budget)")
        if self.shape is not None:
            if not isinstance(self.shape, dict) or not self.shape:
                raise ValueError(f"shape must be a non-empty dict of {', '.join(SHAPE_FIELDS)}; got {self.shape!r}")
            for key, value in self.shape.items():
                if key not in SHAPE_FIELDS:
                    raise ValueError(f"shape: unknown field {key!r}; allowed fields: {', '.join(SHAPE_FIELDS)}")
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"shape.{key} must be an integer >= 1; got {value!r}")
                if value < 1:
                    raise ValueError(
                        f"shape.{key}={value} would remove every {WHAT[key]} of a block; structured pruning keeps "
                        "at least one"
                    )
        if self.target_params is not None:
            value = self.target_params
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"target_params must be a fraction in (0, 1) or a parameter count; got {value!r}")
            if isinstance(value, float) and not 0.0 < value < 1.0:
                raise ValueError(f"target_params as a fraction must be in (0, 1); got {value!r}")
            if isinstance(value, int) and value < 1:
                raise ValueError(f"target_params as a parameter count must be >= 1; got {value!r}")
        self.mode = check_choice("mode", self.mode, MODES)
        self.criterion = validate_name("structure_criterion", self.criterion, "criterion")
        self.depth_criterion = validate_name("structure_criterion", self.depth_criterion, "depth_criterion")
        if not isinstance(self.criterion_kwargs, dict):
            raise ValueError(f"criterion_kwargs must be a dict; got {type(self.criterion_kwargs).__name__}")
        check_number("calibration_batches", self.calibration_batches, low=1, integer=True)
        check_number("round_to", self.round_to, low=1, integer=True)
        self.schedule = validate_name("schedule", self.schedule, "schedule")
        check_step_spec("start_step", self.start_step)
        check_step_spec("end_step", self.end_step)
        check_number("update_every", self.update_every, low=1, integer=True)
        check_number("search_candidates", self.search_candidates, low=1, integer=True)
        check_number("search_steps", self.search_steps, low=0, integer=True)
        self.hidden_rotation = check_choice("hidden_rotation", self.hidden_rotation, HIDDEN_ROTATIONS)
        for name in ("search_keep_heads", "shrink_at_end", "refit_writers"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.mode == "gradual" and self.target_params is not None:
            raise ValueError("target_params (budget search) runs with mode='one_shot'; give shape= for mode='gradual'")

    def make_criteria(self):
        """The (width, depth) criterion objects."""
        from hf_compress.registry import get_registry

        registry = get_registry()
        width = registry.get("structure_criterion", self.criterion)(**self.criterion_kwargs)
        depth = registry.get("structure_criterion", self.depth_criterion)()
        if getattr(width, "kind", "width") != "width":
            raise ValueError(f"criterion {self.criterion!r} scores layers; use it as depth_criterion")
        if getattr(depth, "kind", "depth") != "depth":
            raise ValueError(f"depth_criterion {self.depth_criterion!r} does not score layers")
        return width, depth
