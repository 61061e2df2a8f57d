"""hf_compress patches nothing: after import and a whole compressed run, transformers', accelerate's and torch's
classes and methods are unchanged, and no Trainer, optimizer or scheduler instance has a replaced method."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "no_patching_run.py"


def test_nothing_is_patched_by_import_or_a_whole_compressed_run():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "NO PATCHING OK" in result.stdout
