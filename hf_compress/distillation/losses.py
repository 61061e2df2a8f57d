"""Distillation losses: pure functions on positions that were already selected (masked and shifted).

Every loss, built-in or plugin, has the same signature, so any of them can be named in ``DistillationConfig.loss``:

```python
def my_loss(student: torch.Tensor, teacher: torch.Tensor, normalizer, *, temperature: float = 1.0, **options):
    # student, teacher: [N, V] logits (or [N, D] hidden states) at the N positions that count, same dtype.
    # normalizer: what the sum over positions is divided by (the Trainer's token count for the task loss).
    # options: DistillationConfig.loss_kwargs plus ``beta`` (= jsd_beta); ignore the ones you don't use.
    # returns: a scalar tensor, sum over positions of the per-position loss / normalizer.
    ...

```

A plugin registers it with ``registry.register("distillation_loss", "my_loss", my_loss)``.

Example:

```python
>>> import torch
>>> from hf_compress.distillation.losses import kl
>>> logits = torch.randn(4, 10)
>>> float(kl(logits, logits, normalizer=4, temperature=2.0))
0.0

```
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Normalizer = torch.Tensor | float | int


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    return F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


def _kl_per_position(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) for each row, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


class _ForwardKLSum(torch.autograd.Function):
    """``sum_rows KL(softmax(teacher / T) || softmax(student / T))`` with a one-pass backward (no grad to teacher).

    The gradient is ``(softmax(student / T) - softmax(teacher / T)) / T``, so the backward needs neither autograd's
    log-softmax graph nor extra copies of the ``[N, V]`` tensors: about half the memory traffic.
    """

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        log_student = _log_probs(student, temperature)
        log_teacher = _log_probs(teacher, temperature)
        teacher_probs = log_teacher.exp()
        ctx.save_for_backward(log_student, teacher_probs)
        ctx.temperature = temperature
        return (teacher_probs * (log_teacher - log_student)).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        log_student, teacher_probs = ctx.saved_tensors
        grad = log_student.exp().sub_(teacher_probs).mul_(grad_output / ctx.temperature)
        return grad, None, None


def kl(
    student: torch.Tensor, teacher: torch.Tensor, normalizer: Normalizer, *, temperature: float = 1.0, **options
) -> torch.Tensor:
    """Forward KL(teacher || student) on temperature-softened distributions, scaled by ``temperature**2``.

    The ``T**2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al. 2015, "Distilling
    the Knowledge in a Neural Network"). No gradient flows to ``teacher``.
    """
    return (
        _ForwardKLSum.apply(student.float(), teacher.float().detach(), float(temperature))
        * temperature**2
        / normalizer
    )


def reverse_kl(
    student: torch.Tensor, teacher: torch.Tensor, normalizer: Normalizer, *, temperature: float = 1.0, **options
) -> torch.Tensor:
    """Reverse KL(student || teacher), mode-seeking (as in MiniLLM), scaled by ``temperature**2``."""
    per_position = _kl_per_position(_log_probs(student, temperature), _log_probs(teacher, temperature))
    return per_position.sum() * temperature**2 / normalizer


def jsd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    normalizer: Normalizer,
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    **options,
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence (Agarwal et al. 2024, GKD), scaled by ``temperature**2``.

    With ``M = beta * teacher + (1 - beta) * student``: ``beta * KL(teacher || M) + (1 - beta) * KL(student || M)``.
    ``beta`` must lie in (0, 1); ``beta=0.5`` is the symmetric Jensen-Shannon divergence.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd_beta must be a number in (0, 1); got {beta!r}")
    log_s = _log_probs(student, temperature)
    log_t = _log_probs(teacher, temperature)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0)
    per_position = beta * _kl_per_position(log_t, log_m) + (1.0 - beta) * _kl_per_position(log_s, log_m)
    return per_position.sum() * temperature**2 / normalizer


def mse(
    student: torch.Tensor, teacher: torch.Tensor, normalizer: Normalizer, *, temperature: float = 1.0, **options
) -> torch.Tensor:
    """Mean squared error over the last dimension (logits or hidden states), summed over positions; no temperature."""
    per_position = (student.float() - teacher.float()).pow(2).mean(dim=-1)
    return per_position.sum() / normalizer


def cosine(
    student: torch.Tensor, teacher: torch.Tensor, normalizer: Normalizer, *, temperature: float = 1.0, **options
) -> torch.Tensor:
    """``1 - cosine_similarity`` over the last dimension (meant for hidden states), summed over positions."""
    per_position = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    return per_position.sum() / normalizer


BUILTIN_LOSSES = {"kl": kl, "reverse_kl": reverse_kl, "jsd": jsd, "mse": mse, "cosine": cosine}
