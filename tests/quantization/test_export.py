"""hf_compress.export: each format reloads with its own loader and matches, after QAT and after PTQ; sparsity is
kept; a QAT model saved to disk exports exactly through the CLI; bad input gets clear errors."""

from __future__ import annotations

import json
import logging
import os
import sys
import types

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, CompressedTensorsConfig, Trainer

from conftest import LMDataset, launch_two_processes, tiny_gpt2, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig, QATCallback, QATConfig, export
from hf_compress.quantization.cli import export_main
from hf_compress.quantization.export import ExportVerificationError
from hf_compress.quantization.export_formats import ExportFormat
from hf_compress.quantization.export_quanto import load as load_quanto
from hf_compress.quantization.export_source import recover_qparams
from hf_compress.quantization.export_verify import fixed_batch, model_outputs
from hf_compress.quantization.grid import QuantSpec, bake_weight, compute_qparams
from hf_compress.registry import get_registry, reset_registry
from hf_compress.targets import find_target_modules, weight_out_in

torch.set_num_threads(1)
FACTORIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def train_qat(model, tmp_path, qat_config, extra_callbacks=(), max_steps=8):
    trainer = Trainer(
        model=model, args=training_args(tmp_path / "run", max_steps=max_steps), train_dataset=LMDataset(n=32)
    )
    for callback in (*extra_callbacks, QATCallback(qat_config)):
        trainer.add_callback(callback)
    trainer.train()
    return model


def ptq_reference(model, spec):
    """An independent post-training quantization of ``model``'s target weights (what the export must hold)."""
    reference = type(model)(model.config)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for module in find_target_modules(reference).values():
            weight = weight_out_in(module.weight, module)
            weight.copy_(bake_weight(weight, spec, *compute_qparams(weight, spec)))
    return reference.eval()


def outputs(model, batch):
    return model_outputs(model, batch)


