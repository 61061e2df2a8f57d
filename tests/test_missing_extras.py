"""Optional features used without their extra: the error names the extra and the exact command to install it.

Nothing is uninstalled or mocked. CI runs this file in the base-only venv of `.ci/base-install`, with
``HF_COMPRESS_EXPECT_BASE_ONLY=1``: there every feature below must be missing, and an installed one fails the test
(the base venv must not have got an extra). In a venv that has an extra, its case is skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import tiny_llama

BASE_ONLY = os.environ.get("HF_COMPRESS_EXPECT_BASE_ONLY") == "1"


def needs_missing(package: str) -> None:
    """Skip when ``package`` is installed, unless this is the base-only venv, where that is a failure."""
    if importlib.util.find_spec(package.split(".")[0]) is not None:
        if BASE_ONLY:
            pytest.fail(f"{package!r} is installed in the base-only venv: the base install pulled an extra")
        pytest.skip(f"{package!r} is installed here; CI checks this case in the base-only venv")


def assert_names_extra(error: BaseException, extra: str) -> None:
    from hf_compress.extras import MissingExtraError

    assert isinstance(error, MissingExtraError) and error.extra == extra
    assert f"extra {extra!r}" in str(error)
    assert f'pip install "hf-compress[{extra}]"' in str(error)


def test_every_extra_named_by_an_error_is_declared():
    declared = set(importlib.metadata.metadata("hf-compress").get_all("Provides-Extra") or [])
    assert {"quanto", "embedding", "export", "onnx"} <= declared


def test_quanto_export_without_the_extra(tmp_path):
    from hf_compress import export

    needs_missing("optimum.quanto")
    with pytest.raises(ImportError) as caught:
        export(tiny_llama(), tmp_path / "out", format="quanto")
    assert_names_extra(caught.value, "quanto")
    assert not (tmp_path / "out").exists()  # nothing written


def test_quanto_export_cli_without_the_extra(tmp_path):
    needs_missing("optimum.quanto")
    model_dir = tmp_path / "model"
    tiny_llama().save_pretrained(model_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_compress.cli",
            "export",
            str(model_dir),
            str(tmp_path / "out"),
            "--format",
            "quanto",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert 'pip install "hf-compress[quanto]"' in result.stderr
    assert not (tmp_path / "out").exists()


def test_onnx_export_without_the_extra(tmp_path):
    from hf_compress import export

    needs_missing("onnxruntime")
    with pytest.raises(ImportError) as caught:
        export(tiny_llama(), tmp_path / "out", format="onnx")
    assert_names_extra(caught.value, "onnx")
    assert not (tmp_path / "out").exists()  # nothing written


def test_onnx_session_without_the_extra(tmp_path):
    from hf_compress import onnx_session

    needs_missing("onnxruntime")
    with pytest.raises(ImportError) as caught:
        onnx_session(tmp_path)
    assert_names_extra(caught.value, "onnx")


def test_onnx_generate_without_the_extra(tmp_path):
    from hf_compress import onnx_generate

    needs_missing("onnxruntime")
    with pytest.raises(ImportError) as caught:
        onnx_generate(tmp_path, [[1, 2, 3]], max_new_tokens=2)
    assert_names_extra(caught.value, "onnx")


def test_embedding_checker_without_the_extra():
    from hf_compress.metrics import load_metric

    needs_missing("sentence_transformers")
    metric = load_metric("hallucination")
    with pytest.raises(ImportError) as caught:
        metric.compute(predictions=["Paris is in France."], references=[["Paris is in France."]], checker="embedding")
    assert_names_extra(caught.value, "embedding")


def test_the_base_install_has_what_the_main_job_uses():
    """compressed-tensors (the demo's export) and matplotlib (its plots) are base dependencies, not extras."""
    requirements = importlib.metadata.requires("hf-compress") or []
    base = {r.split(">")[0].split("=")[0].split(";")[0].strip().lower() for r in requirements if "extra ==" not in r}
    assert {"compressed-tensors", "matplotlib"} <= base
    for package in ("compressed_tensors", "matplotlib"):
        assert importlib.util.find_spec(package) is not None
