"""Skew Kullback-Leibler distillation losses (Ko et al. 2024, "DistiLLM").

``skew_kl``: ``KL(p || a*p + (1-a)*q)`` and ``skew_reverse_kl``: ``KL(q || a*q + (1-a)*p)``, with ``p`` the teacher,
``q`` the student and ``a`` the skew (``loss_kwargs={"skew": 0.1}``). Mixing a little of one distribution into the
other keeps the divergence and its gradient bounded where the student puts almost no mass, which makes early
distillation steps stable. ``a=0`` is the plain (reverse) KL.

```python
from hf_compress import DistillationCallback, DistillationConfig

DistillationCallback(teacher, DistillationConfig(loss="skew_kl", loss_kwargs={"skew": 0.1}))
```
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["register", "skew_kl", "skew_reverse_kl"]
__version__ = "0.1.0"


def _check_skew(skew: float) -> float:
    if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0.0 <= skew < 1.0:
        raise ValueError(f"loss_kwargs.skew must be a number in [0, 1); got {skew!r}")
    return float(skew)


def _skewed_kl(log_p: torch.Tensor, log_q: torch.Tensor, skew: float) -> torch.Tensor:
    """Per-row ``KL(p || skew*p + (1-skew)*q)`` from log-probabilities, computed in log space."""
    if skew == 0.0:
        log_mix = log_q
    else:
        log_mix = torch.logaddexp(log_p + math.log(skew), log_q + math.log1p(-skew))
    return (log_p.exp() * (log_p - log_mix)).sum(dim=-1)


def skew_kl(student, teacher, normalizer, *, temperature: float = 1.0, skew: float = 0.1, **options) -> torch.Tensor:
    """Skew forward KL ``KL(teacher || skew*teacher + (1-skew)*student)``, scaled by ``temperature**2``."""
    skew = _check_skew(skew)
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
    return _skewed_kl(log_p, log_q, skew).sum() * temperature**2 / normalizer


def skew_reverse_kl(
    student, teacher, normalizer, *, temperature: float = 1.0, skew: float = 0.1, **options
) -> torch.Tensor:
    """Skew reverse KL ``KL(student || skew*student + (1-skew)*teacher)``, scaled by ``temperature**2``."""
    skew = _check_skew(skew)
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
    return _skewed_kl(log_q, log_p, skew).sum() * temperature**2 / normalizer


def register(registry) -> None:
    registry.register("distillation_loss", "skew_kl", skew_kl)
    registry.register("distillation_loss", "skew_reverse_kl", skew_reverse_kl)
