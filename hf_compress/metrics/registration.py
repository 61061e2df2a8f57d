"""Registers the built-in hallucination checkers (registry kind ``hallucination_checker``), imported on first use."""

from __future__ import annotations

CHECKERS = {
    "lexical": "hf_compress.metrics.checkers.lexical:LexicalChecker",
    "embedding": "hf_compress.metrics.checkers.embedding:EmbeddingChecker",
    "nli": "hf_compress.metrics.checkers.nli:NLIChecker",
}


def register(registry) -> None:
    from hf_compress.registry import lazy

    for name, target in CHECKERS.items():
        registry.register("hallucination_checker", name, lazy(target))
