"""`DistillationCallback`: knowledge distillation inside an unmodified Trainer script.

A TrainerCallback cannot change the loss, and ``compute_loss_func`` never sees the inputs, so the callback hooks the
(unwrapped) student instead: in training mode, a forward pre-hook runs the teacher on the same inputs under
``no_grad`` (first, so its activations are freed before the student's graph is built), and a forward hook replaces
``outputs.loss`` with ``alpha * distillation_loss + (1 - alpha) * task_loss``. The Trainer (or a
subclass such as TRL's ``SFTTrainer``) then backpropagates that loss as if the model had computed it. Hooks are
removed at train end (or by :func:`hf_compress.release` after a failed run), so the model the user gets back
behaves like a normal model. The config (and learned projections) are checkpointed: a resume with a missing state
or a changed config is refused (:mod:`~hf_compress.trainer.resume_checks`).

Example:

```python
from transformers import Trainer
from hf_compress import DistillationCallback, DistillationConfig

trainer = Trainer(model=student, args=args, train_dataset=train_dataset)
trainer.add_callback(DistillationCallback(teacher, DistillationConfig(loss="kl", temperature=2.0, alpha=0.5)))
trainer.train()  # log_history gets distill_loss, task_loss, distill_weight, task_weight
```

Normalisation: the distillation sum over counted positions is divided by what the task loss is divided by: the
``num_items_in_batch`` the Trainer passes to the model (the token count of the whole accumulated batch, so gradient
accumulation is exact), else the number of counted positions in the micro-batch (a micro-batch mean, which the
Trainer then divides by the accumulation steps, like the task loss).

Where the Trainer computes the task loss itself (``label_smoothing_factor > 0`` or ``compute_loss_func``), the model's
``outputs.loss`` is never used, so the callback raises a ValueError: at train start for label smoothing, before the
first optimizer step for ``compute_loss_func`` (it checks that the loss it produced reached ``backward()``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from hf_compress import distributed
from hf_compress.distillation.config import DistillationConfig
from hf_compress.distillation.forward_hooks import StudentForwardHooks
from hf_compress.distillation.models import (  # noqa: F401 (load_teacher, probe_model, is_causal_lm: public here too)
    STUDENT_ONLY_INPUTS,
    ModelFacts,
    check_models,
    check_not_own_teacher,
    device_of,
    field_of,
    is_causal_lm,
    load_teacher,
    prepare_teacher,
    probe_model,
    teacher_inputs,
    transformers_model,
)
from hf_compress.distillation.objective import DistillationObjective
from hf_compress.distillation.projections import LayerProjections
from hf_compress.distributed import all_reduce_mean_, unwrap_model, world_size
from hf_compress.trainer import ExtraParameters, add_to_logs, cleanup, resume_folder
from hf_compress.trainer.resume_checks import (
    check_resumed_config,
    commit_state,
    discard_staging,
    load_resume_state,
    stage_state,
)

logger = logging.getLogger(__name__)

STATE_NAME = "distillation_projections"
LOGGED_WEIGHTS = ("distill_weight", "task_weight")


class DistillationCallback(StudentForwardHooks, TrainerCallback):
    """Trains the Trainer's model (the student) towards a teacher's outputs.

    Args:
        teacher (`PreTrainedModel` or `str`): the teacher, or a path / hub name loaded with ``from_pretrained``.
            At train start it is put in eval mode, frozen (``requires_grad=False``), cast to
            ``config.teacher_dtype`` if set, and moved once to the student's device. It is never wrapped by DDP.
        config (`DistillationConfig`, *optional*): losses and weights; defaults to ``DistillationConfig()``.

    Logs (into ``log_history`` and the reporters): ``distill_loss`` (logit loss plus weighted hidden loss),
    ``task_loss``, ``distill_weight`` (alpha), ``task_weight`` (1 - alpha) and, with ``layer_map``, ``hidden_loss``
    and ``hidden_weight``.

    Raises:
        ValueError: at train start (before the first step) for different teacher / student vocabularies, a
            ``layer_map`` index out of range, a hidden-state loss on a model that returns no hidden states, or
            label smoothing; at the first step when no labels reach the model while ``alpha < 1`` or when the
            Trainer ignores ``outputs.loss`` (``compute_loss_func``).
    """

    def __init__(self, teacher: nn.Module | str | os.PathLike, config: DistillationConfig | None = None) -> None:
        if config is None:
            config = DistillationConfig()
        if not isinstance(config, DistillationConfig):
            raise ValueError(f"config must be a DistillationConfig; got {type(config).__name__}")
        self.config = config
        self.teacher = load_teacher(teacher, config.torch_teacher_dtype)
        self.objective = DistillationObjective(config)
        self.loss_fn, self.hidden_loss_fn = self.objective.loss_fn, self.objective.hidden_loss_fn
        self.projections: LayerProjections | None = None
        self._seat: ExtraParameters | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._hooks: list[Any] = []
        self._causal = False
        self._teacher_accepts: set[str] | None = None
        self._capture_backbone = False
        self._backbone_output: Any = None
        self._teacher_outputs: Any = None
        self._trainer_loss_type: str | None = None
        self._losses_awaiting_backward = 0
        self._micro_totals: torch.Tensor | None = None  # distill, hidden, task of this optimizer step's micro-batches
        self._micro_batches = 0
        self._micro_global = False
        self._log_totals: torch.Tensor | None = None
        self._log_steps = 0
        self._saw_task_loss = False
        self._resumed_state: tuple[dict[str, torch.Tensor], dict] | None = None
        self._staged_step: int | None = None
        self._student: nn.Module | None = None

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if getattr(args, "label_smoothing_factor", 0.0):
            raise ValueError(
                "DistillationCallback does not support label_smoothing_factor > 0: the Trainer then computes the task "
                "loss from the logits itself and ignores the combined loss the callback puts in outputs.loss. "
                "Set label_smoothing_factor=0."
            )
        if model is None:
            raise ValueError("DistillationCallback needs the Trainer's model at train start")
        student = unwrap_model(model)
        self._student = student
        cleanup.track(student, self, state)  # first: it releases what a failed earlier run left on this model
        check_not_own_teacher(student, self.teacher)
        folder = resume_folder(args, state)
        self._resumed_state = load_resume_state(folder, STATE_NAME, "distillation")
        if self._resumed_state is not None:
            check_resumed_config(folder, "distillation", self._resumed_state[1].get("config"), self.config.to_dict())
        self._trainer_loss_type = getattr(args, "loss_type", None)  # TRL's SFTConfig: "nll" or "dft"
        device = device_of(student)
        self._teacher_accepts = prepare_teacher(self.teacher, device, self.config.torch_teacher_dtype)
        self._causal = is_causal_lm(student) if self.config.causal_shift is None else self.config.causal_shift
        self.objective.causal = self._causal
        self._check_models(student, device)
        if self.projections is not None:
            if not distributed.gradients_visible_to_callbacks(student.parameters()):
                raise ValueError(
                    "layer_map: its learned projections join the optimizer in on_pre_optimizer_step, which DeepSpeed "
                    "ZeRO reaches only after its own step; under DeepSpeed map layers of equal width or use logit "
                    "losses only"
                )
            if optimizer is None:
                raise ValueError(
                    "DistillationCallback needs the Trainer's optimizer at train start to train projections"
                )
            self._attach_projections(optimizer)
        self._register_hooks(student)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._losses_awaiting_backward > 0:
            self._remove_hooks()
            raise ValueError(
                "DistillationCallback: the combined loss it put in the model's outputs never reached backward(), so "
                "the Trainer computed the training loss elsewhere (e.g. a compute_loss_func, or a Trainer subclass "
                "that ignores outputs.loss). Distillation would silently do nothing; remove compute_loss_func or "
                "let compute_loss use the model's outputs.loss."
            )
        if self._seat is not None and self._optimizer is not None:
            params = [p for p in self.projections.parameters() if p.grad is not None]
            for param in params:
                all_reduce_mean_(param.grad)  # the projections live outside DDP
            if params and args.max_grad_norm and args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            self._seat.join(self._optimizer)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._seat is not None and self._optimizer is not None:
            self._seat.leave(self._optimizer)
            self._seat.zero_grad()

    def on_step_end(self, args, state, control, **kwargs):
        self.on_epoch_end(args, state, control)
        if self._micro_totals is None or self._micro_batches == 0:
            return
        if self._micro_global:
            # normalised by the whole accumulated batch; the Trainer scales by the process count the same way
            scale = world_size() if getattr(args, "average_tokens_across_devices", False) else 1
            step_values = self._micro_totals * scale
        else:
            step_values = self._micro_totals / self._micro_batches
        self._log_totals = step_values if self._log_totals is None else self._log_totals + step_values
        self._log_steps += 1
        self._micro_totals, self._micro_batches, self._micro_global = None, 0, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self._log_steps == 0 or self._log_totals is None:
            return
        averaged = all_reduce_mean_(self._log_totals.detach().float().clone()) / self._log_steps
        distill, hidden, task = (float(value) for value in averaged.tolist())
        values = {"distill_loss": distill}
        if self._saw_task_loss:  # pure distillation on unlabelled data has none
            values["task_loss"] = task
        values.update({"distill_weight": self.config.alpha, "task_weight": 1.0 - self.config.alpha})
        if self.config.layer_map:
            values["hidden_loss"] = hidden
            values["hidden_weight"] = self.config.hidden_weight
        add_to_logs(self, args, state, logs, values)
        self._log_totals, self._log_steps, self._saw_task_loss = None, 0, False

    def on_epoch_end(self, args, state, control, **kwargs):  # a save is decided (should_save) before this event
        if self._hooks and stage_state(args, state, control, STATE_NAME, self._state_to_save):
            self._staged_step = state.global_step

    def on_save(self, args, state, control, **kwargs):
        if self._hooks:
            commit_state(args, state, STATE_NAME, self._staged_step == state.global_step, self._state_to_save)
        self._staged_step = None

    def _state_to_save(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The config (checked on resume) and, with learned projections, their weights and optimizer state."""
        tensors: dict[str, torch.Tensor] = {}
        state_values: dict = {}
        if self._seat is not None:
            state_tensors, state_values = self._seat.state_tensors()
            tensors = {f"param::{name}": param for name, param in self._seat.named_params.items()}
            tensors.update({f"optimizer::{key}": value for key, value in state_tensors.items()})
        meta = {
            "config": self.config.to_dict(),
            "layer_map": {str(k): v for k, v in (self.config.layer_map or {}).items()},
            "optimizer_values": state_values,
        }
        return tensors, meta

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hooks()
        discard_staging(args)
        cleanup.untrack(self._student, self)

    def release_after_failure(self) -> None:
        """After a failed run (:func:`hf_compress.release`): the student's hooks removed, projections out of the
        optimizer; a forward with labels returns the model's own loss again."""
        self._remove_hooks()
        if self._seat is not None and self._optimizer is not None:
            self._seat.leave(self._optimizer)
        self._losses_awaiting_backward = 0

    # ------------------------------------------------------------------ setup
    def _check_models(self, student: nn.Module, device: torch.device) -> None:
        widths = check_models(student, self.teacher, self.config, device)
        if widths is None:
            return
        if self.projections is None:
            self.projections = LayerProjections(widths, seed=0).to(device)
        self.objective.projections = self.projections
        self.projections.requires_grad_(True)

    def _attach_projections(self, optimizer) -> None:
        named = dict(self.projections.named_parameters())
        if not named:
            return
        if getattr(optimizer, "scaler", None) is not None:
            raise ValueError(
                "DistillationCallback: learned layer projections (layer_map between layers of different widths) are "
                "not supported with fp16 gradient scaling; use bf16=True or matching widths"
            )
        self._optimizer = optimizer
        if self._seat is None:
            self._seat = ExtraParameters(named)
        saved = self._resumed_state
        if saved is None:
            return
        tensors, meta = saved
        with torch.no_grad():
            for name, param in named.items():
                param.copy_(tensors[f"param::{name}"].to(device=param.device, dtype=param.dtype))
        state_tensors = {
            key.removeprefix("optimizer::"): value for key, value in tensors.items() if key.startswith("optimizer::")
        }
        self._seat.load_state_tensors(state_tensors, meta.get("optimizer_values", {}))
