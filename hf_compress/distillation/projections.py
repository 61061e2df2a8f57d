"""Learned width projections for intermediate-layer distillation, and their life inside the Trainer's optimizer.

When a mapped student layer is narrower (or wider) than its teacher layer, a ``Linear(student_width, teacher_width)``
maps the student's hidden states onto the teacher's before the hidden-state loss. The projections live beside the
student, never inside it: they join the Trainer's (already built) optimizer as one extra parameter group for each
optimizer step (see `OptimizerSeat`), are saved into each checkpoint by the callback, and never appear in the
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

from typing import Any

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


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (or the optimizer itself)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class OptimizerSeat:
    """Seats the projections in the Trainer's optimizer for each ``optimizer.step()``, and only then.

    ``join`` (from ``on_pre_optimizer_step``) appends one parameter group copying group 0's hyperparameters and
    current learning rate, with the projections' optimizer state; ``leave`` (from ``on_optimizer_step``) takes both
    out again. So the scheduler (whose per-group lists must match the groups) and the Trainer's ``optimizer.pt`` /
    ``scheduler.pt`` only ever see the optimizer the Trainer built, a resumed run loads them unchanged, and the
    callback checkpoints the projections' own state (:meth:`state_tensors`).
    """

    def __init__(self, named_params: dict[str, nn.Parameter]) -> None:
        self.named_params = dict(named_params)
        self.state: dict[str, dict[str, Any]] = {}
        self._group: dict[str, Any] | None = None

    def join(self, optimizer: torch.optim.Optimizer) -> None:
        if self._group is not None:
            return
        template = optimizer.param_groups[0]
        group = {key: value for key, value in template.items() if key not in ("params", "initial_lr")}
        group["params"] = list(self.named_params.values())
        optimizer.param_groups.append(group)
        steps_on_device = bool(template.get("capturable") or template.get("fused"))
        for name, param in self.named_params.items():
            if name in self.state:
                entries = self.state[name]
                if steps_on_device:
                    entries = {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in entries.items()}
                optimizer.state[param] = entries
        self._group = group

    def leave(self, optimizer: torch.optim.Optimizer) -> None:
        if self._group is None:
            return
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group is not self._group]
        for name, param in self.named_params.items():
            if param in optimizer.state:
                self.state[name] = optimizer.state.pop(param)
        self._group = None

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, values)`` of the optimizer state, keyed ``"<param>::<state key>"``."""
        tensors, values = {}, {}
        for name, entries in self.state.items():
            for key, value in entries.items():
                (tensors if torch.is_tensor(value) else values)[f"{name}::{key}"] = value
        return tensors, values

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Put back what :meth:`state_tensors` returned; 0-d counters (``step``) stay on the CPU like torch's."""
        self.state = {}
        for stored, value in {**tensors, **values}.items():
            name, _, key = stored.partition("::")
            param = self.named_params.get(name)
            if param is None:
                continue
            if torch.is_tensor(value):
                value = value.to("cpu" if value.dim() == 0 else param.device)
            self.state.setdefault(name, {})[key] = value
