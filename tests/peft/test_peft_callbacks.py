"""Pruning, QAT and distillation on ``peft.PeftModel`` students inside a real transformers.Trainer, then the merge."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch
from peft import IA3Config, LoHaConfig, LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback

from conftest import LMDataset, tiny_bert, tiny_gpt2, tiny_llama, training_args
from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    PruningCallback,
    PruningConfig,
    QATCallback,
    QATConfig,
    export,
    merge_and_unload,
)
from hf_compress.peft_support import adapters_disabled_teacher
from hf_compress.peft_support.modules import plain_name
from hf_compress.targets import find_target_modules, weight_out_in

torch.set_num_threads(1)
GPT2_LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True)
LLAMA_LORA = dict(
    r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
)
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def lora_gpt2(seed: int = 0, **lora):
    return get_peft_model(tiny_gpt2(seed, **NO_DROPOUT), LoraConfig(**{**GPT2_LORA, **lora}))


def fixed_batch() -> dict[str, torch.Tensor]:
    ids = LMDataset(n=4, seed=7).ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def logits_of(model) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = model(**fixed_batch()).logits
    model.train(was_training)
    return out


def train(model, tmp_path, callbacks, **args):
    values = dict(max_steps=12, learning_rate=5e-3)
    values.update(args)
    resume = values.pop("resume", None)
    trainer = Trainer(
        model=model, args=training_args(tmp_path, **values), train_dataset=LMDataset(n=64), callbacks=list(callbacks)
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_pruned_lora_merges_to_exact_target_sparsity(tmp_path):
    model = lora_gpt2()
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, end=0.5, frequency=2))
    train(model, tmp_path / "run", [pruning])

    assert pruning.modules and all(name.endswith(".base_layer") for name in pruning.modules)
    # nothing of peft's is patched: no instance attribute hides a method of a LoRA layer or of the tuner
    for obj in [model.base_model, *(m for m in model.modules() if hasattr(m, "lora_A"))]:
        shadowed = [n for n in vars(obj) if not n.startswith("__") and callable(getattr(type(obj), n, None))]
        assert not shadowed, (type(obj).__name__, shadowed)
    assert not any("lora_" in name for name in pruning.modules)
    name = "base_model.model.transformer.h.0.mlp.c_fc.base_layer"
    layer = model.get_submodule(name.removesuffix(".base_layer"))
    lora_B = layer.lora_B["default"].weight.detach().clone()
    assert lora_B.abs().max() > 0  # the adapter trained
    update = (lora_B @ layer.lora_A["default"].weight.detach()) * layer.scaling["default"]
    base = weight_out_in(layer.base_layer.weight.detach(), layer.base_layer).clone()
    mask = pruning.masks[name].clone()
    assert (update[~mask] != 0).any()  # a dense merge would fill pruned weights
    before = logits_of(model)

    # peft's own merge keeps the sparsity too (hf_compress's LoRA variant), and its unmerge takes back exactly that
    layer.merge()
    torch.testing.assert_close(
        weight_out_in(layer.base_layer.weight.detach(), layer.base_layer), (base + update) * mask
    )
    torch.testing.assert_close(logits_of(model), before, rtol=0, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(
        weight_out_in(layer.base_layer.weight.detach(), layer.base_layer), base, rtol=0, atol=1e-6
    )
    assert not layer.merged and torch.equal(logits_of(model), before)
    peft_merged = copy.deepcopy(model).merge_and_unload()
    peft_fc = peft_merged.get_submodule("transformer.h.0.mlp.c_fc")
    torch.testing.assert_close(weight_out_in(peft_fc.weight.detach(), peft_fc), (base + update) * mask)
    torch.testing.assert_close(logits_of(peft_merged), before, rtol=0, atol=1e-5)

    merged = merge_and_unload(model)
    assert type(merged).__name__ == "GPT2LMHeadModel"
    torch.testing.assert_close(logits_of(merged), before, rtol=0, atol=1e-5)  # merged model == the trained one
    merged_fc = merged.get_submodule("transformer.h.0.mlp.c_fc")
    torch.testing.assert_close(weight_out_in(merged_fc.weight.detach(), merged_fc), (base + update) * mask)
    pruned = total = 0
    for peft_name in pruning.modules:
        module = merged.get_submodule(plain_name(peft_name))
        pruned += int((module.weight == 0).sum())
        total += module.weight.numel()
    assert pruned == total // 2  # every layer exactly 50% (scope="layer", even sizes)

    merged.save_pretrained(tmp_path / "merged")
    keys = load_file(os.path.join(tmp_path / "merged", "model.safetensors")).keys()
    assert not any("lora" in key or "base_layer" in key for key in keys)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits_of(reloaded), before, rtol=0, atol=1e-5)


class LogitsAtLastStep(TrainerCallback):
    """The PeftModel's eval logits after the last optimizer step, before any train-end baking."""

    def __init__(self, model):
        self.model, self.logits = model, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == state.max_steps:
            self.logits = logits_of(self.model)


