"""Pure LoRA weight math: the (masked) update and the effective weight ``(W + sum BA) * M``.

The update ``scaling * B @ A`` itself comes from peft (``get_delta_weight``, see ``lora_hooks.lora_update``).

Every tensor here is in the ``[out_features, in_features]`` layout (use :func:`hf_compress.targets.weight_out_in` for
GPT-2's ``Conv1D``); a mask is bool, True = kept.

```python
>>> import torch
>>> from hf_compress.peft_support.lora_math import effective_weight
>>> weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
>>> mask = weight != 0
>>> delta = torch.full((2, 2), 0.5)  # scaling * B @ A
>>> effective_weight(weight, [delta], mask)
tensor([[1.5000, 0.0000],
        [0.0000, 2.5000]])

```
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
