"""Moved to :mod:`hf_compress.trainer.resume_checks`; kept so existing imports work."""

from __future__ import annotations

from hf_compress.trainer.resume_checks import (
    ALLOW_CHANGE_ENV,
    STAGING_DIR,
    check_resumed_config,
    commit_state,
    config_change_allowed,
    discard_staging,
    load_resume_state,
    stage_state,
    staged_folder,
)

__all__ = [
    "ALLOW_CHANGE_ENV",
    "STAGING_DIR",
    "check_resumed_config",
    "commit_state",
    "config_change_allowed",
    "discard_staging",
    "load_resume_state",
    "stage_state",
    "staged_folder",
]
