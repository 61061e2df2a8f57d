"""From a target to a valid uniform shape, and from scores to the structures that go.

```python
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress.structured.families import family_of
>>> from hf_compress.structured.selection import resolve_shape
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
...                                      num_attention_heads=8, num_key_value_heads=4, head_dim=8))
>>> shape, messages = resolve_shape(family_of(model), {"num_key_value_heads": 2, "intermediate_size": 60}, round_to=8)
>>> shape.num_heads, shape.num_kv_heads, shape.intermediate
(4, 2, 64)

```
"""

from __future__ import annotations

import math

import torch

from hf_compress.structured.criteria import StructureScores
from hf_compress.structured.families import Family, Shape
from hf_compress.structured.structures import StructureSelection, group_heads

SHAPE_FIELDS = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "hidden_size")


def _positive(field: str, value: int, original: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"shape.{field} must be an integer in [1, {original}]; got {value!r}")
    if value < 1:
        raise ValueError(
            f"shape.{field}={value} would remove every {what} of a block; structured pruning keeps at least one "
            f"(allowed: 1..{original})"
        )
    if value > original:
        raise ValueError(f"shape.{field}={value} is larger than the model's {original} (allowed: 1..{original})")


def resolve_shape(family: Family, target: dict, *, round_to: int = 1) -> tuple[Shape, list[str]]:
    """The valid uniform shape for ``target`` (config field names -> sizes), with a message for every snap.

    GQA: ``num_attention_heads`` is snapped to a multiple of ``num_key_value_heads`` (never more query heads per
    group than the model has). GPT-2 / BERT: ``head_dim`` is derived, so heads follow the hidden size in proportion.
    ``round_to`` rounds neurons and hidden channels up to a multiple.

    Raises:
        ValueError: an unknown field, a size of 0 (every head/neuron/layer of a block) or larger than the model's.
    """
    before = family.shape()
    messages: list[str] = []
    for key in target:
        if key not in SHAPE_FIELDS:
            raise ValueError(f"shape: unknown field {key!r}; allowed fields: {', '.join(SHAPE_FIELDS)}")
    layers = target.get("num_hidden_layers", before.num_layers)
    _positive("num_hidden_layers", layers, before.num_layers, "layer")
    intermediate = target.get("intermediate_size", before.intermediate)
    _positive("intermediate_size", intermediate, before.intermediate, "MLP neuron")
    hidden = target.get("hidden_size", before.hidden)
    _positive("hidden_size", hidden, before.hidden, "hidden channel")
    kv = target.get("num_key_value_heads", before.num_kv_heads if family.explicit_head_dim else None)
    heads = target.get("num_attention_heads")

    def snap(name: str, value: int, limit: int) -> int:
        if round_to > 1:
            rounded = min(limit, int(math.ceil(value / round_to) * round_to))
            if rounded != value:
                messages.append(f"{name}: {value} snapped to {rounded} (round_to={round_to})")
            return rounded
        return value

    intermediate = snap("intermediate_size", intermediate, before.intermediate)
    if family.explicit_head_dim:
        _positive("num_key_value_heads", kv, before.num_kv_heads, "KV group")
        group = before.num_heads // before.num_kv_heads
        if heads is None:
            heads = kv * group if "num_key_value_heads" in target else before.num_heads
        _positive("num_attention_heads", heads, before.num_heads, "attention head")
        per_group = min(group, max(1, round(heads / kv)))
        if per_group * kv != heads:
            messages.append(
                f"num_attention_heads: {heads} is not a multiple of num_key_value_heads={kv} within {group} query "
                f"heads per group; snapped to {per_group * kv}"
            )
        heads = per_group * kv
        hidden = snap("hidden_size", hidden, before.hidden)
        if hidden % heads:  # stock configs check hidden_size % num_attention_heads == 0 when saving
            up = int(math.ceil(hidden / heads) * heads)
            snapped = up if up <= before.hidden else max(heads, hidden // heads * heads)
            messages.append(
                f"hidden_size: {hidden} snapped to {snapped}, a multiple of num_attention_heads={heads} (stock "
                "configs require it)"
            )
            hidden = snapped
    else:
        hd = before.head_dim
        if heads is not None or kv is not None:
            wanted = heads if heads is not None else kv
            _positive("num_attention_heads", wanted, before.num_heads, "attention head")
            if "hidden_size" in target and wanted * hd != hidden:
                raise ValueError(
                    f"shape: {family.name} derives head_dim = hidden_size / num_attention_heads = {hd}; "
                    f"num_attention_heads={wanted} needs hidden_size={wanted * hd} (got {hidden}). Nearest valid "
                    f"targets: (num_attention_heads={hidden // hd}, hidden_size={hidden // hd * hd}) or "
                    f"(num_attention_heads={wanted}, hidden_size={wanted * hd})"
                )
            hidden = wanted * hd
        snapped = max(hd, int(round(hidden / hd)) * hd)
        if snapped != hidden:
            messages.append(
                f"hidden_size: {hidden} snapped to {snapped}: {family.name} removes heads with hidden channels in "
                f"proportion (head_dim {hd})"
            )
        hidden = snapped
        heads = kv = hidden // hd
    return Shape(layers, heads, kv, before.head_dim, intermediate, hidden), messages


def _lowest(scores: torch.Tensor, count: int, candidates: list[int] | None = None) -> list[int]:
    """The ``count`` candidates with the lowest scores (ties broken by index)."""
    candidates = list(range(len(scores))) if candidates is None else candidates
    if count <= 0:
        return []
    order = sorted(candidates, key=lambda i: (float(scores[i]), i))
    return sorted(order[:count])


def select_structures(family: Family, scores: StructureScores, shape: Shape) -> StructureSelection:
    """The lowest-scoring structures to remove so that the model reaches ``shape`` (uniform across layers).

    KV groups are scored by the sum of their query heads; query heads are then removed uniformly within the kept
    groups. Layers need ``scores.layers``; the others fall back to keeping the first structures when unscored.
    """
    before = family.shape()
    group = before.num_heads // before.num_kv_heads
    selection = StructureSelection()
    if shape.num_layers < before.num_layers:
        if scores.layers is None:
            raise ValueError("shape.num_hidden_layers is below the model's, but no depth criterion scored the layers")
        selection.layers = _lowest(scores.layers, before.num_layers - shape.num_layers)
    per_group = shape.num_heads // shape.num_kv_heads
    for index in range(before.num_layers):
        if index in selection.layers:
            continue
        heads = scores.heads.get(index, torch.arange(before.num_heads, 0, -1).float())
        if shape.num_kv_heads < before.num_kv_heads:
            group_scores = heads.reshape(before.num_kv_heads, group).sum(1)
            selection.kv_groups[index] = _lowest(group_scores, before.num_kv_heads - shape.num_kv_heads)
        if per_group < group:
            removed = []
            for g in range(before.num_kv_heads):
                if g in selection.kv_groups.get(index, []):
                    continue
                removed += _lowest(heads, group - per_group, group_heads(g, group))
            selection.query_heads[index] = removed
        if shape.intermediate < before.intermediate:
            neurons = scores.neurons.get(index, torch.arange(before.intermediate, 0, -1).float())
            selection.neurons[index] = _lowest(neurons, before.intermediate - shape.intermediate)
    if shape.hidden < before.hidden:
        channels = scores.channels if scores.channels is not None else torch.arange(before.hidden, 0, -1).float()
        selection.channels = _lowest(channels, before.hidden - shape.hidden)
    return selection


def merge_scores(width: StructureScores | None, depth: StructureScores | None) -> StructureScores:
    merged = StructureScores() if width is None else StructureScores.from_tensors(width.tensors())
    if depth is not None:
        merged.layers = depth.layers
    return merged


def interpolate_shape(before: Shape, after: Shape, fraction: float, *, explicit_head_dim: bool = True) -> Shape:
    """The shape ``fraction`` of the way from ``before`` to ``after`` (gradual pruning; whole units only)."""

    def step(a: int, b: int) -> int:
        return a - int(math.floor((a - b) * fraction + 1e-9))

    layers, intermediate = step(before.num_layers, after.num_layers), step(before.intermediate, after.intermediate)
    if explicit_head_dim:
        kv = step(before.num_kv_heads, after.num_kv_heads)
        per_group = step(before.num_heads // before.num_kv_heads, after.num_heads // after.num_kv_heads)
        return Shape(layers, kv * per_group, kv, before.head_dim, intermediate, step(before.hidden, after.hidden))
    heads = step(before.num_heads, after.num_heads)
    return Shape(layers, heads, heads, before.head_dim, intermediate, heads * before.head_dim)
