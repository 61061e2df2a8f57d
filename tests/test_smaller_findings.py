"""Smaller reliability findings: teacher paths, self-teacher, loss options, schedule warnings, NaN configs."""

from __future__ import annotations

import logging

import pytest
from transformers import Trainer

from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    PruningCallback,
    PruningConfig,
    QATConfig,
)

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: DistillationConfig(temperature=NAN), "temperature"),
        (lambda: DistillationConfig(hidden_weight=INF), "hidden_weight"),
        (lambda: DistillationConfig(alpha=NAN), "alpha"),
        (lambda: QATConfig(observer_momentum=NAN), "observer_momentum"),
        (lambda: QATConfig(scale_learning_rate=INF), "scale_learning_rate"),
        (lambda: PruningConfig(target_sparsity=NAN), "target_sparsity"),
        (lambda: PruningConfig(target_sparsity=0.5, initial_sparsity=NAN), "initial_sparsity"),
        (lambda: PruningConfig(target_sparsity=0.5, end=NAN), "end"),
    ],
)
def test_nan_and_inf_are_refused_at_construction(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_the_metric_threshold_refuses_nan():
    from hf_compress.metrics.config import HallucinationConfig

    with pytest.raises(ValueError, match="threshold"):
        HallucinationConfig(threshold=NAN)


def test_a_teacher_path_that_does_not_exist_is_not_found(tmp_path):
    with pytest.raises(ValueError, match=r"teacher: .*no_such_model.* not found") as error:
        DistillationCallback(str(tmp_path / "no_such_model"))
    assert "Repo id" not in str(error.value) and "huggingface.co" not in str(error.value)
    with pytest.raises(ValueError, match=r"teacher: 'org/not-cached-model' not found"):
        DistillationCallback("org/not-cached-model")


def test_the_student_as_its_own_teacher_is_refused_before_anything_is_frozen(tmp_path):
    student = tiny_llama()
    trainer = Trainer(model=student, args=training_args(tmp_path, max_steps=2), train_dataset=LMDataset())
    trainer.add_callback(DistillationCallback(student, DistillationConfig()))
    with pytest.raises(ValueError, match="the teacher is the student itself"):
        trainer.train()
    assert all(param.requires_grad for param in student.parameters())


def test_unknown_loss_kwargs_are_refused():
    with pytest.raises(ValueError, match=r"loss_kwargs: unknown option\(s\) 'skw' for loss 'skew_kl'; it takes: skew"):
        DistillationConfig(loss="skew_kl", loss_kwargs={"skw": 0.1})
    assert DistillationConfig(loss="skew_kl", loss_kwargs={"skew": 0.2}).loss_kwargs == {"skew": 0.2}


def test_end_past_the_run_warns_with_the_sparsity_reached(tmp_path, caplog):
    callback = PruningCallback(PruningConfig(target_sparsity=0.5, start=0, end=200, frequency=2, schedule="linear"))
    trainer = Trainer(
        model=tiny_gpt2(0), args=training_args(tmp_path, max_steps=4), train_dataset=LMDataset(), callbacks=[callback]
    )
    with caplog.at_level(logging.WARNING, logger="hf_compress"):
        trainer.train()
    assert "end=200 resolves to step 200, past the run's max_steps=4" in caplog.text
    assert "the run ends at sparsity 0.0100 instead of the target 0.5000" in caplog.text


def test_initial_sparsity_above_the_target_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_compress"):
        PruningConfig(target_sparsity=0.3, initial_sparsity=0.6)
    assert "initial_sparsity=0.6 exceeds the target 0.3" in caplog.text
