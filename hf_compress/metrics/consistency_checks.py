"""The checks :func:`hf_compress.metrics.consistency.assess` runs on a claim against the clause of the facts it
aligns with: names (missing, or given a role the facts give to another name), polarity (negation and antonyms),
content words swapped in place, and the order of two names around one relation.

Each check appends to the :class:`~hf_compress.metrics.consistency.Consistency` it is given. Pure functions, no model.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from hf_compress.metrics.fact_index import FactIndex
from hf_compress.metrics.text_analysis import Entity, TextAnalysis, antonyms_of, looks_like_verb, word_key

if TYPE_CHECKING:
    from hf_compress.metrics.consistency import Consistency

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


def check_entities(claim: TextAnalysis, index: FactIndex, aligned: TextAnalysis, coverage: float, result) -> None:
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
def check_polarity(claim: TextAnalysis, aligned: TextAnalysis, result: Consistency) -> None:
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


def check_swaps(claim: TextAnalysis, aligned: TextAnalysis, index: FactIndex, result: Consistency) -> None:
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


def check_order(claim: TextAnalysis, aligned: TextAnalysis, result: Consistency) -> None:
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


def check_roles(claim: TextAnalysis, index: FactIndex, result: Consistency) -> None:
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
