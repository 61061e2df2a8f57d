"""The hallucination metric through its public API: both offline load paths, each checker, outputs, bad inputs."""

from __future__ import annotations

import doctest
import importlib

import evaluate
import pytest
import torch

import hf_compress
from hf_compress.metrics import metric_path
from hf_compress.metrics.claims import split_claims
from hf_compress.registry import get_registry

torch.set_num_threads(1)

EVEREST = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
APOLLO = [
    "Apollo 11 landed on the Moon on July 20, 1969.",
    "Neil Armstrong was the first person to walk on the lunar surface.",
    "Buzz Aldrin joined Armstrong on the surface, while Michael Collins stayed in lunar orbit.",
]
WATER = ["At sea level, pure water boils at 100 degrees Celsius.", "Ice floats because it is less dense than water."]


@pytest.fixture(scope="module")
def metric():
    return hf_compress.load_metric("hallucination")


class FencedDocTestParser(doctest.DocTestParser):
    """Doctests in Markdown code fences (HF docstring style): the closing fence is not expected output."""

    def parse(self, string, name="<string>"):
        lines = [line for line in string.splitlines() if not line.strip().startswith("```")]
        return super().parse("\n".join(lines) + "\n", name)


def labels(results, example=0):
    return [claim["label"] for claim in results["details"][example]["claims"]]


# ------------------------------------------------------------------------------------------------ loading
def test_loads_offline_both_ways_and_agrees():
    folder = metric_path("hallucination")
    assert (folder / "hallucination.py").is_file() and (folder / "README.md").is_file()
    by_path = evaluate.load(str(folder))
    by_name = hf_compress.load_metric("hallucination")
    assert type(by_path).__name__ == type(by_name).__name__ == "Hallucination"
    assert isinstance(by_path, evaluate.Metric)
    features = by_path.info.features
    assert features["predictions"].dtype == "string" and features["references"].feature.dtype == "string"
    inputs = dict(predictions=["Everest is 8849 m high. It lies in Peru."], references=[EVEREST])
    assert by_path.compute(**inputs)["scores"] == by_name.compute(**inputs)["scores"]
    with pytest.raises(ValueError, match="unknown metric 'halucination'.*Did you mean 'hallucination'"):
        hf_compress.load_metric("halucination")


def test_metric_card_has_the_required_sections():
    card = (metric_path("hallucination") / "README.md").read_text()
    for section in (
        "Description",
        "How to Use",
        "Inputs",
        "Output Values",
        "Examples",
        "Limitations and Bias",
        "Citation",
    ):
        assert f"## {section}" in card or f"### {section}" in card or f"## Metric {section}" in card, section


