"""L1 regularisation as a proximal step after each optimizer step: sparsity-inducing, with no change to the loss.

A ``TrainerCallback`` cannot add ``lambda * ||W||_1`` to the loss. It can do the next best thing, which for plain SGD
is exactly the same: the proximal-gradient (ISTA) update. ISTA minimises ``L(W) + lambda * ||W||_1`` by alternating

1. a gradient step on the smooth loss, ``V = W - lr * dL/dW`` (the optimizer's own step), and
2. the proximal operator of ``lr * lambda * ||.||_1``, the soft threshold
   ``W = sign(V) * max(|V| - lr * lambda, 0)``.

This callback applies step 2 in ``on_optimizer_step``, right after ``optimizer.step()``, with the learning rate that
step used (read from the optimizer's param group of each weight, so schedulers and per-group rates are honoured).
Unlike subgradient descent on the penalised loss, which makes weights oscillate around zero, the soft threshold
produces *exact* zeros: weights whose magnitude falls below ``lr * lambda`` become 0.0 and stay there until a gradient
pushes them out again. With Adam/AdamW the update is "decoupled L1", the L1 analogue of AdamW's decoupled weight
decay: the shrinkage per step is ``lr * lambda`` whatever the gradient scale, rather than the adaptive rescaling Adam
would apply to a penalty inside the loss.

The fraction of exact zeros in the targeted weights is written to the Trainer logs as ``l1/zero_fraction``, with the
current shrinkage ``l1/threshold``.

```python
from hf_compress import L1RegularizationCallback, L1RegularizationConfig

trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
trainer.add_callback(L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-3, end=0.8)))
trainer.train()
```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from hf_compress.config_base import CompressionConfig, check_number, check_regex_list, check_step_spec, resolve_step
from hf_compress.distributed import (
    all_reduce_sum_,
    gathered_weights,
    is_sharded,
    local_tensor,
    map_weight_,
    unwrap_model,
)
from hf_compress.targets import find_target_modules
from hf_compress.trainer.logs import add_to_logs


@dataclass
class L1RegularizationConfig(CompressionConfig):
    """What to shrink towards zero, how hard, and when.

    Args:
        l1_lambda (`float`, defaults to 1e-4): strength of the L1 penalty, > 0. Each optimizer step shrinks every
            targeted weight's magnitude by ``l1_lambda * lr`` (weights smaller than that become exactly 0).
        targets (`list[str]`, *optional*): regexes of module names whose weights are regularised. Defaults to every
            ``nn.Linear`` / ``Conv1D`` of the model body (no embeddings, LM head, norms or biases).
        exclude (`list[str]`, *optional*): regexes of module names to leave alone.
        start (`int` or `float`, defaults to 0): first optimizer step with the penalty; an int is a step, a float in
            [0, 1] a fraction of the run's total steps.
        end (`int` or `float`, *optional*): the penalty stops once this many optimizer steps are done (same units
            as ``start``). Defaults to the end of training.

    Example:

    ```python
    >>> from hf_compress import L1RegularizationConfig
    >>> L1RegularizationConfig(l1_lambda=1e-3, targets=[r"mlp"], end=0.5).end
    0.5

    ```
    """

    l1_lambda: float = 1e-4
    targets: list[str] | None = None
    exclude: list[str] | None = None
    start: int | float = 0
    end: int | float | None = None

    def __post_init__(self) -> None:
        # no upper bound: the shrink per step is l1_lambda * lr, so what is large depends on the learning rate
        check_number("l1_lambda", self.l1_lambda, low=0.0, low_inclusive=False)
        self.l1_lambda = float(self.l1_lambda)
        self.targets = check_regex_list("targets", self.targets)
        self.exclude = check_regex_list("exclude", self.exclude)
        check_step_spec("start", self.start)
        if self.end is not None:
            check_step_spec("end", self.end)
            if type(self.start) is type(self.end) and self.end < self.start:
                raise ValueError(f"end must be at or after start ({self.start!r}); got end={self.end!r}")


def soft_threshold_(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """In place, ``weight = sign(weight) * max(|weight| - threshold, 0)``: the proximal operator of ``threshold*|.|``.

    Example:

    ```python
    >>> import torch
    >>> soft_threshold_(torch.tensor([-0.3, -0.05, 0.0, 0.1, 0.5]), 0.1)
    tensor([-0.2000, -0.0000,  0.0000,  0.0000,  0.4000])

    ```
    """
    if threshold <= 0:
        return weight
    with torch.no_grad():
        weight.copy_(F.softshrink(weight, threshold))
    return weight


class L1RegularizationCallback(TrainerCallback):
    """Shrinks the targeted weights by ``l1_lambda * lr`` after every optimizer step (proximal L1, see the module).

    Works with gradient accumulation (one shrink per optimizer step), DDP (every rank applies the same update to the
    same weights) and FSDP2 (each rank shrinks its shard). The model is changed in place, as training changes it;
    nothing else (no hooks, no extra tensors) is attached to it, so the saved model is a plain checkpoint.

    Args:
        config ([`L1RegularizationConfig`]): what to regularise and how strongly.

    Example:

    ```python
    from hf_compress import L1RegularizationCallback, L1RegularizationConfig

    trainer = Trainer(model=model, args=args, train_dataset=train_dataset,
                      callbacks=[L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-3))])
    trainer.train()
    print(trainer.state.log_history[-2]["l1/zero_fraction"])
    ```
    """

    def __init__(self, config: L1RegularizationConfig | None = None) -> None:
        if config is None:
            config = L1RegularizationConfig()
        if not isinstance(config, L1RegularizationConfig):
            raise ValueError(f"config must be an L1RegularizationConfig; got {type(config).__name__}")
        self.config = config
        self.modules: dict[str, nn.Module] = {}
        self._rates: tuple[dict[int, float], float] | None = None
        self.start_step = 0
        self.end_step: int | None = None
        self.last_threshold = 0.0

    # ---------------------------------------------------------------- Trainer events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("L1RegularizationCallback needs the Trainer's model in on_train_begin")
        self.modules = find_target_modules(unwrap_model(model), self.config.targets, self.config.exclude)
        total = state.max_steps
        self.start_step = resolve_step(self.config.start, total)
        self.end_step = None if self.config.end is None else resolve_step(self.config.end, total)
        if self.end_step is not None and self.end_step < self.start_step:
            raise ValueError(
                f"end must be at or after start; they resolve to steps {self.end_step} < {self.start_step} "
                f"of {total} (start={self.config.start!r}, end={self.config.end!r})"
            )

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        # the rates this step will use; read now because DeepSpeed steps its scheduler inside backward
        self._rates = (
            _learning_rates_by_parameter(optimizer),
            _scheduler_learning_rate(lr_scheduler, args, optimizer),
        )

    def on_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        # state.global_step still counts the steps completed before the one the optimizer just took.
        if not self.is_active(state.global_step):
            return
        learning_rates, fallback = self._rates or (
            _learning_rates_by_parameter(optimizer),
            _scheduler_learning_rate(lr_scheduler, args, optimizer),
        )
        if not any(id(module.weight) in learning_rates for module in self.modules.values()):
            learning_rates = {}  # DeepSpeed's optimizer holds flat partitions, not the module weights
        largest = 0.0
        for module in self.modules.values():
            weight = module.weight
            if (learning_rates and id(weight) not in learning_rates) or not weight.requires_grad:
                continue  # frozen: the optimizer does not train it, so it is not regularised either
            threshold = self.config.l1_lambda * learning_rates.get(id(weight), fallback)
            # every copy: FSDP2 shard, ZeRO partition and fp32 master
            map_weight_(weight, lambda values, threshold=threshold: soft_threshold_(values, threshold))
            largest = max(largest, threshold)
        self.last_threshold = largest

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not self.modules or "train_runtime" in logs:  # skip the end-of-training summary
            return
        add_to_logs(
            self, args, state, logs, {"l1/zero_fraction": self.zero_fraction(), "l1/threshold": self.last_threshold}
        )

    # ---------------------------------------------------------------- helpers
    def is_active(self, completed_steps: int) -> bool:
        """Whether the optimizer step taken after ``completed_steps`` steps gets the proximal shrink."""
        if completed_steps < self.start_step:
            return False
        return self.end_step is None or completed_steps < self.end_step

    def zero_fraction(self) -> float:
        """Fraction of exact zeros across the targeted weights (summed over FSDP2 shards)."""
        zeros = torch.zeros((), dtype=torch.float64)
        total = 0
        sharded = False
        with torch.no_grad():
            for module in self.modules.values():
                with gathered_weights([module]):  # ZeRO-3: one module at a time
                    weight = module.weight
                    sharded = sharded or is_sharded(weight)
                    zeros += (local_tensor(weight) == 0).sum().to(zeros.device, torch.float64)
                    total += weight.numel()
        if sharded:
            device = local_tensor(next(iter(self.modules.values())).weight).device
            zeros = all_reduce_sum_(zeros.to(device)).cpu()
        return float(zeros) / total if total else 0.0


def _learning_rates_by_parameter(optimizer) -> dict[int, float]:
    """``id(parameter) -> lr`` of its param group (the rate the step just taken used)."""
    if optimizer is None:
        return {}
    rates = {}
    for group in optimizer.param_groups:
        lr = float(group.get("lr", 0.0))
        for parameter in group["params"]:
            rates[id(parameter)] = lr
    return rates


def _scheduler_learning_rate(lr_scheduler, args, optimizer=None) -> float:
    groups = getattr(optimizer, "param_groups", None) or []
    if groups and "lr" in groups[0]:  # the rate in force (DeepSpeed: its groups hold flat partitions)
        return float(groups[0]["lr"])
    if lr_scheduler is not None and hasattr(lr_scheduler, "get_last_lr"):
        try:
            return float(lr_scheduler.get_last_lr()[0])
        except (IndexError, AttributeError, RuntimeError):
            pass
    return float(args.learning_rate)
