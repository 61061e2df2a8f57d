"""Measure the hallucination metric on the labelled claim set in benchmarks/data, and the checkers' speed.

For each checker (lexical, embedding with all-MiniLM-L6-v2, nli when --nli-model points at a local NLI model) and two
baselines (ROUGE-L F1 and unigram overlap against the facts), report AUC and balanced accuracy on the dev split (the
one the checkers were tuned on) and on the test split. Issue 16 found that the old hand-written lexicon held entries
seen only in the test split, so test is not a clean held-out set; the library-backed engine's constants were chosen
on dev data only (benchmarks/hallucination_tune.py), and benchmarks/hallucination_outside.py measures on data nobody
on the project wrote. The checkers are scored at the
metric's default threshold (0.5); the baselines at the threshold that maximises balanced accuracy on dev.

Speed: claims per second of the lexical checker on one core with every cache cleared before each round (claims and
facts analysed from scratch), and of the embedding checker batched vs one claim per call, interleaved rounds.

    python benchmarks/hallucination_eval.py                      # writes benchmarks/results/hallucination.md
    python benchmarks/hallucination_eval.py --nli-model /path/to/local/nli-model
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import hf_compress  # noqa: E402
from hf_compress.metrics import consistency, language, text_analysis  # noqa: E402
from hf_compress.metrics.checkers.embedding import EmbeddingChecker  # noqa: E402
from hf_compress.metrics.checkers.lexical import LexicalChecker  # noqa: E402
from hf_compress.metrics.claims import split_claims  # noqa: E402

DATA = Path(__file__).parent / "data"
HALLUCINATION_KINDS = ("wrong_number", "wrong_date", "wrong_entity", "negation", "fabricated_detail")


# ----------------------------------------------------------------------------------------------- data
def load_split(name: str) -> list[dict]:
    data = json.loads((DATA / f"hallucination_{name}.json").read_text())
    items = []
    for topic in data["topics"]:
        for kind, text in topic["claims"]:
            items.append({"topic": topic["topic"], "facts": topic["facts"], "claim": text, "kind": kind})
    return items


# ----------------------------------------------------------------------------------------------- measures
def auc(scores: list[float], hallucinated: list[bool]) -> float:
    """Probability that a hallucinated claim scores higher than a supported one (ties count half)."""
    positives = [s for s, y in zip(scores, hallucinated) if y]
    negatives = [s for s, y in zip(scores, hallucinated) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def rates(scores: list[float], hallucinated: list[bool], threshold: float) -> tuple[float, float, float]:
    """(balanced accuracy, true positive rate, true negative rate) when flagging score >= threshold."""
    positives = [s >= threshold for s, y in zip(scores, hallucinated) if y]
    negatives = [s < threshold for s, y in zip(scores, hallucinated) if not y]
    tpr, tnr = sum(positives) / len(positives), sum(negatives) / len(negatives)
    return (tpr + tnr) / 2, tpr, tnr


def best_threshold(scores: list[float], hallucinated: list[bool]) -> float:
    values = sorted(set(scores))
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])] or values
    return max(candidates, key=lambda t: rates(scores, hallucinated, t)[0])


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_score(claim: str, facts: list[str]) -> float:
    """1 - max over facts of ROUGE-L F1 (higher = more hallucinated)."""
    claim_words = _words(claim)
    best = 0.0
    for fact in facts:
        fact_words = _words(fact)
        lcs = _lcs(claim_words, fact_words)
        if lcs:
            precision, recall = lcs / len(claim_words), lcs / len(fact_words)
            best = max(best, 2 * precision * recall / (precision + recall))
    return 1.0 - best


def unigram_overlap_score(claim: str, facts: list[str]) -> float:
    """1 - share of the claim's words found in the facts."""
    claim_words = _words(claim)
    fact_words = {word for fact in facts for word in _words(fact)}
    return 1.0 - sum(word in fact_words for word in claim_words) / max(len(claim_words), 1)


# ----------------------------------------------------------------------------------------------- runs
def metric_scores(items: list[dict], checker: str, **options) -> list[float]:
    metric = hf_compress.load_metric("hallucination")
    result = metric.compute(
        predictions=[item["claim"] for item in items],
        references=[item["facts"] for item in items],
        checker=checker,
        **options,
    )
    return result["scores"]


