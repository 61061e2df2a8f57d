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
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``folder`` (main process only).

    Each file is written to a temporary name and renamed, the JSON last, so a reader never sees half a file and a
    JSON present means its tensors are complete. The JSON lists the tensor names (``saved_tensors``) so a missing or
    foreign ``.safetensors`` is caught on load.
    """
    if not is_main_process():
        return
    os.makedirs(folder, exist_ok=True)
    tensor_path = os.path.join(folder, f"{name}.safetensors")
    if tensors:
        plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        _write_atomically(tensor_path, lambda path: save_file(plain, path))
    elif os.path.exists(tensor_path):
        os.remove(tensor_path)
    meta = {**meta, SAVED_TENSORS_KEY: sorted(tensors)}
    text = json.dumps(meta, indent=2, sort_keys=True)
    _write_atomically(os.path.join(folder, f"{name}.json"), lambda path: _write_text(path, text))


SAVED_TENSORS_KEY = "saved_tensors"


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(path: str, write) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_state(folder: str, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read back what :func:`save_state` wrote, or None when the checkpoint has no such state.

    Raises:
        ValueError: naming the file, when the JSON is not valid, the tensors file is missing, truncated or damaged,
            or it lacks tensors the JSON lists.
    """
    meta_path = os.path.join(folder, f"{name}.json")
    if not os.path.exists(meta_path):
        return None
    try:
        with open(meta_path) as handle:
            meta = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{meta_path}: damaged hf_compress state file ({type(error).__name__}: {error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: damaged hf_compress state file (expected a JSON object)")
    tensor_path = os.path.join(folder, f"{name}.safetensors")
    listed = meta.get(SAVED_TENSORS_KEY)
    tensors = {}
    if os.path.exists(tensor_path):
        try:
            tensors = load_file(tensor_path)
        except Exception as error:  # safetensors raises its own SafetensorError for truncated or damaged files
            raise ValueError(
                f"{tensor_path}: damaged hf_compress state file ({type(error).__name__}: {error})"
            ) from None
    elif listed:
        raise ValueError(f"{tensor_path}: missing; {meta_path} lists {len(listed)} tensors stored in it")
    if listed is not None:
        absent = sorted(set(listed) - set(tensors))
        if absent:
            raise ValueError(f"{tensor_path}: lacks tensors {absent[:4]} that {meta_path} lists")
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
