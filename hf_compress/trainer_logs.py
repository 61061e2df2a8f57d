"""Moved to :mod:`hf_compress.trainer.logs`; kept so existing imports work."""

from __future__ import annotations

from hf_compress.trainer.logs import add_callbacks, add_to_logs, is_reporter

__all__ = ["add_callbacks", "add_to_logs", "is_reporter"]
