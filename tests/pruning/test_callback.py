"""PruningCallback inside a real transformers.Trainer on tiny GPT-2 (Conv1D), Llama and BERT models."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from conftest import MODEL_FACTORIES, dataset_for, tiny_gpt2, training_args
from hf_compress import PruningCallback, PruningConfig, add_callbacks
from hf_compress.pruning.criteria import PruningCriterion
from hf_compress.pruning.masks import mask_in_storage_layout
from hf_compress.registry import get_registry
from hf_compress.targets import find_target_modules, weight_out_in

torch.set_num_threads(1)
SPARSITY_KEYS = {"sparsity", "sparsity_target", "sparsity_layer_min", "sparsity_layer_max"}


class PrunedStayZero(TrainerCallback):
    """Placed after the pruning callback: after every optimizer step, every pruned weight must be exactly zero."""

    def __init__(self, pruning: PruningCallback):
        self.pruning = pruning
        self.checked_steps = 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        for name, mask in self.pruning.masks.items():
            weight = self.pruning.modules[name].weight
            assert not weight[~mask_in_storage_layout(mask, self.pruning.modules[name])].any(), name
        self.checked_steps += 1


def train(model, family, tmp_path, config, callbacks=(), **args):
    pruning = PruningCallback(config)
    checker = PrunedStayZero(pruning)
    values = dict(max_steps=20)
    values.update(args)
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path / "run", **values),
        train_dataset=dataset_for(family),
        callbacks=[pruning, checker, *callbacks],
    )
    trainer.train()
    return trainer, pruning, checker


def weight_sparsity(modules):
    zeros = sum(int((m.weight == 0).sum()) for m in modules.values())
    return zeros / sum(m.weight.numel() for m in modules.values())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "row", "head"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_final_sparsity_matches_target(family, pattern, tmp_path):
    model = MODEL_FACTORIES[family](seed=0)
    target = 0.5 if pattern == "2:4" else 0.6 if pattern == "unstructured" else 0.5
    config = PruningConfig(
        target_sparsity=None if pattern == "2:4" else target, pattern=pattern, start=2, end=14, frequency=4
    )
    trainer, pruning, checker = train(model, family, tmp_path, config)
    assert checker.checked_steps == 20
    assert pruning.last_update_step == 14
    measured = weight_sparsity(pruning.modules)
    assert abs(measured - target) <= 0.001, measured
    if pattern == "2:4":
        for name, module in pruning.modules.items():
            blocks = weight_out_in(module.weight, module).ne(0).reshape(-1, 4)
            assert (blocks.sum(1) == 2).all(), name
    if pattern == "head":
        modules = find_target_modules(model)
        untouched = [n for n in modules if n not in pruning.modules]
        assert untouched and all(weight_sparsity({n: modules[n]}) == 0 for n in untouched)
    # baked and unhooked: a plain transformers model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    if pattern == "unstructured":
        trainer.save_model(str(tmp_path / "saved"))
        auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
        reloaded = auto.from_pretrained(str(tmp_path / "saved"))
        assert abs(weight_sparsity(find_target_modules(reloaded)) - target) <= 0.001
        assert type(reloaded) is type(model)


@pytest.mark.parametrize("criterion", ["magnitude", "movement", "random", "sparsegpt"])
def test_criteria_reach_target_on_gpt2_conv1d(criterion, tmp_path):
    config = PruningConfig(target_sparsity=0.7, criterion=criterion, start=0, end=10, frequency=5)
    _, pruning, _ = train(tiny_gpt2(0), "gpt2", tmp_path, config, max_steps=12)
    for name, mask in pruning.masks.items():
        assert abs((1 - mask.float().mean().item()) - 0.7) < 0.001, name
    assert abs(weight_sparsity(pruning.modules) - 0.7) <= 0.001


def test_magnitude_prunes_the_smallest_weights_of_conv1d_in_out_layout(tmp_path):
    # one-shot at step 0 with lr 0: the mask must select the smallest |w| in the [out, in] view of Conv1D
    model = tiny_gpt2(0)
    before = {n: weight_out_in(m.weight, m).detach().abs().clone() for n, m in find_target_modules(model).items()}
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="constant", start=0, end=0))
    args = training_args(tmp_path, max_steps=1, learning_rate=0.0)
    Trainer(model=model, args=args, train_dataset=dataset_for("gpt2"), callbacks=[pruning]).train()
    for name, scores in before.items():
        mask = pruning.masks[name]
        assert mask.shape == scores.shape
        assert scores[~mask].max() <= scores[mask].min()


def test_global_scope_one_threshold_and_layer_scope_each_module(tmp_path):
    layer = train(tiny_gpt2(0), "gpt2", tmp_path / "l", PruningConfig(target_sparsity=0.6, start=0, end=10))[1]
    glob = train(
        tiny_gpt2(0), "gpt2", tmp_path / "g", PruningConfig(target_sparsity=0.6, start=0, end=10, scope="global")
    )[1]
    layer_values = [1 - m.float().mean().item() for m in layer.masks.values()]
    global_values = [1 - m.float().mean().item() for m in glob.masks.values()]
    assert max(abs(v - 0.6) for v in layer_values) < 0.001
    assert max(global_values) - min(global_values) > 0.05  # layers differ under one threshold
    assert abs(weight_sparsity(glob.modules) - 0.6) <= 0.001


def test_per_layer_override_targets_and_exclude(tmp_path):
    config = PruningConfig(
        target_sparsity=0.5,
        targets=[r"\.mlp\.", r"attn\.c_attn"],
        exclude=[r"h\.1\.attn"],
        per_layer={r"h\.0\.mlp\.c_fc": 0.8},
        start=0,
        end=10,
        scope="global",
    )
    model = tiny_gpt2(0)
    _, pruning, _ = train(model, "gpt2", tmp_path, config)
    assert sorted(pruning.modules) == sorted(
        ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
        + ["transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]
    )
    assert abs(weight_sparsity({"x": model.transformer.h[0].mlp.c_fc}) - 0.8) < 0.001
    others = {n: m for n, m in pruning.modules.items() if n != "transformer.h.0.mlp.c_fc"}
    assert abs(weight_sparsity(others) - 0.5) < 0.001
    for dense in (model.transformer.h[1].attn.c_attn, model.transformer.h[0].attn.c_proj, model.lm_head):
        assert (dense.weight != 0).all()


def test_movement_reads_gradients_once_per_optimizer_step_under_accumulation(tmp_path):
    config = PruningConfig(target_sparsity=0.5, criterion="movement", start=3, end=9, frequency=3)
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    _, plain, _ = train(
        tiny_gpt2(0, **no_dropout), "gpt2", tmp_path / "a", config, max_steps=10, per_device_train_batch_size=8
    )
    _, accumulated, _ = train(
        tiny_gpt2(0, **no_dropout),
        "gpt2",
        tmp_path / "b",
        config,
        max_steps=10,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )
    for name in plain.masks:
        a, b = plain.criterion.accumulated[name], accumulated.criterion.accumulated[name]
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-7)
        agreement = (plain.masks[name] == accumulated.masks[name]).float().mean().item()
        assert agreement > 0.995, (name, agreement)


@pytest.mark.parametrize("criterion", ["movement", "sparsegpt"])
def test_resume_from_checkpoint_ends_with_identical_weights(tmp_path, criterion):
    config = PruningConfig(target_sparsity=0.6, criterion=criterion, start=2, end=16, frequency=3)
    common = dict(max_steps=20, save_strategy="steps", save_steps=10)
    trainer, _, _ = train(tiny_gpt2(0), "gpt2", tmp_path / "full", config, **common)
    checkpoint = tmp_path / "full" / "run" / "checkpoint-10"
    assert (checkpoint / "hf_compress_pruning.safetensors").exists()
    assert (checkpoint / "hf_compress_pruning.json").exists()
    full = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    resumed_model = tiny_gpt2(0)
    pruning = PruningCallback(config)
    resumed = Trainer(
        model=resumed_model,
        args=training_args(tmp_path / "full" / "run", **common),
        train_dataset=dataset_for("gpt2"),
        callbacks=[pruning],
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert pruning.last_update_step == 16
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, full[key]), key


def test_already_sparse_model_keeps_its_zeros(tmp_path):
    model = tiny_gpt2(0)
    generator = torch.Generator().manual_seed(1)
    zeroed = {}
    with torch.no_grad():
        for name, module in find_target_modules(model).items():
            zeros = torch.rand(module.weight.shape, generator=generator) < 0.3
            module.weight[zeros] = 0.0
            zeroed[name] = zeros
    config = PruningConfig(target_sparsity=0.5, schedule="linear", start=0, end=10, frequency=5)
    trainer, pruning, _ = train(model, "gpt2", tmp_path, config, max_steps=12, logging_steps=1)
    assert 0.28 < pruning.initial_sparsity < 0.32
    for name, module in pruning.modules.items():
        assert (module.weight[zeroed[name]] == 0).all(), name
    first = next(entry for entry in trainer.state.log_history if "sparsity" in entry)
    assert first["sparsity"] >= pruning.initial_sparsity - 1e-6
    assert abs(weight_sparsity(pruning.modules) - 0.5) <= 0.001


class Recorder(PrinterCallback):
    """A reporter (log printer) registered before PruningCallback."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def test_logs_reach_log_history_and_reporters_registered_earlier(tmp_path):
    recorder = Recorder()
    model = tiny_gpt2(0)
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, start=0, end=10, frequency=2))
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, max_steps=12, logging_steps=4),
        train_dataset=dataset_for("gpt2"),
        callbacks=[recorder],
    )
    add_callbacks(trainer, pruning)  # added after the reporter: its keys must still reach it
    trainer.train()
    step_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(step_logs) == 3 and all(SPARSITY_KEYS <= entry.keys() for entry in step_logs)
    assert step_logs[-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert step_logs[0]["sparsity_target"] < 0.5
    assert step_logs[0]["sparsity_layer_min"] <= step_logs[0]["sparsity"] <= step_logs[0]["sparsity_layer_max"]
    assert all(SPARSITY_KEYS <= entry.keys() for entry in recorder.seen if "loss" in entry)


def test_epochs_and_fractional_end(tmp_path):
    config = PruningConfig(target_sparsity=0.4, start=0.0, end=0.5, frequency=3)
    trainer, pruning, _ = train(tiny_gpt2(0), "gpt2", tmp_path, config, max_steps=-1, num_train_epochs=2)
    assert trainer.state.global_step == 16  # 64 samples / 8 per step * 2 epochs
    assert pruning.end_step == 8 and pruning.last_update_step == 8
    assert abs(weight_sparsity(pruning.modules) - 0.4) <= 0.001


@pytest.mark.parametrize("mask_gradients", [True, False])
def test_mask_gradients_keeps_optimizer_state_of_pruned_weights_zero(mask_gradients, tmp_path):
    config = PruningConfig(target_sparsity=0.5, schedule="constant", start=0, end=0, mask_gradients=mask_gradients)
    trainer, pruning, _ = train(tiny_gpt2(0), "gpt2", tmp_path, config, max_steps=5)
    module = pruning.modules["transformer.h.0.mlp.c_fc"]
    exp_avg = trainer.optimizer.state[module.weight]["exp_avg"]
    pruned = ~mask_in_storage_layout(pruning.masks["transformer.h.0.mlp.c_fc"], module)
    assert (exp_avg[pruned] == 0).all() == mask_gradients


def test_masks_are_one_byte_bool_in_out_layout(tmp_path):
    _, pruning, _ = train(tiny_gpt2(0), "gpt2", tmp_path, PruningConfig(target_sparsity=0.5, end=5), max_steps=6)
    mask = pruning.masks["transformer.h.0.mlp.c_fc"]
    assert mask.dtype == torch.bool and mask.element_size() == 1
    assert mask.shape == (128, 32)  # [out, in] although Conv1D stores [32, 128]
    assert os.path.isdir(tmp_path / "run")


class InputNormCriterion(PruningCriterion):
    """A third-party criterion in the style of Wanda: |W| * ||X||_2 from forward hooks."""

    data_dependent = True

    def attach(self, modules):
        super().attach(modules)
        self.sq = {n: torch.zeros(weight_out_in(m.weight, m).shape[1]) for n, m in modules.items()}
        for name, module in modules.items():
            self.hooks.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            self.sq[name] += (x * x).sum(0)

        return hook

    def local_statistics(self):
        return self.sq

    def scores(self, name, module):
        return weight_out_in(module.weight, module).detach().abs().float() * self.sq[name].sqrt()


def test_third_party_criterion_with_hooks_is_attached_and_detached(tmp_path):
    registry = get_registry()
    if "test_input_norm" not in registry.names("pruning_criterion"):
        registry.register("pruning_criterion", "test_input_norm", InputNormCriterion)
    config = PruningConfig(target_sparsity=0.5, criterion="test_input_norm", start=2, end=8, frequency=2)
    model = tiny_gpt2(0)
    _, pruning, _ = train(model, "gpt2", tmp_path, config, max_steps=10)
    assert isinstance(pruning.criterion, InputNormCriterion)
    assert all(value.sum() > 0 for value in pruning.criterion.sq.values())
    assert abs(weight_sparsity(pruning.modules) - 0.5) <= 0.001
    assert all(not m._forward_hooks for m in model.modules())
