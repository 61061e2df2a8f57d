"""L1RegularizationCallback: the proximal (soft-threshold) step inside a real Trainer, its window, logs and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
from hf_compress import L1RegularizationCallback, L1RegularizationConfig, sparsity_report
from hf_compress.targets import find_target_modules

torch.set_num_threads(1)


class WeightRecorder(TrainerCallback):
    """Copies the weights of the given modules at the end of every optimizer step."""

    def __init__(self, names):
        self.names = names
        self.history = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        modules = dict(model.named_modules())
        self.history.append({name: modules[name].weight.detach().clone() for name in self.names})


def _train(model, tmp_path, callbacks, **overrides):
    args = training_args(tmp_path, **overrides)
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset(n=32), callbacks=callbacks)
    trainer.train()
    return trainer


def test_one_sgd_step_equals_gradient_step_then_soft_threshold(tmp_path):
    """For SGD the callback is exactly ISTA: W <- softshrink(W - lr * grad, lr * lambda) on targets only."""
    lr, l1_lambda = 0.1, 0.05
    sgd = dict(max_steps=1, learning_rate=lr, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0)
    plain = _train(tiny_llama(seed=1), tmp_path / "plain", [], **sgd).model
    config = L1RegularizationConfig(l1_lambda=l1_lambda, exclude=[r"mlp\.down_proj"])
    regularised = _train(tiny_llama(seed=1), tmp_path / "l1", [L1RegularizationCallback(config)], **sgd).model

    targets = find_target_modules(regularised, exclude=[r"mlp\.down_proj"])
    assert len(targets) == 12
    plain_params = dict(plain.named_parameters())
    checked_zeros = 0
    for name, parameter in regularised.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        expected = plain_params[name].detach()
        if module_name in targets and name.endswith("weight"):
            expected = F.softshrink(expected, lr * l1_lambda)
            checked_zeros += int((parameter == 0).sum())
        torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-7, msg=name)
    assert checked_zeros > 0  # the threshold is large enough to create exact zeros
    assert (plain_params["model.embed_tokens.weight"] != 0).all()


def test_start_end_window_and_scheduler_learning_rate(tmp_path):
    """Steps before `start` and after `end` are plain optimizer steps; inside, the shrink uses the scheduled lr."""
    name = "transformer.h.0.mlp.c_fc"
    common = dict(max_steps=5, learning_rate=0.05, optim="sgd", lr_scheduler_type="linear", max_grad_norm=0.0)
    plain_recorder = WeightRecorder([name])
    _train(tiny_gpt2(seed=2), tmp_path / "plain", [plain_recorder], **common)
    recorder = WeightRecorder([name])
    callback = L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-3, start=2, end=0.6))  # steps 3 only
    _train(tiny_gpt2(seed=2), tmp_path / "l1", [callback, recorder], **common)

    for step in (0, 1):  # before start: identical trajectories
        torch.testing.assert_close(recorder.history[step][name], plain_recorder.history[step][name], rtol=0, atol=0)
    assert not torch.equal(recorder.history[2][name], plain_recorder.history[2][name])
    # After step 3 (index 2) the difference between runs is exactly the shrink by lambda * lr of that step:
    # the linear schedule over 5 steps uses lr = 0.05 * (1 - 2 / 5) for the third step.
    before = recorder.history[1][name]
    plain_delta = plain_recorder.history[2][name] - plain_recorder.history[1][name]
    torch.testing.assert_close(
        recorder.history[2][name], F.softshrink(before + plain_delta, 1e-3 * 0.05 * 0.6), rtol=0, atol=1e-7
    )
    assert callback.start_step == 2 and callback.end_step == 3


def test_adam_with_accumulation_logs_zero_fraction_matching_the_model(tmp_path):
    config = L1RegularizationConfig(l1_lambda=2.0, targets=[r"\.mlp\."])
    trainer = _train(
        tiny_llama(seed=3),
        tmp_path,
        [L1RegularizationCallback(config)],
        max_steps=8,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=4,
        logging_steps=4,
    )
    logged = [entry for entry in trainer.state.log_history if "l1/zero_fraction" in entry]
    assert [entry["step"] for entry in logged] == [4, 8]
    assert 0.0 < logged[0]["l1/zero_fraction"] < logged[1]["l1/zero_fraction"]
    assert logged[1]["l1/threshold"] > 0
    report = sparsity_report(trainer.model, targets=[r"\.mlp\."])
    assert logged[1]["l1/zero_fraction"] == pytest.approx(report.sparsity)
    attention = sparsity_report(trainer.model, targets=[r"self_attn"])
    assert attention.total_zeros == 0  # only the targets are regularised


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"l1_lambda": 0.0}, "l1_lambda"),
        ({"l1_lambda": -1e-3}, "l1_lambda"),
        ({"l1_lambda": "big"}, "l1_lambda"),
        ({"start": 10, "end": 5}, "end"),
        ({"start": 0.8, "end": 0.2}, "end"),
        ({"start": -1}, "start"),
        ({"end": 1.5}, "end"),
        ({"targets": [3]}, "targets"),
    ],
)
def test_bad_config_names_the_field(values, field):
    with pytest.raises(ValueError, match=field):
        L1RegularizationConfig(**values)


def test_unknown_field_and_round_trip():
    config = L1RegularizationConfig(l1_lambda=1e-3, targets=["mlp"], start=0.1)
    assert L1RegularizationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="lambda"):
        L1RegularizationConfig.from_dict({"lamda": 1e-3})


def test_errors_before_any_training_step(tmp_path):
    model = tiny_gpt2(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    callback = L1RegularizationCallback(L1RegularizationConfig(targets=[r"q_proj"]))
    trainer = Trainer(model=model, args=training_args(tmp_path), train_dataset=LMDataset(n=16), callbacks=[callback])
    with pytest.raises(ValueError, match=r"targets: pattern 'q_proj' matches no .*transformer\.h\.0"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # start/end given in different units are checked once they resolve against the run's length
    late = L1RegularizationCallback(L1RegularizationConfig(start=15, end=0.5))
    trainer = Trainer(model=model, args=training_args(tmp_path), train_dataset=LMDataset(n=16), callbacks=[late])
    with pytest.raises(ValueError, match="end must be at or after start"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_alongside_pruning_callback_logs_reach_history(tmp_path):
    """Another callback adding log keys first must not stop l1/zero_fraction from reaching log_history."""
    from hf_compress import PruningCallback, PruningConfig

    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="one_shot", start=0, end=0))
    l1 = L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-3))
    trainer = _train(tiny_gpt2(seed=4), tmp_path, [pruning, l1], max_steps=6, logging_steps=3)
    logged = [entry for entry in trainer.state.log_history if "l1/zero_fraction" in entry]
    assert [entry["step"] for entry in logged] == [3, 6]
    assert logged[-1]["l1/zero_fraction"] == pytest.approx(sparsity_report(trainer.model).sparsity)
    assert logged[-1]["l1/zero_fraction"] >= 0.5
