"""Trainable tensors outside the model, stepped by the Trainer's own optimizer: :class:`ExtraParameters`.

Distillation's width projections and QAT's learned scales are not model parameters, yet they must train with the
Trainer's optimizer (its algorithm, hyperparameters and schedule). They join the optimizer as one extra parameter
group for the span of each ``optimizer.step()`` only: :meth:`ExtraParameters.join` from ``on_pre_optimizer_step``
and :meth:`ExtraParameters.leave` from ``on_optimizer_step``. So

- the LR scheduler, which steps after ``on_optimizer_step``, only ever sees the groups it was built for; the extra
  group follows the schedule of group 0 (its learning rate is ``lr * group0_lr / group0_initial_lr``), whatever the
  scheduler is;
- ``optimizer.pt`` and ``scheduler.pt`` hold the Trainer's groups only, so a resumed Trainer loads them unchanged;
- the extra group's optimizer state (Adam moments, step counters) is kept here between steps and checkpointed by the
  callback with :meth:`ExtraParameters.state_tensors` / :meth:`ExtraParameters.load_state_tensors`.

Nothing on the optimizer or scheduler instance is replaced; only ``param_groups`` and ``state``, which torch
documents as mutable, change during the step.

Example (a hand-written loop works the same way):

```python
>>> import torch
>>> model, extra = torch.nn.Linear(2, 2), torch.nn.Parameter(torch.ones(3))
>>> optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
>>> seat = ExtraParameters({"extra": extra}, lr=0.01, weight_decay=0.0)
>>> extra.grad = torch.ones(3)
>>> seat.join(optimizer); optimizer.step(); seat.leave(optimizer)
>>> len(optimizer.param_groups), round(float(extra[0]), 4)
(1, 0.99)

```
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (or the optimizer itself)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class ExtraParameters:
    """Parameters that take a seat in a live optimizer for each ``optimizer.step()``, and only then.

    Args:
        named_params (`dict[str, nn.Parameter]`): the parameters, by the names their state is saved under.
        lr (`float`, *optional*): their base learning rate, scaled by the schedule of group 0; defaults to group 0's
            current learning rate.
        weight_decay (`float`, *optional*): defaults to group 0's.
    """

    def __init__(
        self, named_params: dict[str, nn.Parameter], lr: float | None = None, weight_decay: float | None = None
    ) -> None:
        self.named_params = dict(named_params)
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[str, dict[str, Any]] = {}
        self._group: dict[str, Any] | None = None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.named_params.values())

    def join(self, optimizer: Any) -> None:
        """Add the group (with the saved optimizer state) to ``optimizer``; call before ``optimizer.step()``."""
        optimizer = inner_optimizer(optimizer)
        if self._group is not None:
            return
        template = optimizer.param_groups[0]
        group = {key: value for key, value in template.items() if key not in ("params", "initial_lr")}
        if self.lr is not None:
            initial = template.get("initial_lr")
            group["lr"] = self.lr * (template["lr"] / initial if initial else 1.0)
        if self.weight_decay is not None:
            group["weight_decay"] = self.weight_decay
        group["params"] = self.parameters()
        optimizer.param_groups.append(group)
        steps_on_device = bool(template.get("capturable") or template.get("fused"))
        for name, param in self.named_params.items():
            if name in self.state:
                entries = self.state[name]
                if steps_on_device:
                    entries = {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in entries.items()}
                optimizer.state[param] = entries
        self._group = group

    def leave(self, optimizer: Any) -> None:
        """Take the group and its optimizer state out again; call after ``optimizer.step()``."""
        optimizer = inner_optimizer(optimizer)
        if self._group is None:
            return
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group is not self._group]
        for name, param in self.named_params.items():
            if param in optimizer.state:
                self.state[name] = optimizer.state.pop(param)
        self._group = None

    def zero_grad(self) -> None:
        """The Trainer zeroes the model's gradients only."""
        for param in self.named_params.values():
            param.grad = None

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
