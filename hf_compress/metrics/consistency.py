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
from hf_compress.metrics.text_analysis import (
    Entity,
    Quantity,
    TextAnalysis,
    analyse,
    antonyms_of,
    looks_like_verb,
    word_key,
)

_ORDER_KEYS = frozenset(word_key(word) for word in ("before", "after", "first", "then", "later"))
_COPULAS = frozenset({word_key("is"), "and", "or", "of", "'s"})

# A claim "restates" a clause when at least this share of its content is found there; only then are polarity and
# swapped words judged against that clause.
RESTATEMENT_COVERAGE = 0.5
SWAP_COVERAGE = 0.6
MAX_SWAP_WORDS = 3
SWAP_MIN_WEIGHT = 0.6  # a word this informative (wordfreq weight) can be a swapped-in content word
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
        status, other = _quantity_status(quantity, index, aligned, coverages, claim, index.topic_words)
        if status == "contradicted":
            result.contradictions.append(f"{_kind(quantity)} {quantity.text} contradicts {other.text}")
            result.spans.append(quantity.text)
        elif status == "uncovered":
            uncovered += 1.0
            result.unsupported.append(f"{_kind(quantity)} {quantity.text} is not in the facts")
    if aligned is not None:
        _check_entities(claim, index, aligned, coverages[clause], result)
        if not result.contradictions:
            _check_roles(claim, index, result)
        if clause_coverage >= RESTATEMENT_COVERAGE:
            _check_polarity(claim, aligned, result)
            _check_swaps(claim, aligned, index, result)
            _check_order(claim, aligned, result)
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
            if rivals and _coverage_without(claim, aligned, entity, index.topic_words) >= SWAP_COVERAGE:
                result.contradictions.append(
                    f"name {entity.text!r} is not the one the facts give here ({rivals[0].text!r})"
                )
                result.spans.append(entity.text)
            continue
        if displaced and _coverage_without(claim, aligned, entity, index.topic_words) >= RESTATEMENT_COVERAGE:
            result.contradictions.append(
                f"name {entity.text!r} is not in the facts, which name {displaced[0].text!r} here"
            )
            result.spans.append(entity.text)
        else:
            result.unsupported.append(f"name {entity.text!r} is not in the facts")


def _coverage_without(
    claim: TextAnalysis, clause: TextAnalysis, entity: Entity, topic: frozenset[str] = frozenset()
) -> float:
    """Share of the claim's content, less ``entity``, found in ``clause`` (the topic's name counts as found)."""
    skip = set(entity.keys)
    rest = [word for word in claim.content if word.key not in skip]
    total = sum(word.weight for word in rest) + sum(1.0 for q in claim.quantities if not q.soft)
    if total <= 0:
        return 0.0
    covered = sum(word.weight for word in rest if word.key in clause.words or word.key in topic)
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
    claim_words = [word for word in claim.content if word.weight >= SWAP_MIN_WEIGHT and not word.in_entity]
    if all(word.key in aligned.words for word in claim_words):
        return  # nothing of the claim is missing from the clause, so nothing was swapped in
    fact_words = [word for word in aligned.content if word.weight >= SWAP_MIN_WEIGHT and not word.in_entity]
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


# ----------------------------------------------------------------------------------------------- order
_ORDER_FLIP = frozenset({"after", "later", "following", "by"})  # "B after A", "B was beaten by A": reversed order


def _entity_positions(analysis: TextAnalysis, keys: list[str]) -> dict[str, int]:
    positions = {}
    for entity in analysis.entities:
        for key in entity.keys:
            if key in keys and key not in positions:
                positions[key] = analysis.text.find(entity.text)
    return positions


def _precedes(analysis: TextAnalysis, first: str, second: str, positions: dict[str, int]) -> tuple[bool, set[str]]:
    """Whether ``first`` comes before ``second`` in meaning (reading order, reversed by "after" or "by" between
    them), and the keys of the words between them (the relation)."""
    left, right = sorted((positions[first], positions[second]))
    between = analysis.text[left:right].lower().split()
    keys = {word_key(word.strip(",.;:")) for word in between}
    order = positions[first] < positions[second]
    if sum(word.strip(",.;:") in _ORDER_FLIP for word in between) % 2:
        order = not order
    return order, keys


def _check_order(claim: TextAnalysis, aligned: TextAnalysis, result: Consistency) -> None:
    """Two names of the fact in the other order around the same relation: "Budapest before Vienna" against
    "Vienna before Budapest", "Brazil beat Italy" against "Italy beat Brazil"."""
    claim_keys = [entity.keys[-1] for entity in claim.entities]
    fact_keys = {entity.keys[-1] for entity in aligned.entities}
    shared = list(dict.fromkeys(key for key in claim_keys if key in fact_keys))
    if len(shared) < 2 or result.contradictions:
        return
    first, second = shared[:2]
    claim_positions = _entity_positions(claim, [first, second])
    fact_positions = _entity_positions(aligned, [first, second])
    if len(claim_positions) < 2 or len(fact_positions) < 2:
        return
    claim_order, claim_between = _precedes(claim, first, second, claim_positions)
    fact_order, fact_between = _precedes(aligned, first, second, fact_positions)
    if (claim_between | fact_between) & _COPULAS:
        return  # "Japan's capital is Tokyo" / "Tokyo is the capital of Japan": a copula relates both ways
    relation = {key for key in claim_between & fact_between if key in _ORDER_KEYS or key in claim.keys}
    if claim_order != fact_order and relation:
        names = {entity.keys[-1]: entity.text for entity in claim.entities}
        result.contradictions.append(f"{names[first]!r} and {names[second]!r} are in the other order in the fact")
        result.spans.append(f"{names[first]} ... {names[second]}")


# ----------------------------------------------------------------------------------------------- roles
ROLE_PREDICATE_COVERAGE = 0.8  # share of the claim's non-name content that one clause must hold to be "the" predicate
ROLE_MIN_PREDICATE_WEIGHT = 1.5


def _check_roles(claim: TextAnalysis, index: FactIndex, result: Consistency) -> None:
    """A name of the facts given a role the facts give to another name: "Charles Ellis was the chief engineer" when
    the clause that says "chief engineer" names Joseph Strauss (and Ellis appears elsewhere in the facts)."""
    names = [entity for entity in claim.entities if not set(entity.keys) <= index.topic_words]
    if not names:
        return
    name_keys = {key for entity in claim.entities for key in entity.keys} | index.topic_words
    predicate = [word for word in claim.content if word.key not in name_keys and not word.in_entity]
    weight = sum(word.weight for word in predicate)
    if weight < ROLE_MIN_PREDICATE_WEIGHT:
        return
    best, best_share = None, 0.0
    for clause in index.clauses:
        share = sum(word.weight for word in predicate if word.key in clause.words) / weight
        if share > best_share:
            best, best_share = clause, share
    if best is None or best_share < ROLE_PREDICATE_COVERAGE:
        return
    for entity in names:
        if _entity_in(entity, best.words, best.entities) or not _entity_in(entity, index.words, index.entities):
            continue
        rivals = [
            other
            for other in best.entities
            if not set(other.keys) <= index.topic_words and not _entity_in(other, claim.words, claim.entities)
        ]
        if rivals:
            result.contradictions.append(
                f"name {entity.text!r} is not the one the facts give here ({rivals[0].text!r})"
            )
            result.spans.append(entity.text)
            return
