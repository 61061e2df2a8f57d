"""Consistency checks between one claim and a list of reference facts, on the lexical analysis of both.

This is the part word overlap misses: numbers and dates (with units and formats), names, negation and antonym
polarity, and content words swapped for others. The lexical checker scores with all of it; the embedding checker uses
the same guards on top of its similarity. Pure functions, no model.
The facts are indexed by :mod:`~hf_compress.metrics.fact_index`; the checks of names, polarity, swapped words,
order and roles are in :mod:`~hf_compress.metrics.consistency_checks`.

```python
>>> from hf_compress.metrics.consistency import assess, index_facts
>>> from hf_compress.metrics.text_analysis import analyse
>>> facts = index_facts(("Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."))
>>> assess(analyse("Everest is 8611 m high."), facts).contradictions
['number 8611 m contradicts 8,849 metres']
>>> assess(analyse("Everest lies between Nepal and India."), facts).contradictions
["name 'India' is not in the facts, which name 'China' here"]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_compress.metrics.consistency_checks import (  # noqa: F401 (the thresholds: public here too)
    MAX_SWAP_WORDS,
    RESTATEMENT_COVERAGE,
    ROLE_MIN_PREDICATE_WEIGHT,
    ROLE_PREDICATE_COVERAGE,
    SWAP_COVERAGE,
    SWAP_MIN_WEIGHT,
    check_entities,
    check_order,
    check_polarity,
    check_roles,
    check_swaps,
)
from hf_compress.metrics.fact_index import (  # noqa: F401 (index_facts: public here too)
    FactIndex,
    index_facts,
    overlap_words,
)
from hf_compress.metrics.text_analysis import Quantity, TextAnalysis


@dataclass
class Consistency:
    """What the facts say about one claim.

    Attributes:
        clause (`int | None`): the clause of the facts the claim aligns with best (index into ``FactIndex.clauses``).
        clause_coverage (`float`): share of the claim's content found in that clause.
        coverage (`float`): share of the claim's content found anywhere in the facts.
        uncovered_weight (`float`): weight of the claim's content that no fact covers.
        contradictions (`list[str]`): why the facts contradict the claim (numbers, dates, names, polarity, swaps).
        unsupported (`list[str]`): names and numbers of the claim that no fact mentions.
        uncovered_words (`list[str]`): other words of the claim that no fact covers.
        spans (`list[str]`): for each contradiction, the part of the claim it is about.
    """

    clause: int | None
    clause_coverage: float
    coverage: float
    total_weight: float
    uncovered_weight: float
    contradictions: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    uncovered_words: list[str] = field(default_factory=list)
    spans: list[str] = field(default_factory=list)  # the claim's words that the facts contradict

    @property
    def uncovered_fraction(self) -> float:
        return self.uncovered_weight / self.total_weight if self.total_weight > 0 else 0.0


def ngram_gaps(text: str, index: FactIndex) -> tuple[float, float]:
    """(share of the words, share of the adjacent word pairs) of ``text`` that no fact contains: 1 - its unigram and
    bigram precision against the facts, on :func:`~hf_compress.metrics.fact_index.overlap_words`."""
    sequence = overlap_words(text, index.long)
    if not sequence:
        return 0.0, 0.0
    unigram_gap = sum(word not in index.unigrams for word in sequence) / len(sequence)
    if len(sequence) < 2:
        return unigram_gap, unigram_gap
    pairs = list(zip(sequence, sequence[1:]))
    return unigram_gap, sum(pair not in index.bigrams for pair in pairs) / len(pairs)


def assess(claim: TextAnalysis, index: FactIndex, clause: int | None = None) -> Consistency:
    """Check ``claim`` against the facts in ``index``; ``clause`` forces the aligned clause (else the best overlap)."""
    hard_quantities = [q for q in claim.quantities if not q.soft]
    total = claim.total_weight + len(hard_quantities)
    coverages = [
        _clause_coverage(claim, candidate, hard_quantities, total, index.topic_words) for candidate in index.clauses
    ]
    if clause is None and coverages:
        clause = max(range(len(coverages)), key=lambda i: (coverages[i], -len(index.clauses[i].content)))
    aligned = index.clauses[clause] if clause is not None else None
    clause_coverage = coverages[clause] if clause is not None else 0.0

    result = Consistency(clause, clause_coverage, 1.0, total, 0.0)
    uncovered = 0.0
    for word in claim.content:
        if word.key not in index.words:
            uncovered += word.weight
            if not word.in_entity:
                result.uncovered_words.append(word.text)
    for quantity in hard_quantities:
        status, other = _quantity_status(quantity, index, aligned, coverages, claim, index.topic_words)
        if status == "contradicted":
            result.contradictions.append(f"{_kind(quantity)} {quantity.text} contradicts {other.text}")
            result.spans.append(quantity.text)
        elif status == "uncovered":
            uncovered += 1.0
            result.unsupported.append(f"{_kind(quantity)} {quantity.text} is not in the facts")
    if aligned is not None:
        check_entities(claim, index, aligned, coverages[clause], result)
        if not result.contradictions:
            check_roles(claim, index, result)
        if clause_coverage >= RESTATEMENT_COVERAGE:
            check_polarity(claim, aligned, result)
            check_swaps(claim, aligned, index, result)
            check_order(claim, aligned, result)
    else:
        for entity in claim.entities:
            result.unsupported.append(f"name {entity.text!r} is not in the facts")
    result.uncovered_weight = uncovered
    result.coverage = 1.0 - result.uncovered_fraction
    return result


# ----------------------------------------------------------------------------------------------- coverage
def _clause_coverage(
    claim: TextAnalysis, clause: TextAnalysis, hard_quantities: list[Quantity], total: float, topic: frozenset[str]
) -> float:
    """Share of the claim's content in ``clause``; the topic's name counts as present, since facts about it often
    say "it" or "he" instead."""
    if total <= 0:
        return 1.0
    covered = sum(word.weight for word in claim.content if word.key in clause.words or word.key in topic)
    covered += sum(1.0 for q in hard_quantities if any(q.matches(other) for other in clause.quantities))
    return covered / total


# ----------------------------------------------------------------------------------------------- quantities
def _kind(quantity: Quantity) -> str:
    return "date" if quantity.dimension == "date" else "number"


def _counts_compatible(claim_quantity: Quantity, fact_quantity: Quantity) -> bool:
    if claim_quantity.dimension is not None:
        return True
    if claim_quantity.nouns and fact_quantity.nouns:
        return bool(claim_quantity.nouns & fact_quantity.nouns)
    return not claim_quantity.nouns and not fact_quantity.nouns


def _coverage_without_quantity(claim: TextAnalysis, clause: TextAnalysis, quantity: Quantity, topic) -> float:
    total = claim.total_weight
    if total <= 0:
        return 0.0
    return sum(word.weight for word in claim.content if word.key in clause.words or word.key in topic) / total


def _quantity_status(
    quantity: Quantity,
    index: FactIndex,
    aligned: TextAnalysis | None,
    coverages: list[float],
    claim: TextAnalysis | None = None,
    topic: frozenset[str] = frozenset(),
) -> tuple[str, Quantity | None]:
    # a count must match a fact count of the same thing when the facts count that thing ("154 plays" vs "39 plays")
    same_thing = [
        other
        for other in index.quantities
        if quantity.dimension is None and other.dimension is None and quantity.nouns & other.nouns
    ]
    pool = same_thing or index.quantities
    if claim is not None and aligned is not None and not any(quantity.matches(o) for o in aligned.quantities):
        # the clause the claim restates gives this kind of value, and another: "December 1911" where the claim has
        # the "January 1912" of another event of the same topic
        rivals = [o for o in aligned.quantities if o.comparable(quantity) and _counts_compatible(quantity, o)]
        if rivals and _coverage_without_quantity(claim, aligned, quantity, topic) >= SWAP_COVERAGE:
            return "contradicted", rivals[0]
    if any(quantity.matches(other) for other in pool):
        return "matched", None
    candidates = []
    if aligned is not None:
        candidates.extend(aligned.quantities)
    for position, clause in enumerate(index.clauses):
        if coverages[position] >= RESTATEMENT_COVERAGE and clause is not aligned:
            candidates.extend(clause.quantities)
    for other in candidates:
        if other.comparable(quantity) and _counts_compatible(quantity, other):
            return "contradicted", other
    return "uncovered", None
