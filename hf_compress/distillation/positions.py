"""Which output positions count for distillation: the ones the task loss scores, minus padding.

For a causal LM, logit ``t`` is scored against token ``t + 1`` (the Trainer's shift), so the logits are cut to
``[:, :-1]`` and a position counts when ``labels[t + 1] != -100`` and both tokens ``t`` and ``t + 1`` are real
(``attention_mask`` 1). Pre-shifted ``shift_labels`` (padding-free collators) are used as they are. Other models
count every position whose label is not -100 and whose token is real; labels or masks of another shape (a sequence
classifier's ``[batch]`` labels against ``[batch, seq]`` masks) are simply not applied.

Example:

```python
>>> import torch
>>> from hf_compress.distillation.positions import counted_positions
>>> labels = torch.tensor([[5, 6, 7, -100]])
>>> mask = torch.tensor([[1, 1, 1, 0]])
>>> counted_positions((1, 4), labels=labels, attention_mask=mask, causal=True)
(tensor([[ True,  True, False]]), True)

```
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def counted_positions(
    positions_shape: tuple[int, ...] | torch.Size,
    *,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, bool]:
    """A boolean mask over the (possibly shifted) output positions, and whether the outputs must be shifted.

    Args:
        positions_shape: the output's shape without its last (vocabulary / feature) dimension, e.g. ``[B, L]``.
        labels, attention_mask, shift_labels: the batch's tensors, as the model received them.
        causal: score logit ``t`` against token ``t + 1`` (causal-LM shift).

    Returns:
        ``(mask, shifted)``: when ``shifted``, apply the mask to ``outputs[:, :-1]``.
    """
    positions_shape = tuple(positions_shape)
    if device is None:
        device = next((t.device for t in (labels, attention_mask, shift_labels) if t is not None), "cpu")
    if shift_labels is not None:
        mask = shift_labels.to(device) != IGNORE_INDEX
        if attention_mask is not None and tuple(attention_mask.shape) == tuple(mask.shape):
            mask &= attention_mask.to(device).bool()
        return mask, False
    if causal and len(positions_shape) >= 2:
        batch, length = positions_shape[0], positions_shape[1]
        mask = torch.ones(batch, length - 1, dtype=torch.bool, device=device)
        if labels is not None and tuple(labels.shape) == (batch, length):
            mask &= labels[:, 1:].to(device) != IGNORE_INDEX
        if attention_mask is not None and tuple(attention_mask.shape) == (batch, length):
            real = attention_mask.to(device).bool()
            mask &= real[:, 1:] & real[:, :-1]
        return mask, True
    mask = torch.ones(positions_shape, dtype=torch.bool, device=device)
    if labels is not None and tuple(labels.shape) == positions_shape:
        mask &= labels.to(device) != IGNORE_INDEX
    if attention_mask is not None and tuple(attention_mask.shape) == positions_shape:
        mask &= attention_mask.to(device).bool()
    return mask, False


def select(outputs: torch.Tensor, mask: torch.Tensor, shifted: bool) -> torch.Tensor:
    """``[N, D]``: the rows of ``outputs`` (``[..., D]``) at the counted positions."""
    if shifted:
        outputs = outputs[:, :-1]
    return outputs[mask]
