"""The Wanda score ``|W| * ||X||_2`` as an hf_compress pruning criterion."""

from __future__ import annotations

import torch
from torch import nn

from hf_compress import plugin_api


class WandaCriterion(plugin_api.PruningCriterion):
    """``score_ij = |W_ij| * ||X_j||_2``, where ``X_j`` is input feature ``j`` over every token seen.

    Forward hooks add each input's squared activations per feature while the criterion is attached (training
    batches under ``PruningCallback``, calibration batches under :func:`prune_one_shot`). The sums depend on each
    rank's data, so they are all-reduced before masks are chosen (``data_dependent``); a mean over ranks ranks
    weights exactly like the global sum.
    """

    data_dependent = True

    def __init__(self, *, seed: int = 0, **options) -> None:
        super().__init__(seed=seed, **options)
        self.squared_norms: dict[str, torch.Tensor] = {}

    def attach(self, modules: dict[str, nn.Module]) -> None:
        super().attach(modules)
        for name, module in modules.items():
            in_features, _ = plugin_api.in_out_features(module)
            if name not in self.squared_norms:
                self.squared_norms[name] = torch.zeros(in_features, dtype=torch.float32, device=module.weight.device)
            self.hooks.append(module.register_forward_hook(self._accumulate(name)))

    def _accumulate(self, name: str):
        def hook(module, inputs, output):
            activations = inputs[0].detach()
            flat = activations.reshape(-1, activations.shape[-1]).float()
            self.squared_norms[name].add_((flat * flat).sum(dim=0).to(self.squared_norms[name].device))

        return hook

    def local_statistics(self) -> dict[str, torch.Tensor]:
        return self.squared_norms

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        weight = plugin_api.full_weight_out_in(module).abs().float()
        return weight * self.squared_norms[name].to(weight.device).sqrt().unsqueeze(0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.squared_norms)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            self.squared_norms[name] = value.float().clone()
