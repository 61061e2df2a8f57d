"""Every example in examples/ runs, on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(args, timeout=400):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def test_causal_lm_script_with_recipe(tmp_path):
    run([EXAMPLES / "make_tiny_lm.py", "--out", tmp_path / "lm"])
    out = tmp_path / "clm-out"
    run(
        [
            EXAMPLES / "causal_lm" / "run_clm.py",
            "--model_name_or_path",
            tmp_path / "lm" / "model",
            "--train_file",
            tmp_path / "lm" / "train.txt",
            "--validation_file",
            tmp_path / "lm" / "validation.txt",
            "--output_dir",
            out,
            "--max_steps",
            "20",
            "--per_device_train_batch_size",
            "4",
            "--max_train_samples",
            "200",
            "--report_to",
            "none",
            "--use_cpu",
            "--save_strategy",
            "no",
            "--compression_recipe",
            EXAMPLES / "recipes" / "prune_distill_qat.yaml",
        ]
    )
    recipe = yaml.safe_load((out / "compression_recipe.yaml").read_text())
    assert set(recipe) == {"pruning", "distillation", "quantization"}
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["perplexity"] > 1
    config = json.loads((out / "config.json").read_text())
    assert "hf_compress_recipe" in config and "hf_compress_quantization" in config


def test_text_classification_on_the_shipped_minilm(tmp_path):
    run(
        [
            EXAMPLES / "text_classification" / "make_sentiment_data.py",
            "--out",
            tmp_path / "data",
            "--train_size",
            "160",
            "--validation_size",
            "64",
        ]
    )
    out = tmp_path / "cls-out"
    run(
        [
            EXAMPLES / "text_classification" / "run_classification.py",
            "--train_file",
            tmp_path / "data" / "train.jsonl",
            "--validation_file",
            tmp_path / "data" / "validation.jsonl",
            "--output_dir",
            out,
            "--max_steps",
            "30",
            "--per_device_train_batch_size",
            "16",
            "--learning_rate",
            "1e-4",
            "--report_to",
            "none",
            "--use_cpu",
            "--save_strategy",
            "no",
            "--compression_recipe",
            EXAMPLES / "recipes" / "prune_encoder.yaml",
        ]
    )
    metrics = json.loads((out / "eval_results.json").read_text())
    assert abs(metrics["sparsity"] - 0.5) < 0.01
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_accelerate_configs_parse():
    for name in ("single_node.yaml", "multi_node.yaml", "fsdp.yaml"):
        config = yaml.safe_load((EXAMPLES / "accelerate" / name).read_text())
        assert config["num_processes"] == 2
    assert yaml.safe_load((EXAMPLES / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]["fsdp_version"] == 2
