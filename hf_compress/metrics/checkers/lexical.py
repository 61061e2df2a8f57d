"""The default checker: no model, no download. Content-word alignment plus number, date, name and polarity checks.

```python
>>> from hf_compress.metrics.checkers.lexical import LexicalChecker
>>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
>>> checks = LexicalChecker().check(["Everest is 8849 m high.", "Everest is 8,611 m tall."], [facts, facts])
>>> [(round(c.score, 2), c.contradicted) for c in checks]
[(0.0, False), (0.92, True)]
```
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker
from hf_compress.metrics.consistency import Consistency, assess, index_facts
from hf_compress.metrics.text_analysis import analyse

# Tuned on the dev split of benchmarks/data (never on the test split).
UNCOVERED_FOR_FULL_SCORE = 0.7  # share of claim content no fact covers that scores 1.0
UNSUPPORTED_NAME_OR_NUMBER = 0.6  # lowest score of a claim with a name or number that no fact mentions
CONTRADICTION_BASE = 0.75  # score of a contradicted claim, plus up to 0.25 as it restates the clause more closely


def consistency_score(result: Consistency) -> float:
    """Hallucination score in [0, 1] of one claim from its :class:`Consistency` report."""
    unsupported = min(1.0, result.uncovered_fraction / UNCOVERED_FOR_FULL_SCORE)
    if result.unsupported:
        unsupported = max(
            unsupported, UNSUPPORTED_NAME_OR_NUMBER + (1 - UNSUPPORTED_NAME_OR_NUMBER) * result.uncovered_fraction
        )
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
            result = assess(analyse(claim), index)
            score = consistency_score(result)
            evidence = (
                index.clause_fact[result.clause] if result.clause is not None and result.clause_coverage > 0 else None
            )
            checks.append(ClaimCheck(score, bool(result.contradictions), evidence, explain(result)))
        return checks
