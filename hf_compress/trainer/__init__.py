"""Everything hf_compress needs from a running ``transformers.Trainer``, through its public hooks only.

- :mod:`~hf_compress.trainer.logs`: values into ``logs`` and ``state.log_history`` from ``on_log``, and
  :func:`add_callbacks`, which places callbacks before the reporters with ``Trainer.add_callback`` /
  ``Trainer.pop_callback``.
- :mod:`~hf_compress.trainer.extra_parameters`: trainable tensors that live outside the model (distillation
  projections, learned quantization scales) stepped by the Trainer's own optimizer, one mechanism for all.
- :mod:`~hf_compress.trainer.checkpoints`: callback state in checkpoint folders (safetensors + JSON, written
  atomically) and the folder a resumed run started from.
- :mod:`~hf_compress.trainer.resume_checks`: resume is exact or refused (state staged before the Trainer's save and
  committed in ``on_save``; missing or damaged state and a changed config refused).
- :mod:`~hf_compress.trainer.cleanup`: :func:`~hf_compress.trainer.cleanup.release` /
  :func:`~hf_compress.trainer.cleanup.compression_run` take the callbacks off a model after a failed run.

Nothing here uses ``gc``, stack frames, or replaces a method on a Trainer, optimizer or scheduler instance.
"""

from __future__ import annotations

from hf_compress.trainer.checkpoints import checkpoint_dir, load_state, resume_folder, save_state
from hf_compress.trainer.extra_parameters import ExtraParameters, inner_optimizer
from hf_compress.trainer.logs import add_callbacks, add_to_logs, is_reporter

__all__ = [
    "ExtraParameters",
    "add_callbacks",
    "add_to_logs",
    "checkpoint_dir",
    "inner_optimizer",
    "is_reporter",
    "load_state",
    "resume_folder",
    "save_state",
]
