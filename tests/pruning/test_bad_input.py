"""Every bad input raises a ValueError naming the field and the allowed values, before any training step runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from conftest import dataset_for, tiny_gpt2, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(target_sparsity=1.0), r"target_sparsity must be a number in \[0.0, 1.0\)"),
        (dict(target_sparsity=-0.1), r"target_sparsity must be a number in \[0.0, 1.0\)"),
        (dict(target_sparsity="0.5"), r"target_sparsity must be a number"),
        (dict(), r"target_sparsity is required: a number in \[0, 1\)"),
        (dict(target_sparsity=0.5, start=50, end=10), r"end must not come before start.*allowed: end >= start"),
        (dict(target_sparsity=0.5, start=0.6, end=0.2), r"end must not come before start"),
        (dict(target_sparsity=0.5, start=-1), r"start must be an optimizer step \(int >= 0\) or a fraction"),
        (dict(target_sparsity=0.5, end=1.5), r"end must be an optimizer step \(int >= 0\) or a fraction"),
        (dict(target_sparsity=0.5, frequency=0), r"frequency must be an integer in \[1, inf\]"),
        (dict(target_sparsity=0.5, frequency=-3), r"frequency must be an integer in \[1, inf\]"),
        (dict(target_sparsity=0.5, frequency=2.5), r"frequency must be an integer"),
        (dict(pattern="4:4"), r"pattern: N:M pattern '4:4' needs 0 < N < M"),
        (dict(pattern="5:4"), r"pattern: N:M pattern '5:4' needs 0 < N < M"),
        (dict(pattern="0:4"), r"needs 0 < N < M"),
        (dict(pattern="2:x"), r"pattern: '2:x' is not a valid N:M pattern"),
        (dict(pattern="2:4", target_sparsity=0.7), r"target_sparsity: pattern '2:4' fixes the final sparsity"),
        (
            dict(target_sparsity=0.5, schedule="cubik"),
            r"schedule: unknown schedule 'cubik'.*cubic.*Did you mean 'cubic'",
        ),
        (dict(target_sparsity=0.5, criterion="magnitud"), r"criterion: unknown pruning_criterion.*'magnitude'"),
        (dict(target_sparsity=0.5, pattern="unstructed"), r"pattern: unknown pruning_pattern.*'unstructured'"),
        (dict(target_sparsity=0.5, scope="globl"), r"scope must be one of 'layer', 'global'.*'global'"),
        (dict(target_sparsity=0.5, targets="mlp"), r"targets must be a list of regex strings"),
        (dict(target_sparsity=0.5, exclude=["("]), r"exclude: '\(' is not a valid regex"),
        (dict(target_sparsity=0.5, per_layer={"mlp": 1.2}), r"per_layer\['mlp'\] must be a number in \[0.0, 1.0\)"),
        (dict(pattern="2:4", per_layer={"mlp": 0.3}), r"per_layer: not allowed with the N:M pattern"),
        (dict(target_sparsity=0.5, initial_sparsity=1.0), r"initial_sparsity must be a number in \[0.0, 1.0\)"),
        (dict(target_sparsity=0.5, mask_gradients="yes"), r"mask_gradients must be True or False"),
    ],
)
def test_config_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**fields)


def test_from_dict_unknown_field():
    with pytest.raises(ValueError, match="target_sparsty: unknown field.*Did you mean 'target_sparsity'"):
        PruningConfig.from_dict({"target_sparsty": 0.5})


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps += 1


class TinyMLP(nn.Module):
    """A model of no known attention layout that the Trainer can still train."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(64, 16)
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 64)

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.out(torch.relu(self.hidden(self.embed(input_ids))))
        loss = nn.functional.cross_entropy(logits.view(-1, 64), labels.view(-1))
        return {"loss": loss, "logits": logits}


MODEL_ERRORS = [
    (tiny_gpt2, dict(pattern="2:5"), r"pattern: N:M pattern '2:5' needs M=5 to divide in_features.*in_features=32"),
    (tiny_llama, dict(pattern="3:7"), r"needs M=7 to divide in_features"),
    (TinyMLP, dict(target_sparsity=0.5, pattern="head"), r"pattern: 'head' found no attention block.*known layouts"),
    (tiny_gpt2, dict(target_sparsity=0.5, pattern="head", targets=["mlp"]), r"pattern: 'head' found no attention"),
    (
        tiny_gpt2,
        dict(target_sparsity=0.5, targets=[r"nope\d"]),
        r"targets: pattern 'nope\\\\d' matches no .*transformer",
    ),
    (tiny_gpt2, dict(target_sparsity=0.5, exclude=["xyz"]), r"exclude: pattern 'xyz' matches no"),
    (tiny_gpt2, dict(target_sparsity=0.5, per_layer={"xyz": 0.2}), r"per_layer: pattern 'xyz' matches no targeted"),
    (tiny_gpt2, dict(target_sparsity=0.5, start=15, end=0.5), r"end must not come before start.*step 10.*step 15"),
]


@pytest.mark.parametrize("factory,fields,match", MODEL_ERRORS)
def test_model_dependent_errors_before_any_step(factory, fields, match, tmp_path):
    needs_run_length = "start" in fields  # only known once training starts
    counter = StepCounter()
    config = PruningConfig(**fields)
    args = training_args(tmp_path, max_steps=20)
    if not needs_run_length:  # raised at Trainer(...) already, when the callback is passed in
        with pytest.raises(ValueError, match=match):
            Trainer(model=factory(), args=args, train_dataset=dataset_for("gpt2"), callbacks=[PruningCallback(config)])
    # added later with add_callback: raised by train() before the first step
    trainer = Trainer(model=factory(), args=args, train_dataset=dataset_for("gpt2"), callbacks=[counter])
    trainer.add_callback(PruningCallback(config))
    with pytest.raises(ValueError, match=match):
        trainer.train()
    assert counter.steps == 0


def test_callback_needs_a_pruning_config():
    with pytest.raises(ValueError, match="config must be a PruningConfig"):
        PruningCallback({"target_sparsity": 0.5})