def test_qat_lora_quantizes_effective_weight_and_merged_model_lies_on_grid(tmp_path):
    model = get_peft_model(tiny_llama(0), LoraConfig(**LLAMA_LORA))
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, end=0.5, frequency=2))
    qat = QATCallback(QATConfig(weight_bits=4, granularity="per_channel"))
    probe = LogitsAtLastStep(model)
    train(model, tmp_path / "run", [pruning, qat, probe])
    assert model.get_submodule("base_model.model.model.layers.0.mlp.up_proj").lora_B["default"].weight.abs().max() > 0

    merged = merge_and_unload(model)
    # what the Trainer trained (fake-quantized W + BA) is exactly what the merged model computes
    torch.testing.assert_close(logits_of(merged), probe.logits, rtol=0, atol=1e-5)
    assert merged.config.hf_compress_quantization["modules"][0] == "model.layers.0.self_attn.q_proj"
    quantized = {n: m for n, m in merged.named_modules() if hasattr(m, "hf_compress_qparams")}
    assert set(quantized) == {plain_name(n) for n in qat.modules}
    for name, module in quantized.items():
        q = module.weight.detach() / module.hf_compress_qparams.scale
        assert (q - q.round()).abs().max() < 1e-3, name  # on the int4 grid
        assert q.round().abs().max() <= 7
        mask = pruning.masks[next(n for n in pruning.masks if plain_name(n) == name)]
        assert not module.weight[~mask].any()  # every pruned weight still zero (int4 rounding may add zeros)

    result = export(merged, tmp_path / "exported", format="dequantized")
    exported = load_file(os.path.join(tmp_path / "exported", "model.safetensors"))
    weight = exported["model.layers.1.mlp.down_proj.weight"]
    scale = quantized["model.layers.1.mlp.down_proj"].hf_compress_qparams.scale
    assert ((weight / scale) - (weight / scale).round()).abs().max() < 1e-3
    assert result.max_abs_diff < 1e-4


def test_distillation_from_adapters_disabled_base_matches_a_separate_teacher_copy(tmp_path):
    config = DistillationConfig(alpha=0.5, temperature=2.0)
    separate_teacher = copy.deepcopy(tiny_gpt2(0, **NO_DROPOUT))
    runs = {}
    for kind in ("adapters_disabled", "copy"):
        model = lora_gpt2()
        teacher = adapters_disabled_teacher(model) if kind == "adapters_disabled" else separate_teacher
        trainer = train(model, tmp_path / kind, [DistillationCallback(teacher, config)], logging_steps=1, max_steps=6)
        runs[kind] = [entry["distill_loss"] for entry in trainer.state.log_history if "distill_loss" in entry]
        if kind == "adapters_disabled":
            assert list(teacher.parameters()) == []  # no second copy of the weights
            lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
            assert lora_params and all(p.requires_grad for p in lora_params)  # teacher set-up left the student alone
    assert runs["adapters_disabled"][0] < 1e-6  # step 1: B == 0, student == base == teacher
    assert runs["adapters_disabled"][-1] > 1e-4
    torch.testing.assert_close(runs["adapters_disabled"], runs["copy"], rtol=1e-4, atol=1e-6)


