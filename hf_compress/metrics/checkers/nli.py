"""A checker that runs a local natural-language-inference (NLI) classifier: each fact (and all facts together) is the
premise, the claim is the hypothesis; the entailment probability supports the claim.

Any sequence-classification model saved in a local folder works, as long as its ``config.id2label`` names an
entailment label (and, optionally, a contradiction label), e.g. ``{0: "entailment", 1: "neutral",
2: "contradiction"}``. Nothing is downloaded.

```python
>>> from hf_compress.metrics.checkers.nli import nli_label_ids
>>> nli_label_ids({0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"})
(0, 2)
>>> nli_label_ids({0: "entailment", 1: "not_entailment"})
(0, None)
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hf_compress.metrics.checkers.base import ClaimCheck, HallucinationChecker, existing_model_path


def nli_label_ids(id2label: Mapping[int, str]) -> tuple[int, int | None]:
    """(entailment id, contradiction id or None) from a model's ``config.id2label``."""
    entailment = contradiction = None
    for label_id, label in id2label.items():
        name = str(label).lower()
        if name.startswith("entail"):
            entailment = int(label_id)
        elif name.startswith("contradict"):
            contradiction = int(label_id)
    if entailment is None:
        raise ValueError(
            f"the 'nli' checker needs a model whose config.id2label names an entailment label, e.g. "
            f"{{0: 'entailment', 1: 'neutral', 2: 'contradiction'}}; got {dict(id2label)}"
        )
    return entailment, contradiction


class NLIChecker(HallucinationChecker):
    """Batched NLI: the claim's support is its best entailment probability over the premises.

    Args:
        model_path (`str`): local folder with a sequence-classification NLI model and its tokenizer.
        batch_size (`int`, *optional*, defaults to 16): premise/claim pairs per forward pass.
        device (`str`, *optional*): e.g. ``"cpu"`` or ``"cuda"``; defaults to CUDA when available.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 16, device: str | None = None) -> None:
        if model_path is None:
            raise ValueError(
                "the 'nli' checker needs model_path=: the local folder of a sequence-classification NLI model"
            )
        path = existing_model_path(model_path, "nli")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        self.model.to(self.device).eval()
        self.entailment_id, self.contradiction_id = nli_label_ids(self.model.config.id2label)
        self.batch_size = int(batch_size)
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_length = min(int(limit), 512)

    @torch.no_grad()
    def probabilities(self, premises: list[str], hypotheses: list[str]) -> torch.Tensor:
        """Class probabilities, one row per (premise, hypothesis) pair, computed in batches."""
        rows = []
        for start in range(0, len(premises), self.batch_size):
            encoded = self.tokenizer(
                premises[start : start + self.batch_size],
                hypotheses[start : start + self.batch_size],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            rows.append(self.model(**encoded).logits.float().softmax(-1).cpu())
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.num_labels)

    def check(self, claims: Sequence[str], facts: Sequence[Sequence[str]]) -> list[ClaimCheck]:
        premises, hypotheses, owners, fact_ids = [], [], [], []
        for position, (claim, claim_facts) in enumerate(zip(claims, facts)):
            candidates = [(fact, index) for index, fact in enumerate(claim_facts)]
            if len(claim_facts) > 1:  # claims that combine several facts
                candidates.append((" ".join(claim_facts), None))
            for premise, fact_id in candidates:
                premises.append(premise)
                hypotheses.append(claim)
                owners.append(position)
                fact_ids.append(fact_id)
        probabilities = self.probabilities(premises, hypotheses)
        checks = []
        for position in range(len(claims)):
            rows = [row for row, owner in enumerate(owners) if owner == position]
            entail = probabilities[rows, self.entailment_id]
            best = rows[int(entail.argmax())]
            support = float(entail.max())
            contradiction = 0.0
            if self.contradiction_id is not None:
                contradiction = float(probabilities[rows, self.contradiction_id].max())
            evidence = fact_ids[best]
            if evidence is None:  # the joined premise won: point at the single fact with the best entailment
                singles = [row for row in rows if fact_ids[row] is not None]
                evidence = fact_ids[max(singles, key=lambda row: float(probabilities[row, self.entailment_id]))]
            reason = f"entailment {support:.2f}, contradiction {contradiction:.2f}"
            checks.append(ClaimCheck(1.0 - support, contradiction > support, evidence, reason))
        return checks
