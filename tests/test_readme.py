"""The README's two set-up commands: the test command is the one CI runs, and the main job is the demo."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [block for block in bash_blocks(readme) if "pytest" in block]
    assert commands, "README shows a test command"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_main_job_is_the_demo_and_installs_cpu_torch_first():
    first = bash_blocks((ROOT / "README.md").read_text())[0]
    assert first.startswith("pip install torch==2.13.0") and first.endswith("hf-compress demo")
