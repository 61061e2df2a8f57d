"""How far word overlap and the claim checks can go on the outside sets, measured on their DEV parts only.

Issue 16 asks the default (model-free) checker to beat the best no-model baseline by >= 0.02 AUC on every outside
test set. This script asks whether any model-free scorer built from the same evidence could, without looking at a
test part. For every dev prediction it computes the checker's own inputs (``prediction_row`` of
``hallucination_tune.py``), n-gram gaps of orders 1-4 on ROUGE's tokens, a rarity-weighted unigram gap (wordfreq), the
longest run of new tokens, the lengths and n-gram gaps against the best-covering single reference
sentence, and then reports per set, all 4-fold cross-validated on dev:

- the best baseline's dev AUC (each baseline at its own best n-gram order, picked per set: an oracle choice);
- the shipped checker's recipe refitted per fold (what ``hallucination_tune.py`` fits);
- a gradient-boosted classifier fitted on that set's own dev part with every feature: a generous estimate of what
  this evidence can give on one set, since no shipped model can be fitted per set;
- for long references, every linear model over 1-4 of the overlap features, ranked by its worst margin over the sets.

    python benchmarks/hallucination_ceiling.py   # writes benchmarks/results/hallucination_ceiling.md

Needs the bench extra (scikit-learn, rouge-score) and the outside sets (benchmarks/outside_data.py).
"""

from __future__ import annotations

import datetime
import itertools
import math
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hallucination_outside import BASELINES, auc, rouge_precisions, unigram_overlap  # noqa: E402
from hallucination_tune import cross_validated, dev_sets, prediction_row  # noqa: E402

from hf_compress.metrics import language  # noqa: E402
from hf_compress.metrics.checkers.lexical import with_contradiction_floor  # noqa: E402
from hf_compress.metrics.claims import split_claims  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "hallucination_ceiling.md"
FOLDS = 4
_TOKEN = re.compile(r"[a-z0-9]+")
OVERLAP_FEATURES = (
    "1-gram gap",
    "2-gram gap",
    "3-gram gap",
    "4-gram gap",
    "rarity-weighted 1-gram gap",
    "longest new run",
    "log prediction length",
    "1-gram gap, best sentence",
    "2-gram gap, best sentence",
    "3-gram gap, best sentence",
)


def ngram_gap(tokens: list[str], reference: list[str], order: int) -> float:
    """Share of the prediction's n-grams that the reference lacks (shorter predictions fall back to lower orders)."""
    order = min(order, len(tokens))
    if order == 0:
        return 0.0
    known = set(zip(*(reference[i:] for i in range(order))))
    grams = list(zip(*(tokens[i:] for i in range(order))))
    return sum(gram not in known for gram in grams) / len(grams)


def overlap_features(prediction: str, references: list[str]) -> dict[str, float]:
    tokens = _TOKEN.findall(prediction.lower())
    reference = [token for text in references for token in _TOKEN.findall(text.lower())]
    known = set(reference)
    features = {f"{order}-gram gap": ngram_gap(tokens, reference, order) for order in (1, 2, 3, 4)}
    weights = [1.0 if token.isdigit() else language.word_weight(token) for token in tokens]
    new_weight = sum(weight for token, weight in zip(tokens, weights) if token not in known)
    features["rarity-weighted 1-gram gap"] = new_weight / sum(weights) if tokens else 0.0
    run = longest = 0
    for token in tokens:
        run = run + 1 if token not in known else 0
        longest = max(longest, run)
    features["longest new run"] = min(longest, 10) / 10
    features["log prediction length"] = math.log1p(len(tokens))
    # against the one reference sentence that covers most: a sentence stitched from far-apart phrases scores high
    sentences = [_TOKEN.findall(sentence.lower()) for text in references for sentence in split_claims(text) or [text]]
    for order in (1, 2, 3):
        gaps = [ngram_gap(tokens, sentence, order) for sentence in sentences if sentence]
        features[f"{order}-gram gap, best sentence"] = min(gaps, default=1.0)
    return features


