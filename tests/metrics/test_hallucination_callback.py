"""HallucinationEvalCallback inside a real Trainer: a tiny GPT-2 and a tokenizer trained here (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Trainer

import hf_compress
from conftest import VOCAB, launch_two_processes, tiny_gpt2, training_args
from hf_compress import HallucinationEvalCallback

torch.set_num_threads(1)

FACT = "the sky is blue."
KEYS = (
    "eval_hallucination_rate",
    "eval_contradiction_rate",
    "eval_factual_precision",
    "eval_fact_recall",
    "eval_hallucination_score",
    "eval_hallucination_flagged",
    "eval_hallucination_claims",
)


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained on the spot; its vocabulary fits the tiny GPT-2's 64 ids."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    corpus = [FACT, "grass is green and snow is white.", "mount everest is 8849 metres tall."]
    tokenizer.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=60, special_tokens=["[PAD]", "[UNK]", "[EOS]"])
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    assert len(wrapped) <= VOCAB
    return wrapped


class OneSentence(torch.utils.data.Dataset):
    """The fact sentence, over and over: a tiny GPT-2 learns to complete "the sky is" with "blue."."""

    def __init__(self, tokenizer, n: int = 32):
        self.ids = torch.tensor(tokenizer(FACT)["input_ids"] + [tokenizer.eos_token_id])
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"input_ids": self.ids, "attention_mask": torch.ones_like(self.ids), "labels": self.ids.clone()}


def test_callback_logs_hallucination_next_to_eval_loss(tmp_path):
    tokenizer = make_tokenizer()
    data = OneSentence(tokenizer)
    # the same prompt against facts that agree with what the model learns, and against facts that contradict it
    callback = HallucinationEvalCallback(
        prompts=["the sky is", "the sky is"],
        references=[["The sky is blue."], ["The sky is green."]],
        generation_kwargs={"max_new_tokens": 6},
        include_prompt=True,
    )
    args = training_args(
        tmp_path, max_steps=60, learning_rate=1e-2, eval_strategy="steps", eval_steps=30, eval_on_start=True
    )
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.add_callback(callback)
    trainer.train()

    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [0, 30, 60]
    for entry in evaluations:
        assert all(key in entry for key in KEYS), entry
        assert all(0.0 <= entry[key] <= 1.0 for key in KEYS[:-1])
    assert not any("eval_hallucination_rate" in entry for entry in trainer.state.log_history if "loss" in entry)

    # after training the model says "the sky is blue.": supported by the first facts, contradicted by the second
    assert callback.last_generations[0].startswith("blue")
    final = evaluations[-1]
    assert final["eval_hallucination_rate"] == 0.5 and final["eval_contradiction_rate"] == 0.5
    assert final["eval_fact_recall"] == 0.5 and final["eval_hallucination_claims"] == 2
    labels = [detail["claims"][0]["label"] for detail in callback.last_result["details"]]
    assert labels == ["supported", "contradicted"]
    assert evaluations[0]["eval_loss"] > final["eval_loss"]

    # the logged values are the metric's own on the generations
    metric = hf_compress.load_metric("hallucination")
    again = metric.compute(
        predictions=[f"the sky is {text}" for text in callback.last_generations],
        references=[["The sky is blue."], ["The sky is green."]],
    )
    assert again["hallucination_rate"] == final["eval_hallucination_rate"]

    # trainer.evaluate() returns them too
    assert trainer.evaluate()["eval_hallucination_rate"] == 0.5
    # generating leaves the model in the mode it was in
    trainer.model.train()
    assert callback.evaluate(trainer.model, tokenizer)["eval_hallucination_rate"] == 0.5 and trainer.model.training


def test_callback_takes_a_tokenizer_argument_and_needs_one(tmp_path):
    tokenizer = make_tokenizer()
    data = OneSentence(tokenizer, n=8)
    args = training_args(tmp_path, max_steps=2, eval_strategy="no")
    with_tokenizer = HallucinationEvalCallback(["the sky is"], [[FACT]], {"max_new_tokens": 3}, tokenizer=tokenizer)
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=data, eval_dataset=data)
    trainer.add_callback(with_tokenizer)
    metrics = trainer.evaluate()
    assert "eval_hallucination_flagged" in metrics and len(with_tokenizer.last_generations) == 1

    without = HallucinationEvalCallback(["the sky is"], [[FACT]], {"max_new_tokens": 3})
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=data, eval_dataset=data)
    trainer.add_callback(without)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        trainer.evaluate()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(prompts=["a", "b"], references=[[FACT]]), ValueError, "same length"),
        (dict(prompts=["a"], references=[[]]), ValueError, "empty list"),
        (dict(prompts=[1], references=[[FACT]]), TypeError, "must be a string"),
        (dict(prompts=[" "], references=[[FACT]]), ValueError, r"prompts\[0\] is empty"),
        (dict(prompts=["a"], references=[[FACT]], checker="lexicl"), ValueError, "Did you mean 'lexical'"),
        (dict(prompts=["a"], references=[[FACT]], checker="nli", model_path="/missing"), FileNotFoundError, "exist"),
        (dict(prompts=["a"], references=[[FACT]], generation_kwargs=3), ValueError, "generation_kwargs"),
    ],
)
def test_callback_rejects_bad_arguments_before_training(kwargs, error, message):
    with pytest.raises(error, match=message):
        HallucinationEvalCallback(**kwargs)


@pytest.mark.multiprocess
def test_two_ranks_share_the_prompts_and_log_the_same_metrics(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "ddp_hallucination.py"
    launch_two_processes(script, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["world_size"] for record in ranks] == [2, 2]
    assert ranks[0]["evaluations"] == ranks[1]["evaluations"]
    assert [entry["step"] for entry in ranks[0]["evaluations"]] == [5, 10]
    assert all("eval_hallucination_flagged" in entry for entry in ranks[0]["evaluations"])
    # gathered in prompt order: each rank's copy equals what it generates for every prompt by itself
    for record in ranks:
        assert len(record["generations"]) == 3 and record["generations"] == record["by_hand"]
