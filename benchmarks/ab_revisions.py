"""Run one benchmark script on two revisions of hf_compress, interleaved, to tell a regression from machine noise.

Each revision runs from its own git worktree (its own copy of the package and of the benchmark script, found first on
``PYTHONPATH``), alternating ``base, head, base, head, ...``. The script must accept ``--output FILE`` and write a
markdown table there; every table row with a bold figure (``**1.13**``) is collected per run, and the rows are printed
and written as one section of ``--results`` (between ``<!-- KEY:begin/end -->`` markers).

    python benchmarks/ab_revisions.py --base e0b2a70 --rounds 2 --key overhead-ab-issue11 \\
        --results benchmarks/results/distillation.md benchmarks/distillation_overhead.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from results_sections import write_section

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BOLD_ROW = re.compile(r"^\|.*\*\*[0-9.]+\*\*")


def run_once(tree: str, script: str, extra: list[str]) -> tuple[str, list[str], float]:
    with tempfile.TemporaryDirectory() as scratch:
        output = os.path.join(scratch, "result.md")
        env = {**os.environ, "PYTHONPATH": tree}
        started = time.time()
        subprocess.run(
            [sys.executable, os.path.join(tree, script), "--output", output, *extra],
            cwd=tree,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(output) as handle:
            lines = [line.strip() for line in handle]
        rows = [line for line in lines if BOLD_ROW.match(line)]
        # the header of the table the first bold row belongs to: the last "| ... |" line above a "|---" separator
        first = lines.index(rows[0]) if rows else 0
        headers = [lines[i - 1] for i in range(1, first) if lines[i].startswith("|---")]
        return (headers[-1] if headers else ""), rows, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", help="benchmark script, relative to the repository root")
    parser.add_argument("extra", nargs="*", help="further arguments for the script (after --)")
    parser.add_argument("--base", required=True, help="the older revision (a commit)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--key", required=True, help="section name in the results file")
    parser.add_argument("--results", required=True)
    options = parser.parse_args()

    base_tree = tempfile.mkdtemp(prefix="hf-compress-base-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base_tree, options.base], check=True)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    trees = {f"base {options.base}": base_tree, f"head {head.strip()} (+ working tree)": ROOT}
    lines, header = [], ""
    try:
        for round_index in range(1, options.rounds + 1):
            for label, tree in trees.items():
                header, rows, seconds = run_once(tree, options.script, options.extra)
                for row in rows:
                    lines.append(f"| {label} | {round_index} | {row.strip('|').strip()} |")
                print(f"{label} round {round_index}: {seconds:.0f} s", *rows, sep="\n", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base_tree], check=False)

    command = "python benchmarks/ab_revisions.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    body = [
        f"## {options.script}: revision {options.base} against HEAD, interleaved",
        "",
        f"Date: {datetime.date.today().isoformat()}. Each revision runs its own package and script, alternating, "
        f"{options.rounds} rounds. Command: `{command}`.",
        "",
        f"| revision | round {header or '| row of the script table |'}",
        "|---|---:" + "|---" * max(1, header.count("|") - 1) + "|",
        *lines,
        "",
    ]
    write_section(options.results, options.key, "\n".join(body), f"# {options.script}\n\n")
    print("\n".join(body))


if __name__ == "__main__":
    main()
