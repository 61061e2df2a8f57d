"""Pruning masks on real modules: apply them to weights or gradients, and measure sparsity.

A mask is a ``torch.bool`` tensor in the uniform ``[out_features, in_features]`` layout (True = the weight is kept),
one byte per weight (not bit-packed). GPT-2's ``Conv1D`` stores its weight as ``[in, out]``: the functions here
transpose for it. Under FSDP2 the weight is a ``DTensor`` shard; the mask (always the full tensor) is cut to the rows
this rank holds with :func:`hf_compress.distributed.shard_like`. Under DeepSpeed ZeRO the writes also reach the
optimizer's fp32 master (:func:`hf_compress.distributed.multiply_weight_`).

Other techniques reuse these: QAT keeps pruned weights exactly zero with :func:`apply_masks_`, LoRA updates are
masked with :func:`mask_in_storage_layout`.

```python
>>> import torch
>>> from torch import nn
>>> from hf_compress.pruning.masks import apply_masks_, module_sparsity
>>> layer = nn.Linear(4, 2)
>>> apply_masks_({"layer": layer}, {"layer": torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)})
>>> module_sparsity(layer)
0.5

```
"""

from __future__ import annotations

import torch
from torch import nn

from hf_compress.distributed import copy_weight_, local_tensor, multiply_weight_, shard_like
from hf_compress.targets import is_conv1d, weight_out_in


def mask_in_storage_layout(
    mask: torch.Tensor, module: nn.Module, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """The ``[out, in]`` mask laid out like the module's stored weight (Conv1D: ``[in, out]``) and cut to the local
    FSDP2 shard of ``reference`` (defaults to ``module.weight``)."""
    reference = module.weight if reference is None else reference
    storage = mask.t() if is_conv1d(module) else mask
    return shard_like(storage, reference)


@torch.no_grad()
def write_weight_(module: nn.Module, weight: torch.Tensor) -> None:
    """Copy a full ``[out, in]`` weight into the module (Conv1D: transposed; FSDP2: this rank's shard only)."""
    copy_weight_(module.weight, weight.t() if is_conv1d(module) else weight)  # every copy: shards, fp32 master


@torch.no_grad()
def apply_masks_(modules: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place: ``weight *= mask`` for every module named in both dicts."""
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None:
            continue
        multiply_weight_(module.weight, mask.t() if is_conv1d(module) else mask)  # every copy: shards, fp32 master


@torch.no_grad()
def mask_gradients_(modules: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights in place (so optimizer moments of pruned weights stay zero)."""
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or module.weight.grad is None:
            continue
        local = local_tensor(module.weight.grad)
        local.mul_(mask_in_storage_layout(mask, module, module.weight.grad).to(device=local.device))


@torch.no_grad()
def mask_from_weight(module: nn.Module) -> torch.Tensor:
    """The keep mask of a module's current non-zeros, ``[out, in]`` bool (full tensor under FSDP2 and ZeRO-3)."""
    from hf_compress.distributed import full_tensor, gathered_weights

    with gathered_weights([module]):
        return weight_out_in(full_tensor(module.weight.detach()), module) != 0


def mask_sparsity(mask: torch.Tensor) -> float:
    """Fraction of pruned (False) entries."""
    return 1.0 - int(mask.sum()) / mask.numel()


@torch.no_grad()
def module_sparsity(module: nn.Module) -> float:
    """Fraction of exact zeros in a module's weight."""
    from hf_compress.distributed import full_tensor, gathered_weights

    with gathered_weights([module]):
        weight = full_tensor(module.weight.detach())
        return float((weight == 0).sum()) / weight.numel()
