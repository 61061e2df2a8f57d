"""The declared API for plugins: for each registry kind, the interface and the base classes and helpers it needs.

A plugin is a distribution with an entry point in the group ``hf_compress.plugins`` naming ``register(registry)``,
which calls ``registry.register(kind, name, obj)`` (or ``lazy("module:attribute")``, imported on first use);
hf_compress's built-ins register the same way. Import what a
plugin needs from here only: these names keep their signatures, everything else in hf_compress may move. Names are
imported on first use, so ``import hf_compress.plugin_api`` is cheap.

Kinds and what to register:

- ``schedule``: ``fn(progress: float, **context) -> float`` in [0, 1] (fraction of the way from initial to final
  sparsity; ``context`` holds ``initial_sparsity`` and ``final_sparsity``).
- ``pruning_criterion``: a :class:`PruningCriterion` subclass (``scores(name, module)``, optional hooks and
  statistics; ``data_dependent`` statistics are all-reduced for you). It works in gradual pruning
  (``PruningConfig(criterion=...)``) and in one-shot pruning (:func:`prune_one_shot` ``(method=...)``).
- ``pruning_pattern``: see :mod:`hf_compress.pruning.patterns`; helpers :func:`compute_mask`,
  :func:`validate_pattern`, :func:`check_pattern_fits`.
- ``distillation_loss``: ``fn(student, teacher, normalizer, *, temperature=1.0, **options) -> torch.Tensor`` over
  the counted positions ``[N, vocab]`` (a sum divided by ``normalizer``).
- ``quantizer``: a :class:`WeightQuantizer` subclass (``reset``, ``qparams``, ``fake_quantize``, optional
  ``learnable_parameters`` that train with the Trainer's optimizer).
- ``hallucination_checker``: a :class:`HallucinationChecker` subclass.
- ``callback``: a ``TrainerCallback`` class whose keyword arguments are recipe fields (``callbacks: [{name: ...}]``);
  one-shot pruners subclass :class:`CalibratedOneShotCallback`; log with :func:`add_to_logs`, checkpoint with
  :func:`save_state` / :func:`load_state` / :func:`resume_folder`, train extra tensors with
  :class:`ExtraParameters`.
- ``export_format``: an :class:`ExportFormat`.
- ``technique``: a :class:`Technique`, a recipe section of its own (config dataclass built on
  :class:`CompressionConfig` and the shared validators :func:`check_number`, :func:`check_choice`,
  :func:`check_bool`, :func:`check_regex_list`).

Shared helpers: :func:`find_target_modules`, :func:`in_out_features`, :func:`weight_out_in`,
:func:`full_weight_out_in`, :func:`apply_masks_`, :func:`unwrap_model`, :func:`all_reduce_mean_`,
:func:`run_calibration`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CalibratedOneShotCallback": "hf_compress.pruning.one_shot",
    "CompressionConfig": "hf_compress.config_base",
    "ExportFormat": "hf_compress.quantization.export_formats",
    "ExtraParameters": "hf_compress.trainer.extra_parameters",
    "HallucinationChecker": "hf_compress.metrics.checkers.base",
    "PruningCriterion": "hf_compress.pruning.criteria",
    "QuantSpec": "hf_compress.quantization.grid",
    "Technique": "hf_compress.recipes.technique",
    "WeightQuantizer": "hf_compress.quantization.observers",
    "add_to_logs": "hf_compress.trainer.logs",
    "all_reduce_mean_": "hf_compress.distributed",
    "apply_masks_": "hf_compress.pruning.masks",
    "check_bool": "hf_compress.config_base",
    "check_choice": "hf_compress.config_base",
    "check_number": "hf_compress.config_base",
    "check_pattern_fits": "hf_compress.pruning.patterns",
    "check_regex_list": "hf_compress.config_base",
    "checkpoint_dir": "hf_compress.trainer.checkpoints",
    "compute_mask": "hf_compress.pruning.patterns",
    "fake_quantize": "hf_compress.quantization.grid",
    "find_target_modules": "hf_compress.targets",
    "full_weight_out_in": "hf_compress.pruning.criteria",
    "in_out_features": "hf_compress.targets",
    "lazy": "hf_compress.registry",
    "load_state": "hf_compress.trainer.checkpoints",
    "prune_one_shot": "hf_compress.pruning.one_shot",
    "resume_folder": "hf_compress.trainer.checkpoints",
    "run_calibration": "hf_compress.pruning.one_shot",
    "save_state": "hf_compress.trainer.checkpoints",
    "unwrap_model": "hf_compress.distributed",
    "validate_pattern": "hf_compress.pruning.patterns",
    "weight_out_in": "hf_compress.targets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hf_compress.plugin_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
