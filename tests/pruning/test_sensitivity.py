"""sensitivity_analysis: one layer pruned at a time, the model restored, and allocations usable by PruningCallback."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import Trainer

from conftest import LMDataset, tiny_bert, tiny_gpt2, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig, sensitivity_analysis, sparsity_report

torch.set_num_threads(1)


def _lm_loss(batch_size: int = 16):
    data = LMDataset(n=batch_size, seed=5)
    batch = torch.stack([data[i]["input_ids"] for i in range(batch_size)])

    def eval_loss(model):
        with torch.no_grad():
            return model(input_ids=batch, labels=batch).loss.item()

    return eval_loss


def _weighted_mean(allocation: dict[str, float], params: dict[str, int]) -> float:
    by_name = {re.sub(r"\\(.)", r"\1", regex[1:-1]): value for regex, value in allocation.items()}
    assert set(by_name) == set(params)
    return sum(params[name] * value for name, value in by_name.items()) / sum(params.values())


def test_one_layer_at_a_time_and_model_restored_exactly(capsys):
    model = tiny_llama(seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = _lm_loss()
    seen = []

    def eval_fn(m):
        m.eval()  # the analysis must undo this too
        seen.append({layer.name: layer.sparsity for layer in sparsity_report(m).layers})
        return loss(m)

    table = sensitivity_analysis(model, eval_fn, sparsities=(0.5, 0.25))
    assert table.sparsities == (0.25, 0.5)
    assert len(table.layers) == 14 and len(seen) == 1 + 14 * 2
    assert all(value == 0 for value in seen[0].values())  # baseline: nothing pruned
    expected_order = [(layer.name, s) for layer in table.layers for s in (0.25, 0.5)]
    for (name, sparsity), observed in zip(expected_order, seen[1:]):
        assert observed[name] == pytest.approx(sparsity, abs=1e-3)
        assert all(value == 0 for other, value in observed.items() if other != name)

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert table.baseline == pytest.approx(loss(model))
    assert "sensitivity" in capsys.readouterr().err  # tqdm progress bar
    text = str(table)
    assert "model.layers.1.mlp.down_proj" in text and "25%" in text and "50%" in text
    as_dict = table.to_dict()
    assert as_dict["baseline"] == table.baseline and len(as_dict["layers"]) == 14
    assert as_dict["layers"][0]["metrics"].keys() == {"0.25", "0.5"}


def test_model_restored_when_eval_fn_raises():
    model = tiny_gpt2(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def failing(m):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("evaluation broke")
        return 1.0

    with pytest.raises(RuntimeError, match="evaluation broke"):
        sensitivity_analysis(model, failing, sparsities=(0.5, 0.9), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_row_pattern_on_gpt2_conv1d_prunes_whole_output_neurons():
    model = tiny_gpt2(seed=2)
    name = "transformer.h.0.mlp.c_fc"  # Conv1D: weight stored [in=32, out=128]
    zero_columns = []

    def eval_fn(m):
        weight = dict(m.named_modules())[name].weight
        zero_columns.append(((weight == 0).all(dim=0).sum().item(), (weight == 0).sum().item()))
        return 0.0

    table = sensitivity_analysis(model, eval_fn, sparsities=(0.25,), pattern="row", targets=[re.escape(name)])
    assert zero_columns[1] == (32, 32 * 32)  # 25% of the 128 output neurons, whole neurons only
    assert table[name].achieved[0.25] == 0.25


def test_allocation_meets_target_and_spares_sensitive_layers():
    model = tiny_bert(seed=3, num_labels=2)
    sensitive = re.compile(r"intermediate\.dense")

    def eval_fn(m):  # a real forward pass plus a large penalty when a sensitive layer loses weights
        ids = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = m(input_ids=ids).logits
        penalty = sum(layer.sparsity for layer in sparsity_report(m).layers if sensitive.search(layer.name))
        return float(logits.square().mean()) + 100.0 * penalty

    table = sensitivity_analysis(model, eval_fn, sparsities=(0.25, 0.5, 0.75), progress=False)
    params = {layer.name: layer.params for layer in table.layers}
    for target in (0.1, 0.3, 0.5, 0.7):
        allocation = table.allocation(target)
        assert _weighted_mean(allocation, params) == pytest.approx(target, abs=1e-12)
        assert all(0.0 <= value <= 0.75 for value in allocation.values())
        if target <= 0.5:
            spared = [value for regex, value in allocation.items() if sensitive.search(regex.replace("\\", ""))]
            assert spared == [0.0, 0.0]
    capped = table.allocation(0.3, max_sparsity=0.4)
    assert max(capped.values()) <= 0.4 + 1e-12
    assert _weighted_mean(capped, params) == pytest.approx(0.3, abs=1e-12)
    with pytest.raises(ValueError, match="above the 0.75"):
        table.allocation(0.8)
    with pytest.raises(ValueError, match="target must be a sparsity in"):
        table.allocation(1.0)


def test_allocation_drives_pruning_callback_to_the_target(tmp_path):
    model = tiny_llama(seed=4)
    table = sensitivity_analysis(model, _lm_loss(), sparsities=(0.3, 0.6, 0.9), progress=False)
    allocation = table.allocation(0.6)
    config = PruningConfig(target_sparsity=0.6, per_layer=allocation, schedule="one_shot", start=0, end=0)
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, max_steps=3),
        train_dataset=LMDataset(n=32),
        callbacks=[PruningCallback(config)],
    )
    trainer.train()
    report = sparsity_report(trainer.model)
    assert report.sparsity == pytest.approx(0.6, abs=len(report.layers) / report.total_params)
    for layer in report.layers:
        assert layer.sparsity == pytest.approx(allocation[f"^{re.escape(layer.name)}$"], abs=1.0 / layer.params)


def test_bad_inputs_name_the_field():
    model = tiny_llama(seed=0)
    loss = _lm_loss(4)
    with pytest.raises(ValueError, match="pattern: 'head'"):
        sensitivity_analysis(model, loss, pattern="head", progress=False)
    with pytest.raises(ValueError, match="criterion: 'movement'"):
        sensitivity_analysis(model, loss, criterion="movement", progress=False)
    with pytest.raises(ValueError, match="criterion.*Did you mean 'magnitude'"):
        sensitivity_analysis(model, loss, criterion="magnitud", progress=False)
    with pytest.raises(ValueError, match="sparsities must be"):
        sensitivity_analysis(model, loss, sparsities=(0.5, 1.0), progress=False)
    with pytest.raises(ValueError, match="pattern: N:M pattern '3:5' needs M=5 to divide"):
        sensitivity_analysis(model, loss, pattern="3:5", progress=False)
    with pytest.raises(ValueError, match="targets: pattern 'nothing_here' matches no"):
        sensitivity_analysis(model, loss, targets=["nothing_here"], progress=False)
    with pytest.raises(ValueError, match="eval_fn must return a number"):
        sensitivity_analysis(model, lambda m: "low", progress=False)
    table = sensitivity_analysis(
        model, loss, sparsities=(0.25, 0.5), pattern="2:4", targets=["q_proj"], progress=False
    )
    assert table.layers[0].achieved[0.5] == 0.5
    with pytest.raises(ValueError, match="N:M pattern"):
        table.allocation(0.5)
