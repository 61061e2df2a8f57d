"""``PruningCallback``: gradual pruning inside an unmodified ``transformers.Trainer``.

Event wiring only: each event calls :class:`~hf_compress.pruning.gradual.GradualPruner`, which also runs in a
hand-written loop.

- ``on_init_end`` / ``on_train_begin``: checks that need the model (targets, N:M fit, head layout, end >= start once
  fractions are resolved) raise a ValueError before any step; masks start from the model's zeros (kept forever);
  on resume the masks, criterion state and schedule position come back from the checkpoint folder.
- ``on_pre_optimizer_step``: the criterion reads gradients (movement); optionally gradients of pruned weights are
  zeroed.
- ``on_optimizer_step``: after optimizer step ``k`` (``k = state.global_step + 1``), masks are updated when ``k`` is
  a mask-update step, and re-applied to the weights, so no pruned weight is non-zero in any forward pass.
- ``on_log``: ``sparsity``, ``sparsity_target``, ``sparsity_layer_min``, ``sparsity_layer_max``.
- ``on_step_end`` / ``on_epoch_end`` (when the Trainer is about to save) and ``on_save``: masks (whole, bit-packed:
  1 bit per weight) and criterion tensors as safetensors, the rest as JSON, staged before the Trainer writes
  the checkpoint and moved into it in ``on_save`` (:mod:`~hf_compress.trainer.resume_checks`); a resume with a
  missing state or a changed config is refused.
- ``on_train_end``: masks are baked into the weights and the criterion's hooks removed; the model is a plain
  transformers model (a PeftModel's compressed base is written beside the adapter). After a failed run
  :func:`hf_compress.release` does the same.

Under DDP every rank computes the masks from identical weights and all-reduced criterion statistics; a checksum of
the masks is compared across ranks after each update and, should they ever differ, rank 0's masks are broadcast
(counted in ``mask_divergences``). Under DeepSpeed ZeRO-2/3 the same holds; scores are read one group at a time
inside a gather (:func:`hf_compress.distributed.gathered_weights`) and every mask write also reaches the optimizer's
fp32 master. Under ZeRO-3 (and FSDP2) a rank keeps only its partition's piece of each mask, like the weights;
reading :attr:`masks` gathers them whole, so read it on every rank. DeepSpeed steps inside backward, so options that
read gradients are refused there.

```python
from hf_compress import PruningCallback, PruningConfig

pruning = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="cubic", end=0.8))
trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[pruning])
trainer.train()
pruning.masks["transformer.h.0.mlp.c_fc"]  # bool [out, in], True = kept
```
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import TrainerCallback

from hf_compress import distributed
from hf_compress.peft_support.saved_base import record_compressed_base, save_at_train_end
from hf_compress.pruning.config import PruningConfig
from hf_compress.pruning.criteria import PruningCriterion
from hf_compress.pruning.gradual import GradualPruner, _Group, mask_checksum, resolve_groups  # noqa: F401
from hf_compress.trainer import cleanup
from hf_compress.trainer.checkpoints import resume_folder
from hf_compress.trainer.logs import add_to_logs
from hf_compress.trainer.resume_checks import (
    check_resumed_config,
    commit_state,
    discard_staging,
    load_resume_state,
    stage_state,
)

STATE_NAME = "hf_compress_pruning"


class PruningCallback(TrainerCallback):
    """Gradual pruning as a ``TrainerCallback``.

    Args:
        config (`PruningConfig`): what to prune, how much and when.

    Attributes:
        masks (`dict[str, torch.Tensor]`): module name -> bool ``[out, in]`` keep mask (True = kept); filled at train
            begin and kept after training (QAT and LoRA reuse them). Under ZeRO-3 / FSDP2 reading it gathers every
            mask whole (a collective).
        modules (`dict[str, nn.Module]`): the pruned modules by name.
        last_update_step (`int | None`): optimizer step of the last mask update.
        mask_divergences (`int`): mask updates after which ranks disagreed and rank 0's masks were broadcast.

    ```python
    >>> from hf_compress import PruningCallback, PruningConfig
    >>> callback = PruningCallback(PruningConfig(target_sparsity=0.5))
    >>> callback.masks
    {}

    ```
    """

    def __init__(self, config: PruningConfig) -> None:
        if not isinstance(config, PruningConfig):
            raise ValueError(f"config must be a PruningConfig; got {type(config).__name__}")
        self.config = config
        self.pattern = config.normalized_pattern
        self.pruner: GradualPruner | None = None
        self._model: nn.Module | None = None
        self._staged_step: int | None = None

    # the pruner's state, readable from the callback as before
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self.pruner.masks if self.pruner is not None else {}

    @property
    def modules(self) -> dict[str, nn.Module]:
        return self.pruner.modules if self.pruner is not None else {}

    @property
    def criterion(self) -> PruningCriterion | None:
        return self.pruner.criterion if self.pruner is not None else None

    @property
    def groups(self) -> list[_Group]:
        return self.pruner.groups if self.pruner is not None else []

    @property
    def start_step(self) -> int:
        return self.pruner.start_step if self.pruner is not None else 0

    @property
    def end_step(self) -> int:
        return self.pruner.end_step if self.pruner is not None else 0

    @property
    def initial_sparsity(self) -> float:
        return self.pruner.initial_sparsity if self.pruner is not None else 0.0

    @property
    def last_update_step(self) -> int | None:
        return self.pruner.last_update_step if self.pruner is not None else None

    @property
    def mask_divergences(self) -> int:
        return self.pruner.mask_divergences if self.pruner is not None else 0

    def scheduled_target(self, step: int) -> float:
        """The schedule's sparsity for the global target at ``step`` (what ``sparsity_target`` logs)."""
        return self.pruner.scheduled_target(step)

    def sparsity_logs(self, step: int) -> dict[str, float]:
        """``sparsity``, ``sparsity_target``, ``sparsity_layer_min`` and ``sparsity_layer_max``."""
        return self.pruner.sparsity_logs(step)

    # ---------------------------------------------------------------- Trainer events
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:  # fail at Trainer(...) already, without touching the model
            resolve_groups(distributed.unwrap_model(model), self.config)
        return control

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("PruningCallback needs the model in on_train_begin (add it to a transformers.Trainer)")
        model = distributed.unwrap_model(model)
        self._model = model
        cleanup.track(model, self, state)  # first: it releases what a failed earlier run left on this model
        if self.pruner is not None and self.pruner.active:  # a second train() on the same callback
            self.pruner.criterion.detach()
        folder = resume_folder(args, state)
        saved = load_resume_state(folder, STATE_NAME, "pruning")
        if saved is not None:
            check_resumed_config(folder, "pruning", saved[1].get("config"), self.config.to_dict())
        self.pruner = GradualPruner(model, self.config, state.max_steps, step=state.global_step, saved=saved)
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.pruner is not None:
            self.pruner.before_optimizer_step()
        return control

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.pruner is not None:
            self.pruner.update(state.global_step + 1)  # global_step counts this step only after on_optimizer_step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self.pruner is None:
            return control
        add_to_logs(self, args, state, logs, self.sparsity_logs(state.global_step))
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self._active() and stage_state(args, state, control, STATE_NAME, self.pruner.state):
            self._staged_step = state.global_step
        return control

    on_epoch_end = on_step_end  # an epoch-end save is decided (should_save) before this event too

    def on_save(self, args, state, control, **kwargs):
        if self._active():
            commit_state(args, state, STATE_NAME, self._staged_step == state.global_step, self.pruner.state)
        self._staged_step = None
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.pruner is None:
            return control
        self.pruner.finish()
        discard_staging(args)
        cleanup.untrack(self._model, self)
        if self._model is not None and record_compressed_base(self._model, "pruning", self.modules, self.masks):
            save_at_train_end(args, self._model)  # PEFT: the adapter alone would not carry the pruning
        return control

    def release_after_failure(self) -> None:
        """After a failed run (:func:`hf_compress.release`): masks applied, the criterion's hooks removed."""
        if self.pruner is not None:
            self.pruner.finish()

    def _active(self) -> bool:
        return self.pruner is not None and self.pruner.active
