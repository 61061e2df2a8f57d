"""Hallucination checkers: score each claim against its reference facts (registry kind ``hallucination_checker``)."""

from __future__ import annotations

from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker

__all__ = ["ClaimCheck", "HallucinationChecker"]
