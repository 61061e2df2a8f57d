"""Writes one section of ``benchmarks/results/qat.md``, keeping the sections other QAT benchmarks wrote."""

from __future__ import annotations

import os
import re

HEADER = "# QAT benchmarks\n\nWritten by `benchmarks/qat_overhead.py` and `benchmarks/qat_vs_ptq.py`; every number is measured.\n"


def write_section(path: str, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of the Markdown file at ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = open(path).read() if os.path.exists(path) else HEADER
    begin, end = f"<!-- section: {title} -->", f"<!-- end: {title} -->"
    block = f"{begin}\n## {title}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(text)


def reproducing_arguments(argv: list[str]) -> list[str]:
    """The command-line arguments without ``--results PATH`` (where the Markdown goes does not change the numbers)."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--results":
            skip = True
        elif not argument.startswith("--results="):
            kept.append(argument)
    return kept
