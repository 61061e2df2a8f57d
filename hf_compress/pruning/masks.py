"""Pruning masks on real modules: apply them to weights or gradients, and measure sparsity.

A mask is a ``torch.bool`` tensor in the uniform ``[out_features, in_features]`` layout (True = the weight is kept).
GPT-2's ``Conv1D`` stores its weight as ``[in, out]``: the functions here transpose for it. Under FSDP2 the weight is
a ``DTensor`` shard; a full mask is cut to the rows this rank holds with :func:`hf_compress.distributed.shard_like`. Under DeepSpeed ZeRO the writes also reach the optimizer's fp32 master
(:func:`hf_compress.distributed.multiply_weight_`).

A pruning run keeps its masks in :class:`KeepMasks`: 1 bit per weight, partitioned like the weights (under ZeRO-3 or
FSDP2 a rank holds only its own piece of each mask).

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

from hf_compress.distributed import (
    copy_weight_,
    local_tensor,
    multiply_by_partition_,
    multiply_weight_,
    partition_like,
    shard_like,
    whole_from_partition,
)
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


def mask_fingerprint(mask: torch.Tensor) -> tuple[int, int, int]:
    """Kept count and index-weighted row and column sums of a 2-D mask: cheap to compare across ranks."""
    rows = torch.arange(mask.shape[0], device=mask.device, dtype=torch.int64)
    cols = torch.arange(mask.shape[1], device=mask.device, dtype=torch.int64)
    return int(mask.sum()), int((mask.sum(dim=1) * rows).sum()), int((mask.sum(dim=0) * cols).sum())


_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8, 8 elements per byte (little-endian bit order; the tail padded with ones)."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_ones(pad)])
    return (flat.view(-1, 8).to(torch.uint8) << _BIT_SHIFTS.to(flat.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The bool tensor of ``shape`` that :func:`pack_bits` packed."""
    bits = (packed.unsqueeze(-1) >> _BIT_SHIFTS.to(packed.device)) & 1
    return bits.view(-1)[: shape.numel()].view(shape).bool()


class KeepMasks:
    """The keep masks of a pruning run, one per module: bit-packed, each rank keeping only what it holds of the weight.

    A mask costs 1 bit per weight, and under ZeRO-3 or FSDP2 a rank stores only the piece of each mask that lines up
    with its partition or shard of the weight. :meth:`full` rebuilds one whole ``[out, in]`` mask: a collective there,
    so every rank asks for the same names in the same order; ask for one module at a time. :meth:`apply_` needs no
    communication.

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from hf_compress.pruning.masks import KeepMasks, module_sparsity
    >>> layer = nn.Linear(4, 2)
    >>> masks = KeepMasks({"layer": layer})
    >>> masks.set("layer", torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool))
    >>> masks.apply_()
    >>> module_sparsity(layer), masks.numel("layer"), masks.stored_bytes()
    (0.5, 8, 1)

    ```
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self._packed: dict[str, torch.Tensor] = {}
        self._piece_shapes: dict[str, torch.Size] = {}
        self._shapes: dict[str, torch.Size] = {}
        self._fingerprints: dict[str, tuple[int, int, int]] = {}  # of the whole mask this rank set

    def __contains__(self, name: str) -> bool:
        return name in self._packed

    def names(self) -> list[str]:
        return list(self._packed)

    def set(self, name: str, mask: torch.Tensor) -> None:
        """Store ``mask`` (bool ``[out, in]``) for module ``name``; this rank keeps only its piece of it."""
        module = self.modules[name]
        self._fingerprints[name] = mask_fingerprint(mask)
        piece = partition_like(module.weight, mask.t() if is_conv1d(module) else mask)
        self._shapes[name], self._piece_shapes[name] = mask.shape, piece.shape
        self._packed[name] = pack_bits(piece)

    def _piece(self, name: str) -> torch.Tensor:
        return unpack_bits(self._packed[name], self._piece_shapes[name])

    def full(self, name: str) -> torch.Tensor:
        """The whole bool ``[out, in]`` mask of module ``name`` (a collective under ZeRO-3 and FSDP2)."""
        module = self.modules[name]
        whole = whole_from_partition(module.weight, self._piece(name))
        return whole.t() if is_conv1d(module) else whole

    def shape(self, name: str) -> torch.Size:
        return self._shapes[name]

    def kept(self, name: str) -> int:
        """Kept weights of module ``name`` (no communication)."""
        return self._fingerprints[name][0]

    def fingerprint(self, name: str) -> tuple[int, int, int]:
        """:func:`mask_fingerprint` of the whole mask this rank last set for ``name`` (no communication)."""
        return self._fingerprints[name]

    def numel(self, name: str) -> int:
        return self._shapes[name].numel()

    @torch.no_grad()
    def apply_(self, names: list[str] | None = None) -> None:
        """Zero the pruned weights of ``names`` (default: all) on every copy (shards, partitions, fp32 master)."""
        for name in self._packed if names is None else names:
            multiply_by_partition_(self.modules[name].weight, self._piece(name))

    @torch.no_grad()
    def apply_to_gradients_(self, names: list[str] | None = None) -> None:
        """Zero the gradients of pruned weights (this rank's shard of each), so their optimizer moments stay zero."""
        for name in self._packed if names is None else names:
            grad = self.modules[name].weight.grad
            if grad is not None:
                local = local_tensor(grad)
                local.mul_(self._piece(name).to(device=local.device).reshape(local.shape))

    def stored_bytes(self) -> int:
        """Bytes of mask this rank holds."""
        return sum(packed.numel() for packed in self._packed.values())
