"""Moved to :mod:`hf_compress.trainer.checkpoints`; kept so existing imports work."""

from __future__ import annotations

from hf_compress.trainer.checkpoints import SAVED_TENSORS_KEY, checkpoint_dir, load_state, resume_folder, save_state

__all__ = ["SAVED_TENSORS_KEY", "checkpoint_dir", "load_state", "resume_folder", "save_state"]