def dev_rows() -> list[dict]:
    rows = []
    for name, items in dev_sets().items():
        for item in items:
            long, checker = prediction_row(item)
            baselines = rouge_precisions(item["prediction"], item["references"])
            baselines["unigram overlap"] = unigram_overlap(item["prediction"], item["references"])
            rows.append(
                {
                    "set": name,
                    "long": long,
                    "label": bool(item["hallucinated"]),
                    "checker": checker,
                    "baselines": baselines,
                    **overlap_features(item["prediction"], item["references"]),
                }
            )
    return rows


def best_baseline(rows: list[dict]) -> tuple[str, float]:
    labels = [row["label"] for row in rows]
    return max(
        ((name, auc([row["baselines"][name] for row in rows], labels)) for name in BASELINES), key=lambda t: t[1]
    )


def cross_validated_scores(rows: list[dict], features, long: bool, floor: bool) -> dict[int, float]:
    """Score of each row (by position in ``rows``) from a per-regime logistic model (the tune script's recipe)
    fitted on the other folds, with the contradiction floor when ``floor``."""
    data = [(row["set"], features(row), row["label"]) for row in rows]
    probabilities = cross_validated(data, FOLDS, 0.5, 1.0)
    return {
        position: with_contradiction_floor(probability, data[position][1], long) if floor else probability
        for position, probability in enumerate(probabilities)
    }


