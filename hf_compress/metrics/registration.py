"""Registers the built-in hallucination checkers (registry kind ``hallucination_checker``)."""

from __future__ import annotations

from hf_compress.metrics.checkers.embedding import EmbeddingChecker
from hf_compress.metrics.checkers.lexical import LexicalChecker
from hf_compress.metrics.checkers.nli import NLIChecker


def register(registry) -> None:
    registry.register("hallucination_checker", "lexical", LexicalChecker)
    registry.register("hallucination_checker", "embedding", EmbeddingChecker)
    registry.register("hallucination_checker", "nli", NLIChecker)
