"""The default checker: no model, no download. Content-word alignment plus number, date, name and polarity checks.

```python
>>> from hf_compress.metrics.checkers.lexical import LexicalChecker
>>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
>>> checks = LexicalChecker().check(["Everest is 8849 m high.", "Everest is 8,611 m tall."], [facts, facts])  # "high": no thesaurus
>>> [(round(c.score, 2), c.contradicted) for c in checks]
[(0.24, False), (0.92, True)]
```
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker
from hf_compress.metrics.consistency import Consistency, assess, index_facts, ngram_gaps
from hf_compress.metrics.text_analysis import analyse

# Chosen by benchmarks/hallucination_tune.py on dev data only: the project's dev split and the dev parts of the
# outside sets (BEGIN, QAGS); their test parts were never used.
OVERLAP_SCALE = 1.25  # share of uncovered claim content that scores 1.0 is 1 / OVERLAP_SCALE
UNSUPPORTED_NAME_OR_NUMBER = 0.45  # lowest score of a claim with a name or number that no fact mentions
CONTRADICTION_BASE = 0.75  # score of a contradicted claim, plus up to 0.25 as it restates the clause more closely
# Long references (a news article): almost every word of a claim is in them somewhere, so the words and word pairs
# found nowhere matter more than content coverage, and aligning a claim with one clause to find contradictions
# misfires more often than it helps (on the QAGS dev parts).
LONG_REFERENCE_WORDS = 150
LONG_WEIGHTS = (0.3, 0.1, 0.6)  # content uncovered, word pairs not found, words not found
LONG_OVERLAP_SCALE = 4.0
LONG_UNSUPPORTED_NAME_OR_NUMBER = 0.3


def consistency_score(result: Consistency, gaps: tuple[float, float] = (0.0, 0.0), long: bool = False) -> float:
    """Hallucination score in [0, 1] of one claim from its :class:`Consistency` report; with ``long`` references
    also from ``gaps`` (:func:`hf_compress.metrics.consistency.ngram_gaps`: words and word pairs found in no fact)."""
    if long:
        content, pairs, words = LONG_WEIGHTS
        mixed = content * result.uncovered_fraction + pairs * gaps[1] + words * gaps[0]
        overlap = min(1.0, LONG_OVERLAP_SCALE * mixed)
        if result.unsupported:
            overlap = max(overlap, LONG_UNSUPPORTED_NAME_OR_NUMBER + (1 - LONG_UNSUPPORTED_NAME_OR_NUMBER) * overlap)
        return overlap
    overlap = min(1.0, OVERLAP_SCALE * result.uncovered_fraction)
    unsupported = overlap
    if result.unsupported:
        unsupported = max(overlap, UNSUPPORTED_NAME_OR_NUMBER + (1 - UNSUPPORTED_NAME_OR_NUMBER) * overlap)
    contradiction = 0.0
    if result.contradictions:
        contradiction = CONTRADICTION_BASE + (1 - CONTRADICTION_BASE) * result.clause_coverage
    return max(unsupported, contradiction)


def explain(result: Consistency) -> str:
    parts = list(result.contradictions) + list(result.unsupported)
    if result.uncovered_words:
        parts.append("not in the facts: " + ", ".join(result.uncovered_words))
    return "; ".join(parts)


class LexicalChecker(HallucinationChecker):
    """Scores claims with :func:`hf_compress.metrics.consistency.assess` alone. Takes no options."""

    def check(self, claims: Sequence[str], facts: Sequence[Sequence[str]]) -> list[ClaimCheck]:
        checks = []
        for claim, claim_facts in zip(claims, facts):
            index = index_facts(tuple(claim_facts))
            analysis = analyse(claim)
            result = assess(analysis, index)
            long = len(index.unigrams) >= LONG_REFERENCE_WORDS
            score = consistency_score(result, ngram_gaps(analysis, index) if long else (0.0, 0.0), long)
            if long and result.contradictions:
                result.contradictions.clear()
            evidence = (
                index.clause_fact[result.clause] if result.clause is not None and result.clause_coverage > 0 else None
            )
            sentence = index.clause_texts[result.clause] if evidence is not None else None
            span = result.spans[0] if result.spans else None
            checks.append(ClaimCheck(score, bool(result.contradictions), evidence, explain(result), sentence, span))
        return checks