def test_resume_restores_masks_on_a_freshly_loaded_base(tmp_path):
    def callbacks():
        return [PruningCallback(PruningConfig(target_sparsity=0.5, end=0.75, frequency=2))]

    args = dict(max_steps=12, save_strategy="steps", save_steps=6)
    whole = lora_gpt2()
    train(whole, tmp_path / "whole", callbacks(), **args)
    checkpoint = tmp_path / "whole" / "checkpoint-6"
    assert (checkpoint / "adapter_model.safetensors").exists() and (checkpoint / "hf_compress_pruning.json").exists()

    resumed = lora_gpt2()  # dense base weights, fresh adapter: the checkpoint brings both back
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-6")
    train(resumed, tmp_path / "resumed", callbacks(), resume=str(tmp_path / "resumed" / "checkpoint-6"), **args)
    expected, got = merge_and_unload(whole).state_dict(), merge_and_unload(resumed).state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)


def test_ia3_pruning_keeps_sparsity_through_peft_merge(tmp_path):
    model = get_peft_model(
        tiny_gpt2(0), IA3Config(target_modules=["c_attn", "c_fc"], feedforward_modules=["c_fc"], fan_in_fan_out=True)
    )
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, end=0.5, frequency=2, targets=[r"c_attn", r"c_fc"]))
    train(model, tmp_path, [pruning], max_steps=6)
    merged = merge_and_unload(model)
    for name in pruning.modules:
        assert float((merged.get_submodule(plain_name(name)).weight == 0).float().mean()) == 0.5


@pytest.mark.parametrize(
    "make_model, callback, message",
    [
        (
            lambda: get_peft_model(tiny_llama(0), LoHaConfig(r=2, target_modules=["q_proj"])),
            lambda: PruningCallback(PruningConfig(target_sparsity=0.5)),
            "PEFT type LOHA",
        ),
        (
            lambda: get_peft_model(tiny_gpt2(0), IA3Config(target_modules=["c_fc"], feedforward_modules=["c_fc"])),
            lambda: QATCallback(QATConfig(weight_bits=8)),
            "QATCallback does not support PEFT type IA3",
        ),
        (
            lambda: get_peft_model(tiny_llama(0), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)),
            lambda: PruningCallback(PruningConfig(target_sparsity=0.5)),
            "LoRA variant DoraLinearVariant",
        ),
        (
            lambda: lora_gpt2(),
            lambda: PruningCallback(PruningConfig(target_sparsity=0.5, criterion="movement")),
            "criterion: .*froze the base weights",
        ),
    ],
)
def test_unsupported_peft_setups_are_named_before_training(tmp_path, make_model, callback, message):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        train(model, tmp_path, [callback()], max_steps=2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_targets_of_a_peft_model_are_the_plain_models_base_layers():
    plain = find_target_modules(tiny_bert(0))
    peft_bert = get_peft_model(tiny_bert(0), LoraConfig(r=2, task_type=TaskType.SEQ_CLS, target_modules=["query"]))
    targets = find_target_modules(peft_bert)
    assert sorted(plain_name(name) for name in targets) == sorted(plain)  # no lora_A/B, no classifier copies
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.base_layer" in targets
    with pytest.raises(ValueError, match="merge_and_unload expects a peft.PeftModel"):
        merge_and_unload(tiny_bert(0))


def test_qat_folded_lora_update_refuses_unmerge_and_stays_merged(tmp_path):
    model = get_peft_model(tiny_llama(0), LoraConfig(**LLAMA_LORA))
    train(model, tmp_path / "run", [QATCallback(QATConfig(weight_bits=8))])
    layer = model.get_submodule("base_model.model.model.layers.0.mlp.up_proj")
    assert layer.merged  # QAT folded the update into the quantized base weight at train end
    weight = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="QAT folded this LoRA update"):
        layer.unmerge()
    assert layer.merged and torch.equal(layer.base_layer.weight, weight)  # the refusal changed nothing