def similarity_scores(items: list[dict]) -> list[float]:
    """1 - cosine similarity to the closest fact (all-MiniLM-L6-v2), without the embedding checker's guards."""
    checker = EmbeddingChecker(device="cpu")
    claims = [item["claim"] for item in items]
    facts = sorted({fact for item in items for fact in item["facts"]})
    embeddings = checker.encode(claims + facts)
    row = {fact: len(claims) + position for position, fact in enumerate(facts)}
    scores = []
    for position, item in enumerate(items):
        similarities = embeddings[[row[fact] for fact in item["facts"]]] @ embeddings[position]
        scores.append(1.0 - float(similarities.max()))
    return scores


def clear_caches(keep_facts: bool = False) -> None:
    """Forget every analysed text; with ``keep_facts``, keep the analysed reference facts (as in repeated evals)."""
    for cached in (text_analysis.analyse, language.word_key, language.word_weight, language.lemmas, language.is_verb):
        cached.cache_clear()
    language.language_of.cache_clear()
    if not keep_facts:
        consistency.index_facts.cache_clear()


def lexical_speed(claims: list[str], facts: list[list[str]], rounds: int) -> dict[str, float]:
    checker = LexicalChecker()
    rates = defaultdict(list)
    for _ in range(rounds):
        for mode in ("cold", "known_facts"):
            if mode == "known_facts":
                checker.check(claims[:1], facts[:1])
                for claim_facts in facts:
                    consistency.index_facts(tuple(claim_facts))
            clear_caches(keep_facts=mode == "known_facts")
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            checker.check(claims, facts)
            rates[f"{mode}_cpu"].append(len(claims) / (time.process_time() - start_cpu))
            rates[f"{mode}_wall"].append(len(claims) / (time.perf_counter() - start_wall))
    summary = {name: statistics.median(values) for name, values in rates.items()}
    summary["cold_cpu_min"], summary["cold_cpu_max"] = min(rates["cold_cpu"]), max(rates["cold_cpu"])
    return summary


