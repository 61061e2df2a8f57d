"""`shrink`: remove every dead whole structure and update the config, so stock transformers loads the result.

```python
>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress import shrink
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
...                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8))
>>> with torch.no_grad():
...     for layer in model.model.layers:
...         _ = layer.mlp.down_proj.weight[:, :32].zero_()  # half the MLP neurons are dead
>>> small = shrink(model)
>>> small.config.intermediate_size, model.config.intermediate_size  # the model passed in is left as it was
(32, 64)

```
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.structured import slicing
from hf_compress.structured.families import Family, Shape, family_of
from hf_compress.structured.structures import StructureSelection, find_dead_structures, group_heads, head_rows

logger = logging.getLogger(__name__)


@dataclass
class ShrinkPlan:
    """What stays, by original index, and the resulting uniform shape."""

    before: Shape
    after: Shape
    kept_layers: list[int]
    kept_heads: dict[int, list[int]]  # per kept layer: query heads, grouped by KV group in order
    kept_groups: dict[int, list[int]]
    kept_neurons: dict[int, list[int]]
    kept_channels: list[int]
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(), "messages": list(self.messages)}


def _round_up(value: int, multiple: int, limit: int) -> int:
    return min(limit, int(math.ceil(value / multiple) * multiple)) if multiple > 1 else value


def _keep_with_padding(live: list[int], dead: list[int], count: int) -> list[int]:
    """``live`` plus the first dead indices until ``count``, sorted."""
    return sorted(live + dead[: max(0, count - len(live))])


def plan_shrink(
    family: Family, dead: StructureSelection, *, round_to: int = 1, drop_layers: list[int] | None = None
) -> ShrinkPlan:
    """The uniform shape that removes as many dead structures as every layer allows.

    Each layer keeps the same number of KV groups, query heads per group and neurons: the largest number alive in
    any layer, padded with dead ones (which changes nothing); ``round_to`` rounds neurons and hidden channels up to a
    multiple. Every snap is recorded in ``messages``.

    Raises:
        ValueError: every layer would go, or ``drop_layers`` names a layer that does not exist.
    """
    before = family.shape()
    messages: list[str] = []
    group_size = before.num_heads // before.num_kv_heads
    removed_layers = set(dead.layers)
    for index in drop_layers or ():
        if not isinstance(index, int) or not 0 <= index < before.num_layers:
            raise ValueError(f"drop_layers: {index!r} is not a layer index in [0, {before.num_layers - 1}]")
        removed_layers.add(index)
    kept_layers = [i for i in range(before.num_layers) if i not in removed_layers]
    if not kept_layers:
        raise ValueError(
            f"shrink would remove every one of the {before.num_layers} layers of {type(family.model).__name__}; "
            "keep at least one"
        )
    live_groups = {
        i: [g for g in range(before.num_kv_heads) if g not in dead.kv_groups.get(i, [])] for i in kept_layers
    }
    kv_keep = max(1, max(len(groups) for groups in live_groups.values()))
    live_heads: dict[int, dict[int, list[int]]] = {}
    for i in kept_layers:
        dead_heads = set(dead.query_heads.get(i, []))
        live_heads[i] = {g: [h for h in group_heads(g, group_size) if h not in dead_heads] for g in live_groups[i]}
    q_keep = max([1] + [len(heads) for per_group in live_heads.values() for heads in per_group.values()])
    heads_keep = kv_keep * q_keep

    hidden_keep = max(1, before.hidden - len(dead.channels))
    rounded = _round_up(hidden_keep, round_to, before.hidden)
    if rounded != hidden_keep:
        messages.append(f"hidden size: {hidden_keep} channels alive, kept {rounded} (round_to={round_to})")
        hidden_keep = rounded
    if not family.explicit_head_dim:
        # head_dim = hidden / heads is derived: heads and hidden channels can only go together, in proportion
        joint = max(hidden_keep, heads_keep * before.head_dim)
        joint = int(math.ceil(joint / before.head_dim) * before.head_dim)
        if joint != hidden_keep or joint // before.head_dim != heads_keep:
            messages.append(
                f"{family.name}: head_dim is derived from the hidden size, so heads go only with hidden channels in "
                f"proportion: {heads_keep} heads and {hidden_keep} channels alive, kept {joint // before.head_dim} "
                f"heads and {joint} channels"
            )
        hidden_keep, kv_keep, heads_keep = joint, joint // before.head_dim, joint // before.head_dim
        q_keep = 1

    if family.explicit_head_dim and hidden_keep % heads_keep:  # stock configs check hidden % heads == 0
        padded = min(before.hidden, int(math.ceil(hidden_keep / heads_keep) * heads_keep))
        messages.append(
            f"hidden size: {hidden_keep} channels alive, kept {padded} (a multiple of {heads_keep} attention heads)"
        )
        hidden_keep = padded

    neuron_keep = max(1, max(before.intermediate - len(dead.neurons.get(i, [])) for i in kept_layers))
    rounded = _round_up(neuron_keep, round_to, before.intermediate)
    if rounded != neuron_keep:
        messages.append(f"MLP neurons: {neuron_keep} alive in the widest layer, kept {rounded} (round_to={round_to})")
        neuron_keep = rounded

    kept_groups, kept_heads, kept_neurons = {}, {}, {}
    for i in kept_layers:
        groups_dead = [g for g in range(before.num_kv_heads) if g not in live_groups[i]]
        groups = _keep_with_padding(live_groups[i], groups_dead, kv_keep)
        heads = []
        for g in groups:
            members = group_heads(g, group_size)
            alive = live_heads[i].get(g, [])
            heads += _keep_with_padding(alive, [h for h in members if h not in alive], q_keep)
        kept_groups[i], kept_heads[i] = groups, heads
        dead_neurons = dead.neurons.get(i, [])
        alive_neurons = [n for n in range(before.intermediate) if n not in set(dead_neurons)]
        kept_neurons[i] = _keep_with_padding(alive_neurons, dead_neurons, neuron_keep)
    dead_channels = list(dead.channels)
    alive_channels = [c for c in range(before.hidden) if c not in set(dead_channels)]
    kept_channels = _keep_with_padding(alive_channels, dead_channels, hidden_keep)
    after = Shape(len(kept_layers), heads_keep, kv_keep, before.head_dim, neuron_keep, hidden_keep)
    return ShrinkPlan(before, after, kept_layers, kept_heads, kept_groups, kept_neurons, kept_channels, messages)


def _apply_plan_(family: Family, plan: ShrinkPlan) -> None:
    before, after = plan.before, plan.after
    model = family.model
    channels = None if after.hidden == before.hidden else torch.tensor(plan.kept_channels)
    norm_scale = math.sqrt(before.hidden / after.hidden) if channels is not None and family.rms_norm else 1.0
    input_embeddings = family.embeddings()[0]
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output_embeddings is not None and output_embeddings.weight is input_embeddings.weight
    head_readers = family.head_readers() if channels is not None else []
    layers = family.layer_list()
    for i in plan.kept_layers:
        parts = family.layer_parts(layers[i])
        q_rows = head_rows(plan.kept_heads[i], before.head_dim)
        kv_rows = head_rows(plan.kept_groups[i], before.head_dim)
        heads_change = after.num_heads != before.num_heads or after.num_kv_heads != before.num_kv_heads
        heads_out = q_rows if heads_change else None
        if parts.qkv is not None:
            fused = torch.cat([q_rows, q_rows + before.hidden, q_rows + 2 * before.hidden]) if heads_change else None
            slicing.slice_linear_(parts.qkv, outputs=fused, inputs=channels)
        else:
            slicing.slice_linear_(parts.q, outputs=heads_out, inputs=channels)
            slicing.slice_linear_(parts.k, outputs=kv_rows if heads_change else None, inputs=channels)
            slicing.slice_linear_(parts.v, outputs=kv_rows if heads_change else None, inputs=channels)
        slicing.slice_linear_(parts.o, outputs=channels, inputs=heads_out)
        neurons = torch.tensor(plan.kept_neurons[i]) if after.intermediate != before.intermediate else None
        for module in parts.mlp_inputs:
            slicing.slice_linear_(module, outputs=neurons, inputs=channels)
        slicing.slice_linear_(parts.mlp_output, outputs=channels, inputs=neurons)
        if channels is not None:
            for norm in parts.norms:
                slicing.slice_norm_(norm, channels, norm_scale)
    if channels is not None:
        for embedding in family.embeddings():
            slicing.slice_embedding_(embedding, channels)
        for norm in family.other_norms():
            slicing.slice_norm_(norm, channels, norm_scale)
        for reader in head_readers:
            if tied and reader is output_embeddings:
                continue
            slicing.slice_linear_(reader, inputs=channels)
        pooler = getattr(family, "pooler_output", lambda: None)()
        if pooler is not None:
            slicing.slice_linear_(pooler, outputs=channels)
        if tied:
            output_embeddings.weight = input_embeddings.weight
            output_embeddings.in_features = after.hidden
    if len(plan.kept_layers) != before.num_layers:
        family.set_layer_list(nn.ModuleList([layers[i] for i in plan.kept_layers]))
    family.set_shape(after, plan.kept_layers)


def shrink(
    model: nn.Module,
    *,
    round_to: int = 1,
    drop_layers: list[int] | None = None,
    inplace: bool = False,
    return_plan: bool = False,
):
    """Remove every whole structure whose weights are all zero, and update the config to the smaller shape.

    Removes attention KV groups (with their query heads) and query heads (the same number in every group, so
    ``num_attention_heads % num_key_value_heads == 0``), MLP neurons, hidden channels and whole layers that are the
    identity (see :mod:`hf_compress.structured.structures`), keeping shapes uniform across layers so the stock
    config describes the result: ``save_pretrained`` then ``AutoModelFor*.from_pretrained`` loads it with no custom
    code. Heads, neurons and layers go without changing the outputs; hidden channels change what the norms compute
    (RMSNorm is rescaled to compensate, LayerNorm is not). :mod:`hf_compress.structured.families` lists what each
    family supports.

    Args:
        model (`nn.Module`): a Llama/Qwen2/Mistral, GPT-2 or BERT model from transformers (wrappers looked through).
        round_to (`int`, *optional*, defaults to 1): keep a multiple of this many MLP neurons and hidden channels
            (padding with dead ones), e.g. 8 or 64 for hardware-friendly shapes.
        drop_layers (`list[int]`, *optional*): layers to remove even though they are not the identity (post-norm
            BERT layers, whose zeroed form is not the identity).
        inplace (`bool`, *optional*, defaults to `False`): change ``model`` itself (the Trainer callbacks do, so
            ``trainer.save_model()`` writes the smaller model); by default a smaller copy is returned and ``model``
            is left as it was.
        return_plan (`bool`, *optional*, defaults to `False`): also return the :class:`ShrinkPlan`.

    Returns:
        The smaller model (``model`` itself when ``inplace``), or ``(model, plan)`` with ``return_plan``.

    Raises:
        ValueError: a model hf-compress cannot shrink (names its class and the supported families), or a shrink
            that would remove every layer.
    """
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be an integer >= 1; got {round_to!r}")
    target = unwrap_model(model)
    family = family_of(target)
    plan = plan_shrink(family, find_dead_structures(family), round_to=round_to, drop_layers=drop_layers)
    if not inplace:
        target = copy.deepcopy(target)
        family = family_of(target)
    for message in plan.messages:
        logger.warning("hf_compress.shrink: %s", message)
    if plan.after != plan.before:
        _apply_plan_(family, plan)
    record = dict(getattr(target.config, "hf_compress_structured", None) or {})
    record.setdefault("before", plan.before.to_dict())
    record["after"] = plan.after.to_dict()
    record["messages"] = list(record.get("messages", [])) + plan.messages
    target.config.hf_compress_structured = record
    return (target, plan) if return_plan else target


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
