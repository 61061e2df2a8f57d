"""The reference facts of one example, split into clauses and analysed once (:func:`index_facts`, cached), for
:func:`hf_compress.metrics.consistency.assess` to check claims against.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from hf_compress.metrics.claims import split_claims
from hf_compress.metrics.language import unit, word_key
from hf_compress.metrics.text_analysis import Entity, Quantity, TextAnalysis, analyse

_SURFACE_WORD = re.compile(r"[a-z0-9]+")
_WORD = re.compile(r"[a-z]+")
# References of at least this many words (a news article, not a few facts or a knowledge snippet) are "long".
LONG_REFERENCE_WORDS = 150


def overlap_words(text: str, long: bool) -> list[str]:
    """The words that word overlap counts. Against long references: lower-cased runs of ASCII letters and digits
    (ROUGE's tokens). Against short ones: words as their lemma keys ("reached" and "reach" match), without numbers and
    units, which the quantity checks compare ("8.85 km" and "8,849 metres" match there). Each choice was made on the
    dev data (benchmarks/hallucination_tune.py)."""
    lower = text.lower()
    if long:
        return _SURFACE_WORD.findall(lower)
    return [word_key(w) for w in _WORD.findall(lower) if unit(w) is None]


@dataclass(frozen=True)
class FactIndex:
    """The reference facts of one example, split into clauses and analysed once."""

    facts: tuple[str, ...]
    clauses: tuple[TextAnalysis, ...]
    clause_fact: tuple[int, ...]
    words: frozenset[str]
    entities: tuple[Entity, ...]
    quantities: tuple[Quantity, ...]
    topic_words: frozenset[str]
    topic_keys: frozenset[str]
    clause_texts: tuple[str, ...] = ()
    unigrams: frozenset[str] = frozenset()  # the facts' words (:func:`overlap_words`)
    bigrams: frozenset[tuple[str, str]] = frozenset()  # pairs of adjacent words
    long: bool = False  # the facts together have at least LONG_REFERENCE_WORDS words


@lru_cache(maxsize=8192)
def index_facts(facts: tuple[str, ...]) -> FactIndex:
    clauses, clause_fact, clause_texts = [], [], []
    for position, fact in enumerate(facts):
        for clause in split_claims(fact) or [fact]:
            clauses.append(analyse(clause))
            clause_fact.append(position)
            clause_texts.append(clause)
    words = frozenset().union(*(clause.words for clause in clauses)) if clauses else frozenset()
    entities = tuple(entity for clause in clauses for entity in clause.entities)
    quantities = tuple(quantity for clause in clauses for quantity in clause.quantities)
    # Names that several facts mention (or the first fact opens with) are the topic: facts often refer to it as
    # "it" or "he", so its absence from a clause says nothing.
    names, keys = Counter(), Counter()
    surface = [_SURFACE_WORD.findall(fact.lower()) for fact in facts]
    long = sum(map(len, surface)) >= LONG_REFERENCE_WORDS
    unigrams, bigrams = set(), set()
    for fact, fact_surface in zip(facts, surface):
        analysis = analyse(fact)
        names.update({key for entity in analysis.entities for key in entity.keys})
        keys.update(analysis.keys)
        sequence = fact_surface if long else overlap_words(fact, long)
        unigrams.update(sequence)
        bigrams.update(zip(sequence, sequence[1:]))
    topic_words = {key for key, count in names.items() if count >= 2}
    if clauses and clauses[0].entities:
        topic_words.update(clauses[0].entities[0].keys)
    topic_keys = {key for key, count in keys.items() if count >= 2}
    return FactIndex(
        tuple(facts),
        tuple(clauses),
        tuple(clause_fact),
        words,
        entities,
        quantities,
        frozenset(topic_words),
        frozenset(topic_keys),
        tuple(clause_texts),
        frozenset(unigrams),
        frozenset(bigrams),
        long,
    )
