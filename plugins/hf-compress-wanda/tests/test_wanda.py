"""The Wanda plugin, installed as a real distribution, inside a real Trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from hf_compress import PruningCallback, PruningConfig, sparsity_report
from hf_compress_wanda import WandaOneShotCallback, prune_one_shot


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


class Counting(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        ids = (torch.arange(16) * (1 + i % 3) + i) % 64
        return {"input_ids": ids, "labels": ids.clone()}


def args(tmp_path, **kw):
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=4,
    )
    values.update(kw)
    return TrainingArguments(**values)


def test_listed_by_the_cli_with_its_distribution():
    out = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    components = {(c["kind"], c["name"]): c for c in json.loads(out)["components"]}
    assert components[("pruning_criterion", "wanda")]["distribution"] == "hf-compress-wanda"
    assert components[("callback", "wanda_one_shot")]["distribution"] == "hf-compress-wanda"


def test_one_shot_scores_are_weight_times_input_norm():
    model = tiny_llama()
    batch = {"input_ids": torch.randint(0, 64, (4, 16))}
    layer = model.model.layers[0].mlp.down_proj
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(i[0].detach().reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        model(**batch)
    handle.remove()
    norms = captured[0].pow(2).sum(0).sqrt()
    expected_scores = layer.weight.detach().abs() * norms
    masks = prune_one_shot(model, [batch], sparsity=0.5)
    mask = masks["model.layers.0.mlp.down_proj"]
    # per-output-row comparison: every row keeps exactly its top half by |W| * ||X||
    expected = torch.zeros_like(mask)
    expected.scatter_(1, expected_scores.topk(expected_scores.shape[1] // 2, dim=1).indices, True)
    assert torch.equal(mask, expected)
    assert float((layer.weight == 0).float().mean()) == pytest.approx(0.5)


def test_one_shot_two_four():
    model = tiny_llama()
    prune_one_shot(model, [{"input_ids": torch.randint(0, 64, (2, 16))}], pattern="2:4")
    weight = model.model.layers[1].self_attn.q_proj.weight
    assert int((weight.reshape(-1, 4) != 0).sum(1).max()) <= 2
    assert sparsity_report(model).sparsity > 0.3


def test_gradual_wanda_criterion_in_a_trainer(tmp_path):
    model = tiny_llama()
    config = PruningConfig(target_sparsity=0.5, criterion="wanda", schedule="linear", start=0, end=8, frequency=2)
    trainer = Trainer(model=model, args=args(tmp_path), train_dataset=Counting(), callbacks=[PruningCallback(config)])
    trainer.train()
    report = sparsity_report(model)
    assert abs(report.sparsity - 0.5) < 0.01


def test_one_shot_callback_then_constant_schedule_keeps_the_mask(tmp_path):
    model = tiny_llama()
    one_shot = WandaOneShotCallback(sparsity=0.5, calibration_batches=2)
    hold = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="constant", start=0, end=0))
    trainer = Trainer(model=model, args=args(tmp_path), train_dataset=Counting(), callbacks=[one_shot, hold])
    trainer.train()
    for name, mask in one_shot.masks.items():
        weight = dict(model.named_modules())[name].weight
        assert torch.all(weight[~mask] == 0), name
    logged = [
        entry["wanda_one_shot_sparsity"] for entry in trainer.state.log_history if "wanda_one_shot_sparsity" in entry
    ]
    assert logged and logged[0] == pytest.approx(0.5, abs=1e-3)


def test_bad_input():
    with pytest.raises(ValueError, match="sparsity"):
        WandaOneShotCallback(sparsity=1.5)
    with pytest.raises(ValueError, match="comparison"):
        WandaOneShotCallback(comparison="global")
    with pytest.raises(ValueError, match="calibration_batches"):
        prune_one_shot(tiny_llama(), [], sparsity=0.5)
