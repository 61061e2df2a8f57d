"""Building a config imports only what that config needs: discovery registers import paths, not modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{build}
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("hf_compress", "sentence_transformers", "transformers", "accelerate")))))
"""
CONFIGS = {
    "pruning": "from hf_compress.pruning.config import PruningConfig; PruningConfig(target_sparsity=0.5)",
    "distillation": "from hf_compress.distillation.config import DistillationConfig; DistillationConfig()",
    "quantization": "from hf_compress.quantization.config import QATConfig; QATConfig()",
}
NEVER = (
    "hf_compress.metrics.checkers.lexical",
    "hf_compress.metrics.checkers.embedding",
    "hf_compress.metrics.checkers.nli",
    "hf_compress.metrics.lexicon",
    "hf_compress.pruning.one_shot",
    "hf_compress.pruning.callback",
    "hf_compress.pruning.sparsegpt_criterion",
    "hf_compress.distillation.callback",
    "hf_compress.quantization.callback",
    "hf_compress.quantization.export",
    "hf_compress.recipes.apply",
    "hf_compress_wanda.one_shot",
    "sentence_transformers",
    "transformers",  # a config names modules by regex; it needs no model library
    "accelerate",
)


@pytest.mark.parametrize("technique", sorted(CONFIGS))
def test_building_a_config_imports_only_what_it_needs(technique):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(build=CONFIGS[technique])],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "hf_compress.registry" in imported  # names were checked against the registry
    assert not imported & set(NEVER), sorted(imported & set(NEVER))
    if technique != "pruning":
        assert "hf_compress.pruning.criteria" not in imported


def test_a_lazy_component_loads_on_first_use_only_once():
    from hf_compress.registry import get_registry

    component = get_registry().component("hallucination_checker", "nli")
    first = component.obj
    assert first is component.obj and first.__name__ == "NLIChecker"
    assert component.module == "hf_compress.metrics.checkers.nli:NLIChecker"
