"""A failed run leaves no hf_compress hooks: an exception out of trainer.train() (user callback, Ctrl-C)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Trainer, TrainerCallback

import hf_compress
from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    PruningCallback,
    PruningConfig,
    QATCallback,
    QATConfig,
)


class FailAt(TrainerCallback):
    def __init__(self, step: int, error: type[BaseException] = RuntimeError):
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error("user callback failed")


def _ours(hook) -> bool:
    owner = getattr(hook, "__self__", None)
    module = type(owner).__module__ if owner is not None else getattr(hook, "__module__", "")
    return module.startswith("hf_compress")


def hook_count(model) -> int:
    """hf_compress's hooks on the model (transformers installs output-capturing hooks of its own)."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    return sum(_ours(hook) for m in model.modules() for kind in kinds for hook in getattr(m, kind).values())


def plain_copy(model):
    """The same weights in a model that never saw hf_compress."""
    clean = type(model)(model.config)
    clean.load_state_dict(model.state_dict())
    return clean


def failing_trainer(model, tmp_path, callbacks, error=RuntimeError):
    trainer = Trainer(model=model, args=training_args(tmp_path, max_steps=8), train_dataset=LMDataset())
    trainer.add_callback(FailAt(3, error))
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer


BATCH = LMDataset(n=2)[0]
INPUTS = {key: value[None] for key, value in BATCH.items()}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_qat_hooks_come_off_when_training_fails(tmp_path, error):
    model = tiny_llama()
    baseline = hook_count(model)
    assert baseline == 0
    trainer = failing_trainer(model, tmp_path, [QATCallback(QATConfig(weight_bits=4, activations="per_token"))], error)
    with pytest.raises(error):
        with hf_compress.compression_run(trainer):
            trainer.train()
    assert hook_count(model) == baseline
    assert all(isinstance(m.weight, torch.nn.Parameter) for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert len(trainer.optimizer.param_groups) == 2  # the Trainer's own groups only
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**INPUTS).logits, plain_copy(model).eval()(**INPUTS).logits, rtol=0, atol=0)


def test_distillation_hooks_come_off_when_training_fails(tmp_path):
    model, teacher = tiny_llama(0), tiny_llama(1)
    baseline = hook_count(model)
    trainer = failing_trainer(model, tmp_path, [DistillationCallback(teacher, DistillationConfig(alpha=0.5))])
    with pytest.raises(RuntimeError, match="user callback failed"):
        with hf_compress.compression_run(trainer):
            trainer.train()
    assert hook_count(model) == baseline
    model.train()
    torch.manual_seed(0)
    loss = model(**INPUTS).loss
    clean = plain_copy(model).train()
    torch.manual_seed(0)
    assert torch.equal(loss, clean(**INPUTS).loss)  # the model's own loss, not a distillation loss


@pytest.mark.parametrize("criterion", ["sparsegpt", "wanda", "movement"])
def test_pruning_criterion_hooks_come_off_and_masks_hold(tmp_path, criterion):
    model = tiny_gpt2(0)
    baseline = hook_count(model)
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, criterion=criterion, start=0, end=2, frequency=1))
    trainer = failing_trainer(model, tmp_path, [pruning])
    with pytest.raises(RuntimeError):
        with hf_compress.compression_run(trainer):
            trainer.train()
    assert hook_count(model) == baseline
    for name, mask in pruning.masks.items():
        weight = pruning.modules[name].weight
        assert not bool((weight.detach().t()[~mask] != 0).any()), name  # Conv1D stores [in, out]


def test_release_by_hand_and_a_new_train_call_clean_up(tmp_path):
    model = tiny_llama()
    baseline = hook_count(model)
    qat = QATCallback(QATConfig(weight_bits=8))
    trainer = failing_trainer(model, tmp_path, [qat])
    with pytest.raises(RuntimeError):
        trainer.train()
    assert hook_count(model) > baseline  # nothing ran on failure: the hooks are still there
    assert hf_compress.release(trainer) == ["QATCallback"]
    assert hook_count(model) == baseline
    assert hf_compress.release(model) == []

    with pytest.raises(RuntimeError):
        trainer.train()  # fails again at step 3
    hooks_after_one_failure = hook_count(model)
    second = Trainer(model=model, args=training_args(tmp_path / "2", max_steps=2), train_dataset=LMDataset())
    second.add_callback(copy.copy(qat))
    second.train()  # a new run on the same model releases the failed run's hooks first, then ends normally
    assert hooks_after_one_failure > baseline and hook_count(model) == baseline
