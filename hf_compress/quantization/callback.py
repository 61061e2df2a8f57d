"""Quantization-aware training as a Trainer callback: :class:`QATCallback`.

The callback wires Trainer events to :func:`~hf_compress.quantization.qat.prepare_qat_` (hooks that fake-quantize
each targeted Linear/Conv1D for its forward only; modules, parameters and ``state_dict`` keys never change) and
:func:`~hf_compress.quantization.qat.convert_`. At train end the weights are baked onto the grid and every quantized module carries
``module.hf_compress_qparams`` (a :class:`~hf_compress.quantization.grid.WeightQuantParams`); activation
quantization stays active through ``module.hf_compress_act_qparams`` until export.

Events:

- ``on_train_begin``: checks (bits, group_size against every module's in_features, layer types for activations,
  ``start`` / ``freeze_observers`` once fractions are resolved) raise a ValueError before any step; quantizers are
  built; on resume, scales, observers and that group's optimizer state come back from ``hf_compress_qat.*``.
- ``on_step_begin``: fake quantization starts at ``start`` (scales initialised from the weights then); static
  observers freeze at ``freeze_observers`` (averaged across ranks first).
- ``on_pre_optimizer_step`` / ``on_optimizer_step``: gradients of learned scales are averaged across DDP ranks (they
  are not DDP parameters) and the scales take their seat in the Trainer's optimizer for the step
  (:class:`~hf_compress.trainer.ExtraParameters`), following group 0's schedule.
- ``on_step_end`` / ``on_epoch_end`` (when the Trainer is about to save) and ``on_save``: quantizer / observer
  tensors and the learned-scale optimizer state go to ``hf_compress_qat.*`` in the checkpoint, staged before the
  Trainer writes it (:mod:`~hf_compress.trainer.resume_checks`); ``optimizer.pt`` and ``scheduler.pt`` keep only the
  Trainer's own groups, so a resumed Trainer loads them before this callback runs. A resume with a missing state or
  a changed config is refused.
- ``on_train_end``: weights are baked and hooks removed (``convert_``), ``model.config.hf_compress_quantization`` set
  (a PeftModel's quantized base is written beside the adapter). After a failed run :func:`hf_compress.release`
  removes the hooks and the scales' optimizer group without baking.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

from hf_compress import distributed
from hf_compress.config_base import resolve_step
from hf_compress.distributed import all_reduce_mean_, unwrap_model
from hf_compress.peft_support.saved_base import record_compressed_base, save_at_train_end
from hf_compress.quantization.config import QATConfig
from hf_compress.quantization.qat import (  # noqa: F401
    FakeQuantizedModel,
    prepare_qat_,
    quantize_input_pre_hook,
    release_,
    remove_activation_quantization,
)
from hf_compress.trainer import ExtraParameters, cleanup, resume_folder
from hf_compress.trainer.resume_checks import (
    check_resumed_config,
    commit_state,
    discard_staging,
    load_resume_state,
    stage_state,
)

logger = logging.getLogger(__name__)

STATE_NAME = "hf_compress_qat"


class QATCallback(TrainerCallback):
    """Fake-quantizes the targeted weights (and optionally input activations) while the Trainer trains.

    Args:
        config (`QATConfig`, *optional*): what to quantize and when; defaults to int8 symmetric per-channel weights.

    After training the model's targeted weights lie exactly on the grid, each quantized module has a plain attribute
    ``hf_compress_qparams`` and ``model.config.hf_compress_quantization`` describes what was applied; pass the model
    to :func:`hf_compress.export`.

    Example:

    ```python
    from transformers import Trainer
    from hf_compress import QATCallback, QATConfig

    trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
    trainer.add_callback(QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=32, start=0.1)))
    trainer.train()
    model.model.layers[0].mlp.down_proj.hf_compress_qparams.scale.shape  # [out, in // 32]
    ```
    """

    def __init__(self, config: QATConfig | None = None) -> None:
        self.config = config if config is not None else QATConfig()
        self.qat: FakeQuantizedModel | None = None
        self.start_step = 0
        self.freeze_step: int | None = None
        self._scales: ExtraParameters | None = None
        self._optimizer = None  # the one the scales join for each step (left again after a failure)
        self._model = None
        self._staged_step: int | None = None

    @property
    def modules(self) -> dict:
        return self.qat.modules if self.qat is not None else {}

    @property
    def active(self) -> bool:
        return self.qat is not None and self.qat.active

    @property
    def observers_frozen(self) -> bool:
        return self.qat is not None and self.qat.observers_frozen

    def describe(self) -> dict:
        """The plain dict stored as ``model.config.hf_compress_quantization`` at train end."""
        return self.qat.describe()

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._teardown()
        model = unwrap_model(model)
        self._model = model
        cleanup.track(model, self, state)  # first: it releases what a failed earlier run left on this model
        config = self.config
        total_steps = state.max_steps
        self.start_step = resolve_step(config.start, total_steps)
        if self.start_step >= total_steps:
            raise ValueError(
                f"start resolves to step {self.start_step}, at or after the end of training (max_steps={total_steps}); "
                "allowed: a step before max_steps or a fraction below 1.0"
            )
        self.freeze_step = None
        if config.activations == "per_tensor":
            self.freeze_step = resolve_step(config.freeze_observers, total_steps)
            if self.freeze_step <= self.start_step:
                raise ValueError(
                    f"freeze_observers resolves to step {self.freeze_step}, not after start (step {self.start_step}); "
                    "the activation observers need at least one step to observe"
                )
        release_(model)
        self.qat = prepare_qat_(model, config, active=False)
        named = {f"{index}": param for index, param in enumerate(self.qat.learnable_parameters())}
        if named:
            self._check_optimizer(optimizer)
            lr = config.scale_learning_rate or args.learning_rate
            self._scales = ExtraParameters(named, lr=lr, weight_decay=0.0)
        try:
            self._restore(resume_folder(args, state))
        except BaseException:
            self._teardown()
            raise
        logger.info(
            "hf_compress QAT: %d modules, %s, starting at step %d",
            len(self.qat.modules),
            config.weight_spec(),
            self.start_step,
        )

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.qat is None:
            return
        if not self.qat.active and state.global_step >= self.start_step:
            self.qat.activate()
            if self._scales is not None:
                self._scales.state = {}  # fresh scales, fresh optimizer state
            logger.info("hf_compress QAT: fake quantization active from step %d", state.global_step)
        if self.freeze_step is not None and not self.qat.observers_frozen and state.global_step >= self.freeze_step:
            self.qat.freeze_observers()
            logger.info("hf_compress QAT: activation observers frozen at step %d", state.global_step)
        if self._scales is not None and optimizer is not None:
            self._optimizer = optimizer
            self._scales.join(optimizer)  # seated until on_optimizer_step, so every callback of the step sees them

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._scales is None:
            return
        # Learned quantization parameters are not DDP parameters: average their gradients here.
        params = self._scales.parameters()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_mean_(flat)
        offset = 0
        for param in params:
            param.grad = flat[offset : offset + param.numel()].view_as(param).clone()
            offset += param.numel()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self._scales is not None:
            self._scales.leave(optimizer)
            self._scales.zero_grad()

    def on_step_end(self, args, state, control, **kwargs):
        if self.qat is not None and stage_state(args, state, control, STATE_NAME, self._state_to_save):
            self._staged_step = state.global_step

    on_epoch_end = on_step_end  # an epoch-end save is decided (should_save) before this event too

    def on_save(self, args, state, control, **kwargs):
        if self.qat is not None:
            commit_state(args, state, STATE_NAME, self._staged_step == state.global_step, self._state_to_save)
        self._staged_step = None

    def _state_to_save(self) -> tuple[dict[str, torch.Tensor], dict]:
        if self.freeze_step is not None and not self.qat.observers_frozen:
            self.qat.synchronize_observers()
        tensors = self.qat.state_tensors()
        optimizer_values = {}
        if self._scales is not None:
            optimizer_tensors, optimizer_values = self._scales.state_tensors()
            # "optimizer.<index>.<state key>", the layout of earlier checkpoints
            tensors.update({f"optimizer.{k.replace('::', '.', 1)}": v for k, v in optimizer_tensors.items()})
        meta = {
            "config": self.config.to_dict(),
            "active": self.qat.active,
            "observers_frozen": self.qat.observers_frozen,
            "modules": list(self.qat.modules),
            "optimizer_values": optimizer_values,
        }
        return tensors, meta

    def on_train_end(self, args, state, control, **kwargs):
        if self.qat is None:
            return
        if not self.qat.active:
            logger.warning(
                "hf_compress QAT: training ended before fake quantization started (start=%r); the weights are "
                "quantized post-training instead",
                self.config.start,
            )
        self.qat.convert()
        release_(self.qat.model)
        self._scales = None
        discard_staging(args)
        cleanup.untrack(self._model, self)
        modules = {name: record.module for name, record in self.qat.modules.items()}
        if self._model is not None and record_compressed_base(self._model, "qat", modules, None, self.describe()):
            save_at_train_end(args, self._model)  # PEFT: the adapter alone would not carry the quantized base

    def release_after_failure(self) -> None:
        """After a failed run (:func:`hf_compress.release`): hooks and the scales' optimizer group removed, the real
        weight Parameter back in place; the weights stay as trained, not baked onto the grid."""
        self._teardown()

    # ------------------------------------------------------------------ set-up
    def _check_optimizer(self, optimizer) -> None:
        if not distributed.gradients_visible_to_callbacks(
            record.module.weight for record in self.qat.modules.values()
        ):
            self._teardown()
            raise ValueError(
                f"quantizer={self.config.quantizer!r} learns scales, whose gradients must be averaged across ranks "
                "before the step; DeepSpeed ZeRO steps inside backward, before any callback event. Use "
                "quantizer='int' under DeepSpeed"
            )
        inner = optimizer
        while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):  # accelerate's wrapper
            inner = inner.optimizer
        if not isinstance(inner, torch.optim.Optimizer):
            self._teardown()
            raise ValueError(
                f"quantizer={self.config.quantizer!r} learns scales, which must join the Trainer's torch optimizer; "
                f"got {type(optimizer).__name__}. Allowed: a torch.optim.Optimizer (or use quantizer='int')"
            )

    def _restore(self, folder: str | None) -> None:
        """Load quantizer, observer and learned-scale optimizer state from a resumed checkpoint."""
        if folder is None:
            return
        stored = load_resume_state(folder, STATE_NAME, "QAT")
        if stored is None:
            return
        tensors, meta = stored
        check_resumed_config(folder, "QAT", meta.get("config"), self.config.to_dict())
        if meta["modules"] != list(self.qat.modules):
            modules = list(self.qat.modules)
            raise ValueError(
                f"the checkpoint {folder} was trained with QAT on modules {meta['modules'][:4]}..., but targets/exclude "
                f"now select {modules[:4]}...; use the same targets to resume"
            )
        self.qat.load_state_tensors(tensors)
        self.qat.active = bool(meta["active"])
        self.qat.observers_frozen = bool(meta["observers_frozen"])
        if self._scales is not None:
            optimizer_tensors = {
                k.removeprefix("optimizer.").replace(".", "::", 1): v
                for k, v in tensors.items()
                if k.startswith("optimizer.")
            }
            self._scales.load_state_tensors(optimizer_tensors, meta.get("optimizer_values", {}))

    def _teardown(self) -> None:
        if self.qat is not None:
            release_(self.qat.model)
            self.qat.remove_hooks()
        if self._scales is not None and self._optimizer is not None:
            self._scales.leave(self._optimizer)  # seated by a step that never reached on_optimizer_step
        self._scales = None
        self._optimizer = None
