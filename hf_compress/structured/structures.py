"""Whole structures of a model, by index: which weights each one owns, how to zero it, how to tell it is dead.

A structure is *dead* when removing it cannot change the model's output:

- a query head: its ``o_proj`` columns are zero, or the value rows (and bias) of its KV group are;
- a KV group: every query head reading it is dead;
- an MLP neuron: its down-projection column is zero, or an input row (and bias) is, with ``act(0) == 0``;
- a layer (pre-norm families): its attention output and MLP output projections (weights and biases) are zero,
  so it is the identity;
- a hidden channel: every embedding column, every residual writer row (and bias) and every norm weight (and bias)
  at that channel is zero, so the residual stream stays zero there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hf_compress.structured import slicing
from hf_compress.structured.families import Family, LayerParts


@dataclass
class StructureSelection:
    """Structures by original index: ``layers``; per layer index ``kv_groups``, ``query_heads`` and ``neurons``;
    global hidden ``channels``."""

    layers: list[int] = field(default_factory=list)
    kv_groups: dict[int, list[int]] = field(default_factory=dict)
    query_heads: dict[int, list[int]] = field(default_factory=dict)
    neurons: dict[int, list[int]] = field(default_factory=dict)
    channels: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "layers": list(self.layers),
            "kv_groups": {str(k): list(v) for k, v in self.kv_groups.items()},
            "query_heads": {str(k): list(v) for k, v in self.query_heads.items()},
            "neurons": {str(k): list(v) for k, v in self.neurons.items()},
            "channels": list(self.channels),
        }

    @classmethod
    def from_dict(cls, values: dict) -> StructureSelection:
        return cls(
            layers=[int(i) for i in values.get("layers", [])],
            kv_groups={int(k): [int(i) for i in v] for k, v in values.get("kv_groups", {}).items()},
            query_heads={int(k): [int(i) for i in v] for k, v in values.get("query_heads", {}).items()},
            neurons={int(k): [int(i) for i in v] for k, v in values.get("neurons", {}).items()},
            channels=[int(i) for i in values.get("channels", [])],
        )

    def is_empty(self) -> bool:
        return not (
            self.layers
            or any(self.kv_groups.values())
            or any(self.query_heads.values())
            or any(self.neurons.values())
            or self.channels
        )


def _span(start: int, length: int) -> torch.Tensor:
    return torch.arange(start, start + length)


def head_rows(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    """Output rows of ``heads`` in a q/k/v projection (``offset`` selects k or v inside GPT-2's fused c_attn)."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([_span(offset + h * head_dim, head_dim) for h in heads])


def group_heads(group: int, group_size: int) -> list[int]:
    return list(range(group * group_size, (group + 1) * group_size))


def _value_rows_zero(parts: LayerParts, group: int, head_dim: int, hidden: int) -> bool:
    rows = head_rows([group], head_dim, offset=2 * hidden if parts.qkv is not None else 0)
    module = parts.qkv if parts.qkv is not None else parts.v
    return bool(slicing.rows_are_zero(module)[rows].all())


def dead_heads(parts: LayerParts, family: Family) -> list[int]:
    shape = family.shape()
    o_zero = slicing.columns_are_zero(parts.o)
    group_size = shape.num_heads // shape.num_kv_heads
    dead = []
    for head in range(shape.num_heads):
        if bool(o_zero[head_rows([head], shape.head_dim)].all()):
            dead.append(head)
        elif _value_rows_zero(parts, head // group_size, shape.head_dim, shape.hidden):
            dead.append(head)
    return dead


def dead_neurons(parts: LayerParts, family: Family) -> list[int]:
    dead = slicing.columns_are_zero(parts.mlp_output)
    if family.activation_is_zero_at_zero() or len(parts.mlp_inputs) > 1:
        # gate * up: a zero up row kills the neuron whatever act is; a zero gate row needs act(0) == 0
        for index, module in enumerate(parts.mlp_inputs):
            is_gate = len(parts.mlp_inputs) > 1 and index == 0
            if not is_gate or family.activation_is_zero_at_zero():
                dead = dead | slicing.rows_are_zero(module)
    return torch.nonzero(dead).flatten().tolist()


def layer_is_identity(parts: LayerParts) -> bool:
    return all(bool(slicing.rows_are_zero(module).all()) for module in parts.writers)


def dead_channels(family: Family) -> list[int]:
    hidden = family.shape().hidden
    dead = torch.ones(hidden, dtype=torch.bool)
    for embedding in family.embeddings():
        dead &= (embedding.weight.detach() == 0).all(dim=0)
    norms = list(family.other_norms())
    for layer in family.layer_list():
        parts = family.layer_parts(layer)
        norms += parts.norms
        for writer in parts.writers:
            dead &= slicing.rows_are_zero(writer)
    for norm in norms:
        for name in ("weight", "bias"):
            value = getattr(norm, name, None)
            if value is not None:
                dead &= value.detach() == 0
    pooler = getattr(family, "pooler_output", lambda: None)()
    if pooler is not None:  # BERT: the pooler writes a hidden-sized vector the classifier reads
        dead &= slicing.rows_are_zero(pooler)
    return torch.nonzero(dead).flatten().tolist()


def find_dead_structures(family: Family) -> StructureSelection:
    """Every dead structure of the model (see the module docstring)."""
    shape = family.shape()
    group_size = shape.num_heads // shape.num_kv_heads
    selection = StructureSelection(channels=dead_channels(family))
    for index, layer in enumerate(family.layer_list()):
        parts = family.layer_parts(layer)
        if family.pre_norm and layer_is_identity(parts):
            selection.layers.append(index)
        heads = set(dead_heads(parts, family))
        groups = [g for g in range(shape.num_kv_heads) if set(group_heads(g, group_size)) <= heads]
        selection.kv_groups[index] = groups
        selection.query_heads[index] = sorted(h for h in heads if h // group_size not in groups)
        selection.neurons[index] = dead_neurons(parts, family)
    return selection


# ---------------------------------------------------------------- zeroing (masks on whole structures)
def zero_structures_(family: Family, selection: StructureSelection) -> None:
    """Zero every weight the selected structures own, so that :func:`find_dead_structures` sees them dead.

    Raises:
        ValueError: layers on a post-norm family (BERT), where a zeroed layer is not the identity.
    """
    shape = family.shape()
    group_size = shape.num_heads // shape.num_kv_heads
    layers = family.layer_list()
    if selection.layers and not family.pre_norm:
        raise ValueError(
            f"structures: layers cannot be masked on {type(family.model).__name__} (post-norm: a zeroed layer is "
            "not the identity); name them with shrink(model, drop_layers=[...]) instead"
        )
    for index in selection.layers:
        for writer in family.layer_parts(layers[index]).writers:
            slicing.zero_rows_(writer, torch.arange(slicing.rows_are_zero(writer).numel()))
    for index, layer in enumerate(layers):
        parts = family.layer_parts(layer)
        groups = selection.kv_groups.get(index, [])
        heads = sorted(
            set(selection.query_heads.get(index, [])) | {h for g in groups for h in group_heads(g, group_size)}
        )
        if heads:
            q_rows = head_rows(heads, shape.head_dim)
            slicing.zero_columns_(parts.o, q_rows)
            if parts.qkv is not None:
                hidden = shape.hidden
                rows = torch.cat([q_rows, q_rows + hidden, q_rows + 2 * hidden])
                slicing.zero_rows_(parts.qkv, rows)
            else:
                slicing.zero_rows_(parts.q, q_rows)
                if groups:
                    kv_rows = head_rows(groups, shape.head_dim)
                    slicing.zero_rows_(parts.k, kv_rows)
                    slicing.zero_rows_(parts.v, kv_rows)
        neurons = selection.neurons.get(index, [])
        if neurons:
            rows = torch.tensor(neurons)
            for module in parts.mlp_inputs:
                slicing.zero_rows_(module, rows)
            slicing.zero_columns_(parts.mlp_output, rows)
    if selection.channels:
        channels = torch.tensor(selection.channels)
        with torch.no_grad():
            for embedding in family.embeddings():
                embedding.weight[:, channels] = 0
            norms = list(family.other_norms())
            for layer in layers:
                parts = family.layer_parts(layer)
                norms += parts.norms
                for writer in parts.writers:
                    slicing.zero_rows_(writer, channels)
                for reader in parts.readers:
                    slicing.zero_columns_(reader, channels)
            for norm in norms:
                for name in ("weight", "bias"):
                    value = getattr(norm, name, None)
                    if value is not None:
                        value[channels] = 0
            for reader in family.head_readers():
                if reader.weight is not family.embeddings()[0].weight:
                    slicing.zero_columns_(reader, channels)
            pooler = getattr(family, "pooler_output", lambda: None)()
            if pooler is not None:
                slicing.zero_rows_(pooler, channels)
