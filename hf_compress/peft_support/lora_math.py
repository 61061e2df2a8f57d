"""Pure LoRA weight math: the (masked) update ``scaling * B @ A`` and the effective weight ``(W + sum BA) * M``.

Every tensor here is in the ``[out_features, in_features]`` layout (use :func:`hf_compress.targets.weight_out_in` for
GPT-2's ``Conv1D``); a mask is bool, True = kept.

```python
>>> import torch
>>> from hf_compress.peft_support.lora_math import effective_weight, lora_delta
>>> weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
>>> mask = weight != 0
>>> delta = lora_delta(torch.ones(1, 2), torch.ones(2, 1), scaling=0.5)
>>> effective_weight(weight, [delta], mask)
tensor([[1.5000, 0.0000],
        [0.0000, 2.5000]])

```
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lora_delta(lora_A_weight: torch.Tensor, lora_B_weight: torch.Tensor, scaling: float) -> torch.Tensor:
    """``scaling * B @ A``, ``[out, in]``, differentiable with respect to A and B."""
    return (lora_B_weight @ lora_A_weight) * scaling


def masked(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``tensor * mask`` (no-op for ``mask=None``)."""
    if mask is None:
        return tensor
    return tensor * mask.to(device=tensor.device, dtype=tensor.dtype)


def effective_weight(
    weight: torch.Tensor, deltas: Sequence[torch.Tensor], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(W + sum(deltas)) * M``: the weight a LoRA layer computes with, and the one a merge must write."""
    total = weight
    for delta in deltas:
        total = total + delta.to(weight.dtype)
    return masked(total, mask)
