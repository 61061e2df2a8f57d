"""Callback state inside Trainer checkpoint folders: tensors as safetensors, small values as JSON. No pickle."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hf_compress.distributed import is_main_process


def checkpoint_dir(args, state) -> str:
    """The folder the Trainer is writing for this ``on_save`` (``<output_dir>/checkpoint-<global_step>``)."""
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


def save_state(folder: str, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``folder`` (main process only)."""
    if not is_main_process():
        return
    os.makedirs(folder, exist_ok=True)
    if tensors:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, os.path.join(folder, f"{name}.safetensors")
        )
    with open(os.path.join(folder, f"{name}.json"), "w") as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)


def load_state(folder: str, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read back what :func:`save_state` wrote, or None when the checkpoint has no such state."""
    meta_path = os.path.join(folder, f"{name}.json")
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as handle:
        meta = json.load(handle)
    tensor_path = os.path.join(folder, f"{name}.safetensors")
    tensors = load_file(tensor_path) if os.path.exists(tensor_path) else {}
    return tensors, meta


def _trainer_resume_argument() -> str | None:
    """The ``resume_from_checkpoint`` folder of the ``Trainer.train`` call that is running, read from its frame.

    Callbacks are not told where a run resumed from; ``Trainer._inner_training_loop`` holds it as a local.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_inner_training_loop":
            value = frame.f_locals.get("resume_from_checkpoint")
            return value if isinstance(value, str) else None
        frame = frame.f_back
    return None


def resume_folder(args, state) -> str | None:
    """The checkpoint folder a resumed run started from, seen from ``on_train_begin``; None for a fresh run.

    When ``on_train_begin`` runs the Trainer has already loaded ``trainer_state.json``, so ``state.global_step`` is
    the resumed step. The folder is the one given to ``trainer.train(resume_from_checkpoint=...)`` (or
    ``args.resume_from_checkpoint``), else ``<output_dir>/checkpoint-<step>``.

    Raises:
        ValueError: the run resumed (``global_step > 0``) but no checkpoint folder can be found, so the callbacks'
            state (masks, scores, scales) would be lost.
    """
    if state.global_step == 0:
        return None
    for candidate in (_trainer_resume_argument(), getattr(args, "resume_from_checkpoint", None)):
        if isinstance(candidate, str) and os.path.isdir(candidate):
            return candidate
    folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
    if os.path.isdir(folder):
        return folder
    raise ValueError(
        f"training resumed at step {state.global_step} but its checkpoint folder was not found (looked for the "
        f"resume_from_checkpoint argument and {folder}); pass the folder as trainer.train(resume_from_checkpoint=PATH) "
        "so hf_compress can restore its state"
    )
