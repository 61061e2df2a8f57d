"""Attention heads as pruning units: which rows/columns of q/k/v/o belong to each head, for the known layouts.

Known layouts (matched on the children of an attention block):

- GPT-2: ``c_attn`` (Conv1D, q|k|v stacked on the output dim) and ``c_proj`` (Conv1D); heads from ``config.n_head``.
- Llama / Mistral / Qwen style: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` with grouped-query attention
  (``num_key_value_heads``). The unit is a key/value group: its ``k_proj``/``v_proj`` rows plus the ``q_proj`` rows
  and ``o_proj`` columns of every query head that reads it (one head each without GQA), so a pruned unit removes
  everything that depended on it and the sparsity counts are exact.
- BERT style: ``attention.self.{query,key,value}`` and ``attention.output.dense``.

```python
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from hf_compress.pruning.heads import find_attention_heads
>>> model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64))
>>> [(block.name, block.num_units) for block in find_attention_heads(model)]
[('transformer.h.0.attn', 4), ('transformer.h.1.attn', 4)]

```
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.targets import in_out_features, is_linear

KNOWN_LAYOUTS = (
    "GPT-2 (c_attn + c_proj)",
    "Llama/Mistral/Qwen (q_proj, k_proj, v_proj, o_proj)",
    "BERT (attention.self.query/key/value + attention.output.dense)",
)


@dataclass
class HeadSlice:
    """Rows (``dim=0``) or columns (``dim=1``) ``[begin, end)`` of a module's ``[out, in]`` weight."""

    module: str
    dim: int
    begin: int
    end: int


@dataclass
class AttentionHeads:
    """One attention block: for each unit (a head, or a key/value group under GQA), the weight slices it owns."""

    name: str
    num_units: int
    units: list[list[HeadSlice]] = field(default_factory=list)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def modules(self) -> list[str]:
        return sorted({s.module for slices in self.units for s in slices})

    @property
    def unit_size(self) -> int:
        """Weights per unit (every unit of a block has the same size)."""
        return sum(_slice_numel(s, self.shapes) for s in self.units[0])

    def unit_scores(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean score of each unit's weights."""
        values = [sum(float(_take(scores[s.module], s).float().sum()) for s in slices) for slices in self.units]
        return torch.tensor(values, dtype=torch.float32) / self.unit_size

    def pruned_units(self, keeps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Units whose weights are all pruned already."""
        return torch.tensor(
            [all(not bool(_take(keeps[s.module], s).any()) for s in slices) for slices in self.units], dtype=torch.bool
        )

    def apply_pruned_units(self, pruned: torch.Tensor, keeps: dict[str, torch.Tensor]) -> None:
        """Clear the keep masks of the pruned units in place."""
        for unit, slices in enumerate(self.units):
            if bool(pruned[unit]):
                for s in slices:
                    _take(keeps[s.module], s).fill_(False)


def _take(tensor: torch.Tensor, s: HeadSlice) -> torch.Tensor:
    return tensor[s.begin : s.end] if s.dim == 0 else tensor[:, s.begin : s.end]


def _slice_numel(s: HeadSlice, shapes: dict[str, tuple[int, int]]) -> int:
    out_features, in_features = shapes[s.module]
    return (s.end - s.begin) * (in_features if s.dim == 0 else out_features)


def _config_value(model: nn.Module, *names: str) -> int | None:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _rows(module: str, head_dim: int, head: int, offset: int = 0) -> HeadSlice:
    return HeadSlice(module, 0, offset + head * head_dim, offset + (head + 1) * head_dim)


def _cols(module: str, head_dim: int, head: int) -> HeadSlice:
    return HeadSlice(module, 1, head * head_dim, (head + 1) * head_dim)


def find_attention_heads(model: nn.Module, module_names: list[str] | None = None) -> list[AttentionHeads]:
    """Every attention block of a known layout whose projections are all in ``module_names`` (default: all).

    Raises:
        ValueError: no attention block of a known layout among ``module_names`` (names the field ``pattern``,
            the known layouts and a few module names).
    """
    model = unwrap_model(model)
    modules = dict(model.named_modules())
    allowed = set(module_names) if module_names is not None else {n for n, m in modules.items() if is_linear(m)}
    num_heads = _config_value(model, "num_attention_heads", "n_head")
    blocks = []
    for name, module in modules.items():
        children = dict(module.named_children())
        prefix = f"{name}." if name else ""
        if not num_heads:
            break
        if {"c_attn", "c_proj"} <= children.keys() and all(is_linear(children[c]) for c in ("c_attn", "c_proj")):
            qkv, out = prefix + "c_attn", prefix + "c_proj"
            if not {qkv, out} <= allowed:
                continue
            hidden = in_out_features(children["c_proj"])[1]
            if in_out_features(children["c_attn"])[1] != 3 * hidden:  # cross-attention q_attn layout is not handled
                continue
            head_dim = hidden // num_heads
            block = AttentionHeads(name, num_heads)
            for h in range(num_heads):
                rows = [_rows(qkv, head_dim, h, offset) for offset in (0, hidden, 2 * hidden)]
                block.units.append(rows + [_cols(out, head_dim, h)])
            blocks.append(_with_shapes(block, modules))
        elif {"q_proj", "k_proj", "v_proj", "o_proj"} <= children.keys():
            names = [prefix + c for c in ("q_proj", "k_proj", "v_proj", "o_proj")]
            if not set(names) <= allowed:
                continue
            q, k, v, o = names
            q_out = in_out_features(children["q_proj"])[1]
            head_dim = q_out // num_heads
            kv_heads = in_out_features(children["k_proj"])[1] // head_dim
            if kv_heads <= 0 or num_heads % kv_heads != 0:
                continue
            group = num_heads // kv_heads
            block = AttentionHeads(name, kv_heads)
            for kv in range(kv_heads):
                queries = range(kv * group, (kv + 1) * group)
                slices = [_rows(k, head_dim, kv), _rows(v, head_dim, kv)]
                slices += [_rows(q, head_dim, h) for h in queries] + [_cols(o, head_dim, h) for h in queries]
                block.units.append(slices)
            blocks.append(_with_shapes(block, modules))
        elif "self" in children and "output" in children:
            self_children = dict(children["self"].named_children())
            output_children = dict(children["output"].named_children())
            if not ({"query", "key", "value"} <= self_children.keys() and "dense" in output_children):
                continue
            q, k, v = (f"{prefix}self.{c}" for c in ("query", "key", "value"))
            o = f"{prefix}output.dense"
            if not {q, k, v, o} <= allowed:
                continue
            head_dim = in_out_features(self_children["query"])[1] // num_heads
            block = AttentionHeads(name, num_heads)
            for h in range(num_heads):
                block.units.append([_rows(m, head_dim, h) for m in (q, k, v)] + [_cols(o, head_dim, h)])
            blocks.append(_with_shapes(block, modules))
    if not blocks:
        examples = ", ".join(sorted(allowed)[:6]) or "(no Linear/Conv1D modules targeted)"
        raise ValueError(
            f"pattern: 'head' found no attention block of a known layout among the targeted modules; known layouts: "
            f"{'; '.join(KNOWN_LAYOUTS)}. Targeted modules look like: {examples}. Allowed patterns for this model: "
            "'unstructured', 'row', 'N:M'"
        )
    return blocks


def _with_shapes(block: AttentionHeads, modules: dict[str, nn.Module]) -> AttentionHeads:
    for name in block.modules:
        in_features, out_features = in_out_features(modules[name])
        block.shapes[name] = (out_features, in_features)
    return block
