"""The README's two set-up commands: the test command is the one CI runs, and the main job (the demo) is the one CI
runs in a base-only venv."""

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
    assert first.startswith("pip install torch==2.13.0 && pip install -e . && hf-compress demo")


def test_ci_runs_the_readme_first_command_in_a_base_only_venv():
    first = bash_blocks((ROOT / "README.md").read_text())[0]
    assert "\n" not in first and "[" not in first, "the first command is one line and installs no extra"
    base_install = (ROOT / ".ci" / "base-install").read_text()
    assert first in base_install.splitlines(), "CI runs the README's first command exactly as written"
    assert "python3 -m venv .venv-base" in base_install and "rm -rf .venv-base" in base_install  # a fresh venv
    # nothing but the test runner joins that venv before the missing-extra checks
    installs = [line for line in base_install.splitlines() if line.strip().startswith("pip install")]
    assert installs == [first, "pip install -q pytest pytest-timeout"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ".ci/base-install" in ci
