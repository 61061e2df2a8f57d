"""Least-squares refit of the residual writers when heads or MLP neurons go.

A layer's attention output projection and MLP down projection read the heads and neurons being removed. Instead of
only dropping their columns, the kept columns are refitted to reproduce, on calibration batches, what the whole
projection wrote: with ``A`` the projection's inputs (tokens x features), ``K`` the kept features and ``W`` the
weight, ``W_K <- W A^T A_K (A_K^T A_K + damping)^-1``, a ridge regression that needs only the Gram matrix
``A^T A`` of each projection's inputs (ZipLM and SlimGPT refit pruned structures the same way).

```python
>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress.structured.families import family_of
>>> from hf_compress.structured.refit import refit_writers_, writer_input_grams
>>> from hf_compress.structured.structures import StructureSelection
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
...                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8))
>>> family = family_of(model)
>>> grams = writer_input_grams(family, [{"input_ids": torch.randint(0, 64, (2, 16))}])
>>> refit_writers_(family, StructureSelection(neurons={0: list(range(32))}), grams)
>>> tuple(model.model.layers[0].mlp.down_proj.weight.shape)  # same shape: the dropped columns go when shrinking
(32, 64)

```
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hf_compress.distributed import all_reduce_sum_
from hf_compress.structured.criteria import forward_with_hooks
from hf_compress.structured.families import Family
from hf_compress.structured.structures import StructureSelection, group_heads, head_rows
from hf_compress.targets import weight_out_in


def writer_input_grams(family: Family, batches: Iterable[dict]) -> dict[str, torch.Tensor]:
    """``A^T A`` of the inputs of every layer's ``o`` (key ``"o.<layer>"``) and MLP output projection
    (``"mlp.<layer>"``) over ``batches``, float32, summed across ranks."""
    grams: dict[str, torch.Tensor] = {}
    handles = []

    def hook(key):
        def add(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            gram = (x.T @ x).cpu()
            if key in grams:
                grams[key].add_(gram)
            else:
                grams[key] = gram

        return add

    for index, layer in enumerate(family.layer_list()):
        parts = family.layer_parts(layer)
        handles.append(parts.o.register_forward_pre_hook(hook(f"o.{index}")))
        handles.append(parts.mlp_output.register_forward_pre_hook(hook(f"mlp.{index}")))
    forward_with_hooks(family.model, batches, handles)
    for gram in grams.values():
        all_reduce_sum_(gram)
    return grams


def refit_columns_(module: torch.nn.Module, gram: torch.Tensor, removed: torch.Tensor, damping: float) -> None:
    """Refit the kept input columns of ``module`` (Linear or Conv1D) to stand in for the ``removed`` ones."""
    if removed.numel() == 0:
        return
    keep = torch.ones(gram.shape[0], dtype=torch.bool)
    keep[removed] = False
    weight = weight_out_in(module.weight.detach(), module)
    g = gram.double()
    g_kept = g[keep][:, keep]
    ridge = damping * float(g_kept.diagonal().mean().clamp_min(1e-12))
    g_kept = g_kept + ridge * torch.eye(g_kept.shape[0], dtype=g.dtype)
    # W_K (out x k) solves W_K G_KK = W G_:K
    target = weight.double().cpu() @ g[:, keep]
    refitted = torch.linalg.solve(g_kept, target.T).T
    with torch.no_grad():
        view = weight_out_in(module.weight, module)
        view[:, keep] = refitted.to(view.dtype).to(view.device)


def refit_writers_(
    family: Family, selection: StructureSelection, grams: dict[str, torch.Tensor], damping: float = 0.01
) -> None:
    """Refit every layer's ``o`` and MLP output projection for the heads, KV groups and neurons ``selection``
    removes (before they are zeroed; layers that go are skipped). ``damping`` scales the ridge term by the mean
    diagonal of the kept Gram block."""
    shape = family.shape()
    group_size = shape.num_heads // shape.num_kv_heads
    for index, layer in enumerate(family.layer_list()):
        if index in selection.layers:
            continue
        parts = family.layer_parts(layer)
        heads = set(selection.query_heads.get(index, []))
        heads |= {h for g in selection.kv_groups.get(index, []) for h in group_heads(g, group_size)}
        if heads and f"o.{index}" in grams:
            refit_columns_(parts.o, grams[f"o.{index}"], head_rows(sorted(heads), shape.head_dim), damping)
        neurons = selection.neurons.get(index, [])
        if neurons and f"mlp.{index}" in grams:
            refit_columns_(parts.mlp_output, grams[f"mlp.{index}"], torch.tensor(neurons), damping)
