"""Resume is exact or refused: the checks a callback runs on its checkpoint state, and the crash window's cover.

The Trainer writes ``checkpoint-N`` completely (``_save_checkpoint``) before any callback's ``on_save`` runs, so a
process that dies in between leaves a checkpoint without hf_compress's files. Two things make that window harmless:

- When ``control.should_save`` is set at ``on_step_end`` / ``on_epoch_end`` (``DefaultFlowCallback`` sets it before
  the other callbacks run, and the Trainer saves right after), each callback *stages* its state in
  ``<output_dir>/.hf_compress_pending/checkpoint-N/``. ``on_save`` moves the staged files into ``checkpoint-N`` (a
  rename, no second write). A checkpoint whose ``on_save`` never ran is completed from the staged copy on resume.
- A checkpoint with neither is refused on resume, naming the folder and the missing file, unless the run changes
  its configuration on purpose (``HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE=1``, below).

The stored config is compared with the run's on resume; every field changes the result (masks, grids, losses), so
any difference is refused naming the field and both values. Set ``HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE=1`` to
resume with a different config on purpose (the state is then restored as saved and the new config applies from
there on), or to start a technique's state fresh from a checkpoint that has none. An environment switch rather than
a config field, so that stored configs compare field for field and recipes stay unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import torch

from hf_compress.distributed import is_main_process
from hf_compress.trainer.checkpoints import checkpoint_dir, load_state, save_state

logger = logging.getLogger(__name__)

ALLOW_CHANGE_ENV = "HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE"
STAGING_DIR = ".hf_compress_pending"


def config_change_allowed() -> bool:
    return os.environ.get(ALLOW_CHANGE_ENV, "").strip().lower() in {"1", "true", "yes"}


def staged_folder(folder: str) -> str:
    """Where the state of checkpoint ``folder`` is staged before the Trainer's ``on_save``."""
    parent, base = os.path.split(os.path.normpath(folder))
    return os.path.join(parent, STAGING_DIR, base)


def stage_state(args, state, control, name: str, tensors_and_meta) -> bool:
    """Stage the state of the checkpoint the Trainer is about to write (``control.should_save``); True if staged.

    ``tensors_and_meta`` is a zero-argument callable returning ``(tensors, meta)``, called only when a save is due
    (this runs at every step end).
    """
    if not getattr(control, "should_save", False):
        return False
    tensors, meta = tensors_and_meta()
    save_state(staged_folder(checkpoint_dir(args, state)), name, tensors, meta)
    return True


def commit_state(args, state, name: str, staged: bool, tensors_and_meta) -> None:
    """``on_save``: move the staged files into ``checkpoint-N``, or write them there when nothing was staged.

    ``staged`` says whether this rank staged the state at this step (every rank did, or none did), so that
    ``tensors_and_meta`` (a zero-argument callable returning ``(tensors, meta)``, which may hold collective work) is
    called on every rank or on none.
    """
    folder = checkpoint_dir(args, state)
    if not staged:
        tensors, meta = tensors_and_meta()
        save_state(folder, name, tensors, meta)
        return
    if not is_main_process():
        return
    staged_dir = staged_folder(folder)
    os.makedirs(folder, exist_ok=True)
    for suffix in (".safetensors", ".json"):  # the JSON last: it is what marks the state complete
        path = os.path.join(staged_dir, f"{name}{suffix}")
        if os.path.exists(path):
            os.replace(path, os.path.join(folder, f"{name}{suffix}"))
    _remove_if_empty(staged_dir)


def discard_staging(args) -> None:
    """Remove the staging folder at train end (what is left there belongs to no checkpoint)."""
    if is_main_process():
        shutil.rmtree(os.path.join(args.output_dir, STAGING_DIR), ignore_errors=True)


def _remove_if_empty(folder: str) -> None:
    for path in (folder, os.path.dirname(folder)):
        try:
            os.rmdir(path)
        except OSError:
            return


def load_resume_state(folder: str | None, name: str, what: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The ``name`` state of the checkpoint a run resumes from; refused when it is missing or damaged.

    Returns None for a fresh run (``folder`` None), or when the state is missing and the change is allowed.

    Raises:
        ValueError: naming the folder and the missing file, or the damaged file.
    """
    if folder is None:
        return None
    saved = load_state(folder, name)
    if saved is not None:
        return saved
    staged = staged_folder(folder)
    if os.path.isdir(staged):
        saved = load_state(staged, name)
        if saved is not None:
            logger.warning(
                "hf_compress: %s lacks %s.json (the process stopped before on_save); using the copy staged at %s",
                folder,
                name,
                staged,
            )
            return saved
    if config_change_allowed():
        logger.warning(
            "hf_compress: %s has no %s.json; %s starts fresh because %s is set", folder, name, what, ALLOW_CHANGE_ENV
        )
        return None
    raise ValueError(
        f"cannot resume {what} from {folder}: the checkpoint has no {name}.json (hf_compress writes it with every "
        "checkpoint; it is missing when the run that wrote the checkpoint had no such config, or stopped before "
        f"saving it). Resume from an earlier checkpoint, or set {ALLOW_CHANGE_ENV}=1 to start {what} fresh on purpose"
    )


def _plain(value: Any) -> Any:
    """The value as a JSON round trip gives it back (tuples -> lists, int keys -> str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_resumed_config(folder: str, what: str, stored: dict | None, current: dict) -> None:
    """Refuse a resume whose config differs from the one stored in the checkpoint, naming each field and both values.

    Raises:
        ValueError: unless ``HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE=1``, which logs the differences instead.
    """
    if stored is None:
        return
    stored, current = _plain(stored), _plain(current)
    differences = [
        f"{key}: checkpoint {stored.get(key)!r}, this run {current.get(key)!r}"
        for key in sorted(set(stored) | set(current))
        if stored.get(key) != current.get(key)
    ]
    if not differences:
        return
    message = f"{what} config differs from the one stored in {folder}: " + "; ".join(differences)
    if config_change_allowed():
        logger.warning("hf_compress: %s (allowed by %s)", message, ALLOW_CHANGE_ENV)
        return
    raise ValueError(
        f"{message}. Resume with the same config, or set {ALLOW_CHANGE_ENV}=1 to change it on purpose "
        "(the saved state is restored, the new config applies from there on)"
    )
