"""Rebuild BENCHMARKS.md: the hand-kept summary (benchmarks/SUMMARY.md) followed by every results file verbatim.

    python benchmarks/assemble_benchmarks.py

Each results file is written by its own benchmark script, with the date, machine and reproducing command.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["pruning", "distillation", "qat", "export", "hallucination", "demo", "pipelines", "peft", "gpu"]


def main() -> None:
    results = ROOT / "benchmarks" / "results"
    names = [n for n in ORDER if (results / f"{n}.md").exists()]
    names += sorted(p.stem for p in results.glob("*.md") if p.stem not in ORDER)
    parts = [(ROOT / "benchmarks" / "SUMMARY.md").read_text().rstrip(), "", "# Full results", ""]
    for name in names:
        text = (results / f"{name}.md").read_text().rstrip()
        # demote headings one level so each file sits under "Full results"
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        parts += [f"<!-- from benchmarks/results/{name}.md -->", text, ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts) + "\n")
    print(f"wrote BENCHMARKS.md from {len(names)} results files")


if __name__ == "__main__":
    main()
