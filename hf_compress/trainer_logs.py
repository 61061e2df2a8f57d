"""Getting a callback's values into the Trainer's logs: ``log_history`` and the reporters (TensorBoard, W&B, ...).

In ``Trainer.log``, a copy of ``logs`` is appended to ``state.log_history`` *before* ``on_log`` runs, and the
reporters registered from ``report_to`` run before callbacks the user added. So a callback that only adds keys to
``logs`` in ``on_log`` reaches neither. :func:`run_before_reporters` moves the reporters after the callback in its
Trainer's callback list; :func:`add_to_logs` also updates the ``log_history`` entry made from these logs.

```python
class MyCallback(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        run_before_reporters(self)

    def on_log(self, args, state, control, logs=None, **kwargs):
        add_to_logs(state, logs, {"my_value": 1.0})
```
"""

from __future__ import annotations

import gc

from transformers.trainer_callback import CallbackHandler, PrinterCallback, ProgressCallback


def add_to_logs(state, logs: dict | None, values: dict) -> None:
    """Add ``values`` to the ``logs`` of an ``on_log`` call and to the ``state.log_history`` entry made from it."""
    if logs is None:
        return
    logs.update(values)
    history = state.log_history
    # the entry made from these logs: same step, and each of its keys is in logs (other callbacks may add keys)
    if history and history[-1].get("step") == state.global_step and all(k in logs for k in history[-1] if k != "step"):
        history[-1].update(values)


def _is_reporter(callback) -> bool:
    """A callback that reads ``logs`` to report them: an integration (TensorBoard, W&B, ...) or a printer."""
    return type(callback).__module__.startswith("transformers.integrations") or isinstance(
        callback, (PrinterCallback, ProgressCallback)
    )


def run_before_reporters(callback) -> None:
    """Reorder the Trainer's callback list so ``callback`` runs before the reporters, which then see what it adds in
    ``on_log``. Every other callback keeps its relative order (a one-shot pruner added before PruningCallback still
    runs first).

    A callback is not told which Trainer holds it; the list is found among the objects that refer to it. Only the
    positions up to ``callback``'s own are rearranged, in place, so a handler iterating the list right now neither
    repeats nor skips a callback.
    """
    for holder in gc.get_referrers(callback):
        if not isinstance(holder, list) or callback not in holder:
            continue
        owners = gc.get_referrers(holder)
        if not any(
            (isinstance(owner, CallbackHandler) and owner.callbacks is holder)
            or (isinstance(owner, dict) and owner.get("callbacks") is holder)
            for owner in owners
        ):
            continue
        end = holder.index(callback) + 1
        first = next((k for k in range(end) if _is_reporter(holder[k])), None)
        if first is None:
            continue
        block = holder[first:end]
        holder[first:end] = [c for c in block if not _is_reporter(c)] + [c for c in block if _is_reporter(c)]
