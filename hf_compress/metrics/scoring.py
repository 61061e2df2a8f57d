"""The hallucination metric itself, without the ``evaluate`` plumbing: split predictions into claims, let a checker
score each claim against the example's reference facts, and aggregate.

Used by the ``evaluate`` module (``hf_compress/metrics/hallucination``) and by
:class:`~hf_compress.metrics.callback.HallucinationEvalCallback`.

```python
>>> from hf_compress.metrics.checkers.lexical import LexicalChecker
>>> from hf_compress.metrics.scoring import score_hallucination
>>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
>>> result = score_hallucination(["Everest is 8849 m tall and lies in Peru."], [facts], LexicalChecker())
>>> result["hallucination_rate"], result["fact_recall"]
(0.5, 0.5)
>>> [(claim["claim"], claim["label"]) for claim in result["details"][0]["claims"]]
[('Everest is 8849 m tall.', 'supported'), ('Everest lies in Peru.', 'contradicted')]
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hf_compress.metrics.checkers.base import ClaimCheck
from hf_compress.metrics.claims import split_claims
from hf_compress.metrics.language import language_of

LABELS = ("supported", "contradicted", "unsupported")
UNVERIFIED = (
    "unverified"  # a claim not in English: reported, never scored (the checkers' language knowledge is English)
)


def validate_inputs(predictions: Any, references: Any) -> None:
    """Raise a clear error for inputs the metric cannot score (see the metric card, "Inputs")."""
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise TypeError(f"predictions must be a list of strings, got {type(predictions).__name__}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"references must be a list of lists of fact strings, got {type(references).__name__}")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length: got {len(predictions)} predictions and "
            f"{len(references)} reference lists"
        )
    for position, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise TypeError(
                f"predictions[{position}] must be a string, got {type(prediction).__name__}: {prediction!r}"
            )
    for position, facts in enumerate(references):
        if isinstance(facts, str) or not isinstance(facts, Sequence):
            raise TypeError(
                f"references[{position}] must be a list of fact strings, got {type(facts).__name__}: {facts!r}"
            )
        if len(facts) == 0:
            raise ValueError(
                f"references[{position}] is an empty list; give at least one reference fact per prediction"
            )
        for fact_position, fact in enumerate(facts):
            if not isinstance(fact, str):
                raise TypeError(
                    f"references[{position}][{fact_position}] must be a string, got {type(fact).__name__}: {fact!r}"
                )
            if not fact.strip():
                raise ValueError(f"references[{position}][{fact_position}] is an empty string")


def label_for(check: ClaimCheck, threshold: float) -> str:
    """``supported`` below the threshold; at or above it, ``contradicted`` or ``unsupported``."""
    if check.score < threshold:
        return "supported"
    return "contradicted" if check.contradicted else "unsupported"


def score_hallucination(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    checker,
    threshold: float = 0.5,
    aggregation: str = "max",
) -> dict[str, Any]:
    """Score ``predictions`` against their reference facts with ``checker`` (an object with a ``check`` method).

    Returns:
        `dict`: ``hallucination_rate``, ``contradiction_rate`` (pooled over all claims; ``None`` when no prediction
        has a claim), ``factual_precision`` (mean over predictions with claims of their supported share; ``None``
        likewise), ``fact_recall`` (mean over predictions of the share of their facts they state), ``num_claims``
        (claims scored), ``num_unverified`` (claims not in English: labelled ``unverified``, never scored),
        ``scores`` (per prediction, in [0, 1], higher = more hallucinated: its claims' scores aggregated, each seen
        with its whole prediction's word overlap where the checker gives that), ``flagged`` (score >= threshold) and
        ``details`` (per prediction: its claims with label, score, evidence fact, evidence sentence, contradicting
        span and reason).
    """
    validate_inputs(predictions, references)
    references = [list(facts) for facts in references]
    claims = [split_claims(prediction) for prediction in predictions]
    languages = [[language_of(claim) for claim in example] for example in claims]

    flat_claims = [
        claim for i, example in enumerate(claims) for j, claim in enumerate(example) if languages[i][j] == "en"
    ]
    flat_facts = [
        references[i] for i, example in enumerate(claims) for j in range(len(example)) if languages[i][j] == "en"
    ]
    flat_contexts = [
        predictions[i] for i, example in enumerate(claims) for j in range(len(example)) if languages[i][j] == "en"
    ]
    checks = _run(checker, flat_claims, flat_facts, flat_contexts)

    # fact recall: is each reference fact supported by what the prediction says?
    recall_facts = [fact for i, example in enumerate(claims) if example for fact in references[i]]
    recall_evidence = [claims[i] for i, example in enumerate(claims) if example for _ in references[i]]
    recall_checks = iter(_run(checker, recall_facts, recall_evidence, recall_facts))

    details, scores, flagged = [], [], []
    precisions, recalls = [], []
    counts = dict.fromkeys(LABELS, 0)
    unverified = 0
    flat = iter(checks)
    for position, example in enumerate(claims):
        facts = references[position]
        judged, prediction_scores = [], []
        for claim, language in zip(example, languages[position]):
            if language != "en":
                unverified += 1
                judged.append(
                    {
                        "claim": claim,
                        "label": UNVERIFIED,
                        "score": None,
                        "evidence": None,
                        "evidence_sentence": None,
                        "contradicting_span": None,
                        "reason": f"not English (language {language!r}): not verified",
                        "language": language,
                    }
                )
                continue
            check = next(flat)
            label = label_for(check, threshold)
            counts[label] += 1
            evidence = facts[check.evidence] if check.evidence is not None else None
            in_context = getattr(check, "prediction_score", None)
            prediction_scores.append(check.score if in_context is None else in_context)
            judged.append(
                {
                    "claim": claim,
                    "label": label,
                    "score": _clip(check.score),
                    "evidence": evidence,
                    "evidence_sentence": getattr(check, "evidence_sentence", None) or evidence,
                    "contradicting_span": getattr(check, "contradicting_span", None)
                    if label == "contradicted"
                    else None,
                    "reason": check.reason,
                    "language": language,
                }
            )
        stated = [next(recall_checks).score < threshold for _ in facts] if example else [False] * len(facts)
        score = _aggregate([_clip(value) for value in prediction_scores], aggregation)
        verified = [item for item in judged if item["label"] != UNVERIFIED]
        precision = sum(item["label"] == "supported" for item in verified) / len(verified) if verified else None
        recall = sum(stated) / len(facts)
        if precision is not None:
            precisions.append(precision)
        recalls.append(recall)
        scores.append(score)
        flagged.append(score >= threshold)
        details.append(
            {
                "num_claims": len(judged),
                "num_unverified": len(judged) - len(verified),
                "claims": judged,
                "score": score,
                "flagged": score >= threshold,
                "factual_precision": precision,
                "fact_recall": recall,
                "facts_stated": stated,
            }
        )

    total = sum(counts.values())
    return {
        "hallucination_rate": (counts["contradicted"] + counts["unsupported"]) / total if total else None,
        "contradiction_rate": counts["contradicted"] / total if total else None,
        "factual_precision": sum(precisions) / len(precisions) if precisions else None,
        "fact_recall": sum(recalls) / len(recalls) if recalls else None,
        "num_claims": total,
        "num_unverified": unverified,
        "scores": scores,
        "flagged": flagged,
        "details": details,
    }


def _run(checker, claims: list[str], facts: list[list[str]], contexts: list[str]) -> list[ClaimCheck]:
    """``checker.check`` on a batch; a checker with ``uses_context = True`` also gets the text each claim comes from."""
    if not claims:
        return []
    if getattr(checker, "uses_context", False):
        checks = list(checker.check(claims, facts, contexts=contexts))
    else:
        checks = list(checker.check(claims, facts))
    if len(checks) != len(claims):
        raise RuntimeError(f"checker {type(checker).__name__} returned {len(checks)} results for {len(claims)} claims")
    return checks


def _aggregate(scores: list[float], aggregation: str) -> float:
    if not scores:
        return 0.0  # an empty prediction states nothing, so nothing in it is hallucinated (see fact_recall)
    if aggregation == "mean":
        return sum(scores) / len(scores)
    return max(scores)


def _clip(score: float) -> float:
    return min(1.0, max(0.0, float(score)))
