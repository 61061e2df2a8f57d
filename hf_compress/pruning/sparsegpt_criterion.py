"""The ``sparsegpt`` pruning criterion: gradual pruning whose every mask update also reconstructs the layer outputs.

``PruningConfig(criterion="sparsegpt")`` collects each targeted layer's input Hessian ``H = sum x x^T`` from the
training batches seen since the previous mask update (forward hooks), ranks weights by the Optimal Brain Surgeon
saliency ``w^2 / [H^-1]_qq``, and, once ``PruningCallback`` has chosen the masks (pattern, scope and schedule as for
any criterion), zeroes the newly removed weights *and* updates the remaining ones so the layer's outputs on those
inputs change as little as possible (:func:`hf_compress.pruning.reconstruction.reconstruct_pruned` with the mask
given). With a gradual schedule this is a training-aware SparseGPT: each step prunes a little, compensates, and the
optimizer recovers before the next.

```python
PruningCallback(PruningConfig(target_sparsity=0.7, schedule="cubic", start=0, end=0.4, frequency=30,
                              criterion="sparsegpt"))
```

The Hessians cost one ``[in, in]`` float32 matrix per layer (kept across checkpoints) and a matrix product per
layer per forward pass; layers fed the same input tensor (q/k/v, gate/up) share it. A mask update before any batch
was seen (``start=0`` with a schedule that prunes at step 0) has no Hessian: it falls back to magnitude, without
reconstruction, and says so. :class:`hf_compress.OneShotPruningCallback` is the one-shot form.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hf_compress.config_base import check_number
from hf_compress.distributed import full_tensor
from hf_compress.pruning.criteria import PruningCriterion
from hf_compress.pruning.masks import write_weight_
from hf_compress.pruning.reconstruction import input_gram, inverse_hessian_factor, reconstruct_pruned
from hf_compress.targets import in_out_features, weight_out_in

logger = logging.getLogger(__name__)


class SharedInputGram:
    """:func:`input_gram` of the most recent input tensor, computed once for all the layers it feeds (q/k/v,
    gate/up). The result is shared: add it into an accumulator, never change it in place."""

    def __init__(self) -> None:
        self._input: torch.Tensor | None = None
        self._gram: tuple[torch.Tensor, int] | None = None

    def __call__(self, activations: torch.Tensor) -> tuple[torch.Tensor, int]:
        if activations is not self._input:
            self._input, self._gram = activations, input_gram(activations)
        return self._gram

    def clear(self) -> None:
        self._input = self._gram = None


class SparseGPTCriterion(PruningCriterion):
    """OBS saliency for ranking, SparseGPT reconstruction after every mask update (see the module docstring).

    Options (``PruningConfig(criterion_kwargs={...})``): ``dampening`` (ridge as a fraction of the mean Hessian
    diagonal, default 0.01) and ``block_size`` (columns updated together, default 128).
    """

    data_dependent = True
    updates_weights = True

    @classmethod
    def check_options(cls, *, dampening: float = 0.01, block_size: int = 128, **options) -> None:
        super().check_options(**options)
        check_number("criterion_kwargs.dampening", dampening, low=0.0)
        check_number("criterion_kwargs.block_size", block_size, low=1, integer=True)

    def __init__(self, *, seed: int = 0, dampening: float = 0.01, block_size: int = 128, **options) -> None:
        super().__init__(seed=seed, dampening=dampening, block_size=block_size, **options)
        self.dampening, self.block_size = float(dampening), block_size
        self.hessians: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, torch.Tensor] = {}
        self._gram = SharedInputGram()
        self._warned = False

    def attach(self, modules: dict[str, nn.Module]) -> None:
        super().attach(modules)
        for name, module in modules.items():
            in_features, _ = in_out_features(module)
            device = module.weight.device
            if name not in self.hessians:
                self.hessians[name] = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
                self.tokens[name] = torch.zeros((), dtype=torch.float32, device=device)
            self.hooks.append(module.register_forward_hook(self._accumulate(name)))

    def _accumulate(self, name: str):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled() and not module.training:
                return  # evaluation passes are not training data
            product, count = self._gram(inputs[0])
            self.hessians[name].add_(product.to(self.hessians[name].device))
            self.tokens[name].add_(count)

        return hook

    def detach(self) -> None:
        super().detach()
        self._gram.clear()

    def local_statistics(self) -> dict[str, torch.Tensor]:
        return {**{f"h.{k}": v for k, v in self.hessians.items()}, **{f"n.{k}": v for k, v in self.tokens.items()}}

    def _seen(self, name: str) -> bool:
        if float(self.tokens[name]) > 0:
            return True
        if not self._warned:
            logger.warning(
                "hf_compress: criterion 'sparsegpt' has no input statistics yet (a mask update before any training "
                "batch); this update ranks by magnitude and does not reconstruct. Start pruning a few steps in."
            )
            self._warned = True
        return False

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        weight = weight_out_in(full_tensor(module.weight.detach()), module).float()
        if not self._seen(name):
            return weight.abs()
        factor, _ = inverse_hessian_factor(self.hessians[name], self.dampening)
        inverse_diagonal = (factor * factor).sum(dim=0)  # diag(H^-1) = column norms of its upper Cholesky factor
        return (weight.double().pow(2) / inverse_diagonal.unsqueeze(0)).float()

    @torch.no_grad()
    def update_weights(self, name: str, module: nn.Module, keep: torch.Tensor) -> None:
        """Zero what ``keep`` removes and compensate with the kept weights; then start fresh statistics."""
        if self._seen(name):
            weight = weight_out_in(full_tensor(module.weight.detach()), module).float()
            rebuilt, _ = reconstruct_pruned(
                weight, self.hessians[name], block_size=self.block_size, dampening=self.dampening, keep=keep
            )
            write_weight_(module, rebuilt)
        self.hessians[name].zero_()
        self.tokens[name].zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.local_statistics()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            kind, name = key.split(".", 1)
            (self.hessians if kind == "h" else self.tokens)[name] = value.float().clone()
