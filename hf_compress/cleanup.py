"""Moved to :mod:`hf_compress.trainer.cleanup`; kept so existing imports work."""

from __future__ import annotations

from hf_compress.trainer.cleanup import compression_run, live_callbacks, release, track, untrack

__all__ = ["compression_run", "live_callbacks", "release", "track", "untrack"]
