"""The default checker: no model, no download. Word overlap with the references plus content-word alignment and
number, date, name and polarity checks, combined by a logistic model fitted on dev data.

```python
>>> from hf_compress.metrics.checkers.lexical import LexicalChecker
>>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
>>> checks = LexicalChecker().check(["Everest is 8849 m high.", "Everest is 8,611 m tall."], [facts, facts])  # "high": no thesaurus
>>> [(round(c.score, 2), c.contradicted) for c in checks]
[(0.33, False), (0.64, True)]
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker
from hf_compress.metrics.consistency import Consistency, assess, index_facts, ngram_gaps
from hf_compress.metrics.fact_index import LONG_REFERENCE_WORDS  # noqa: F401 (public here too)
from hf_compress.metrics.text_analysis import analyse

# A logistic model per kind of reference: score = sigmoid(bias + weights . claim_features(...)). Against long
# references (FactIndex.long: a news article, not a few facts or a knowledge snippet) almost every word of a claim is
# in them somewhere, and aligning a claim with one clause to find contradictions misfires more often than it helps,
# so only word and word-pair gaps are scored. Fitted by
# `python benchmarks/hallucination_tune.py` on DEV data only: the project's dev split (at half weight) and the dev
# parts of BEGIN for short references; the dev parts of QAGS-CNN/DM, QAGS-XSum (and BEGIN's few long snippets) for
# long ones. The test parts were never loaded. Classes are balanced, so 0.5 is the balanced operating point.
SHORT_FEATURES = (
    "words not in the facts",
    "word pairs not in the facts",
    "content not covered",
    "contradicted",
    "name or number not in the facts",
    "contradicted x clause coverage",
)
SHORT_WEIGHTS = (5.151, -0.928, 3.110, 2.495, 0.581, 0.959)
SHORT_BIAS = -2.578
# A contradiction the checks find flags the claim at the default threshold whatever the model says: its score is at
# least this. (On dev this left the ranking as it was; a floor rising with clause coverage cost BEGIN 0.016 AUC.)
CONTRADICTION_FLOOR = 0.5
LONG_FEATURES = ("words not in the facts", "word pairs not in the facts")
LONG_WEIGHTS = (4.556, 1.813)
LONG_BIAS = -1.520


def claim_features(result: Consistency, gaps: tuple[float, float], long: bool) -> tuple[float, ...]:
    """The model's inputs for one claim (named in ``SHORT_FEATURES`` / ``LONG_FEATURES``): ``result`` is the claim's
    :class:`~hf_compress.metrics.consistency.Consistency` report, ``gaps`` the
    :func:`~hf_compress.metrics.consistency.ngram_gaps` of the claim (its own score) or of its whole prediction (its
    ``prediction_score``)."""
    if long:
        return gaps
    contradicted = float(bool(result.contradictions))
    return (
        *gaps,
        result.uncovered_fraction,
        contradicted,
        float(bool(result.unsupported)),
        contradicted * result.clause_coverage,
    )


def with_contradiction_floor(score: float, features: Sequence[float], long: bool) -> float:
    """``score``, raised to ``CONTRADICTION_FLOOR`` for a contradicted claim against short references."""
    if not long and features[3]:  # contradicted
        return max(score, CONTRADICTION_FLOOR)
    return score


def logistic_score(features: Sequence[float], weights: Sequence[float], bias: float, long: bool) -> float:
    """sigmoid(bias + weights . features), for features that start with :func:`claim_features`, with the
    contradiction floor."""
    logit = bias + sum(weight * value for weight, value in zip(weights, features))
    return with_contradiction_floor(1.0 / (1.0 + math.exp(-logit)), features, long)


def consistency_score(result: Consistency, gaps: tuple[float, float], long: bool) -> float:
    """Hallucination score in [0, 1] of one claim from its :class:`Consistency` report and word ``gaps``."""
    features = claim_features(result, gaps, long)
    if long:
        return logistic_score(features, LONG_WEIGHTS, LONG_BIAS, long)
    return logistic_score(features, SHORT_WEIGHTS, SHORT_BIAS, long)


def own_and_in_context(
    score, result: Consistency, claim: str, context: str, index, cache: dict
) -> tuple[float, float]:
    """``score(result, gaps, long)`` of a claim with its own word gaps, and with those of its whole prediction
    (``context``; computed once per prediction and facts in ``cache``, or a long prediction would cost time quadratic
    in its length). Against long references the clause-level contradictions are then dropped: they misfire there."""
    own = score(result, ngram_gaps(claim, index), index.long)
    if context == claim:
        in_context = own
    else:
        key = (context, index.facts)
        if key not in cache:
            cache[key] = ngram_gaps(context, index)
        in_context = score(result, cache[key], index.long)
    if index.long:
        result.contradictions.clear()
        result.spans.clear()
    return own, in_context


def explain(result: Consistency) -> str:
    parts = list(result.contradictions) + list(result.unsupported)
    if result.uncovered_words:
        parts.append("not in the facts: " + ", ".join(result.uncovered_words))
    return "; ".join(parts)


class LexicalChecker(HallucinationChecker):
    """Scores claims with :func:`hf_compress.metrics.consistency.assess` and their word gaps; each claim's
    ``prediction_score`` takes the gaps of its whole prediction instead. Takes no options."""

    uses_context = True

    def check(
        self, claims: Sequence[str], facts: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[ClaimCheck]:
        checks, gap_cache = [], {}
        for position, (claim, claim_facts) in enumerate(zip(claims, facts)):
            index = index_facts(tuple(claim_facts))
            result = assess(analyse(claim), index)
            context = contexts[position] if contexts is not None else claim
            own, in_context = own_and_in_context(consistency_score, result, claim, context, index, gap_cache)
            evidence = (
                index.clause_fact[result.clause] if result.clause is not None and result.clause_coverage > 0 else None
            )
            sentence = index.clause_texts[result.clause] if evidence is not None else None
            span = result.spans[0] if result.spans else None
            checks.append(
                ClaimCheck(own, bool(result.contradictions), evidence, explain(result), sentence, span, in_context)
            )
        return checks
