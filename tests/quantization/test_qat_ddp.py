"""QATCallback under 2-process DDP (gloo on CPU), launched with ``accelerate launch``."""

from __future__ import annotations

import json
import os

import pytest

from conftest import launch_two_processes

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "ddp_qat.py")


@pytest.mark.multiprocess
def test_qat_under_two_process_ddp_with_resume(tmp_path):
    launch_two_processes(SCRIPT, tmp_path)
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["world_size"] == 2
    assert report["n_modules"] == 14 and report["keys_unchanged"]
    # every rank ends with the same baked weights, learned scales and activation scales (grads of learned scales are
    # averaged across ranks, observers synchronised), and the learned scales did move
    assert report["ranks_agree"] and report["scales_moved"]
    # resuming the DDP run from its halfway checkpoint lands where the straight run did
    for name, values in report["straight"].items():
        for key, value in values.items():
            assert report["resumed"][name][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
