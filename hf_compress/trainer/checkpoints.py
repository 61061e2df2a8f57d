"""Callback state inside Trainer checkpoint folders: tensors as safetensors, small values as JSON. No pickle.

Files are written atomically (a temporary file, then ``os.replace``). On resume the folder is found from what a
callback is handed: ``state.global_step`` (already the resumed step in ``on_train_begin``), ``args.output_dir`` and
``args.resume_from_checkpoint``, with transformers' own ``PREFIX_CHECKPOINT_DIR`` naming.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from hf_compress.distributed import is_main_process


def checkpoint_dir(args, state) -> str:
    """The folder the Trainer is writing for this ``on_save`` (``<output_dir>/checkpoint-<global_step>``)."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


SAVED_TENSORS_KEY = "saved_tensors"


def _replace_atomically(path: str, write) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_state(folder: str, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``folder`` (main process only).

    The JSON goes last, so a folder with ``<name>.json`` always has the matching tensors; it lists the tensor names
    (``saved_tensors``) so a missing or foreign ``.safetensors`` is caught on load.
    """
    if not is_main_process():
        return
    os.makedirs(folder, exist_ok=True)
    tensor_path = os.path.join(folder, f"{name}.safetensors")
    if tensors:
        cpu = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
        _replace_atomically(tensor_path, lambda path: save_file(cpu, path))
    elif os.path.exists(tensor_path):
        os.remove(tensor_path)
    text = json.dumps({**meta, SAVED_TENSORS_KEY: sorted(tensors)}, indent=2, sort_keys=True)

    def write_json(path: str) -> None:
        with open(path, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(os.path.join(folder, f"{name}.json"), write_json)


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


def _step_of(folder: str) -> int | None:
    path = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle).get("global_step")


def resume_folder(args, state) -> str | None:
    """The checkpoint folder a resumed run started from, seen from ``on_train_begin``; None for a fresh run.

    When ``on_train_begin`` runs the Trainer has already loaded ``trainer_state.json``, so ``state.global_step`` is
    the resumed step. The folder is the first of ``args.resume_from_checkpoint``, ``<output_dir>/checkpoint-<step>``
    and transformers' ``get_last_checkpoint(output_dir)`` whose ``trainer_state.json`` is at that step.
    (``trainer.train(resume_from_checkpoint=PATH)`` is not shown to callbacks: a checkpoint outside ``output_dir``
    must also be named in ``TrainingArguments(resume_from_checkpoint=PATH)``, as the example scripts do.)

    Raises:
        ValueError: the run resumed (``global_step > 0``) but no checkpoint folder at that step can be found, so
            the callbacks' state (masks, scores, scales) would be lost.
    """
    if state.global_step == 0:
        return None
    argument = getattr(args, "resume_from_checkpoint", None)
    candidates = [argument if isinstance(argument, str) else None, checkpoint_dir(args, state)]
    if os.path.isdir(args.output_dir):
        candidates.append(get_last_checkpoint(args.output_dir))
    for candidate in candidates:
        if candidate and os.path.isdir(candidate) and _step_of(candidate) in (None, state.global_step):
            return candidate
    raise ValueError(
        f"training resumed at step {state.global_step} but no checkpoint folder at that step was found (looked at "
        f"TrainingArguments.resume_from_checkpoint={argument!r} and {checkpoint_dir(args, state)}); a checkpoint "
        "outside output_dir must also be given as TrainingArguments(resume_from_checkpoint=PATH) so hf_compress "
        "can restore its state"
    )