def tensor_dtypes(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return {key: handle.get_slice(key).get_dtype() for key in handle.keys()}


def reload_with_public_api(folder, export_format, model):
    """Reload the way a user would, independently of the export's own verification."""
    if export_format == "dequantized":
        return type(model).from_pretrained(folder).eval()
    if export_format == "quanto":
        if model.config.model_type == "gpt2":  # Conv1D stored as Linear: quanto's requantize after conversion
            return load_quanto(str(folder))
        from optimum.quanto import QuantizedModelForCausalLM

        return QuantizedModelForCausalLM.from_pretrained(str(folder))._wrapped
    # transformers' compressed-tensors integration; asymmetric packed zero points need its dequantize route
    symmetric = all(layer.hf_compress_qparams.spec.symmetric for layer in quantized_modules(model))
    options = {} if symmetric else {"quantization_config": CompressedTensorsConfig(dequantize=True)}
    return AutoModelForCausalLM.from_pretrained(folder, **options).eval()


def quantized_modules(model):
    return [module for module in model.modules() if hasattr(module, "hf_compress_qparams")]


@pytest.mark.parametrize(
    "family, export_format",
    [("gpt2", "dequantized"), ("gpt2", "quanto"), ("llama", "dequantized"), ("llama", "quanto")]
    + [("llama", "compressed-tensors")],
)
def test_ptq_export_reloads_and_matches_an_independent_ptq(tmp_path, caplog, family, export_format):
    model = FACTORIES[family](seed=1)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    spec = QuantSpec(bits=4, symmetric=True, granularity="per_channel")
    with caplog.at_level(logging.INFO):
        result = export(model, tmp_path / "out", format=export_format, bits=4)
    assert "applying post-training quantization" in caplog.text
    assert f"wrote {export_format}" in caplog.text and "max abs diff" in caplog.text
    assert result.method == "ptq" and result.exact_grid and result.layers == len(find_target_modules(model))
    assert result.max_abs_diff <= 1e-5 and result.weight_max_abs_diff <= 1e-6
    assert result.float_max_abs_diff > 1e-3  # 4-bit PTQ changes the float model's outputs

    batch = fixed_batch(model)
    reloaded = reload_with_public_api(tmp_path / "out", export_format, model)
    assert (outputs(reloaded, batch) - outputs(ptq_reference(model, spec), batch)).abs().max() <= 1e-5
    for key, value in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(value, before[key]), key
    assert not any(hasattr(module, "hf_compress_qparams") for module in model.modules())

    dtypes = tensor_dtypes(tmp_path / "out")
    if export_format == "quanto":
        assert (tmp_path / "out" / "quanto_qmap.json").exists()
        assert any(".weight._data" in key and dtype == "U8" for key, dtype in dtypes.items())  # packed int4
    if export_format == "compressed-tensors":
        assert any(key.endswith("weight_packed") and dtype == "I32" for key, dtype in dtypes.items())
        config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
        assert config["format"] == "pack-quantized" and config["quant_method"] == "compressed-tensors"


def test_qat_models_export_exactly_to_every_format(tmp_path):
    formats = {"llama": ["dequantized", "quanto", "compressed-tensors"], "gpt2": ["dequantized", "quanto"]}
    sizes = {}
    for family, names in formats.items():
        model = train_qat(FACTORIES[family](), tmp_path / family, QATConfig(weight_bits=4, symmetric=False))
        baked = {name: weight_out_in(m.weight, m).detach().clone() for name, m in find_target_modules(model).items()}
        batch = fixed_batch(model)
        expected = outputs(model, batch)
        for export_format in names:
            folder = tmp_path / f"{family}-{export_format}"
            result = export(model, folder, format=export_format)
            assert result.method == "qat" and result.exact_grid and result.activation_quantization == "none"
            assert result.max_abs_diff <= 1e-5, (family, export_format)
            reloaded = reload_with_public_api(folder, export_format, model)
            assert (outputs(reloaded, batch) - expected).abs().max() <= 1e-5, (family, export_format)
            for name, weight in baked.items():  # the exported weights are the QAT grid values
                module = reloaded.get_submodule(name)
                values = module.weight.dequantize() if export_format == "quanto" else module.weight
                values = weight_out_in(values.detach().float(), module)
                assert (values - weight).abs().max() <= 1e-6, (family, export_format, name)
            sizes[(family, export_format)] = result.size_bytes
    assert sizes[("llama", "quanto")] < sizes[("llama", "dequantized")]
    assert sizes[("llama", "compressed-tensors")] < sizes[("llama", "dequantized")]


def test_activation_quantization_is_kept_by_compressed_tensors_and_dropped_with_a_warning_elsewhere(tmp_path, caplog):
    qat = QATConfig(weight_bits=8, activations="per_tensor", activation_symmetric=False, freeze_observers=0.5)
    model = train_qat(tiny_llama(), tmp_path, qat)
    kept = export(model, tmp_path / "ct", format="compressed-tensors")
    assert kept.activation_quantization == "kept" and kept.activation_params_max_abs_diff == 0.0
    assert kept.max_abs_diff <= 1e-5  # compressed-tensors' static asymmetric activation rounding is QAT's
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["format"] == "int-quantized"
    assert config["config_groups"]["group_0"]["input_activations"]["strategy"] == "tensor"

    with caplog.at_level(logging.WARNING):
        dropped = export(model, tmp_path / "plain", format="dequantized")
    assert "cannot hold the activation quantization" in caplog.text
    assert dropped.activation_quantization == "dropped" and dropped.max_abs_diff > 1e-4
    assert dropped.checked_max_abs_diff <= 1e-5 and "without activation quantization" in dropped.checked_against
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert saved["hf_compress_export"]["activation_quantization"] == "dropped"
    assert saved["hf_compress_quantization"]["activations"]["mode"] == "per_tensor"
    assert hasattr(model.model.layers[0].mlp.up_proj, "hf_compress_act_hook")  # the QAT model keeps its hooks


@pytest.mark.parametrize("pattern, symmetric", [("2:4", True), ("unstructured", False)])
def test_sparse_quantized_export_keeps_the_zeros(tmp_path, pattern, symmetric):
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, pattern=pattern, end=0.5, frequency=2))
    qat = QATConfig(weight_bits=4, symmetric=symmetric)
    model = train_qat(tiny_llama(), tmp_path, qat, extra_callbacks=[pruning], max_steps=10)
    masks = {name: mask.cpu() for name, mask in pruning.masks.items()}
    batch = fixed_batch(model)
    for export_format in ("compressed-tensors", "quanto"):
        folder = tmp_path / export_format
        result = export(model, folder, format=export_format)
        assert result.zeros_kept and result.sparsity >= 0.5 and result.max_abs_diff <= 1e-5
        reloaded = reload_with_public_api(folder, export_format, model)
        logits = outputs(reloaded, batch)
        assert logits.abs().max() > 0  # llm-compressor #942: sparse + quantized exports that output zeros
        for name, mask in masks.items():
            weight = reloaded.get_submodule(name).weight
            weight = weight.dequantize() if export_format == "quanto" else weight
            assert (weight.detach()[~mask] == 0).all(), (export_format, name)
    config = json.loads((tmp_path / "compressed-tensors" / "config.json").read_text())["quantization_config"]
    assert config["sparsity_config"]["sparsity_structure"] == ("2:4" if pattern == "2:4" else "unstructured")
    assert config["sparsity_config"]["global_sparsity"] >= 0.5


