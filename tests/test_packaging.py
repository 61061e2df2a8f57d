"""`python -m build`: the sdist, and a wheel built from that sdist, carry every file of the package (the metric module,
its card, the demo), and a real (non-editable) install of that wheel loads the metric and builds the demo's data."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def package_files() -> list[str]:
    """Every file of ``hf_compress`` in the source tree (caches and compiled files aside)."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "hf_compress").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    # without --sdist/--wheel, build makes the sdist and then the wheel *from that sdist*
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("hf_compress-*.tar.gz")
    (wheel,) = out.glob("hf_compress-*.whl")
    return sdist, wheel


def test_the_wheel_from_the_sdist_carries_the_metric_its_card_and_the_demo(built):
    sdist, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "hf_compress/metrics/hallucination/hallucination.py",
        "hf_compress/metrics/hallucination/README.md",
        "hf_compress/demo/world.py",
        "hf_compress/demo/pipeline.py",
    ):
        assert required in names
    missing = [name for name in package_files() if name not in names]
    assert not missing, f"files of the package missing from the wheel: {missing}"
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        sdist_names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    assert not [name for name in package_files() if name not in sdist_names]
    info = next(name for name in names if name.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_a_real_install_of_that_wheel_loads_the_metric_and_builds_the_demo_data(built, tmp_path):
    _, wheel = built
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    script = f"""
import hf_compress
assert hf_compress.__file__.startswith({str(target)!r}), hf_compress.__file__
from hf_compress.metrics import load_metric, metric_path
assert (metric_path("hallucination") / "README.md").is_file()
result = load_metric("hallucination").compute(
    predictions=["The capital of Marn is Tovi."], references=[["The capital of Marn is Tovi."]]
)
assert result["hallucination_rate"] == 0.0, result
from hf_compress.demo.settings import QUICK
from hf_compress.demo.training import build_data
data = build_data(QUICK, seed=0)
assert len(data.train) > 0 and len(data.heldout) > 0 and data.prompts
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
