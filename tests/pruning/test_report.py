"""sparsity_report, its table / dict / Markdown forms, the PNG bar chart and report_main on saved models."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_bert, tiny_gpt2, tiny_llama
from hf_compress import sparsity_report
from hf_compress.pruning.report import report_main, saved_model_report

torch.set_num_threads(1)


def _zero_first_quarter_of_inputs(model):
    """Zero a known number of weights in every Linear/Conv1D of the body: 1/4 of the [out, in] input columns."""
    with torch.no_grad():
        for layer in sparsity_report(model).layers:
            module = dict(model.named_modules())[layer.name]
            weight = module.weight
            if type(module).__name__ == "Conv1D":  # stored [in, out]
                weight[: weight.shape[0] // 4, :] = 0
            else:
                weight[:, : weight.shape[1] // 4] = 0


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama, tiny_bert])
def test_counts_zeros_per_layer_and_total(factory):
    model = factory(seed=0)
    assert sparsity_report(model).total_zeros == 0
    _zero_first_quarter_of_inputs(model)
    with torch.no_grad():
        first = sparsity_report(model).layers[0].name
        dict(model.named_modules())[first].weight.view(-1)[-1] = 0  # one extra zero
    report = sparsity_report(model)
    names = [layer.name for layer in report.layers]
    assert not any("embed" in name or "wte" in name or "lm_head" in name or "classifier" in name for name in names)
    assert all(layer.sparsity == pytest.approx(0.25, abs=1e-3) for layer in report.layers)
    assert report[first].zeros == report[first].params // 4 + 1
    assert report.total_params == sum(layer.params for layer in report.layers)
    assert report.total_zeros == report.total_params // 4 + 1
    assert report.sparsity == report.total_zeros / report.total_params
    assert report.min_layer_sparsity == 0.25 and report.max_layer_sparsity > 0.25


def test_table_markdown_and_dict():
    model = tiny_llama(seed=1)
    _zero_first_quarter_of_inputs(model)
    report = sparsity_report(model, targets=[r"mlp"], exclude=[r"layers\.1\."])
    assert [layer.name for layer in report.layers] == [
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.0.mlp.down_proj",
    ]
    lines = str(report).splitlines()
    assert lines[0].split() == ["layer", "shape", "params", "zeros", "sparsity"]
    assert lines[1].split() == ["model.layers.0.mlp.gate_proj", "[64,", "32]", "2048", "512", "25.00%"]
    assert lines[-1].split() == ["total", "6144", "1536", "25.00%"]
    assert len({len(line) for line in lines[:-1]}) == 1  # aligned columns
    markdown = report.to_markdown()
    assert markdown.splitlines()[0] == "| layer | shape | params | zeros | sparsity |"
    assert "| `model.layers.0.mlp.down_proj` | [32, 64] | 2048 | 512 | 25.00% |" in markdown
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["total"] == {"params": 6144, "zeros": 1536, "sparsity": 0.25}
    assert as_dict["layers"][0] == {
        "name": "model.layers.0.mlp.gate_proj",
        "shape": [64, 32],
        "params": 2048,
        "zeros": 512,
        "sparsity": 0.25,
    }


def test_plot_writes_png(tmp_path):
    model = tiny_gpt2(seed=0)
    _zero_first_quarter_of_inputs(model)
    path = sparsity_report(model).plot(tmp_path / "charts" / "sparsity.png")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama, tiny_bert])
def test_report_main_on_saved_model_matches_in_memory_report(factory, tmp_path, capsys):
    model = factory(seed=2)
    _zero_first_quarter_of_inputs(model)
    model.save_pretrained(tmp_path / "model")
    expected = sparsity_report(model)
    capsys.readouterr()
    report = report_main(tmp_path / "model", plot=tmp_path / "chart.png")
    out = capsys.readouterr().out
    assert report.to_dict() == expected.to_dict()
    assert str(expected) in out and "chart.png" in out
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_model_with_unknown_architecture_reads_tensors_by_name(tmp_path):
    model = tiny_llama(seed=3)
    _zero_first_quarter_of_inputs(model)
    model.save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["architectures"], config["model_type"] = ["MyCustomForCausalLM"], "my_custom"
    config_path.write_text(json.dumps(config))
    report = saved_model_report(tmp_path / "model")
    expected = sparsity_report(model)
    assert sorted(layer.name for layer in report.layers) == sorted(layer.name for layer in expected.layers)
    assert report.total_zeros == expected.total_zeros and report.sparsity == pytest.approx(0.25)


def test_report_main_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report_main(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors file"):
        report_main(tmp_path / "empty")