@pytest.mark.parametrize(
    "module",
    [
        "hf_compress.metrics",
        "hf_compress.metrics.claims",
        "hf_compress.metrics.text_analysis",
        "hf_compress.metrics.consistency",
        "hf_compress.metrics.scoring",
        "hf_compress.metrics.config",
        "hf_compress.metrics.checkers.base",
        "hf_compress.metrics.checkers.lexical",
        "hf_compress.metrics.checkers.embedding",
        "hf_compress.metrics.checkers.nli",
    ],
)
def test_docstring_examples_run(module):
    finder = doctest.DocTestFinder(parser=FencedDocTestParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(importlib.import_module(module)):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_module_and_card_examples_run(metric):
    from hf_compress.metrics.hallucination import hallucination

    parser = FencedDocTestParser()
    card = (metric_path("hallucination") / "README.md").read_text()
    for name, text in [("kwargs", hallucination._KWARGS_DESCRIPTION), ("card", card)]:
        test = parser.get_doctest(text, {}, name, None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0, name


# ------------------------------------------------------------------------------------------------ claims
def test_claims_are_split_into_sentences_and_clauses():
    text = "Marie Curie, who was born in Warsaw, won two Nobel Prizes. She discovered radium and died in 1934."
    assert split_claims(text) == [
        "Marie Curie was born in Warsaw.",
        "Marie Curie won two Nobel Prizes.",
        "She discovered radium.",
        "She died in 1934.",
    ]
    assert split_claims("Tesla, Inc. is based in Austin. It delivered 1.81 million cars.") == [
        "Tesla, Inc. is based in Austin.",
        "It delivered 1.81 million cars.",
    ]
    assert split_claims("Hillary and Norgay reached the summit in 1953.") == [
        "Hillary and Norgay reached the summit in 1953."
    ]


# ------------------------------------------------------------------------------------------------ lexical checker
@pytest.mark.parametrize(
    ("prediction", "facts", "label"),
    [
        ("Everest stands 8849 m tall.", EVEREST, "supported"),  # other number format and unit spelling
        ("Everest is about 8.85 km high.", EVEREST, "supported"),  # unit conversion, hedged
        ("Mount Everest is 8,611 metres tall.", EVEREST, "contradicted"),  # wrong number
        ("Everest lies on the border between Nepal and India.", EVEREST, "contradicted"),  # wrong name
        ("The Apollo 11 landing happened on 20 July 1969.", APOLLO, "supported"),  # other date format
        ("Apollo 11 landed on the Moon on July 16, 1969.", APOLLO, "contradicted"),  # wrong date
        ("Buzz Aldrin was the first person to walk on the lunar surface.", APOLLO, "contradicted"),  # role swap
        ("Buzz Aldrin never set foot on the lunar surface.", APOLLO, "contradicted"),  # negation
        ("Pure water boils at 212 °F at sea level.", WATER, "supported"),  # °F vs °C
        ("Ice sinks because it is more dense than water.", WATER, "contradicted"),  # antonyms
        ("The first ascent was sponsored by the National Geographic Society.", EVEREST, "unsupported"),  # fabricated
    ],
)
def test_lexical_checker_labels(metric, prediction, facts, label):
    results = metric.compute(predictions=[prediction], references=[facts])
    assert labels(results) == [label], results["details"][0]["claims"]
    claim = results["details"][0]["claims"][0]
    assert 0.0 <= claim["score"] <= 1.0
    assert (claim["score"] >= 0.5) == (label != "supported")


def test_outputs_rates_precision_recall_and_threshold(metric):
    predictions = ["Everest is 8849 m tall. It lies between Nepal and India.", "Everest is 8,849 metres tall."]
    results = metric.compute(predictions=predictions, references=[EVEREST, EVEREST])
    assert results["num_claims"] == 3
    assert results["hallucination_rate"] == pytest.approx(1 / 3)
    assert results["contradiction_rate"] == pytest.approx(1 / 3)
    assert results["factual_precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert results["fact_recall"] == pytest.approx((0.5 + 0.5) / 2)  # the border fact is never stated correctly
    assert results["details"][0]["facts_stated"] == [True, False]
    assert results["flagged"] == [True, False]
    assert all(0.0 <= score <= 1.0 for score in results["scores"])
    evidence = results["details"][0]["claims"][1]["evidence"]
    assert evidence == EVEREST[1]
    strict = metric.compute(predictions=predictions, references=[EVEREST, EVEREST], threshold=0.99)
    assert strict["hallucination_rate"] < results["hallucination_rate"] and strict["flagged"] == [False, False]
    mean = metric.compute(predictions=predictions[:1], references=[EVEREST], aggregation="mean")
    assert 0 < mean["scores"][0] < results["scores"][0]
    claim_scores = [claim["score"] for claim in results["details"][0]["claims"]]
    assert claim_scores[0] < 0.5 <= claim_scores[1]


def test_the_whole_prediction_s_word_overlap_counts_for_each_claim(metric):
    """The prediction's score counts its whole word overlap (the lexical checker gets contexts=), while each claim is
    labelled on its own: a restated fact stays supported next to chatter the facts never mention."""
    alone = metric.compute(predictions=["Everest is 8,849 metres tall."], references=[EVEREST])
    chatty = metric.compute(
        predictions=["Everest is 8,849 metres tall. My cousin loves knitting warm woollen socks for winter."],
        references=[EVEREST],
    )
    restated, chatter = chatty["details"][0]["claims"]
    assert restated["label"] == "supported" and chatter["label"] == "unsupported"
    assert restated["score"] == pytest.approx(alone["details"][0]["claims"][0]["score"])
    assert chatty["flagged"] == [True] and alone["flagged"] == [False]


def test_empty_prediction_has_zero_claims(metric):
    results = metric.compute(predictions=["", "   "], references=[EVEREST, EVEREST])
    assert results["num_claims"] == 0
    assert results["hallucination_rate"] is None and results["factual_precision"] is None
    assert results["scores"] == [0.0, 0.0] and results["flagged"] == [False, False]
    assert results["fact_recall"] == 0.0
    assert results["details"][0]["num_claims"] == 0 and results["details"][0]["claims"] == []


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (dict(predictions=["a", "b"], references=[EVEREST]), ValueError, "same length: got 2 predictions and 1"),
        (dict(predictions=[42], references=[EVEREST]), TypeError, r"predictions\[0\] must be a string, got int"),
        (dict(predictions=["a"], references=[[3.5]]), TypeError, r"references\[0\]\[0\] must be a string"),
        (dict(predictions=["a"], references=[[]]), ValueError, r"references\[0\] is an empty list"),
        (dict(predictions=["a"], references=[EVEREST], checker="lexicl"), ValueError, "checker: unknown.*'lexical'"),
        (
            dict(predictions=["a"], references=[EVEREST], checker="nli", model_path="/no/such/model"),
            FileNotFoundError,
            "model_path '/no/such/model' for the 'nli' checker does not exist",
        ),
        (dict(predictions=["a"], references=[EVEREST], checker="nli"), ValueError, "'nli' checker needs model_path"),
        (dict(predictions=["a"], references=[EVEREST], batch_size=4), ValueError, "'lexical' checker does not take"),
        (dict(predictions=["a"], references=[EVEREST], threshold=2.0), ValueError, r"threshold must be a number in"),
    ],
)
def test_bad_inputs_fail_clearly(metric, inputs, error, message):
    with pytest.raises(error, match=message):
        metric.compute(**inputs)


def test_unknown_checker_error_lists_registered_checkers(metric):
    with pytest.raises(ValueError) as caught:
        metric.compute(predictions=["a"], references=[EVEREST], checker="bm25")
    assert all(name in str(caught.value) for name in ("embedding", "lexical", "nli"))


# ------------------------------------------------------------------------------------------------ embedding
def test_embedding_checker_with_real_minilm(metric):
    from hf_compress.metrics.checkers.embedding import EmbeddingChecker, default_model_path

    assert default_model_path() is not None and (default_model_path() / "config.json").is_file()
    predictions = [
        "Everest stands 8849 m tall.",
        "Mount Everest is 8,611 metres tall.",
        "Edmund Hillary was a beekeeper from New Zealand who loved opera.",
    ]
    results = metric.compute(predictions=predictions, references=[EVEREST] * 3, checker="embedding")
    assert [labels(results, i) for i in range(3)] == [["supported"], ["contradicted"], ["unsupported"]]

    checker = EmbeddingChecker(batch_size=64)
    calls = []
    encode = checker.encode
    checker.encode = lambda texts: calls.append(len(texts)) or encode(texts)
    checks = checker.check(predictions, [EVEREST] * 3)
    assert len(checks) == 3 and calls == [5]  # one batched pass over 3 claims and 2 fact clauses


# ------------------------------------------------------------------------------------------------ nli
def _save_tiny_nli(folder, id2label):
    """A tiny randomly initialised BERT classifier with a word-level vocabulary (no download)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = "mount everest is metres tall it lies on the border between nepal and china india peru".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"0123456789.,".strip()]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_nli_checker_runs_a_local_classifier_batched(metric, tmp_path):
    from hf_compress.metrics.checkers.nli import NLIChecker

    folder = _save_tiny_nli(tmp_path, {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"})
    predictions = ["Everest is 8849 m tall. It lies in Peru.", "It lies between Nepal and China."]
    results = metric.compute(
        predictions=predictions, references=[EVEREST, EVEREST], checker="nli", model_path=str(folder)
    )
    assert results["num_claims"] == 3
    assert all(0.0 <= claim["score"] <= 1.0 for detail in results["details"] for claim in detail["claims"])
    assert all(claim["evidence"] in EVEREST for detail in results["details"] for claim in detail["claims"])

    checker = NLIChecker(model_path=str(folder), batch_size=2)
    forward_batches = []
    checker.model.register_forward_hook(lambda module, args, output: forward_batches.append(output.logits.shape[0]))
    checks = checker.check(["Everest is tall.", "It lies in Peru."], [EVEREST, EVEREST])
    assert len(checks) == 2 and forward_batches == [2, 2, 2]  # 2 claims x (2 facts + all facts) pairs, 2 per pass
    by_hand = checker.probabilities([EVEREST[0]], ["Everest is tall."])[0, 0].item()
    assert max(1.0 - checks[0].score, by_hand) == pytest.approx(1.0 - checks[0].score)


def test_nli_checker_needs_an_entailment_label(tmp_path):
    from hf_compress.metrics.checkers.nli import NLIChecker

    folder = _save_tiny_nli(tmp_path, {0: "positive", 1: "negative"})
    with pytest.raises(ValueError, match="id2label names an entailment label"):
        NLIChecker(model_path=str(folder))


# ------------------------------------------------------------------------------------------------ plugins
def test_a_plugin_checker_is_used_by_name(metric):
    from hf_compress.metrics.checkers import ClaimCheck, HallucinationChecker

    class AlwaysUnsupported(HallucinationChecker):
        def __init__(self, batch_size: int = 1):
            self.batch_size = batch_size

        def check(self, claims, facts):
            return [ClaimCheck(score=0.75, contradicted=False, evidence=0) for _ in claims]

    registry = get_registry()
    registry.register("hallucination_checker", "always_unsupported_test", AlwaysUnsupported)
    try:
        results = metric.compute(
            predictions=["Anything at all."], references=[EVEREST], checker="always_unsupported_test", batch_size=3
        )
        assert labels(results) == ["unsupported"] and results["details"][0]["claims"][0]["evidence"] == EVEREST[0]
        with pytest.raises(ValueError, match="does not take it"):
            metric.compute(predictions=["x"], references=[EVEREST], checker="always_unsupported_test", device="cpu")
    finally:
        registry._components["hallucination_checker"].pop("always_unsupported_test")
