"""The residual rotation (hidden_rotation) and the writers' least-squares refit (refit_writers) of one-shot
structured pruning, on tiny real models."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_compress import StructuredPruningConfig, shrink_to
from hf_compress.structured.families import family_of
from hf_compress.structured.refit import refit_writers_, writer_input_grams
from hf_compress.structured.rotation import rotate_hidden_
from hf_compress.structured.selection import select_structures
from hf_compress.structured.structures import StructureSelection, zero_structures_
from tests.structured.test_shrink import VOCAB, gpt2, llama, llama_tied, mistral, qwen2


def _batches(count=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, VOCAB, (4, 24), generator=generator) for _ in range(count)]
    return [{"input_ids": i, "labels": i} for i in ids]


def _non_trivial_norms(model):
    """Random norm weights and biases, so folding and rotating them is exercised (fresh models have ones)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.uniform_(0.5, 1.5) if "norm" in name else parameter.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("build", [llama, qwen2, mistral], ids=["llama", "qwen2", "mistral"])
def test_rotation_keeps_outputs(build):
    model = _non_trivial_norms(build()[0])
    ids = _batches()[0]["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    shares = rotate_hidden_(model, _batches())
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert (after - before).abs().max() <= 1e-4
    assert torch.isclose(shares.sum(), torch.tensor(1.0, dtype=shares.dtype))
    assert (shares[:-1] >= shares[1:]).all()
    for module in model.modules():  # every RMSNorm now has unit weights: their scales live in the readers
        if type(module).__name__.endswith("RMSNorm"):
            assert torch.equal(module.weight, torch.ones_like(module.weight))


def test_rotated_channels_carry_decreasing_energy():
    model = _non_trivial_norms(llama()[0])
    rotate_hidden_(model, _batches())
    energy = torch.zeros(model.config.hidden_size)

    def add(module, args):
        energy.add_(args[0].detach().pow(2).reshape(-1, args[0].shape[-1]).sum(0))

    handle = model.model.layers[1].input_layernorm.register_forward_pre_hook(add)
    with torch.no_grad():
        for batch in _batches():
            model(input_ids=batch["input_ids"])
    handle.remove()
    half = model.config.hidden_size // 2
    assert energy[:half].sum() > energy[half:].sum()


def bare_llama():
    return llama()[0].model, None


@pytest.mark.parametrize(
    ("build", "reason"),
    [(gpt2, "LayerNorm"), (llama_tied, "tie_word_embeddings"), (bare_llama, "returns the hidden states")],
    ids=["gpt2", "tied", "bare"],
)
def test_rotation_refusals_name_the_reason(build, reason):
    model = build()[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=reason) as error:
        rotate_hidden_(model, _batches())
    assert type(model).__name__ in str(error.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # refused before any change
    config = StructuredPruningConfig(shape={"hidden_size": 16}, hidden_rotation="pca")
    with pytest.raises(ValueError, match="hidden_rotation"):
        shrink_to(model, config, _batches())
    # "auto" falls back to cutting the original coordinates
    small = shrink_to(model, StructuredPruningConfig(shape={"hidden_size": 16}, hidden_rotation="auto"), _batches())
    assert small.config.hidden_size == 16


def test_bad_hidden_rotation_names_the_field_and_values():
    with pytest.raises(ValueError, match="hidden_rotation must be one of 'auto', 'pca', 'none'"):
        StructuredPruningConfig(shape={"hidden_size": 16}, hidden_rotation="svd")
    with pytest.raises(ValueError, match="refit_writers must be True or False"):
        StructuredPruningConfig(shape={"hidden_size": 16}, refit_writers="yes")


def test_shrink_to_with_rotation_leaves_the_model_and_beats_coordinates():
    model = _non_trivial_norms(llama()[0])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _batches(4)
    ids = batches[0]["input_ids"]
    with torch.no_grad():
        reference = model(input_ids=ids).logits

    def error(rotation):
        config = StructuredPruningConfig(shape={"hidden_size": 16}, hidden_rotation=rotation, refit_writers=False)
        small = shrink_to(model, config, batches).eval()
        assert small.config.hidden_size == 16
        with torch.no_grad():
            return float((small(input_ids=ids).logits - reference).pow(2).mean())

    assert error("pca") < error("none")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def _inputs_of(model, module, batches) -> torch.Tensor:
    """Every token's input to ``module`` over ``batches``, as rows."""
    inputs = []

    def record(module, args):
        inputs.append(args[0].detach())

    handle = module.register_forward_pre_hook(record)
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch["input_ids"])
    handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs])


@pytest.mark.parametrize("build", [llama, gpt2], ids=["llama", "gpt2"])
def test_refit_reconstructs_the_writers_better_than_dropping(build):
    model = build()[0].eval()
    family = family_of(model)
    batches = _batches(4)
    grams = writer_input_grams(family, batches)
    heads = {1: [0, 3]} if family.name == "llama" else {}  # GPT-2 heads go only with hidden channels
    selection = StructureSelection(neurons={0: list(range(0, 64, 2))}, query_heads=heads)
    writers = [module for i in (0, 1) for module in family.layer_parts(family.layer_list()[i]).writers]
    inputs = [_inputs_of(model, module, batches) for module in writers]

    def writer_error(refit: bool) -> float:
        pruned = copy.deepcopy(model)
        pruned_family = family_of(pruned)
        if refit:
            refit_writers_(pruned_family, selection, grams)
        zero_structures_(pruned_family, selection)
        changed = [
            module for i in (0, 1) for module in pruned_family.layer_parts(pruned_family.layer_list()[i]).writers
        ]
        with torch.no_grad():
            return sum(float((w(x) - c(x)).pow(2).sum()) for w, c, x in zip(writers, changed, inputs))

    assert writer_error(refit=True) < 0.7 * writer_error(refit=False)


def test_refit_and_rotation_in_the_trainer_callback(tmp_path):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from hf_compress import StructuredPruningCallback

    model = _non_trivial_norms(llama()[0]).train()
    data = [{"input_ids": b["input_ids"][i], "labels": b["input_ids"][i]} for b in _batches(4) for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True
    )
    config = StructuredPruningConfig(shape={"hidden_size": 16, "intermediate_size": 32}, calibration_batches=2)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[StructuredPruningCallback(config)])
    trainer.train()
    trainer.save_model()
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert (loaded.config.hidden_size, loaded.config.intermediate_size) == (16, 32)
    messages = loaded.config.hf_compress_structured["messages"]
    assert any(m.startswith("hidden_rotation: hidden channels cut along the principal axes") for m in messages)


def test_selection_after_rotation_keeps_the_leading_channels():
    model = _non_trivial_norms(mistral()[0])
    batches = _batches(2)
    rotate_hidden_(model, batches)
    config = StructuredPruningConfig(shape={"hidden_size": 8}, refit_writers=False)
    from hf_compress.structured.apply import score_structures

    family = family_of(model)
    scores = score_structures(family, config, batches, depth=False)
    shape = family.shape()
    chosen = select_structures(family, scores, shape.__class__(**{**shape.to_dict(), "hidden": 8}))
    # the principal axes come first, so the removed channels are mostly the trailing ones
    assert sum(c >= 8 for c in chosen.channels) >= 0.75 * len(chosen.channels)
