"""Choose the lexical checker's score weights on DEV data only (the project's dev split and the dev parts of the
outside sets); the test parts are never loaded here.

    python benchmarks/hallucination_tune.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hallucination_outside import OUTSIDE, auc, balanced_accuracy, load_outside, load_project  # noqa: E402

from hf_compress.metrics.claims import split_claims  # noqa: E402
from hf_compress.metrics.consistency import assess, index_facts, ngram_gaps  # noqa: E402
from hf_compress.metrics.text_analysis import analyse  # noqa: E402


def features(items):
    rows = []
    for item in items:
        index = index_facts(tuple(item["references"]))
        claims = []
        for claim in split_claims(item["prediction"]) or [item["prediction"]]:
            analysis = analyse(claim)
            result = assess(analysis, index)
            uni, bi = ngram_gaps(analysis, index)
            claims.append(
                (
                    bool(result.contradictions),
                    result.clause_coverage,
                    bool(result.unsupported),
                    result.uncovered_fraction,
                    uni,
                    bi,
                )
            )
        rows.append(claims)
    return rows


def score(claims, a, b, c, scale, name_floor):
    best = 0.0
    for contradicted, coverage, unsupported, uncovered, uni, bi in claims:
        overlap = min(1.0, (a * uncovered + b * bi + c * uni) * scale)
        value = overlap
        if unsupported:
            value = max(value, name_floor + (1 - name_floor) * overlap)
        if contradicted:
            value = max(value, 0.75 + 0.25 * coverage)
        best = max(best, value)
    return best


def main():
    sets = {"project": [i for i in load_project("dev")]}
    for name in OUTSIDE:
        items = load_outside(name)
        if items is not None:
            sets[name] = [item for item in items if item["split"] == "dev"]
    feats = {name: features(items) for name, items in sets.items()}
    labels = {name: [item["hallucinated"] for item in items] for name, items in sets.items()}
    results = []
    grid = [x / 10 for x in range(11)]
    for a, b in itertools.product(grid, grid):
        c = round(1 - a - b, 3)
        if c < 0:
            continue
        for name_floor in (0.3, 0.45, 0.6):
            raw = {n: [score(f, a, b, c, 1.0, name_floor) for f in feats[n]] for n in sets}
            aucs = {n: auc(raw[n], labels[n]) for n in sets}
            for scale in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0):
                bas = {
                    n: balanced_accuracy([score(f, a, b, c, scale, name_floor) for f in feats[n]], labels[n], 0.5)
                    for n in sets
                }
                objective = sum(aucs.values()) / len(aucs) + 0.5 * sum(bas.values()) / len(bas)
                results.append((objective, a, b, c, scale, name_floor, aucs, bas))
    results.sort(key=lambda row: -row[0])
    for row in results[:8]:
        print(
            f"obj {row[0]:.3f} a={row[1]} b={row[2]} c={row[3]} scale={row[4]} floor={row[5]}",
            {k: round(v, 3) for k, v in row[6].items()},
            {k: round(v, 3) for k, v in row[7].items()},
        )


if __name__ == "__main__":
    main()
