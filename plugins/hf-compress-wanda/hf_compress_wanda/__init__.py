"""Wanda for hf_compress: prune by weight magnitude times input-activation norm (Sun et al. 2023).

Registers:

- pruning criterion ``wanda``: ``PruningConfig(criterion="wanda")`` scores each weight by ``|W_ij| * ||X_j||_2``,
  the input-activation norms being collected by forward hooks during training;
- callback ``wanda_one_shot``: prunes once at train begin from calibration batches of the train dataloader;
- :func:`prune_one_shot`: the same one-shot pruner, outside any Trainer.
"""

from __future__ import annotations

from hf_compress_wanda.criterion import WandaCriterion
from hf_compress_wanda.one_shot import WandaOneShotCallback, prune_one_shot

__all__ = ["WandaCriterion", "WandaOneShotCallback", "prune_one_shot", "register"]
__version__ = "0.1.0"


def register(registry) -> None:
    registry.register("pruning_criterion", "wanda", WandaCriterion)
    registry.register("callback", "wanda_one_shot", WandaOneShotCallback)
