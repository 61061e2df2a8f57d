"""Getting a callback's values into the Trainer's logs: ``state.log_history`` and the reporters.

``Trainer.log`` appends a copy of ``logs`` (plus ``"step"``) to ``state.log_history`` and then calls every
callback's ``on_log`` with ``logs``, in list order. :func:`add_to_logs` updates both from ``on_log``: the dict every
later callback sees and the history entry just made from it.

The reporters (TensorBoard, W&B, ... from ``report_to``, and the progress printer) sit in that list before the
callbacks a user passes or adds, and a callback is never told which Trainer holds it. Transformers has no hook that
runs before them, so the one route is the Trainer's public callback methods: :func:`add_callbacks` adds callbacks
with ``trainer.add_callback`` and then moves the reporters behind them with ``trainer.pop_callback`` /
``trainer.add_callback``. Callbacks added another way still reach ``log_history`` and every callback after them;
when ``report_to`` names reporters they would miss, a warning says so once.

```python
trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
hf_compress.add_callbacks(trainer, PruningCallback(PruningConfig(target_sparsity=0.5)))
trainer.train()  # TensorBoard / W&B and log_history get sparsity, sparsity_target
```
"""

from __future__ import annotations

import logging
import weakref

from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

logger = logging.getLogger(__name__)

_before_reporters: weakref.WeakSet = weakref.WeakSet()
_warned = False


def is_reporter(callback: TrainerCallback) -> bool:
    """A callback that reads ``logs`` to report them: an integration (TensorBoard, W&B, ...) or a printer."""
    return type(callback).__module__.startswith("transformers.integrations") or isinstance(
        callback, (PrinterCallback, ProgressCallback)
    )


def add_callbacks(trainer, *callbacks: TrainerCallback) -> list[TrainerCallback]:
    """Add ``callbacks`` to ``trainer`` (in order) so that they run before its reporters; returns them.

    Every other callback keeps its relative order. Call it again after adding a reporter by hand.

    Args:
        trainer (`transformers.Trainer`): any Trainer, or a subclass such as TRL's ``SFTTrainer``.
        *callbacks (`TrainerCallback`): instances, added with ``trainer.add_callback``.
    """
    for callback in callbacks:
        trainer.add_callback(callback)
        _before_reporters.add(callback)
    reporters = [callback for callback in trainer.callback_handler.callbacks if is_reporter(callback)]
    for reporter in reporters:
        trainer.pop_callback(reporter)
        trainer.add_callback(reporter)
    return list(callbacks)


def add_to_logs(callback: TrainerCallback, args, state, logs: dict | None, values: dict) -> None:
    """From ``callback.on_log``: add ``values`` to ``logs`` and to the ``state.log_history`` entry made from them."""
    if logs is None:
        return
    logs.update(values)
    history = state.log_history
    # Trainer.log appended {**logs, "step": global_step} right before calling on_log
    if history and history[-1].get("step") == state.global_step:
        history[-1].update(values)
    _warn_if_reporters_missed(callback, args)


def _warn_if_reporters_missed(callback: TrainerCallback, args) -> None:
    global _warned
    if _warned or callback in _before_reporters:
        return
    report_to = getattr(args, "report_to", None) or []
    if isinstance(report_to, str):
        report_to = [report_to]
    reporters = [name for name in report_to if name not in ("none", "all")] or (["all"] if "all" in report_to else [])
    if reporters:
        _warned = True
        logger.warning(
            "hf_compress: %s's values reach state.log_history but not the reporters %s, which run before "
            "callbacks passed to Trainer(callbacks=...) or trainer.add_callback; add hf_compress callbacks with "
            "hf_compress.add_callbacks(trainer, ...) to report them too",
            type(callback).__name__,
            reporters,
        )
