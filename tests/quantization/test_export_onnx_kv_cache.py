"""ONNX export with a KV cache (``kv_cache=True``) and ``onnx_generate``: greedy tokens equal PyTorch's on Llama,
GPT-2 (Conv1D) and Qwen2 (GQA), on left-padded batches, in float32, ONNX Runtime int8 and a QAT model's trained grid;
encoders and other formats are refused before anything is written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import Trainer

from conftest import VOCAB, dataset_for, tiny_bert, tiny_gpt2, tiny_llama, training_args
from hf_compress import QATCallback, QATConfig, export, onnx_generate, onnx_session

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

torch.set_num_threads(1)


FACTORIES = {"llama": tiny_llama, "gpt2": tiny_gpt2, "qwen2": lambda: tiny_llama(family="qwen2")}


def pytorch_greedy(model, ids, mask, new_tokens):
    """Greedy decoding by recomputing the whole sequence each step, positions counted from the mask."""
    model.eval()
    for _ in range(new_tokens):
        with torch.no_grad():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        next_tokens = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_tokens], 1), torch.cat([mask, torch.ones_like(next_tokens)], 1)
    return ids


def left_padded_batch(seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :1] = 0
    return ids, mask


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_kv_cache_graph_generates_the_same_tokens_as_pytorch(tmp_path, family):
    model = FACTORIES[family]().eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = export(model, tmp_path / "kv", format="onnx", kv_cache=True, speed_repeats=2, print_report=False)
    assert result.max_abs_diff < 1e-5 and result.top1_agreement == 1.0
    assert any(note.startswith("KV cache:") for note in result.notes)
    # the speed report times one generated token with the cache, in ORT and in PyTorch with its own cache
    assert result.speed["decode_step_ms"] > 0 and result.speed["decode_speedup"] > 0
    assert "one generated token with the KV cache" in (tmp_path / "kv" / "speed_report.md").read_text()
    assert json.loads((tmp_path / "kv" / "config.json").read_text())["hf_compress_export"]["kv_cache"] is True
    session = onnx_session(tmp_path / "kv")
    inputs = [node.name for node in session.get_inputs()]
    outputs = [node.name for node in session.get_outputs()]
    layers = model.config.num_hidden_layers
    assert inputs == ["input_ids", "attention_mask"] + [
        f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value")
    ]
    assert outputs == ["logits"] + [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]

    ids, mask = left_padded_batch()
    generated = onnx_generate(session, ids, attention_mask=mask, max_new_tokens=12)
    assert generated.shape == (3, 19)
    assert torch.equal(generated, pytorch_greedy(model, ids, mask, 12))
    # the same from the folder and a tokenizer-style dict
    assert torch.equal(
        onnx_generate(tmp_path / "kv", {"input_ids": ids, "attention_mask": mask}, max_new_tokens=12), generated
    )
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # not modified


def test_kv_cache_graph_is_what_generate_gives_and_stops_at_eos(tmp_path):
    model = tiny_llama().eval()
    export(model, tmp_path / "kv", format="onnx", kv_cache=True, speed_repeats=0, print_report=False)
    ids = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(3))
    expected = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert torch.equal(onnx_generate(tmp_path / "kv", ids, max_new_tokens=8), expected)
    # a row stops at eos (then repeats it), the call stops once every row has
    eos = int(expected[0, 7])
    stopped = onnx_generate(tmp_path / "kv", ids, max_new_tokens=8, eos_token_id=eos)
    assert stopped.shape[1] == 8 and int(stopped[0, -1]) == eos


@pytest.mark.parametrize("int8_mode", ["dynamic", "static"])
def test_kv_cache_int8_ptq_exports_generate_close_to_pytorch(tmp_path, int8_mode):
    model = tiny_llama().eval()
    calibration = [
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for ids in torch.randint(0, VOCAB, (2, 4, 16), generator=torch.Generator().manual_seed(5))
    ]
    result = export(
        model,
        tmp_path / "int8",
        format="onnx-int8",
        int8_mode=int8_mode,
        calibration_batches=calibration if int8_mode == "static" else None,
        kv_cache=True,
        speed_repeats=0,
        print_report=False,
    )
    assert result.method == f"ptq-{int8_mode}" and result.layers > 0 and result.top1_agreement >= 0.9
    step = next(note for note in result.notes if note.startswith("KV cache:"))
    assert float(re.search(r"max abs diff ([0-9.e-]+),", step).group(1)) <= 2 * result.max_abs_diff + 1e-3, step
    ids, mask = left_padded_batch()
    generated = onnx_generate(tmp_path / "int8", ids, attention_mask=mask, max_new_tokens=6)
    assert generated.shape == (3, 13) and torch.equal(generated[:, :7], ids)


def test_kv_cache_export_of_a_qat_model_keeps_its_trained_grid(tmp_path):
    model = tiny_llama()
    trainer = Trainer(
        model=model, args=training_args(tmp_path / "run", max_steps=8), train_dataset=dataset_for("llama", n=32)
    )
    trainer.add_callback(QATCallback(QATConfig()))
    trainer.train()
    model.eval()
    result = export(model, tmp_path / "qat", format="onnx-int8", kv_cache=True, speed_repeats=0, print_report=False)
    assert result.method == "qat" and result.exact_grid and result.weight_max_abs_diff == 0.0
    assert result.top1_agreement >= 0.9
    ops = {node.op_type for node in onnx.load(str(tmp_path / "qat" / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    ids, mask = left_padded_batch()
    assert onnx_generate(tmp_path / "qat", ids, attention_mask=mask, max_new_tokens=4).shape == (3, 11)


def test_kv_cache_bad_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(
        ValueError, match="kv_cache=True needs a decoder-only causal LM.*BertForSequenceClassification"
    ):
        export(tiny_bert(), tmp_path / "bert", format="onnx", kv_cache=True)
    sliding = tiny_llama(family="mistral", head_dim=8, sliding_window=8)
    with pytest.raises(ValueError, match="does not export sliding-window attention yet.*sliding_window=8"):
        export(sliding, tmp_path / "sliding", format="onnx", kv_cache=True)
    with pytest.raises(ValueError, match="kv_cache=True applies to format='onnx' or 'onnx-int8'"):
        export(tiny_llama(), tmp_path / "deq", format="dequantized", kv_cache=True)
    with pytest.raises(ValueError, match="kv_cache=True needs exporter='torchscript'"):
        export(tiny_llama(), tmp_path / "dynamo", format="onnx", kv_cache=True, exporter="dynamo")
    with pytest.raises(ValueError, match="kv_cache must be True or False"):
        export(tiny_llama(), tmp_path / "typo", format="onnx", kv_cache="yes")
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        onnx_generate(tmp_path, [[1, 2]], max_new_tokens=-1)


def test_cli_kv_cache_flag(tmp_path, capsys):
    from hf_compress.quantization.cli import export_main

    model = tiny_gpt2().eval()
    model.save_pretrained(tmp_path / "model")
    code = export_main(
        [
            str(tmp_path / "model"),
            str(tmp_path / "kv"),
            "--format",
            "onnx-int8",
            "--int8-mode",
            "dynamic",
            "--kv-cache",
            "--json",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and any(note.startswith("KV cache:") for note in printed["notes"])
    ids = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    assert onnx_generate(tmp_path / "kv", ids, max_new_tokens=3).shape == (1, 8)
    assert export_main([str(tmp_path / "model"), str(tmp_path / "deq"), "--format", "dequantized", "--kv-cache"]) == 1
    assert "kv_cache=True applies to format='onnx'" in capsys.readouterr().err
