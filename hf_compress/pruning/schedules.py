"""Sparsity schedules: how far along from the initial to the final sparsity the run is at each mask update.

A schedule (registry kind ``schedule``) is a function of the progress ``p`` in ``[0, 1]`` (0 at ``start``, 1 at ``end``)
returning the fraction ``f`` in ``[0, 1]`` of the way from the initial sparsity ``s_i`` to the final one ``s_f``; the
sparsity in force is ``s_i + (s_f - s_i) * f``. A schedule that is defined on sparsities rather than on progress (like
``exponential``) may declare the keyword arguments ``initial_sparsity`` and ``final_sparsity`` (or ``**kwargs``); the
callback passes them only to schedules whose signature accepts them. Plugin schedules are written the same way:

```python
>>> def square(progress: float, **context) -> float:  # context: initial_sparsity, final_sparsity
...     return progress**2
>>> # in a plugin's register(registry): registry.register("schedule", "square", square)
>>> from hf_compress.pruning.schedules import schedule_fraction
>>> schedule_fraction(square, 0.5, initial_sparsity=0.0, final_sparsity=0.8)
0.25

```

Masks are updated every ``frequency`` optimizer steps from ``start`` and once more exactly at ``end``
(:func:`mask_update_steps`), so the run reaches the final sparsity whatever its step count. A mask update "at step k"
happens after ``k`` optimizer steps have completed (``k = 0``: before the first step) and is in force from the next
forward pass on.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from hf_compress.config_base import resolve_step

if TYPE_CHECKING:  # pragma: no cover
    from hf_compress.pruning.config import PruningConfig

logger = logging.getLogger(__name__)

ScheduleFn = Callable[..., float]


# ---------------------------------------------------------------- built-in schedules (progress -> fraction)
def constant(progress: float, **context) -> float:
    """The final sparsity from ``start`` on (prune once at ``start``, then hold)."""
    return 1.0


def one_shot(progress: float, **context) -> float:
    """The initial sparsity until ``end``, then the final sparsity in one go (prune at ``end``, then fine-tune)."""
    return 1.0 if progress >= 1.0 else 0.0


def linear(progress: float, **context) -> float:
    """Straight line from the initial to the final sparsity."""
    return progress


def cubic(progress: float, **context) -> float:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - p)^3``, i.e. the fraction ``1 - (1 - p)^3``."""
    return 1.0 - (1.0 - progress) ** 3


def exponential(progress: float, *, initial_sparsity: float = 0.0, final_sparsity: float = 0.0, **context) -> float:
    """``s = 1 - (1 - s_i) * ((1 - s_f) / (1 - s_i))^p``: the density shrinks by a constant factor per unit of progress.

    As a fraction of the way from ``s_i`` to ``s_f`` this is ``(1 - r^p) / (1 - r)`` with ``r = (1 - s_f) / (1 - s_i)``
    (the linear schedule when ``s_i == s_f``).
    """
    ratio = (1.0 - final_sparsity) / (1.0 - initial_sparsity)
    if math.isclose(ratio, 1.0):
        return progress
    return (1.0 - ratio**progress) / (1.0 - ratio)


def cosine(progress: float, **context) -> float:
    """Half a cosine: slow at both ends, ``(1 - cos(pi * p)) / 2``."""
    return (1.0 - math.cos(math.pi * progress)) / 2.0


BUILTIN_SCHEDULES: dict[str, ScheduleFn] = {
    "constant": constant,
    "one_shot": one_shot,
    "linear": linear,
    "cubic": cubic,
    "exponential": exponential,
    "cosine": cosine,
}


