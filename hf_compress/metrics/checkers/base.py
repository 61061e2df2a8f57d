"""The plugin interface of a hallucination checker.

A checker is registered under the registry kind ``hallucination_checker`` as a class (or any callable) that builds
the checker from keyword options, and the object it builds has one method, :meth:`HallucinationChecker.check`:

- Options: the metric passes only the options the user gave, among ``model_path``, ``batch_size`` and ``device``;
  declare the ones your checker takes as keyword arguments of ``__init__`` (an option it does not declare is a clear
  error naming the checker). A model path that does not exist must raise ``FileNotFoundError`` in ``__init__``.
- ``check(claims, facts)`` gets a batch of claims and, for each claim, its list of reference facts, and returns one
  :class:`ClaimCheck` per claim. Batch inside it if the checker runs a model.
- A checker whose class sets ``uses_context = True`` is called as ``check(claims, facts, contexts=...)``, where
  ``contexts[i]`` is the whole prediction ``claims[i]`` was split from; it may then set
  ``ClaimCheck.prediction_score`` (the built-in ``lexical`` checker scores the prediction's word overlap there, with
  each claim's own checks).

```python
>>> from hf_compress.metrics.checkers import ClaimCheck, HallucinationChecker
>>> from hf_compress.metrics.scoring import score_hallucination
>>> class ExactMatchChecker(HallucinationChecker):
...     def check(self, claims, facts):
...         return [
...             ClaimCheck(score=0.0 if claim in claim_facts else 1.0, contradicted=False, evidence=None)
...             for claim, claim_facts in zip(claims, facts)
...         ]
>>> score_hallucination(["Paris is in France. It is big."], [["Paris is in France."]], ExactMatchChecker())[
...     "hallucination_rate"
... ]
0.5
```

A plugin distribution registers the class from its ``register(registry)`` entry point, like any component:
``registry.register("hallucination_checker", "exact_match", ExactMatchChecker)``; users then pass
``checker="exact_match"`` to the metric or to ``HallucinationEvalCallback``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClaimCheck:
    """A checker's verdict on one claim.

    Attributes:
        score (`float`): in [0, 1]; 0 means the facts support the claim, 1 means it is certainly hallucinated.
        contradicted (`bool`): the facts contradict the claim (rather than merely not covering it). The metric labels
            a claim whose score reaches the threshold ``contradicted`` when this is set, ``unsupported`` otherwise.
        evidence (`int | None`): index, in the claim's fact list, of the fact that best supports or contradicts it.
        reason (`str`): a short explanation for people reading the details.
        evidence_sentence (`str | None`): the sentence (or clause) of that fact that best supports or contradicts it.
        contradicting_span (`str | None`): the part of the claim that the facts contradict, where there is one.
        prediction_score (`float | None`): the claim's score with the word overlap of its whole prediction in place of
            its own (checkers with ``uses_context``). When set, the metric aggregates these instead of ``score``
            into the prediction's score; ``score`` still labels the claim.
    """

    score: float
    contradicted: bool
    evidence: int | None
    reason: str = ""
    evidence_sentence: str | None = None
    contradicting_span: str | None = None
    prediction_score: float | None = None


class HallucinationChecker(ABC):
    """Base class for checkers (subclassing is optional: any object with a matching ``check`` works)."""

    uses_context: bool = False  # True: check() also takes contexts=, the prediction each claim was split from

    @abstractmethod
    def check(self, claims: Sequence[str], facts: Sequence[Sequence[str]]) -> list[ClaimCheck]:
        """One :class:`ClaimCheck` per claim; ``facts[i]`` are the reference facts of ``claims[i]``."""


def existing_model_path(model_path, checker: str) -> Path:
    """``model_path`` as a ``Path`` that exists, or a ``FileNotFoundError`` naming the option and the checker."""
    if not isinstance(model_path, (str, os.PathLike)):
        raise ValueError(
            f"model_path for the {checker!r} checker must be a local path, got {type(model_path).__name__}"
        )
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model_path {str(model_path)!r} for the {checker!r} checker does not exist; pass the local folder of a "
            "saved model (nothing is downloaded)"
        )
    return path