def embedding_speed(claims: list[str], facts: list[list[str]], rounds: int) -> dict[str, float]:
    batched = EmbeddingChecker(batch_size=64, device="cpu")
    single = EmbeddingChecker(batch_size=1, device="cpu")
    batched.check(claims[:8], facts[:8])
    single.check(claims[:2], facts[:2])
    rates = defaultdict(list)
    subset = max(1, len(claims) // 4)  # one claim per call is slow: time a quarter of the claims
    for _ in range(rounds):
        clear_caches()
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        batched.check(claims, facts)
        rates["batched_cpu"].append(len(claims) / (time.process_time() - start_cpu))
        rates["batched_wall"].append(len(claims) / (time.perf_counter() - start_wall))
        clear_caches()
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for claim, claim_facts in zip(claims[:subset], facts[:subset]):
            single.check([claim], [claim_facts])
        rates["single_cpu"].append(subset / (time.process_time() - start_cpu))
        rates["single_wall"].append(subset / (time.perf_counter() - start_wall))
    return {name: statistics.median(values) for name, values in rates.items()}


# ----------------------------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nli-model", default=None, help="local folder of a sequence-classification NLI model")
    parser.add_argument("--speed-rounds", type=int, default=9)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "hallucination.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    splits = {name: load_split(name) for name in ("dev", "test")}
    labels = {name: [item["kind"] != "supported" for item in items] for name, items in splits.items()}

    checkers = {"lexical": {}, "embedding": {}}
    if args.nli_model:
        checkers["nli"] = {"model_path": args.nli_model}
    scores: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for name, options in checkers.items():
        for split, items in splits.items():
            scores[name][split] = metric_scores(items, name, **options)
    for split, items in splits.items():
        scores["ROUGE-L F1 (baseline)"][split] = [rouge_l_score(item["claim"], item["facts"]) for item in items]
        scores["unigram overlap (baseline)"][split] = [unigram_overlap_score(i["claim"], i["facts"]) for i in items]
        scores["MiniLM similarity alone (baseline)"][split] = similarity_scores(items)

    rows = []
    for name, by_split in scores.items():
        baseline = "baseline" in name
        threshold = best_threshold(by_split["dev"], labels["dev"]) if baseline else 0.5
        for split in ("dev", "test"):
            ba, tpr, tnr = rates(by_split[split], labels[split], threshold)
            rows.append((name, split, auc(by_split[split], labels[split]), ba, tpr, tnr, threshold))

    per_kind = {}
    for name, by_split in scores.items():
        baseline = "baseline" in name
        threshold = best_threshold(by_split["dev"], labels["dev"]) if baseline else 0.5
        flagged = defaultdict(list)
        for item, score in zip(splits["test"], by_split["test"]):
            flagged[item["kind"]].append(score >= threshold)
        per_kind[name] = {kind: sum(values) / len(values) for kind, values in flagged.items()}

    speed_claims, speed_facts = [], []
    for items in splits.values():
        for item in items:
            for claim in split_claims(item["claim"]):
                speed_claims.append(claim)
                speed_facts.append(item["facts"])
    lexical = lexical_speed(speed_claims, speed_facts, args.speed_rounds)
    embedding = embedding_speed(speed_claims, speed_facts, max(3, args.speed_rounds // 3))

    write_report(args, splits, rows, per_kind, lexical, embedding, len(speed_claims))


def write_report(args, splits, rows, per_kind, lexical, embedding, num_speed_claims) -> None:
    counts = {split: len(items) for split, items in splits.items()}
    kinds = {
        split: {kind: sum(item["kind"] == kind for item in items) for kind in ("supported", *HALLUCINATION_KINDS)}
        for split, items in splits.items()
    }
    lexical_test = next(row for row in rows if row[0] == "lexical" and row[1] == "test")
    goal_auc, goal_ba = lexical_test[2] >= 0.90, lexical_test[3] >= 0.85
    command = "python benchmarks/hallucination_eval.py" + (f" --nli-model {args.nli_model}" if args.nli_model else "")
    lines = [
        "# Hallucination metric: accuracy on a labelled claim set, and speed",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} logical CPUs, shared with other jobs; torch threads = 1), Python "
        f"{platform.python_version()}, torch {torch.__version__}.",
        "",
        f"Reproduce: `{command}`",
        "",
        "## Data",
        "",
        f"`benchmarks/data/hallucination_{{dev,test}}.json`: {counts['dev']} dev and {counts['test']} test claims "
        f"({counts['dev'] + counts['test']} in all), each judged against the 4 reference facts of its topic "
        "(16 dev topics, 20 test topics, no topic in both). Written by hand for this benchmark: supported "
        "paraphrases (reworded, reordered, other number and date formats, unit conversions, negated comparatives "
        "such as 'no river is larger than ...', partial restatements and combinations of facts) and hallucinations "
        "of five kinds. Issue 16 found 23 entries of the old hand-written lexicon that occur only in the test "
        "split, so these test numbers are not from a clean held-out set. The lexicon is gone: the engine's language "
        "knowledge now comes from libraries, and its constants were chosen on dev data only "
        "(`benchmarks/hallucination_tune.py`). Outside data: `benchmarks/results/hallucination_outside.md`.",
        "",
        "| split | supported | " + " | ".join(HALLUCINATION_KINDS) + " |",
        "|---|---|" + "---|" * len(HALLUCINATION_KINDS),
    ]
    for split in ("dev", "test"):
        lines.append(
            f"| {split} | {kinds[split]['supported']} | "
            + " | ".join(str(kinds[split][kind]) for kind in HALLUCINATION_KINDS)
            + " |"
        )
    lines += [
        "",
        "## Accuracy",
        "",
        "A hallucinated claim is the positive class; the score is the metric's per-example score (one claim text per",
        "example). Checkers use the metric's default threshold 0.5; the baselines use the threshold that maximises",
        "balanced accuracy on dev (shown), applied to test. 'MiniLM similarity alone' is 1 - the cosine similarity",
        "to the closest fact: the embedding checker without its number, date, name and polarity guards.",
        "",
        "| scorer | split | AUC | balanced accuracy | hallucinations caught (TPR) | supported kept (TNR) | threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, split, area, ba, tpr, tnr, threshold in rows:
        lines.append(f"| {name} | {split} | {area:.3f} | {ba:.3f} | {tpr:.3f} | {tnr:.3f} | {threshold:.3f} |")
    if "nli" not in {row[0] for row in rows}:
        lines += [
            "",
            "`nli`: not measured. No real NLI model is available offline here (none can be downloaded); the checker's",
            "code path is tested with a tiny randomly initialised classifier only. Pass `--nli-model` to measure one.",
        ]
    lines += [
        "",
        "Share of each kind flagged on test (for `supported`, the share wrongly flagged):",
        "",
        "| scorer | supported | " + " | ".join(HALLUCINATION_KINDS) + " |",
        "|---|---|" + "---|" * len(HALLUCINATION_KINDS),
    ]
    for name, shares in per_kind.items():
        lines.append(
            f"| {name} | {shares['supported']:.2f} | "
            + " | ".join(f"{shares[kind]:.2f}" for kind in HALLUCINATION_KINDS)
            + " |"
        )
    lines += [
        "",
        f"Goal for `lexical` on test: AUC >= 0.90 ({'met' if goal_auc else 'NOT met'}: {lexical_test[2]:.3f}) and "
        f"balanced accuracy >= 0.85 ({'met' if goal_ba else 'NOT met'}: {lexical_test[3]:.3f}).",
        "",
        "The overlap baselines score below chance here (AUC < 0.5) because most hallucinations in this set are",
        "minimal edits of a fact (one number, date, name or word changed: high overlap), while supported claims are",
        "reworded (lower overlap). The set was built to test exactly what overlap misses.",
        "",
        "Caveats: the claims were written by the same engineer who wrote the checkers (on dev), so test measures",
        "generalisation to new topics and wordings, not to other writers; the claims are short single-topic",
        "statements, easier than free generations. Published figures (ROUGE-2 ~78/72 AUC on SummaC/TRUE, NLI 79-89)",
        "are on other data and are not comparable with these numbers.",
        "",
        "## Speed",
        "",
        f"{num_speed_claims} claims (both splits, after claim splitting), each against its 4 facts, one core.",
        "",
        "| checker | claims/s | how |",
        "|---|---|---|",
        f"| lexical | {lexical['cold_cpu']:,.0f} | per CPU-second, median of {args.speed_rounds} rounds, every cache "
        "cleared before each round (claims and facts analysed from scratch) |",
        f"| lexical | {lexical['cold_wall']:,.0f} | per wall-clock second, same rounds (machine shared with other "
        "jobs) |",
        f"| lexical, facts already analysed | {lexical['known_facts_cpu']:,.0f} | per CPU-second: new claims against "
        "reference facts seen before (an evaluation callback re-scoring the same references) |",
        f"| embedding (all-MiniLM-L6-v2), batched 64 | {embedding['batched_cpu']:,.0f} | per CPU-second, median, "
        "rounds interleaved with the one-claim-per-call rows |",
        f"| embedding, batched 64 | {embedding['batched_wall']:,.0f} | per wall-clock second |",
        f"| embedding, one claim per call | {embedding['single_cpu']:,.0f} | per CPU-second |",
        f"| embedding, one claim per call | {embedding['single_wall']:,.0f} | per wall-clock second |",
        "",
        f"Batching speeds the embedding checker up {embedding['batched_cpu'] / embedding['single_cpu']:.1f}x "
        f"(CPU time). Goal for "
        f"`lexical`: >= 2,000 claims/s on one core ({'met' if lexical['cold_cpu'] >= 2000 else 'NOT met'}: "
        f"{lexical['cold_cpu']:,.0f} per CPU-second with cold caches; the rounds ranged from "
        f"{lexical['cold_cpu_min']:,.0f} to {lexical['cold_cpu_max']:,.0f} on this shared machine).",
        "",
    ]
    outside = Path(__file__).parent / "results" / "outside" / "hallucination_outside.md"
    if outside.is_file():  # written by benchmarks/hallucination_outside.py
        table = outside.read_text()
        lines += ["", *("#" + line if line.startswith("#") else line for line in table.splitlines())]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