# ---------------------------------------------------------------- evaluation helpers
def _accepts(fn: ScheduleFn, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def schedule_fraction(
    schedule: ScheduleFn, progress: float, *, initial_sparsity: float, final_sparsity: float, name: str = "schedule"
) -> float:
    """Call a schedule at ``progress`` (clamped to [0, 1]); its answer must be a number in [0, 1].

    ``initial_sparsity`` / ``final_sparsity`` are passed only when the schedule's signature accepts them.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    context = {}
    for key, value in (("initial_sparsity", initial_sparsity), ("final_sparsity", final_sparsity)):
        if _accepts(schedule, key):
            context[key] = value
    fraction = float(schedule(progress, **context))
    if not math.isfinite(fraction) or not -1e-6 <= fraction <= 1.0 + 1e-6:
        raise ValueError(
            f"{name}: a schedule must return a fraction in [0, 1]; got {fraction!r} at progress {progress}"
        )
    return min(max(fraction, 0.0), 1.0)


def progress_at(step: int, start: int, end: int) -> float:
    """Progress in [0, 1] after ``step`` optimizer steps of a ramp from ``start`` to ``end`` (resolved steps)."""
    if end <= start:
        return 1.0 if step >= end else 0.0
    return min(max((step - start) / (end - start), 0.0), 1.0)


def scheduled_sparsity(
    schedule: ScheduleFn, step: int, start: int, end: int, initial_sparsity: float, final_sparsity: float
) -> float:
    """The schedule's sparsity at ``step``: ``s_i + (s_f - s_i) * schedule(progress)``; ``s_i`` before ``start``."""
    if step < start:
        return initial_sparsity
    fraction = schedule_fraction(
        schedule,
        progress_at(step, start, end),
        initial_sparsity=initial_sparsity,
        final_sparsity=final_sparsity,
    )
    return initial_sparsity + (final_sparsity - initial_sparsity) * fraction


def is_mask_update_step(step: int, start: int, end: int, frequency: int) -> bool:
    """True when a mask update happens after ``step`` optimizer steps: every ``frequency`` from ``start``, and ``end``."""
    if step == end:
        return True
    return start <= step < end and (step - start) % frequency == 0


def mask_update_steps(start: int, end: int, frequency: int) -> list[int]:
    """Every step at which masks are updated: ``start, start + frequency, ... (< end), end``.

    ```python
    >>> mask_update_steps(0, 25, 10)
    [0, 10, 20, 25]

    ```
    """
    steps = list(range(start, end, frequency)) if end > start else []
    return steps + [end]


def last_update_at_or_before(step: int, start: int, end: int, frequency: int) -> int | None:
    """The last mask-update step ``<= step``, or None when no update has happened yet."""
    if step < start:
        return None
    if step >= end:
        return end
    return start + ((step - start) // frequency) * frequency


def resolve_start_end(start: int | float, end: int | float, total_steps: int) -> tuple[int, int]:
    """Resolve ``start`` / ``end`` (steps or fractions of ``total_steps``); ``end`` before ``start`` is a ValueError."""
    start_step, end_step = resolve_step(start, total_steps), resolve_step(end, total_steps)
    if end_step < start_step:
        raise ValueError(
            f"end must not come before start: end={end!r} resolves to optimizer step {end_step} and start={start!r} "
            f"to step {start_step} (run of {total_steps} steps); allowed: end >= start"
        )
    return start_step, end_step


def sparsity_at(config: PruningConfig, step: int, total_steps: int, *, initial_sparsity: float | None = None) -> float:
    """The sparsity in force after ``step`` optimizer steps: the value of the last mask update at or before ``step``.

    Args:
        config (`PruningConfig`): the pruning config (schedule, start, end, frequency, target).
        step (`int`): optimizer steps done.
        total_steps (`int`): the run's total optimizer steps (``state.max_steps``), for fractional start/end.
        initial_sparsity (`float`, *optional*): the measured initial sparsity; defaults to
            ``config.initial_sparsity`` or 0.0 when that is None (measured from the model at train time).

    ```python
    >>> from hf_compress import PruningConfig, sparsity_at
    >>> config = PruningConfig(target_sparsity=0.5, schedule="linear", start=0, end=100, frequency=10)
    >>> sparsity_at(config, 19, 100), sparsity_at(config, 20, 100), sparsity_at(config, 100, 100)
    (0.05, 0.1, 0.5)

    ```
    """
    from hf_compress.registry import get_registry

    start, end = resolve_start_end(config.start, config.end, total_steps)
    if initial_sparsity is None:
        initial_sparsity = config.initial_sparsity if config.initial_sparsity is not None else 0.0
    update = last_update_at_or_before(step, start, end, config.frequency)
    if update is None:
        return initial_sparsity
    schedule = get_registry().get("schedule", config.schedule)
    final = max(config.final_sparsity, initial_sparsity)
    return scheduled_sparsity(schedule, update, start, end, initial_sparsity, final)


def warn_if_schedule_outruns(config: PruningConfig, start_step: int, end_step: int, max_steps: int) -> None:
    """Warn when the run ends before the schedule reaches its target (``end`` or ``start`` past ``max_steps``)."""
    if end_step <= max_steps:
        return
    reached = sparsity_at(config, max_steps, max_steps)
    logger.warning(
        "hf_compress: pruning end=%r resolves to step %d, past the run's max_steps=%d%s; the run ends at sparsity "
        "%.4f instead of the target %.4f (set end <= max_steps or a fraction <= 1.0)",
        config.end,
        end_step,
        max_steps,
        f" (start={config.start!r} is past it too)" if start_step > max_steps else "",
        reached,
        config.final_sparsity,
    )
