"""Recipes: schema errors that name the file and key path, callbacks in order, recording beside the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from transformers import AutoModelForCausalLM, Trainer

import hf_compress
from conftest import LMDataset, tiny_gpt2, training_args
from hf_compress.recipes import RECIPE_FILENAME, load_recipe
from hf_compress.registry import PluginNotInstalledError

FULL_RECIPE = {
    "pruning": {"target_sparsity": 0.5, "schedule": "cubic", "start": 0.1, "end": 0.7, "criterion": "magnitude"},
    "distillation": {"loss": "kl", "temperature": 2.0, "alpha": 0.5},
    "quantization": {"weight_bits": 8, "granularity": "per_channel", "start": 0.5},
}


def write(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if name.endswith(".yaml") else json.dumps(data))
    return str(path)


def test_yaml_json_and_dict_give_the_same_recipe(tmp_path):
    from_yaml = load_recipe(write(tmp_path, FULL_RECIPE))
    from_json = load_recipe(write(tmp_path, FULL_RECIPE, "recipe.json"))
    from_dict = load_recipe(FULL_RECIPE)
    assert from_yaml.to_dict() == from_json.to_dict() == from_dict.to_dict()
    assert from_yaml.techniques() == ["pruning", "distillation", "quantization"]


def test_callbacks_in_order_with_teacher(tmp_path):
    teacher = tiny_gpt2(seed=1)
    names = [type(c).__name__ for c in hf_compress.callbacks_from_recipe(FULL_RECIPE, teacher=teacher)]
    assert names == ["DistillationCallback", "PruningCallback", "QATCallback", "RecipeRecorderCallback"]


@pytest.mark.parametrize(
    "recipe, path_in_message, allowed",
    [
        ({"prunning": {}}, "prunning", "pruning"),
        ({"pruning": {"target_sparsity": 1.5}}, "pruning.target_sparsity", "[0"),
        ({"pruning": {"target_sparsty": 0.5}}, "pruning.target_sparsty", "target_sparsity"),
        ({"pruning": {"target_sparsity": 0.5, "schedule": "cubik"}}, "pruning.schedule", "cubic"),
        ({"pruning": "half"}, "pruning", "PruningConfig"),
        ({"distillation": {"alpha": 2}}, "distillation", "alpha"),
        ({"quantization": {"weight_bits": 12}}, "quantization", "weight_bits"),
        ({"callbacks": [{"name": "nonexistent_callback"}]}, "callbacks[0].name", "callback"),
        ({"callbacks": {"name": "x"}}, "callbacks", "list"),
    ],
)
def test_bad_recipe_names_file_key_path_and_allowed_values(tmp_path, recipe, path_in_message, allowed):
    path = write(tmp_path, recipe)
    with pytest.raises(ValueError) as info:
        hf_compress.callbacks_from_recipe(path, teacher=tiny_gpt2())
    message = str(info.value)
    assert path in message and path_in_message in message and allowed in message, message


def test_uninstalled_plugin_callback_says_how_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_COMPRESS")}
    env["HF_COMPRESS_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    path = write(tmp_path, {"callbacks": [{"name": "wanda_one_shot", "sparsity": 0.5}]})
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "recipe", "check", path],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "hf-compress-wanda" in result.stderr and "pip install ./plugins/hf-compress-wanda" in result.stderr
    assert path in result.stderr and "callbacks[0].name" in result.stderr


def test_plugin_not_installed_error_type():
    from hf_compress.registry import Registry

    with pytest.raises(PluginNotInstalledError):
        Registry().get("callback", "wanda_one_shot")


def test_recipe_check_cli(tmp_path):
    good = write(tmp_path, FULL_RECIPE)
    result = subprocess.run(["hf-compress", "recipe", "check", good], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout
    bad = write(tmp_path, {"pruning": {"target_sparsity": 0.5, "frequency": 0}}, "bad.yaml")
    result = subprocess.run(["hf-compress", "recipe", "check", bad], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pruning.frequency" in result.stderr and bad in result.stderr


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("pruning: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(str(path))


def test_attach_trains_and_records_recipe_beside_the_model(tmp_path):
    model = tiny_gpt2()
    recipe = {"pruning": {"target_sparsity": 0.5, "schedule": "linear", "start": 0, "end": 10, "frequency": 5}}
    trainer = Trainer(model=model, args=training_args(tmp_path / "out", max_steps=12), train_dataset=LMDataset())
    callbacks = hf_compress.attach(trainer, recipe)
    assert all(c in trainer.callback_handler.callbacks for c in callbacks)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    saved = yaml.safe_load((out / RECIPE_FILENAME).read_text())
    assert saved["pruning"]["target_sparsity"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["hf_compress_recipe"]["pruning"]["schedule"] == "linear"
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert hf_compress.sparsity_report(reloaded).sparsity == pytest.approx(0.5, abs=0.002)


def test_hf_argument_parser_gets_compression_recipe(tmp_path):
    from transformers import HfArgumentParser, TrainingArguments

    from hf_compress.recipes import CompressionArguments

    parser = HfArgumentParser((TrainingArguments, CompressionArguments))
    _, compression = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--compression_recipe", "recipe.yaml"]
    )
    assert compression.compression_recipe == "recipe.yaml"


def test_a_plugin_technique_is_a_recipe_section_of_equal_standing(tmp_path):
    """The test plugin registers `weight_clip` as the built-ins register `pruning`: through registry kind technique."""
    from hf_compress.registry import get_registry

    components = {c.name: c for c in get_registry() if c.kind == "technique"}
    assert {"pruning", "l1_regularization", "distillation", "quantization", "weight_clip"} <= set(components)
    assert components["weight_clip"].distribution == "hf-compress-testplugin"
    assert components["pruning"].distribution == "hf-compress"

    recipe = {
        "pruning": {"target_sparsity": 0.5, "start": 0, "end": 6, "frequency": 2},
        "weight_clip": {"max_abs": 0.05},
    }
    path = write(tmp_path, recipe)
    loaded = load_recipe(path)
    assert loaded.techniques() == ["pruning", "weight_clip"]
    assert load_recipe(loaded.to_dict()).to_dict() == loaded.to_dict()
    with pytest.raises(ValueError, match="weight_clip.max_abs"):
        load_recipe({"weight_clip": {"max_abs": -1.0}})
    with pytest.raises(ValueError, match="allowed top-level keys: .*weight_clip"):
        load_recipe({"weight_clipp": {}})
    result = subprocess.run(["hf-compress", "recipe", "check", path], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    model = tiny_gpt2()
    trainer = Trainer(
        model=model, args=training_args(tmp_path / "out", max_steps=8, logging_steps=4), train_dataset=LMDataset()
    )
    callbacks = hf_compress.attach(trainer, path)
    assert [type(c).__name__ for c in callbacks] == ["PruningCallback", "WeightClipCallback", "RecipeRecorderCallback"]
    trainer.train()
    clipped = [m.weight for m in callbacks[1].modules.values()]
    assert clipped and all(float(w.abs().max()) <= 0.05 + 1e-7 for w in clipped)
    assert all("weight_clip/clipped" in e and "sparsity" in e for e in trainer.state.log_history if "loss" in e)
    assert yaml.safe_load((tmp_path / "out" / RECIPE_FILENAME).read_text())["weight_clip"]["max_abs"] == 0.05
