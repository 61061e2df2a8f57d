"""StructuredPruningCallback in an unmodified Trainer: one-shot + distillation, gradual, resume, recipes, refusals."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer

from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    StructuredPruningCallback,
    StructuredPruningConfig,
    callbacks_from_recipe,
)
from tests.conftest import dataset_for, tiny_bert, tiny_gpt2, tiny_llama, training_args


def params(model):
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def run(model, family, output_dir, callbacks, **overrides):
    trainer = Trainer(
        model=model,
        args=training_args(output_dir, **overrides),
        train_dataset=dataset_for(family),
        callbacks=list(callbacks),
    )
    trainer.train()
    return trainer


def test_one_shot_with_hidden_state_distillation_saves_a_smaller_stock_checkpoint(tmp_path):
    model = tiny_llama(0, num_hidden_layers=3, head_dim=8)
    teacher = copy.deepcopy(model)
    before = params(model)
    config = StructuredPruningConfig(
        shape={"num_key_value_heads": 1, "intermediate_size": 32, "hidden_size": 24, "num_hidden_layers": 2},
        calibration_batches=2,
    )
    distill = DistillationCallback(teacher, DistillationConfig(alpha=0.5, layer_map={2: 3}, hidden_loss="cosine"))
    trainer = run(model, "llama", tmp_path / "run", [StructuredPruningCallback(config), distill])
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    c = reloaded.config
    assert (c.num_key_value_heads, c.num_attention_heads, c.intermediate_size, c.hidden_size, c.num_hidden_layers) == (
        1,
        2,
        32,
        24,
        2,
    )
    assert params(reloaded) < 0.6 * before
    ids = dataset_for("llama")[0]["input_ids"][None]
    assert torch.equal(reloaded(input_ids=ids).logits, trainer.model(input_ids=ids).logits)
    assert not any("projection" in key for key in reloaded.state_dict())
    assert c.hf_compress_structured["before"]["hidden"] == 32


@pytest.mark.parametrize(
    "family,criterion", [("llama", "magnitude"), ("llama", "taylor"), ("llama", "activation"), ("gpt2", "taylor")]
)
def test_gradual_reaches_the_shape_and_removes_exactly(family, criterion, tmp_path):
    if family == "llama":
        model = tiny_llama(0, head_dim=8, num_hidden_layers=3)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=3, n_head=4))
    shape = {"intermediate_size": 24, "num_hidden_layers": 2}
    if family == "llama":  # GPT-2 heads go only with hidden channels (LayerNorm: not exact), so not here
        shape["num_key_value_heads"] = 1
    config = StructuredPruningConfig(shape=shape, mode="gradual", criterion=criterion, end_step=12, update_every=3)
    callback = StructuredPruningCallback(config)
    masked_outputs = {}

    class Capture(StructuredPruningCallback.__mro__[1]):  # a TrainerCallback that runs just before shrink
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == args.max_steps:
                model.eval()
                with torch.no_grad():
                    masked_outputs["logits"] = model(input_ids=ids).logits
                model.train()

    ids = dataset_for(family)[0]["input_ids"][None]
    trainer = run(model, family, tmp_path / "run", [callback, Capture()])
    small = trainer.model.eval()
    assert small.config.num_hidden_layers == 2
    assert small.config.hf_compress_structured["after"]["intermediate"] == 24
    with torch.no_grad():
        assert (small(input_ids=ids).logits - masked_outputs["logits"]).abs().max() <= 1e-5


def test_gradual_resume_mid_pruning_is_bit_exact_and_a_different_target_is_refused(tmp_path):
    config = StructuredPruningConfig(
        shape={"num_key_value_heads": 1, "intermediate_size": 16},
        mode="gradual",
        criterion="taylor",
        end_step=16,
        update_every=3,
    )
    common = dict(max_steps=20, save_strategy="steps", save_steps=10)
    full = run(tiny_llama(0, head_dim=8), "llama", tmp_path / "run", [StructuredPruningCallback(config)], **common)
    expected = {k: v.clone() for k, v in full.model.state_dict().items()}
    checkpoint = tmp_path / "run" / "checkpoint-10"
    assert (checkpoint / "hf_compress_structured.json").exists()

    resumed_model = tiny_llama(0, head_dim=8)
    resumed = Trainer(
        model=resumed_model,
        args=training_args(tmp_path / "run", **common),
        train_dataset=dataset_for("llama"),
        callbacks=[StructuredPruningCallback(config)],
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected[key]), key

    other = StructuredPruningConfig(
        shape={"num_key_value_heads": 1, "intermediate_size": 32},
        mode="gradual",
        criterion="taylor",
        end_step=16,
        update_every=3,
    )
    refused = Trainer(
        model=tiny_llama(0, head_dim=8),
        args=training_args(tmp_path / "run", **common),
        train_dataset=dataset_for("llama"),
        callbacks=[StructuredPruningCallback(other)],
    )
    with pytest.raises(ValueError, match="intermediate_size.: 16.*intermediate_size.: 32"):
        refused.train(resume_from_checkpoint=str(checkpoint))


def test_bert_classifier_one_shot_with_layer_and_head_pruning(tmp_path):
    model = tiny_bert(0, num_hidden_layers=3)
    config = StructuredPruningConfig(
        shape={"num_attention_heads": 2, "intermediate_size": 32, "num_hidden_layers": 2},
        calibration_batches=2,
        depth_criterion="skip_loss",
    )
    trainer = run(model, "bert", tmp_path / "run", [StructuredPruningCallback(config)])
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    c = reloaded.config
    assert (c.num_attention_heads, c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (2, 16, 32, 2)
    batch = dataset_for("bert")[0]
    inputs = {"input_ids": batch["input_ids"][None], "attention_mask": batch["attention_mask"][None]}
    assert torch.allclose(reloaded(**inputs).logits, trainer.model.eval()(**inputs).logits)


def test_budget_search_logs_and_saves_its_choice(tmp_path):
    model = tiny_llama(0, head_dim=8, num_hidden_layers=4)
    before = params(model)
    config = StructuredPruningConfig(target_params=0.6, search_candidates=2, search_steps=2, calibration_batches=2)
    trainer = run(model, "llama", tmp_path / "run", [StructuredPruningCallback(config)], max_steps=4)
    search = trainer.model.config.hf_compress_structured["search"]
    assert search["chosen"] in search["candidates"]
    assert all(candidate["params"] <= 0.6 * before for candidate in search["candidates"])
    assert {candidate["shape"]["num_layers"] for candidate in search["candidates"]} == {4, 2}
    # at each depth a uniform cut and one that keeps every head (Llama has an explicit head_dim)
    heads = [(c["shape"]["num_layers"], c["shape"]["num_heads"]) for c in search["candidates"]]
    assert (4, model.config.num_attention_heads) in heads and any(
        h < model.config.num_attention_heads for _, h in heads
    )
    assert params(trainer.model) <= 0.6 * before
    assert any("structured/num_layers" in entry for entry in trainer.state.log_history)


def test_budget_search_keeps_heads_only_where_they_have_their_own_size():
    from hf_compress import shrink_to

    model = tiny_gpt2(0)
    batches = [{k: v[None] for k, v in dataset_for("gpt2")[0].items()}]
    config = StructuredPruningConfig(target_params=0.6, search_candidates=1, search_steps=1, calibration_batches=1)
    small, details = shrink_to(model, config, batches, return_details=True)
    # GPT-2 derives head_dim from the hidden size: one uniform candidate per depth, no heads-kept variant
    assert len(details["search"]["candidates"]) == 1
    assert params(small) <= 0.6 * params(model)
    # Llama without the heads-kept shapes (the latency-first choice): uniform cuts only
    llama = tiny_llama(0, head_dim=8, num_hidden_layers=4)
    batches = [{k: v[None] for k, v in dataset_for("llama")[0].items()}]
    config = StructuredPruningConfig(
        target_params=0.6, search_candidates=2, search_steps=1, calibration_batches=1, search_keep_heads=False
    )
    _, details = shrink_to(llama, config, batches, return_details=True)
    _, with_heads_kept = shrink_to(
        llama, dataclasses.replace(config, search_keep_heads=True), batches, return_details=True
    )
    depths = [candidate["shape"]["num_layers"] for candidate in details["search"]["candidates"]]
    assert depths == [4, 2]  # one uniform cut per depth
    assert len(with_heads_kept["search"]["candidates"]) > len(depths)
    # heads kept at several hidden sizes, the MLP taking the rest of the budget
    target = with_heads_kept["search"]["target_params"]
    candidates = with_heads_kept["search"]["candidates"]
    kept = [c for c in candidates if c["shape"]["num_heads"] == 4 and c["shape"]["num_layers"] == 4]
    assert len({c["shape"]["hidden"] for c in kept}) >= 2
    assert all(0.95 * target <= c["params"] <= target for c in kept)
    assert len({json.dumps(c["shape"], sort_keys=True) for c in candidates}) == len(candidates)  # no repeats
    with pytest.raises(ValueError, match="search_keep_heads must be True or False"):
        StructuredPruningConfig(target_params=0.5, search_keep_heads="yes")


def test_recipe_section_and_registry():
    from hf_compress.registry import get_registry

    callbacks = callbacks_from_recipe({"structured_pruning": {"shape": {"intermediate_size": 16}, "mode": "gradual"}})
    assert isinstance(callbacks[0], StructuredPruningCallback)
    names = get_registry().names("structure_criterion")
    assert {"activation", "taylor", "magnitude", "block_influence", "skip_loss"} <= set(names)
    with pytest.raises(ValueError, match="structured_pruning.criterion"):
        callbacks_from_recipe({"structured_pruning": {"shape": {"intermediate_size": 16}, "criterion": "nope"}})


def test_bad_input_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="would remove every MLP neuron"):
        StructuredPruningConfig(shape={"intermediate_size": 0})
    with pytest.raises(ValueError, match="exactly one of shape"):
        StructuredPruningConfig()
    # unreachable budget: names the bounds
    callback = StructuredPruningCallback(StructuredPruningConfig(target_params=10, calibration_batches=1))
    with pytest.raises(ValueError, match="unreachable.*nearest valid targets"):
        run(tiny_llama(0, head_dim=8), "llama", tmp_path / "a", [callback], max_steps=1)
    # larger than the model
    callback = StructuredPruningCallback(StructuredPruningConfig(shape={"intermediate_size": 1000}))
    with pytest.raises(ValueError, match="larger than the model's 64"):
        run(tiny_llama(0, head_dim=8), "llama", tmp_path / "b", [callback], max_steps=1)
    # GPT-2 derives head_dim: heads and hidden must be in proportion
    callback = StructuredPruningCallback(StructuredPruningConfig(shape={"num_attention_heads": 2, "hidden_size": 24}))
    with pytest.raises(ValueError, match="Nearest valid targets"):
        run(tiny_gpt2(0), "gpt2", tmp_path / "c", [callback], max_steps=1)
    # a LoRA model is refused with a clear message
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_llama(0, head_dim=8), peft.LoraConfig(target_modules=["q_proj"], r=2))
    callback = StructuredPruningCallback(StructuredPruningConfig(shape={"intermediate_size": 16}))
    with pytest.raises(ValueError, match="PEFT"):
        run(lora, "llama", tmp_path / "d", [callback], max_steps=1)


def test_search_choice_written_beside_the_model(tmp_path):
    model = tiny_llama(0, head_dim=8, num_hidden_layers=4)
    config = StructuredPruningConfig(target_params=0.6, search_candidates=1, search_steps=1, calibration_batches=1)
    run(model, "llama", tmp_path / "run", [StructuredPruningCallback(config)], max_steps=2)
    with open(tmp_path / "run" / "structured_search.json") as handle:
        assert json.load(handle)["chosen"]["params"] > 0


def test_qat_after_shrinking_then_export_every_format(tmp_path):
    from hf_compress import QATCallback, QATConfig, export, shrink
    from hf_compress.structured.families import family_of
    from hf_compress.structured.structures import StructureSelection, zero_structures_

    model = tiny_llama(0, head_dim=8)
    zero_structures_(family_of(model), StructureSelection(kv_groups={0: [1], 1: [1]}, neurons={0: list(range(32))}))
    small = shrink(model)
    trainer = run(small, "llama", tmp_path / "qat", [QATCallback(QATConfig(weight_bits=8))], max_steps=4)
    for format in ("dequantized", "quanto", "compressed-tensors"):
        result = export(trainer.model, tmp_path / format, format=format)
        assert result.max_abs_diff < 1e-2, (format, result.max_abs_diff)


def test_shrunk_student_distils_hidden_states_across_the_narrower_width(tmp_path):
    from hf_compress import shrink_to

    teacher = tiny_llama(0, head_dim=8, num_hidden_layers=3)
    ids = dataset_for("llama")[0]["input_ids"][None]
    config = StructuredPruningConfig(shape={"hidden_size": 24, "num_hidden_layers": 2}, calibration_batches=1)
    student = shrink_to(teacher, config, [{"input_ids": ids, "labels": ids}])
    assert student.config.hidden_size == 24 and teacher.config.hidden_size == 32
    distill = DistillationCallback(teacher, DistillationConfig(alpha=0.5, layer_map={1: 2, 2: 3}, hidden_loss="mse"))
    trainer = run(student, "llama", tmp_path / "run", [distill], max_steps=6)
    assert trainer.state.log_history[-1]["train_loss"] > 0
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert reloaded.config.hidden_size == 24
    assert not any("projection" in key for key in reloaded.state_dict())
