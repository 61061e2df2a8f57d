"""Taking hf_compress off a model when training fails.

transformers has no Trainer event for an exception leaving ``trainer.train()`` (a user callback raising, an OOM,
Ctrl-C), so ``on_train_end`` never runs and the hooks, swapped weights and optimizer groups the callbacks attached
would stay. Wrapping or replacing ``Trainer.train`` is monkeypatching, and finalizers or garbage-collector tricks do
not run at a predictable time, so neither is used. Instead:

- every hf_compress callback registers itself here at ``on_train_begin`` (:func:`track`) and leaves at
  ``on_train_end``; what it attached is listed on the callback, which knows how to take it off
  (``release_after_failure``);
- :func:`release` takes off everything still attached to a model (hooks of QAT, distillation and data-dependent
  pruning criteria such as ``sparsegpt`` or ``wanda``, a fake-quantized weight swapped in mid-forward, the extra
  optimizer groups), leaving the weights as they were at the failing step (pruning masks applied);
- :func:`compression_run` is the documented way to get that automatically: a ``with`` block around
  ``trainer.train()`` that calls :func:`release` when an exception (``BaseException``: Ctrl-C too) leaves it;
- a new ``trainer.train()`` on the same model releases the leftovers of a failed run first (:func:`track`).

```python
import hf_compress

hf_compress.attach(trainer, "recipe.yaml")
with hf_compress.compression_run(trainer):
    trainer.train()  # if this raises, the model carries no hf_compress hooks afterwards
```
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

from torch import nn

from hf_compress.distributed import unwrap_model

logger = logging.getLogger(__name__)

# model -> (callback, the TrainerState of its run) for runs on it that have not ended; ``trainer.train()`` builds a
# new TrainerState for every call, so it tells one run from the next.
_LIVE: weakref.WeakKeyDictionary[nn.Module, list[tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _model_of(target: Any) -> nn.Module:
    model = getattr(target, "model", None) if not isinstance(target, nn.Module) else target
    if not isinstance(model, nn.Module):
        raise ValueError(f"release needs a transformers Trainer or a model; got {type(target).__name__}")
    return unwrap_model(model)


def track(model: nn.Module, callback: Any, run: Any) -> None:
    """Record that ``callback`` attached itself to ``model`` in the run whose ``TrainerState`` is ``run``.

    Call at ``on_train_begin``, before attaching anything. What is still attached from an earlier run on the same
    model (a failed one: its callbacks never untracked) is released first.
    """
    model = unwrap_model(model)
    stale = [entry for entry in _LIVE.get(model, []) if entry[1] is not run]
    if stale:
        _release_entries(model, stale)
    entries = _LIVE.setdefault(model, [])
    entries[:] = [entry for entry in entries if entry[0] is not callback] + [(callback, run)]


def untrack(model: nn.Module | None, callback: Any) -> None:
    """``callback`` finished normally (``on_train_end``): nothing of it is left to release."""
    if model is None:
        return
    entries = _LIVE.get(unwrap_model(model), [])
    entries[:] = [entry for entry in entries if entry[0] is not callback]


def live_callbacks(target: Any) -> list[Any]:
    """The hf_compress callbacks whose run on this model (or Trainer's model) has not ended."""
    return [callback for callback, _ in _LIVE.get(_model_of(target), [])]


def _release_entries(model: nn.Module, entries: list[tuple[Any, Any]]) -> list[str]:
    released = []
    for callback, _ in reversed(entries):  # last attached, first released
        callback.release_after_failure()
        released.append(type(callback).__name__)
    remaining = _LIVE.get(model, [])
    remaining[:] = [entry for entry in remaining if all(entry[0] is not callback for callback, _ in entries)]
    if released:
        logger.warning("hf_compress: training did not finish; released %s from the model", ", ".join(released))
    return released


def release(target: Any) -> list[str]:
    """Take off everything hf_compress callbacks still have attached to a model after a failed run.

    Args:
        target (`Trainer` or `nn.Module`): the Trainer (its ``model`` is used) or the model.

    Returns:
        `list[str]`: the class names of the callbacks released (empty when nothing was attached).
    """
    model = _model_of(target)
    return _release_entries(model, list(_LIVE.get(model, [])))


@contextlib.contextmanager
def compression_run(trainer: Any) -> Iterator[Any]:
    """``with compression_run(trainer): trainer.train()``: on any exception, :func:`release` the model, re-raise."""
    try:
        yield trainer
    except BaseException:
        release(trainer)
        raise
