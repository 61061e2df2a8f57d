"""One-shot pruning (SparseGPT reconstruction, magnitude): the pure math, the function on tiny GPT-2 / Llama / BERT,
and OneShotPruningCallback + PruningCallback(schedule="constant") inside a real Trainer."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

import hf_compress
from conftest import MODEL_FACTORIES, LMDataset, dataset_for, tiny_llama, training_args
from hf_compress import OneShotPruningCallback, PruningCallback, PruningConfig, prune_one_shot
from hf_compress.pruning.reconstruction import reconstruct_pruned
from hf_compress.targets import find_target_modules, weight_out_in

torch.set_num_threads(1)


def correlated_inputs(features=64, tokens=1024, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) / features**0.5
    scales = torch.logspace(-1, 1, features)
    return mixing @ (torch.randn(features, tokens, generator=generator) * scales.unsqueeze(1))


def output_error(weight, pruned, inputs):
    return float(((weight - pruned) @ inputs).pow(2).sum() / (weight @ inputs).pow(2).sum())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "1:4"])
def test_reconstruction_hits_the_pattern_and_beats_magnitude_on_the_layer_output(pattern):
    inputs = correlated_inputs()
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    original = weight.clone()
    pruned, keep = reconstruct_pruned(weight, inputs @ inputs.T, 0.5, pattern, block_size=32)
    assert torch.equal(weight, original), "the input weight must not be modified"
    assert torch.equal(pruned != 0, keep)
    if pattern == "unstructured":
        assert float((pruned == 0).float().mean()) == 0.5
        magnitude = weight * (weight.abs() > weight.abs().flatten().kthvalue(weight.numel() // 2).values)
    else:
        keep_n, group = map(int, pattern.split(":"))
        assert int((pruned.view(32, -1, group) != 0).sum(-1).max()) == keep_n
        grouped = weight.view(32, -1, group)
        lowest = grouped.abs().topk(group - keep_n, dim=-1, largest=False).indices
        magnitude = grouped.scatter(-1, lowest, 0.0).view_as(weight)
    # the kept weights moved to compensate, and the layer output is closer to the dense one than magnitude's
    assert not torch.equal(pruned[keep], weight[keep])
    assert output_error(weight, pruned, inputs) < 0.8 * output_error(weight, magnitude, inputs)


def test_reconstruction_handles_features_never_seen_and_rejects_bad_shapes():
    inputs = correlated_inputs(features=16, tokens=256)
    inputs[3] = 0.0  # a dead input feature: zero Hessian row and column
    weight = torch.randn(8, 16)
    pruned, keep = reconstruct_pruned(weight, inputs @ inputs.T, 0.25)
    assert torch.isfinite(pruned).all() and (pruned[:, 3] == 0).all()
    assert float((pruned == 0).float().mean()) >= 0.25
    with pytest.raises(ValueError, match=r"hessian must be \[16, 16\]"):
        reconstruct_pruned(weight, torch.eye(8), 0.5)
    with pytest.raises(ValueError, match="'row'"):
        reconstruct_pruned(weight, torch.eye(16), 0.5, "row")
    with pytest.raises(ValueError, match="divisible by 3"):
        reconstruct_pruned(weight, torch.eye(16), 0.5, "1:3")


def calibration(family, n=32):
    data = dataset_for(family, n=n)
    ids = torch.stack([data[i]["input_ids"] for i in range(n)])
    return [{"input_ids": ids[start : start + 8], "labels": ids[start : start + 8]} for start in range(0, n, 8)]


def logits(model, batches):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(input_ids=batch["input_ids"]).logits for batch in batches])


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_prunes_every_layer_exactly_and_stays_closer_to_the_dense_model(family, pattern):
    batches = calibration(family)
    dense = MODEL_FACTORIES[family](seed=0)
    reference = logits(dense, batches)
    errors = {}
    for method in ("sparsegpt", "magnitude"):
        model = MODEL_FACTORIES[family](seed=0)
        masks = prune_one_shot(model, batches, sparsity=0.5, pattern=pattern, method=method)
        modules = find_target_modules(model)
        assert set(masks) == set(modules) and modules
        for name, module in modules.items():  # Conv1D included: masks are [out, in], weights in storage layout
            weight = weight_out_in(module.weight.detach(), module)
            assert torch.equal(weight != 0, masks[name]) or method == "magnitude", name
            assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-6), name
            if pattern == "2:4":
                assert int((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1).max()) <= 2, name
        errors[method] = float((logits(model, batches) - reference).pow(2).mean())
    assert errors["sparsegpt"] < errors["magnitude"], errors


def test_prune_one_shot_restores_the_training_mode_and_cache_setting():
    model = tiny_llama()
    model.train()
    prune_one_shot(model, calibration("llama"), sparsity=0.3)
    assert model.training and model.config.use_cache is True


def test_bad_input_names_the_field_and_the_allowed_values():
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"method.*'sparsegpt'.*'magnitude'"):
        prune_one_shot(model, calibration("llama"), method="obs")
    with pytest.raises(ValueError, match="sparsity"):
        prune_one_shot(model, calibration("llama"), sparsity=1.0)
    with pytest.raises(ValueError, match="pattern"):
        prune_one_shot(model, calibration("llama"), pattern="head")
    with pytest.raises(ValueError, match="calibration_batches"):
        prune_one_shot(model, [], sparsity=0.5)
    with pytest.raises(ValueError, match="calibration_batches"):
        OneShotPruningCallback(calibration_batches=0)
    assert all(bool((p != 0).any()) for p in model.parameters()), "nothing pruned by rejected calls"


def test_callback_then_constant_pruning_holds_the_one_shot_mask_through_training(tmp_path):
    model = tiny_llama()
    one_shot = OneShotPruningCallback(sparsity=0.6, calibration_batches=2)
    hold = PruningCallback(PruningConfig(target_sparsity=0.6, schedule="constant"))
    args = training_args(tmp_path, max_steps=6, logging_steps=3)
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset(), callbacks=[one_shot, hold])
    trainer.train()
    modules = find_target_modules(model)
    for name, mask in one_shot.masks.items():
        weight = weight_out_in(modules[name].weight.detach(), modules[name])
        assert torch.equal(weight != 0, mask), f"{name}: the held mask differs from the one-shot mask"
    logged = [entry for entry in trainer.state.log_history if "one_shot_sparsity" in entry]
    assert logged and logged[0]["one_shot_sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_callback_listed_after_pruning_callback_is_told_to_move(tmp_path):
    hold = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="constant"))
    one_shot = OneShotPruningCallback(sparsity=0.5, calibration_batches=1)
    args = training_args(tmp_path, max_steps=2)
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=LMDataset(), callbacks=[hold, one_shot])
    with pytest.raises(ValueError, match="before PruningCallback"):
        trainer.train()


def test_recipe_names_the_built_in_one_shot_callback(tmp_path):
    recipe = {
        "pruning": {"target_sparsity": 0.5, "schedule": "constant", "pattern": "2:4"},
        "callbacks": [{"name": "one_shot_pruning", "pattern": "2:4", "calibration_batches": 2}],
    }
    callbacks = hf_compress.callbacks_from_recipe(recipe)
    assert [type(c).__name__ for c in callbacks][:2] == ["OneShotPruningCallback", "PruningCallback"]
    model = tiny_llama()
    trainer = Trainer(model=model, args=training_args(tmp_path, max_steps=3), train_dataset=LMDataset())
    hf_compress.attach(trainer, recipe)
    trainer.train()
    for module in find_target_modules(model).values():
        assert int((module.weight.reshape(module.weight.shape[0], -1, 4) != 0).sum(-1).max()) <= 2


# ---------------------------------------------------------------- gradual: PruningConfig(criterion="sparsegpt")
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sparsegpt_criterion_update_compensates_better_than_masking(family):
    from hf_compress.registry import get_registry

    model = MODEL_FACTORIES[family](seed=0)
    modules = find_target_modules(model)
    criterion = get_registry().get("pruning_criterion", "sparsegpt")()
    criterion.attach(modules)
    batches = calibration(family)
    model.train()
    for batch in batches:  # training-mode forward passes with grad, as under the Trainer
        model(input_ids=batch["input_ids"])
    criterion.detach()
    inputs = {}

    def remember(name):
        def hook(module, args, output):
            inputs[name] = args[0].detach()

        return hook

    hooks = [module.register_forward_hook(remember(name)) for name, module in modules.items()]
    with torch.no_grad():
        model(input_ids=torch.cat([b["input_ids"] for b in batches]))
    for hook in hooks:
        hook.remove()
    for name, module in modules.items():
        dense = weight_out_in(module.weight.detach(), module).clone()
        scores = criterion.scores(name, module)
        keep = scores > scores.flatten().kthvalue(scores.numel() // 2).values
        x = inputs[name].reshape(-1, dense.shape[1])
        masked_error = float((x @ (dense * keep).t() - x @ dense.t()).pow(2).mean())
        criterion.update_weights(name, module, keep)
        updated = weight_out_in(module.weight.detach(), module)
        assert torch.equal(updated != 0, keep & (dense != 0)), name
        assert float((x @ updated.t() - x @ dense.t()).pow(2).mean()) < masked_error, name
        assert float(criterion.tokens[name]) == 0  # fresh statistics for the next update


def test_sparsegpt_criterion_in_a_trainer_holds_the_target_and_warns_at_a_step_zero_update(tmp_path, caplog):
    model = tiny_llama()
    pruning = PruningCallback(
        PruningConfig(target_sparsity=0.5, pattern="2:4", schedule="one_shot", start=0, criterion="sparsegpt")
    )
    trainer = Trainer(
        model=model, args=training_args(tmp_path, max_steps=4), train_dataset=LMDataset(), callbacks=[pruning]
    )
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "no input statistics yet" in caplog.text
    for module in find_target_modules(model).values():
        assert int((module.weight.reshape(module.weight.shape[0], -1, 4) != 0).sum(-1).max()) <= 2
    assert not any(module._forward_hooks for module in find_target_modules(model).values())
    with pytest.raises(ValueError, match="criterion_kwargs.dampening"):
        PruningCallback(PruningConfig(target_sparsity=0.5, criterion="sparsegpt", criterion_kwargs={"dampening": -1}))


def test_two_stage_recipe_one_shot_then_sparsegpt_criterion_keeps_the_first_zeros(tmp_path):
    model = tiny_llama()
    one_shot = OneShotPruningCallback(sparsity=0.3, calibration_batches=2)
    second = PruningCallback(
        PruningConfig(target_sparsity=0.5, schedule="one_shot", start=0.5, end=0.5, criterion="sparsegpt")
    )
    trainer = Trainer(
        model=model, args=training_args(tmp_path, max_steps=8), train_dataset=LMDataset(), callbacks=[one_shot, second]
    )
    trainer.train()
    assert second.last_update_step == 4
    modules = find_target_modules(model)
    for name, first_keep in one_shot.masks.items():
        weight = weight_out_in(modules[name].weight.detach(), modules[name])
        assert not (weight[~first_keep] != 0).any(), f"{name}: a one-shot zero came back"
        assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=2e-3), name


def _calibration(n=2):
    return [{key: value[None] for key, value in LMDataset(n=n)[i].items()} for i in range(n)]


def test_one_shot_is_all_or_nothing_when_a_later_block_fails():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight[0] = float("nan")  # block 0 prunes, block 1 sees NaN inputs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, RuntimeError), match=r"prune_one_shot failed at model\.layers\.1") as error:
        prune_one_shot(model, _calibration(), sparsity=0.5)
    assert "every weight is back as it was" in str(error.value)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_a_nan_target_weight_is_refused_naming_the_module_before_any_change():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj: the weight holds NaN"):
        prune_one_shot(model, _calibration(), sparsity=0.5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True, msg=key)


@pytest.mark.parametrize(
    "batches, message",
    [
        ([torch.zeros(1, 4, dtype=torch.long)], r"calibration_batches\[0\]: expected a dict of model inputs"),
        ([{"text": "hello"}], r"calibration_batches\[0\]: holds no tensor model inputs"),
        ([{"input_ids": torch.full((1, 4), 10_000)}], r"calibration_batches\[0\]: the model's forward failed"),
    ],
)
def test_bad_calibration_batches_give_a_clear_error(batches, message):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        prune_one_shot(model, batches, sparsity=0.5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
