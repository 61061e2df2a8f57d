"""Consistency checks between one claim and a list of reference facts, on the lexical analysis of both.

This is the part word overlap misses: numbers and dates (with units and formats), names, negation and antonym
polarity, and content words swapped for others. The lexical checker scores with all of it; the embedding checker uses
the same guards on top of its similarity. Pure functions, no model.

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

import difflib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from hf_compress.metrics.claims import split_claims
from hf_compress.metrics.text_analysis import Entity, Quantity, TextAnalysis, analyse, antonyms_of, looks_like_verb

# A claim "restates" a clause when at least this share of its content is found there; only then are polarity and
# swapped words judged against that clause.
RESTATEMENT_COVERAGE = 0.5
SWAP_COVERAGE = 0.6
MAX_SWAP_WORDS = 3
_TITLE_WORDS = frozenset(
    "mount mt lake river sea ocean cape saint st sir dame dr mr mrs ms prof king queen prince princess president "
    "general captain lord lady pope emperor the".split()
)


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
    unigrams: frozenset[str] = frozenset()
    bigrams: frozenset[tuple[str, str]] = frozenset()


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
    unigrams, bigrams = set(), set()
    for fact in facts:
        analysis = analyse(fact)
        names.update({key for entity in analysis.entities for key in entity.keys})
        keys.update(analysis.keys)
        unigrams.update(analysis.sequence)
        bigrams.update(zip(analysis.sequence, analysis.sequence[1:]))
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
    )


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


def ngram_gaps(claim: TextAnalysis, index: FactIndex) -> tuple[float, float]:
    """(share of the claim's words, share of its word pairs) that no fact contains, over all its words."""
    sequence = claim.sequence
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
        status, other = _quantity_status(quantity, index, aligned, coverages)
        if status == "contradicted":
            result.contradictions.append(f"{_kind(quantity)} {quantity.text} contradicts {other.text}")
            result.spans.append(quantity.text)
        elif status == "uncovered":
            uncovered += 1.0
            result.unsupported.append(f"{_kind(quantity)} {quantity.text} is not in the facts")
    if aligned is not None:
        _check_entities(claim, index, aligned, coverages[clause], result)
        if clause_coverage >= RESTATEMENT_COVERAGE:
            _check_polarity(claim, aligned, result)
            _check_swaps(claim, aligned, index, result)
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


def _quantity_status(
    quantity: Quantity, index: FactIndex, aligned: TextAnalysis | None, coverages: list[float]
) -> tuple[str, Quantity | None]:
    # a count must match a fact count of the same thing when the facts count that thing ("154 plays" vs "39 plays")
    same_thing = [
        other
        for other in index.quantities
        if quantity.dimension is None and other.dimension is None and quantity.nouns & other.nouns
    ]
    pool = same_thing or index.quantities
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


# ----------------------------------------------------------------------------------------------- names
def _entity_in(entity: Entity, words: frozenset[str], entities: tuple[Entity, ...]) -> bool:
    found = [word in words or key in words for word, key in zip(entity.words, entity.keys)]
    if all(found):
        return True
    # "Mount Everest" is "Everest": a name is there when its last word is, and only title words are missing
    if found[-1] and all(hit or word in _TITLE_WORDS for word, hit in zip(entity.words, found)):
        return True
    acronym = entity.words[0] if len(entity.words) == 1 and entity.text.isupper() and len(entity.text) > 1 else None
    for other in entities:
        if acronym is not None and len(other.words) > 1 and other.initials == acronym:
            return True
        if (
            len(entity.words) > 1
            and len(other.words) == 1
            and other.text.isupper()
            and entity.initials == other.words[0]
        ):
            return True
    return False


def _check_entities(claim: TextAnalysis, index: FactIndex, aligned: TextAnalysis, coverage: float, result) -> None:
    displaced = [other for other in aligned.entities if not _entity_in(other, claim.words, claim.entities)]
    for entity in claim.entities:
        if _entity_in(entity, index.words, index.entities):
            if _entity_in(entity, aligned.words, aligned.entities) or set(entity.keys) <= index.topic_words:
                continue
            if any(set(entity.keys) & set(other.keys) for other in aligned.entities):  # "Howard Florey" / "Florey"
                continue
            # named in the facts, but in another role: "Elon Musk founded Tesla" when the founders clause names others
            rivals = [other for other in displaced if not set(other.keys) & set(entity.keys)]
            if rivals and _coverage_without(claim, aligned, entity) >= SWAP_COVERAGE:
                result.contradictions.append(
                    f"name {entity.text!r} is not the one the facts give here ({rivals[0].text!r})"
                )
                result.spans.append(entity.text)
            continue
        if displaced and _coverage_without(claim, aligned, entity) >= RESTATEMENT_COVERAGE:
            result.contradictions.append(
                f"name {entity.text!r} is not in the facts, which name {displaced[0].text!r} here"
            )
            result.spans.append(entity.text)
        else:
            result.unsupported.append(f"name {entity.text!r} is not in the facts")


def _coverage_without(claim: TextAnalysis, clause: TextAnalysis, entity: Entity) -> float:
    skip = set(entity.keys)
    rest = [word for word in claim.content if word.key not in skip]
    total = sum(word.weight for word in rest) + sum(1.0 for q in claim.quantities if not q.soft)
    if total <= 0:
        return 0.0
    covered = sum(word.weight for word in rest if word.key in clause.words)
    covered += sum(1.0 for q in claim.quantities if not q.soft and any(q.matches(o) for o in clause.quantities))
    return covered / total


# ----------------------------------------------------------------------------------------------- polarity
def _check_polarity(claim: TextAnalysis, aligned: TextAnalysis, result: Consistency) -> None:
    if claim.negated != aligned.negated:
        which = "negates" if claim.negated else "drops the negation of"
        result.contradictions.append(f"the claim {which} the fact")
        result.spans.append(claim.negation_cue or claim.text)
    claim_keys, fact_keys = claim.keys, aligned.keys
    for key in claim.polarity_keys:
        opposite = antonyms_of(key) & fact_keys
        if opposite and key not in fact_keys and not (antonyms_of(key) & claim_keys):
            word = next(word.text for word in claim.content if word.key == key)
            fact_word = next(word.text for word in aligned.content if word.key in opposite)
            result.contradictions.append(f"{word!r} is the opposite of {fact_word!r} in the fact")
            result.spans.append(word)


def _check_swaps(claim: TextAnalysis, aligned: TextAnalysis, index: FactIndex, result: Consistency) -> None:
    """Content words swapped in place: "in the mitochondria of plant cells" vs "in the chloroplasts of plant cells"."""
    claim_words = [word for word in claim.content if word.weight >= 1.0 and not word.in_entity]
    if all(word.key in aligned.words for word in claim_words):
        return  # nothing of the claim is missing from the clause, so nothing was swapped in
    fact_words = [word for word in aligned.content if word.weight >= 1.0 and not word.in_entity]
    claim_keys = [word.key for word in claim_words]
    fact_keys = [word.key for word in fact_words]
    matcher = difflib.SequenceMatcher(a=claim_keys, b=fact_keys, autojunk=False)
    opcodes = matcher.get_opcodes()
    for position, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag != "replace" or i2 - i1 > MAX_SWAP_WORDS or j2 - j1 > MAX_SWAP_WORDS:
            continue
        new = [
            claim_words[i]
            for i in range(i1, i2)
            if claim_keys[i] not in aligned.words
            and claim_keys[i] not in index.topic_keys
            and not (i == 0 and claim_keys[i] in index.words)  # a subject the clause calls "it" or "he"
        ]
        old = [fact_words[j] for j in range(j1, j2) if fact_keys[j] not in claim.words]
        if not new or not old or any(looks_like_verb(word.text) for word in new + old):
            continue
        anchored = (position > 0 and opcodes[position - 1][0] == "equal") or (
            position + 1 < len(opcodes) and opcodes[position + 1][0] == "equal"
        )
        if not anchored:
            continue
        swapped = {word.key for word in new}
        rest = [word for word in claim.content if word.key not in swapped]
        rest_total = sum(word.weight for word in rest)
        if rest_total <= 0 or sum(w.weight for w in rest if w.key in aligned.words) / rest_total < SWAP_COVERAGE:
            continue
        result.contradictions.append(
            f"{' '.join(w.text for w in new)!r} in place of {' '.join(w.text for w in old)!r} in the fact"
        )
        result.spans.append(" ".join(w.text for w in new))
        return
