"""Wanda for hf_compress: prune by weight magnitude times input-activation norm (Sun et al. 2023).

Registers:

- pruning criterion ``wanda``: ``PruningConfig(criterion="wanda")`` scores each weight by ``|W_ij| * ||X_j||_2``,
  the input-activation norms being collected by forward hooks during training;
- callback ``wanda_one_shot``: prunes once at train begin from calibration batches of the train dataloader;
- :func:`prune_one_shot`: the same one-shot pruner, outside any Trainer.
"""

from __future__ import annotations

import importlib

__all__ = ["WandaCriterion", "WandaOneShotCallback", "prune_one_shot", "register"]
__version__ = "0.1.0"

_EXPORTS = {
    "WandaCriterion": "hf_compress_wanda.criterion",
    "WandaOneShotCallback": "hf_compress_wanda.one_shot",
    "prune_one_shot": "hf_compress_wanda.one_shot",
}


def __getattr__(name: str):  # imported on first use, so plugin discovery stays cheap
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_compress_wanda' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def register(registry) -> None:
    from hf_compress.plugin_api import lazy

    registry.register("pruning_criterion", "wanda", lazy("hf_compress_wanda.criterion:WandaCriterion"))
    registry.register("callback", "wanda_one_shot", lazy("hf_compress_wanda.one_shot:WandaOneShotCallback"))
