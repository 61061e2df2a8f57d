"""The student's forward hooks behind :class:`~hf_compress.distillation.callback.DistillationCallback`: in training
mode a pre-hook runs the teacher on the same inputs, and a hook replaces ``outputs.loss`` with the distillation loss
(or, with TRL's fused LM head, fills ``outputs.log_probs``); both record the micro-batch's losses for logging.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_compress.distillation.models import field_of, teacher_inputs, transformers_model
from hf_compress.distillation.objective import DistillationLosses


class StudentForwardHooks:
    """Mixin of :class:`~hf_compress.distillation.callback.DistillationCallback`: registers, runs and removes the
    student's forward hooks. Uses the callback's ``config``, ``teacher``, ``objective`` and the hook and loss state
    its ``__init__`` sets (``_hooks``, ``_teacher_outputs``, ``_micro_totals``, ...)."""

    def _register_hooks(self, student: nn.Module) -> None:
        self._remove_hooks()
        self._hooks.append(student.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        self._hooks.append(student.register_forward_hook(self._after_forward, with_kwargs=True))
        backbone = getattr(transformers_model(student), "base_model", None)
        if isinstance(backbone, nn.Module) and backbone is not student:
            self._hooks.append(backbone.register_forward_hook(self._capture_backbone_output))

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._capture_backbone, self._backbone_output, self._teacher_outputs = False, None, None

    # ------------------------------------------------------------------ forward hooks
    def _distilling(self, module: nn.Module) -> bool:
        return module.training and torch.is_grad_enabled() and self.config.alpha > 0

    def _before_forward(self, module, args, kwargs):
        if not self._distilling(module):
            return None
        labels, shift_labels = kwargs.get("labels"), kwargs.get("shift_labels")
        if labels is None and shift_labels is None and self.config.alpha < 1:
            self._fail(
                f"DistillationCallback: no labels reached the student's forward, so there is no task loss to mix with "
                f"alpha={self.config.alpha}. Either the dataset has no labels (use alpha=1.0 for pure distillation) or "
                "the Trainer computes the loss itself (compute_loss_func / label smoothing), which is not supported."
            )
        # the teacher runs first, so its activations are freed before the student's graph is built
        self._teacher_outputs = self._run_teacher(args, kwargs)
        self._capture_backbone = bool(kwargs.get("fused_lm_head"))
        self._backbone_output = None
        if self.config.layer_map and not kwargs.get("output_hidden_states"):
            return args, {**kwargs, "output_hidden_states": True}
        return None

    def _capture_backbone_output(self, module, args, output):
        if self._capture_backbone:
            self._backbone_output = output

    def _after_forward(self, module, args, kwargs, outputs):
        if not self._distilling(module):
            return None
        backbone_output, self._backbone_output, self._capture_backbone = self._backbone_output, None, False
        if not isinstance(outputs, dict):
            self._fail(
                f"DistillationCallback needs the student to return a ModelOutput; got {type(outputs).__name__} "
                "(is return_dict=False set?)"
            )
        teacher_outputs, self._teacher_outputs = self._teacher_outputs, None
        if teacher_outputs is None:
            teacher_outputs = self._run_teacher(args, kwargs)
        if kwargs.get("fused_lm_head"):
            return self._distill_fused(module, kwargs, outputs, teacher_outputs, backbone_output)
        return self._distill(kwargs, outputs, teacher_outputs)

    def _run_teacher(self, args, kwargs) -> Any:
        teacher_kwargs = teacher_inputs(kwargs, self._teacher_accepts, hidden_states=bool(self.config.layer_map))
        with torch.no_grad():
            outputs = self.teacher(*args, **teacher_kwargs)
        if field_of(outputs, "logits") is None:
            self._fail(f"DistillationCallback: the teacher ({type(self.teacher).__name__}) returned no logits")
        return outputs

    def _distill(self, kwargs, outputs, teacher_outputs):
        try:
            losses = self.objective(outputs, teacher_outputs, kwargs)
        except ValueError:
            self._remove_hooks()
            raise
        outputs["loss"] = losses.loss
        self._await_backward(losses.loss)
        self._record(losses, normalized_globally=losses.normalized_globally)
        return outputs

    def _distill_fused(self, module, kwargs, outputs, teacher_outputs, backbone_output):
        """TRL's fused LM head: see :meth:`DistillationObjective.fused`."""
        if self._trainer_loss_type not in (None, "nll"):
            self._fail(
                f"DistillationCallback supports TRL's fused LM head with loss_type='nll' only; got "
                f"loss_type={self._trainer_loss_type!r}"
            )
        if backbone_output is None or field_of(backbone_output, "last_hidden_state") is None:
            self._fail("DistillationCallback: could not capture the student's backbone output for the fused LM head")
        lm_head = transformers_model(module).get_output_embeddings()
        try:
            log_probs, loss, losses = self.objective.fused(outputs, teacher_outputs, backbone_output, lm_head, kwargs)
        except ValueError:
            self._remove_hooks()
            raise
        outputs["log_probs"] = log_probs
        if loss is not None:
            outputs["loss"] = loss
        self._await_backward(log_probs)
        self._record(losses, normalized_globally=False)
        return outputs

    # ------------------------------------------------------------------ bookkeeping
    def _await_backward(self, loss: torch.Tensor) -> None:
        if not loss.requires_grad:
            return
        self._losses_awaiting_backward += 1

        def reached_backward(grad):
            self._losses_awaiting_backward -= 1
            return grad

        loss.register_hook(reached_backward)

    def _record(self, losses: DistillationLosses, *, normalized_globally: bool) -> None:
        logit_loss, hidden_loss, task_loss = losses.logit_loss, losses.hidden_loss, losses.task_loss
        device = logit_loss.device
        self._saw_task_loss = self._saw_task_loss or task_loss is not None
        task = task_loss.detach().float().to(device) if task_loss is not None else torch.zeros((), device=device)
        distill = logit_loss.detach().float() + self.config.hidden_weight * hidden_loss.detach().float()
        values = torch.stack([distill, hidden_loss.detach().float().to(device), task])
        self._micro_totals = values if self._micro_totals is None else self._micro_totals + values
        self._micro_batches += 1
        self._micro_global = normalized_globally

    def _fail(self, message: str) -> None:
        self._remove_hooks()
        raise ValueError(message)
