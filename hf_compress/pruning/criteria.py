"""Pruning criteria: how important each weight is. Higher score = more important = pruned last.

A criterion (registry kind ``pruning_criterion``) is a class following :class:`PruningCriterion`. The callback
drives it through these calls, in this order:

1. ``criterion = Criterion(seed=config.seed, **config.criterion_kwargs)``
2. ``criterion.attach(modules)`` at train begin: ``{name: module}`` of the targeted Linear/Conv1D modules. Register
   forward/backward hooks here if the criterion needs activations; keep the handles.
3. ``criterion.on_gradients(modules)`` once per optimizer step, in ``on_pre_optimizer_step`` (gradients of the whole
   accumulated step, after clipping, before the optimizer uses them) -- only when ``uses_gradients`` is True.
4. Before each mask update: when ``data_dependent`` is True, every tensor of ``criterion.local_statistics()`` is
   all-reduced in place (mean over ranks) so all ranks choose the same masks; then ``criterion.scores(name, module)``
   gives a float ``[out, in]`` tensor per module (Conv1D weights are transposed for you by ``weight_out_in``).
   Then, when ``updates_weights`` is True, ``criterion.update_weights(name, module, keep)`` for every module.
5. ``state_dict()`` / ``load_state_dict(tensors)`` on save / resume (tensors only, stored as safetensors).
6. ``detach()`` at train end: remove every hook.

A third-party criterion in the style of Wanda (``|W| * ||X||_2``) only needs forward hooks:

```python
>>> import torch
>>> from hf_compress.pruning.criteria import PruningCriterion, weight_out_in
>>> class InputNormCriterion(PruningCriterion):
...     data_dependent = True
...     def attach(self, modules):
...         super().attach(modules)
...         self.sq = {n: torch.zeros(weight_out_in(m.weight, m).shape[1]) for n, m in modules.items()}
...         for name, module in modules.items():
...             self.hooks.append(module.register_forward_hook(self._hook(name)))
...     def _hook(self, name):
...         def hook(module, inputs, output):
...             x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
...             self.sq[name] += (x * x).sum(0)
...         return hook
...     def local_statistics(self):
...         return self.sq
...     def scores(self, name, module):
...         return weight_out_in(module.weight, module).detach().abs().float() * self.sq[name].sqrt()
...     def state_dict(self):
...         return dict(self.sq)
...     def load_state_dict(self, tensors):
...         self.sq.update(tensors)
>>> # in a plugin's register(registry): registry.register("pruning_criterion", "input_norm", InputNormCriterion)

```
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from hf_compress.distributed import full_tensor, local_tensor, shard_like
from hf_compress.targets import in_out_features, weight_out_in


def full_weight_out_in(module: nn.Module) -> torch.Tensor:
    """The module's whole weight as ``[out, in]`` (gathered when FSDP2-sharded), detached."""
    return weight_out_in(full_tensor(module.weight.detach()), module)


