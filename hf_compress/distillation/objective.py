"""The distillation objective as a pure function of outputs: ``(student_outputs, teacher_outputs, batch) -> losses``.

:class:`DistillationObjective` holds no Trainer state. ``DistillationCallback`` calls it from a forward hook on the
student; a hand-written loop calls it directly:

```python
>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from hf_compress import DistillationConfig
>>> from hf_compress.distillation.objective import DistillationObjective
>>> config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
>>> student, teacher = GPT2LMHeadModel(config), GPT2LMHeadModel(config).eval()
>>> objective = DistillationObjective(DistillationConfig(alpha=0.5, temperature=2.0), causal=True)
>>> batch = {"input_ids": torch.randint(0, 64, (2, 8))}
>>> batch["labels"] = batch["input_ids"]
>>> with torch.no_grad():
...     teacher_outputs = teacher(**batch)
>>> losses = objective(student(**batch), teacher_outputs, batch)
>>> losses.loss.backward()
>>> sorted(losses.to_logs())
['distill_loss', 'task_loss']

```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_compress.distillation.config import DistillationConfig
from hf_compress.distillation.models import field_of
from hf_compress.distillation.positions import counted_positions, select
from hf_compress.registry import get_registry


@dataclass
class DistillationLosses:
    """What :class:`DistillationObjective` returns; ``loss`` is what to backpropagate."""

    loss: torch.Tensor
    distill_loss: torch.Tensor
    logit_loss: torch.Tensor
    hidden_loss: torch.Tensor
    task_loss: torch.Tensor | None
    normalized_globally: bool = False

    def to_logs(self) -> dict[str, float]:
        values = {"distill_loss": float(self.distill_loss)}
        if self.task_loss is not None:
            values["task_loss"] = float(self.task_loss)
        return values


class DistillationObjective:
    """``alpha * (logit_loss + hidden_weight * hidden_loss) + (1 - alpha) * task_loss`` from model outputs.

    Args:
        config (`DistillationConfig`): the losses, temperature, weights and ``layer_map``.
        causal (`bool`, *optional*, defaults to `True`): whether positions shift like a causal LM's labels.
        projections (`LayerProjections`, *optional*): maps student hidden widths onto the teacher's.

    The batch gives ``labels`` / ``shift_labels`` / ``attention_mask`` (which positions count) and optionally
    ``num_items_in_batch`` (the Trainer's token count of the accumulated batch, to normalise like the task loss).
    """

    def __init__(self, config: DistillationConfig, causal: bool = True, projections: nn.Module | None = None) -> None:
        self.config = config
        self.causal = causal
        self.projections = projections
        self.loss_fn = get_registry().get("distillation_loss", config.loss)
        self.hidden_loss_fn = get_registry().get("distillation_loss", config.hidden_loss)

    def __call__(self, student_outputs: Any, teacher_outputs: Any, batch: dict) -> DistillationLosses:
        student_logits = field_of(student_outputs, "logits")
        teacher_logits = field_of(teacher_outputs, "logits")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"DistillationCallback: teacher logits {tuple(teacher_logits.shape)} and student logits "
                f"{tuple(student_logits.shape)} differ in shape on the same inputs"
            )
        mask, shifted = self.positions(batch, student_logits.shape[:-1], student_logits.device, self.causal)
        num_items = batch.get("num_items_in_batch")
        normalizer = num_items if num_items is not None else mask.sum().clamp(min=1)
        logit_loss = self.logit_loss(
            select(student_logits, mask, shifted), select(teacher_logits, mask, shifted), normalizer
        )
        hidden_loss = self.hidden_loss(
            batch,
            field_of(student_outputs, "hidden_states"),
            teacher_outputs,
            mask,
            shifted,
            normalizer,
            student_logits.shape[:-1],
        )
        distill_loss = logit_loss + self.config.hidden_weight * hidden_loss
        task_loss = field_of(student_outputs, "loss")
        alpha = self.config.alpha
        if task_loss is None and alpha < 1:
            raise ValueError(f"DistillationCallback: the student returned no task loss to mix with alpha={alpha}")
        combined = distill_loss if task_loss is None else alpha * distill_loss + (1.0 - alpha) * task_loss
        return DistillationLosses(
            combined, distill_loss, logit_loss, hidden_loss, task_loss, normalized_globally=num_items is not None
        )

    @staticmethod
    def positions(batch: dict, shape, device, causal: bool) -> tuple[torch.Tensor, bool]:
        return counted_positions(
            shape,
            labels=batch.get("labels"),
            attention_mask=batch.get("attention_mask"),
            shift_labels=batch.get("shift_labels"),
            causal=causal,
            device=device,
        )

    def fused(self, outputs: dict, teacher_outputs: Any, backbone_output: Any, lm_head: nn.Module, batch: dict):
        """TRL's fused LM head returns per-token ``log_probs`` (no logits) and the trainer builds the loss from them.

        The student logits are rebuilt at the counted positions from the backbone's last hidden state, and the
        distillation sum is spread over those positions of ``log_probs``, so the trainer's ``-sum(log_probs) / N``
        becomes ``(1 - alpha) * task_loss + alpha * distillation_sum / N`` with its own N. Returns the new
        ``log_probs``, the new ``loss`` (or None) and the losses to log.
        """
        log_probs = outputs.get("log_probs")
        hidden = field_of(backbone_output, "last_hidden_state")
        mask, shifted = self.positions(batch, hidden.shape[:-1], hidden.device, True)
        if log_probs is None or tuple(log_probs.shape) != tuple(mask.shape):
            raise ValueError("DistillationCallback: unexpected fused-LM-head outputs (log_probs missing or misshaped)")
        student_logits = lm_head(select(hidden, mask, shifted))
        teacher_logits = select(field_of(teacher_outputs, "logits"), mask, shifted)
        logit_sum = self.logit_loss(student_logits, teacher_logits, 1.0)
        hidden_sum = self.hidden_loss(
            batch, field_of(backbone_output, "hidden_states"), teacher_outputs, mask, shifted, 1.0, hidden.shape[:-1]
        )
        distill_sum = logit_sum + self.config.hidden_weight * hidden_sum
        alpha = self.config.alpha
        counted = mask.sum().clamp(min=1)
        spread = (distill_sum / counted) * mask.to(log_probs.dtype)
        new_log_probs = (1.0 - alpha) * log_probs - alpha * spread
        label_mask = outputs.get("label_mask")
        label_count = (label_mask.sum() if label_mask is not None else counted).clamp(min=1)
        num_items = batch.get("num_items_in_batch")
        divisor = num_items if num_items is not None else label_count
        task_loss = outputs.get("loss")
        new_loss = None if task_loss is None else (1.0 - alpha) * task_loss + alpha * distill_sum / divisor
        logit_mean, hidden_mean = logit_sum / label_count, hidden_sum / label_count
        losses = DistillationLosses(
            new_loss if new_loss is not None else new_log_probs,
            logit_mean + self.config.hidden_weight * hidden_mean,
            logit_mean,
            hidden_mean,
            task_loss,
        )
        return new_log_probs, new_loss, losses

    def logit_loss(self, student: torch.Tensor, teacher: torch.Tensor, normalizer) -> torch.Tensor:
        return self.loss_fn(
            student.float(),
            teacher.float(),
            normalizer,
            temperature=self.config.temperature,
            **self.config.loss_options(),
        )

    def hidden_loss(self, batch, student_hidden, teacher_outputs, mask, shifted, normalizer, positions_shape):
        layer_map = self.config.layer_map
        if not layer_map:
            return torch.zeros((), device=mask.device)
        teacher_hidden = field_of(teacher_outputs, "hidden_states")
        if not student_hidden or not teacher_hidden:
            raise ValueError(
                "DistillationCallback: hidden states were requested but the student or teacher returned none"
            )
        first = student_hidden[0]
        if tuple(first.shape[:-1]) != tuple(positions_shape):
            # sequence-level logits (classifiers): average over the real tokens of the micro-batch instead
            mask, shifted = counted_positions(
                first.shape[:-1], attention_mask=batch.get("attention_mask"), device=mask.device
            )
            normalizer = mask.sum().clamp(min=1)
        total = torch.zeros((), device=mask.device)
        for student_layer, teacher_layer in layer_map.items():
            student_states = select(student_hidden[student_layer], mask, shifted)
            teacher_states = select(teacher_hidden[teacher_layer], mask, shifted).float()
            if self.projections is not None:
                student_states = self.projections(student_layer, student_states.float())
            total = total + self.hidden_loss_fn(student_states.float(), teacher_states, normalizer)
        return total