def per_set_boosted(rows: list[dict]) -> float:
    """4-fold cross-validated AUC of a gradient-boosted classifier fitted on this set's own dev part, every feature."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    width = max(len(row["checker"]) for row in rows)
    features = np.array(
        [
            [row[name] for name in OVERLAP_FEATURES]
            + [row["baselines"][name] for name in BASELINES]
            + list(row["checker"])
            + [0.0] * (width - len(row["checker"]))
            + [float(row["long"])]
            for row in rows
        ]
    )
    labels = np.array([row["label"] for row in rows])
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, max_depth=3, random_state=0)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    probabilities = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return auc(list(probabilities), list(labels))


SUBSETS = [names for size in (1, 2, 3) for names in itertools.combinations(OVERLAP_FEATURES, size)]


def per_set_linear(rows: list[dict]) -> tuple[float, tuple[str, ...]]:
    """The best cross-validated AUC of a logistic model over 1-3 overlap features, fitted on this set alone."""
    labels = [row["label"] for row in rows]
    best = (0.0, ())
    for names in SUBSETS:
        scores = cross_validated_scores(rows, lambda row, names=names: [row[n] for n in names], True, floor=False)
        value = auc([scores[p] for p in range(len(rows))], labels)
        best = max(best, (value, names))
    return best


def main() -> None:
    rows = dev_rows()
    sets = list(dict.fromkeys(row["set"] for row in rows))
    outside = [name for name in sets if name != "project"]

    checker_scores: dict[int, float] = {}
    for long in (False, True):
        regime = [position for position, row in enumerate(rows) if row["long"] == long]
        scores = cross_validated_scores([rows[p] for p in regime], lambda row: row["checker"], long, floor=True)
        checker_scores.update({regime[i]: score for i, score in scores.items()})

    lines = [
        "# Hallucination metric: how far model-free evidence goes on the outside sets (dev parts only)",
        "",
        f"Measured {datetime.date.today()} on {platform.machine()} ({platform.python_version()}).",
        "",
        "Reproduce: `python benchmarks/hallucination_ceiling.py` (needs the outside sets of "
        "`benchmarks/outside_data.py` and the bench extra). No test part is loaded.",
        "",
        "All AUCs are 4-fold cross-validated on each set's dev part. 'Best baseline' picks, per set, the best of "
        "unigram overlap and ROUGE-1/2/L precision by its dev AUC. The two 'own set' columns are fitted on that one "
        "set's dev part, which no single shipped model can be, so they are generous estimates of what this evidence "
        "can give: 'boosted' is a gradient-boosted classifier over every feature (the checker's inputs, n-gram gaps "
        "of orders 1-4, a rarity-weighted unigram gap, the longest run of new tokens, the length, n-gram gaps against "
        "the best-covering single reference sentence, and the four baselines); it overfits a small dev part such as "
        f"QAGS-XSum's. 'Best linear' is the best of the {len(SUBSETS)} logistic models over 1-3 of the overlap "
        "features, picked by the same cross-validated AUC it reports (so optimistic too).",
        "",
        "| set | dev n | best baseline (dev AUC) | shipped recipe, refitted per fold | margin | boosted, own set "
        "| margin | best linear, own set | margin |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    own_set_margins = {}
    for name in sets:
        members = [position for position, row in enumerate(rows) if row["set"] == name]
        subset = [rows[p] for p in members]
        baseline, baseline_auc = best_baseline(subset)
        labels = [row["label"] for row in subset]
        checker_auc = auc([checker_scores[p] for p in members], labels)
        boosted = per_set_boosted(subset)
        linear, linear_names = per_set_linear(subset)
        own_set_margins[name] = max(boosted, linear) - baseline_auc
        lines.append(
            f"| {name} | {len(subset)} | {baseline} ({baseline_auc:.3f}) | {checker_auc:.3f} | "
            f"{checker_auc - baseline_auc:+.3f} | {boosted:.3f} | {boosted - baseline_auc:+.3f} | "
            f"{linear:.3f} ({', '.join(linear_names)}) | {linear - baseline_auc:+.3f} |"
        )
        print(lines[-1], flush=True)

    long_rows = [row for row in rows if row["long"]]
    ranked = []
    for size in (1, 2, 3, 4):
        for names in itertools.combinations(OVERLAP_FEATURES, size):
            scores = cross_validated_scores(
                long_rows, lambda row, names=names: [row[n] for n in names], True, floor=False
            )
            margins = {}
            for name in outside:
                members = [p for p, row in enumerate(long_rows) if row["set"] == name]
                labels = [long_rows[p]["label"] for p in members]
                if len(set(labels)) < 2:
                    continue
                margins[name] = (
                    auc([scores[p] for p in members], labels) - best_baseline([long_rows[p] for p in members])[1]
                )
            ranked.append((min(margins.values()), names, margins))
    ranked.sort(key=lambda entry: -entry[0])
    long_sets = list(ranked[0][2])
    lines += [
        "",
        f"Long references only ({len(long_rows)} dev predictions): every logistic model over 1-4 of the overlap "
        f"features ({len(ranked)} models), fitted on the pooled long-reference dev rows and ranked by its worst "
        "margin over the sets (AUC minus that set's best baseline on the same rows). The five best:",
        "",
        "| features | worst margin | " + " | ".join(f"{name} margin" for name in long_sets) + " |",
        "|---|---|" + "---|" * len(long_sets),
    ]
    for worst, names, margins in ranked[:5]:
        cells = " | ".join(f"{margins[name]:+.3f}" for name in long_sets)
        lines.append(f"| {', '.join(names)} | {worst:+.3f} | {cells} |")

    outside_margins = {name: own_set_margins[name] for name in outside}
    reached = ranked[0][0] >= 0.02 or all(margin >= 0.02 for margin in outside_margins.values())
    verdict = (
        "this evidence reaches +0.02 on every set's dev part, so a better model-free recipe may exist"
        if reached
        else "no model-free recipe on this evidence reaches it on every set's dev part, even fitted per set, so none "
        "is likely to meet it on the test parts"
    )
    lines += [
        "",
        f"Reading: the best worst-case margin of one linear long-reference model is {ranked[0][0]:+.3f}; the better of "
        "the two per-set models gains "
        + ", ".join(f"{name} {margin:+.3f}" for name, margin in outside_margins.items())
        + f" over that set's best baseline. Against the goal of >= +0.02 on every outside set, {verdict}.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-12:]))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