def test_saved_qat_model_exports_its_exact_grid_through_the_cli(tmp_path, capsys):
    qat = QATConfig(weight_bits=4, granularity="per_group", group_size=16, scale_method="mse", activations="per_token")
    model = train_qat(tiny_llama(), tmp_path, qat)
    model.save_pretrained(tmp_path / "saved")
    capsys.readouterr()  # drop the Trainer's logs
    code = export_main([str(tmp_path / "saved"), str(tmp_path / "ct"), "--format", "compressed-tensors", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "config" and result["exact_grid"] and result["activation_quantization"] == "kept"
    assert result["checked_max_abs_diff"] <= 1e-5 and result["weight_max_abs_diff"] <= 1e-6
    assert not any("re-quantized" in note for note in result["notes"])  # every scale group recovered exactly

    code = export_main([str(tmp_path / "saved"), str(tmp_path / "q"), "--format", "quanto"])
    assert code == 1
    assert "quanto picks one scale per output channel" in capsys.readouterr().err


def test_recover_qparams_finds_an_exact_grid_from_values_alone():
    torch.manual_seed(0)
    for spec in (QuantSpec(4, False, "per_group", 8), QuantSpec(8, True, "per_tensor"), QuantSpec(3, True)):
        weight = torch.randn(6, 32)
        weight[0] = 0  # a fully pruned row
        baked = bake_weight(weight, spec, *compute_qparams(weight, spec, "mse"))
        scale, zero_point, found = recover_qparams(baked, spec)
        assert found.all()
        assert torch.allclose(bake_weight(baked, spec, scale, zero_point), baked, atol=1e-6, rtol=0)
    _, _, found = recover_qparams(torch.randn(4, 32), QuantSpec(4))
    assert not found.any()  # float weights lie on no 4-bit grid


def test_quanto_regrid_is_explicit_and_reported(tmp_path):
    model = tiny_llama()
    with pytest.raises(ValueError, match="quanto picks one scale per output channel.*allow_regrid=True"):
        export(model, tmp_path / "strict", format="quanto", bits=4, granularity="per_group", group_size=16)
    assert not (tmp_path / "strict").exists()
    result = export(
        model, tmp_path / "regrid", format="quanto", bits=4, granularity="per_group", group_size=16, allow_regrid=True
    )
    assert not result.exact_grid and "re-quantized" in result.checked_against
    assert result.checked_max_abs_diff <= 1e-5 and result.max_abs_diff > result.checked_max_abs_diff


@pytest.fixture
def fresh_registry():
    reset_registry()
    yield get_registry()
    reset_registry()


def test_bad_input_gets_clear_errors(tmp_path, monkeypatch, fresh_registry):
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"format: unknown export_format 'qunto'.*compressed-tensors.*Did you mean"):
        export(model, tmp_path / "a", format="qunto")
    with pytest.raises(ValueError, match=r"unknown field.*allowed fields.*Did you mean 'bits'"):
        export(model, tmp_path / "a", format="dequantized", bit=4)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]"):
        export(model, tmp_path / "a", bits=9)
    with pytest.raises(ValueError, match="allow_ptq=False: the model was never QAT-prepared"):
        export(model, tmp_path / "a", allow_ptq=False)
    with pytest.raises(ValueError, match="group_size=12 does not divide in_features=32"):
        export(model, tmp_path / "a", bits=4, group_size=12)
    with pytest.raises(ValueError, match="compressed-tensors.*Conv1D.*format='quanto' or format='dequantized'"):
        export(tiny_gpt2(), tmp_path / "a", format="compressed-tensors")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder.*overwrite=True"):
        export(model, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)
    with pytest.raises(ImportError, match=r'extra .quanto.*Install it with: pip install "hf-compress\[quanto\]"'):
        export(model, tmp_path / "a", format="quanto")
    assert not (tmp_path / "a").exists()


def test_qat_model_refuses_post_training_options(tmp_path):
    model = train_qat(tiny_llama(), tmp_path, QATConfig(weight_bits=8), max_steps=2)
    with pytest.raises(ValueError, match="post-training quantization options.*QAT parameters"):
        export(model, tmp_path / "out", bits=4)


def _broken_format(tmp_path, monkeypatch, registry, name, corrupt):
    """A third-party export format, registered through the registry, whose writer corrupts the weights."""
    module = types.ModuleType(f"broken_{name}")
    module.check = lambda source, options: []

    def write(source, folder):
        with torch.no_grad():
            corrupt(source.model)
        source.model.save_pretrained(folder)
        return []

    module.write = write
    module.load = lambda folder, model_class: model_class.from_pretrained(folder).eval()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    registry.register("export_format", name, ExportFormat(name, module.__name__, "test format"))


def test_verification_catches_wrong_weights_and_all_zero_outputs(tmp_path, monkeypatch, fresh_registry):
    model = tiny_llama()

    def nudge(exported):
        exported.model.layers[0].mlp.down_proj.weight.add_(0.05)

    _broken_format(tmp_path, monkeypatch, fresh_registry, "nudged", nudge)
    with pytest.raises(ExportVerificationError, match="exceeds tolerance"):
        export(model, tmp_path / "nudged", format="nudged")
    assert (tmp_path / "nudged" / "config.json").exists()  # left in place to inspect

    _broken_format(tmp_path, monkeypatch, fresh_registry, "zeros", lambda m: [p.zero_() for p in m.parameters()])
    with pytest.raises(ExportVerificationError, match="outputs only zeros"):
        export(model, tmp_path / "zeros", format="zeros", tolerance=1e3)


@pytest.mark.multiprocess
def test_export_after_two_process_ddp_writes_once_and_returns_everywhere(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "ddp_export.py")
    launch_two_processes(script, tmp_path)
    results = [json.loads((tmp_path / f"result-{index}.json").read_text()) for index in range(2)]
    assert results[0]["world_size"] == 2 and results[0] == results[1]
    assert results[0]["method"] == "qat" and results[0]["max_abs_diff"] <= 1e-5
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".export.partial")]
