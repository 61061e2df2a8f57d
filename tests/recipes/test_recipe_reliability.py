"""Recipe and CLI input that used to pass `recipe check`, echo huge values or print tracebacks."""

from __future__ import annotations

import re

import pytest
import yaml

from hf_compress.cli import main
from hf_compress.recipes import load_recipe


def cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))  # a traceback would raise here instead of returning 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    "text, message",
    [
        ("pruning: {target_sparsity: .nan}", r"pruning\.target_sparsity must be a finite number"),
        ("distillation: {temperature: .inf, teacher: x}", r"distillation\.temperature must be a finite"),
        ("quantization: {observer_momentum: .nan}", r"quantization\.observer_momentum must be a finite"),
        ("pruning:\n  target_sparsity: 0.5\n  target_sparsity: 0.2\n", r"duplicate key 'target_sparsity'"),
        ("distillation: {loss_kwargs: {bogus: 1}, teacher: x}", r"loss_kwargs: unknown option\(s\) 'bogus'"),
    ],
)
def test_recipe_check_refuses(tmp_path, capsys, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code, output = cli(capsys, "recipe", "check", str(path))
    assert code == 1
    assert str(path) in output
    assert re.search(message, output), output


def test_recipe_check_builds_plugin_callbacks_from_their_fields(tmp_path, capsys):
    for fields, message in (({"bogus_field": 1}, "bogus_field"), ({"sparsity": 1.5}, "sparsity")):
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({"callbacks": [{"name": "wanda_one_shot", **fields}]}))
        code, output = cli(capsys, "recipe", "check", str(path))
        assert code == 1 and "callbacks[0] (wanda_one_shot)" in output and message in output, output


def test_recipe_check_refuses_a_teacher_that_does_not_exist(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"distillation": {"teacher": str(tmp_path / "no_such_teacher")}}))
    code, output = cli(capsys, "recipe", "check", str(path))
    assert code == 1 and "distillation.teacher" in output and "not found" in output
    assert "Repo id" not in output and "huggingface.co" not in output


def test_a_non_utf8_recipe_is_an_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pruning: {target_sparsity: 0.5}  # réglage\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8"):
        load_recipe(str(path))
    code, output = cli(capsys, "recipe", "check", str(path))
    assert code == 1 and str(path) in output and "UTF-8" in output


def test_a_huge_value_is_not_echoed_whole(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"pruning": {"target_sparsity": 0.5, "schedule": "x" * 10_000_000}}))
    code, output = cli(capsys, "recipe", "check", str(path))
    assert code == 1 and "pruning.schedule" in output and "characters cut" in output
    assert len(output) < 2000


def test_folders_and_missing_paths_give_clean_errors(tmp_path, capsys):
    code, output = cli(capsys, "recipe", "check", str(tmp_path))
    assert code == 1 and "is a folder" in output
    code, output = cli(capsys, "report", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in output
    code, output = cli(capsys, "export", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert code == 1 and "not found" in output and "huggingface.co" not in output