class PruningCriterion:
    """Base class of pruning criteria; see the module docstring for the call order.

    Attributes:
        data_dependent (`bool`): scores depend on each rank's data (activations, gradients of local batches); the
            callback then all-reduces :meth:`local_statistics` (mean) before choosing masks.
        uses_gradients (`bool`): the callback calls :meth:`on_gradients` once per optimizer step.
        updates_weights (`bool`): after each mask update (masks agreed across ranks), the callback calls
            :meth:`update_weights` for every module, e.g. to compensate removed weights (``sparsegpt``).
    """

    data_dependent: bool = False
    uses_gradients: bool = False
    updates_weights: bool = False

    def __init__(self, *, seed: int = 0, **options) -> None:
        type(self).check_options(**options)
        self.seed = seed
        self.modules: dict[str, nn.Module] = {}
        self.hooks: list = []

    @classmethod
    def check_options(cls, **options) -> None:
        """Raise a ValueError for ``criterion_kwargs`` this criterion does not take; ``PruningConfig`` calls it
        without building the criterion. Criteria with options override it (and call it from ``__init__``)."""
        if options:
            raise ValueError(f"criterion_kwargs: {cls.__name__} takes no options; got {', '.join(sorted(options))}")

    def attach(self, modules: dict[str, nn.Module]) -> None:
        self.modules = dict(modules)

    def on_gradients(self, modules: dict[str, nn.Module]) -> None:
        """Read ``module.weight.grad`` of each module (once per optimizer step)."""

    def update_weights(self, name: str, module: nn.Module, keep: torch.Tensor) -> None:
        """Change the module's weights given its new ``[out, in]`` keep mask (only when ``updates_weights``)."""

    def local_statistics(self) -> dict[str, torch.Tensor]:
        """Tensors that depend on this rank's data; all-reduced in place (mean) before masks are chosen."""
        return {}

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define scores(name, module), the [out, in] importance scores")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        return None

    def detach(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()


class MagnitudeCriterion(PruningCriterion):
    """``|w|``: the smallest weights go first."""

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        return full_weight_out_in(module).abs().float()


class MovementCriterion(PruningCriterion):
    """First-order movement pruning (Sanh et al., 2020): scores accumulate ``-w * dL/dw`` over optimizer steps.

    Weights moving away from zero score high; weights pulled towards zero score low and are pruned. Gradients are
    read once per optimizer step (the accumulated gradient under gradient accumulation).
    """

    data_dependent = True
    uses_gradients = True

    def __init__(self, *, seed: int = 0, **options) -> None:
        super().__init__(seed=seed, **options)
        self.accumulated: dict[str, torch.Tensor] = {}

    def attach(self, modules: dict[str, nn.Module]) -> None:
        super().attach(modules)
        for name, module in modules.items():
            if name not in self.accumulated:
                in_features, out_features = in_out_features(module)
                self.accumulated[name] = torch.zeros(
                    (out_features, in_features), dtype=torch.float32, device=module.weight.device
                )

    def on_gradients(self, modules: dict[str, nn.Module]) -> None:
        for name, module in modules.items():
            grad = module.weight.grad
            if grad is None:
                continue
            # in the storage layout; under FSDP2 only this rank's shard, added into its rows of the full score
            # (the others stay zero here, so the all-reduced mean is the score over world_size: same ranking)
            update = local_tensor(module.weight.detach()).float() * local_tensor(grad.detach()).float()
            storage_view = weight_out_in(self.accumulated[name], module)
            shard_like(storage_view, module.weight).sub_(update)

    def local_statistics(self) -> dict[str, torch.Tensor]:
        return self.accumulated

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        return self.accumulated[name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.accumulated)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            device = self.accumulated[name].device if name in self.accumulated else value.device
            self.accumulated[name] = value.float().to(device).clone()


class RandomCriterion(PruningCriterion):
    """Random scores (a baseline), fixed per module from ``seed`` and the module name: same on every rank and resume."""

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        in_features, out_features = in_out_features(module)
        return torch.rand((out_features, in_features), generator=generator)


BUILTIN_CRITERIA: dict[str, type[PruningCriterion]] = {
    "magnitude": MagnitudeCriterion,
    "movement": MovementCriterion,
    "random": RandomCriterion,
}


def check_criterion_scores(criterion_name: str, name: str, module: nn.Module, scores) -> None:
    """A criterion's scores for ``module`` must be a finite float tensor of the weight's ``[out, in]`` shape.

    Checked at each module's first mask update, so a plugin that returns the storage layout of a GPT-2 Conv1D
    (``[in, out]``), a flattened tensor or NaN fails there, naming the plugin and its distribution.

    Raises:
        ValueError: naming the criterion, its distribution and module, and the module, with what was expected.
    """
    in_features, out_features = in_out_features(module)
    problem = None
    if not torch.is_tensor(scores):
        problem = f"returned {type(scores).__name__}, not a torch.Tensor"
    elif tuple(scores.shape) != (out_features, in_features):
        layout = (
            " (the Conv1D storage layout; use weight_out_in)"
            if tuple(scores.shape) == (in_features, out_features)
            else ""
        )
        problem = f"returned shape {list(scores.shape)}{layout}; expected the weight's [out, in] = [{out_features}, {in_features}]"
    elif scores.dtype == torch.bool or scores.is_complex():
        problem = f"returned dtype {scores.dtype}; expected real-valued (float) scores"
    elif not bool(torch.isfinite(scores).all()):
        count = int((~torch.isfinite(scores)).sum())
        problem = f"returned {count} non-finite (NaN or inf) values"
    if problem is None:
        return
    from hf_compress.registry import get_registry

    try:
        component = get_registry().component("pruning_criterion", criterion_name)
        origin = f"from {component.distribution} {component.version} ({component.module})"
    except ValueError:
        origin = "(not in the registry)"
    raise ValueError(f"criterion {criterion_name!r} {origin}: scores(name={name!r}) {problem}")
