"""Learned width projections for intermediate-layer distillation, and their life inside the Trainer's optimizer.

When a mapped student layer is narrower (or wider) than its teacher layer, a ``Linear(student_width, teacher_width)``
maps the student's hidden states onto the teacher's before the hidden-state loss. The projections live beside the
student, never inside it: they join the Trainer's (already built) optimizer as one extra parameter group for each
optimizer step (see :class:`hf_compress.trainer.ExtraParameters`), are saved into each checkpoint by the callback, and never appear in the
student's ``state_dict`` or the saved model.

Example:

```python
>>> import torch
>>> from hf_compress.distillation.projections import LayerProjections
>>> projections = LayerProjections({2: (32, 64), 1: (64, 64)}, seed=0)
>>> projections(2, torch.randn(5, 32)).shape, sorted(projections.layers)
(torch.Size([5, 64]), [2])

```
"""

from __future__ import annotations

import torch
from torch import nn


class LayerProjections(nn.Module):
    """One bias-free ``Linear(student_width, teacher_width)`` per mapped student layer whose widths differ.

    Args:
        widths (`dict[int, tuple[int, int]]`): ``{student_layer: (student_width, teacher_width)}``.
        seed (`int`): seeds the initialisation so every process builds the same weights.
    """

    def __init__(self, widths: dict[int, tuple[int, int]], seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.maps = nn.ModuleDict()
        for layer, (student_width, teacher_width) in sorted(widths.items()):
            if student_width == teacher_width:
                continue
            linear = nn.Linear(student_width, teacher_width, bias=False)
            bound = student_width**-0.5
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
            self.maps[str(layer)] = linear

    @property
    def layers(self) -> list[int]:
        return [int(name) for name in self.maps]

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        linear = self.maps[str(layer)] if str(layer) in self.maps else None
        if linear is None:
            return hidden
        return linear(hidden.to(linear.weight.dtype))
