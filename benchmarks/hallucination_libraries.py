"""Could offline libraries (dateparser, quantulum3, number-parser) replace the hallucination metric's own grammar?

The metric's text analysis (``hf_compress.metrics.text_analysis.analyse``) finds dates, quantities with units (pint)
and number words (text2num) with its own small grammar. This script measures, in one run with interleaved rounds, the
per-claim time of ``analyse`` (every lru cache of ``text_analysis`` and ``language`` cleared before each call) and of
the library calls that would take over that part of the work: ``dateparser.search.search_dates`` (English only, and
all languages), ``quantulum3.parser.parse`` and ``number_parser.parse(..., language='en')``, on a fixed list of
made-up English claims. Each figure is the median of single calls after a warm-up, one process, one thread (pinned to
one CPU where the OS allows), against the metric's budget of 2,000 claims/s per core (0.5 ms per claim). It then
lists, claim by claim, what ``analyse`` finds and what ``search_dates`` and quantulum3 find, and checks that each
library's first use works with the network blocked (socket calls patched to raise, in a fresh process).

    pip install dateparser quantulum3 number-parser      # not quantulum3[classifier]
    python benchmarks/hallucination_libraries.py          # writes benchmarks/results/hallucination_libraries.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BUDGET_MS = 0.5  # 2,000 claims/s per core
INSTALL = "pip install dateparser quantulum3 number-parser"
REQUIRED = {"dateparser": "dateparser", "quantulum3": "quantulum3", "number_parser": "number-parser"}

# Made up for this benchmark: dates written in full, a decade, a bare year, units, a number word, a count, an
# ordinal, a hedge, and the verbs "may" and "march".
CLAIMS = (
    "The cathedral's foundation stone was laid on 29 May 1953.",
    "The observatory opened to the public on March 31, 1889.",
    "The harbour town grew quickly in the 1960s.",
    "In 1492 the monastery was rebuilt by Brother Anselm.",
    "The suspension bridge is 1,280 metres long.",
    "The canal tunnel runs for about 8.85 km under the hills.",
    "The bronze bell weighs twenty-one kilograms.",
    "Summer afternoons in the valley reach 45 °C.",
    "The poet Maren Holt wrote 154 sonnets.",
    "Ida Varga made the first ascent of the north face.",
    "Visitors may march to the summit.",
    "The ferry carries up to 340 passengers on each crossing.",
)

# name -> (label in the report, the call)
METHODS = {
    "analyse": "hf_compress `analyse(c)`, all its lru caches cleared before each call",
    "analyse_warm": "hf_compress `analyse(c)`, only its per-text cache cleared (word caches warm)",
    "dates_en": "dateparser `search_dates(c, languages=['en'])`",
    "dates_all": "dateparser `search_dates(c)`, all languages",
    "quantulum3": "quantulum3 `parser.parse(c)` (without the [classifier] extra)",
    "number_parser": "number-parser `parse(c, language='en')`",
}
COMBINED = ("dates_en", "quantulum3", "number_parser")
LIBRARIES = ("dates_en", "dates_all", "quantulum3", "number_parser")
SHORT = {
    "dates_en": "search_dates(en)",
    "dates_all": "search_dates with all languages",
    "quantulum3": "quantulum3",
    "number_parser": "number-parser(en)",
}
# "pound" is a unit of mass and a currency: quantulum3 needs its disambiguation here, the claims above do not.
ORDINAL_WORDS = frozenset("first second third fourth fifth sixth seventh eighth ninth tenth".split())
AMBIGUOUS = ("The parcel weighs 5 pounds.", "The ticket costs 5 pounds.")
# Two reference dates that differ in year, month and day: a date part that changes with RELATIVE_BASE was not
# written in the claim but filled in by dateparser from the current date.
BASES = (datetime.datetime(2001, 2, 3), datetime.datetime(2012, 11, 25))


def check_libraries() -> None:
    missing = [dist for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(f"Missing: {', '.join(missing)}. Install the libraries with: {INSTALL}  (no [classifier] extra)")


# ----------------------------------------------------------------------------------------------- offline check
def offline_child(name: str) -> None:
    """Run in a fresh process: block the network, import the library and make its first call, print JSON."""
    import socket

    attempts: list[str] = []

    def refuse(kind):
        def blocked(*args, **kwargs):
            attempts.append(f"{kind}{args[:2]!r}")
            raise OSError("network disabled by benchmarks/hallucination_libraries.py")

        return blocked

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse("socket.socket")(*args)

    socket.socket = NoSocket
    socket.create_connection = refuse("socket.create_connection")
    socket.getaddrinfo = refuse("socket.getaddrinfo")
    claim = CLAIMS[0]
    start = time.perf_counter()
    error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "analyse":
                from hf_compress.metrics.text_analysis import analyse

                analyse(claim)
            elif name in ("dates_en", "dates_all"):
                from dateparser.search import search_dates

                search_dates(claim, languages=["en"]) if name == "dates_en" else search_dates(claim)
            elif name == "quantulum3":
                from quantulum3 import parser

                parser.parse(claim)
            elif name == "number_parser":
                import number_parser

                number_parser.parse(claim, language="en")
    except Exception as exc:  # report it, whatever it is
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"seconds": time.perf_counter() - start, "attempts": attempts, "error": error}))


def offline_checks() -> dict[str, dict]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    results = {}
    for name in ("analyse", *LIBRARIES):
        proc = subprocess.run(
            [sys.executable, __file__, "--offline-child", name], capture_output=True, text=True, env=env, timeout=600
        )
        try:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            results[name] = {"seconds": None, "attempts": [], "error": f"exit {proc.returncode}: {tail[0]}"}
    return results


# ----------------------------------------------------------------------------------------------- timing
def pin_to_one_cpu() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def cache_clearers():
    from hf_compress.metrics import language, text_analysis

    found = []
    for module in (text_analysis, language):
        for name, obj in sorted(vars(module).items()):
            if callable(getattr(obj, "cache_clear", None)) and getattr(obj, "__module__", None) == module.__name__:
                found.append((f"{module.__name__.rsplit('.', 1)[-1]}.{name}", obj.cache_clear))
    return found


def time_methods(rounds: int, all_languages_every: int, clearers) -> dict[str, dict[tuple[int, int], float]]:
    """Seconds per single call: {method: {(round, claim index): seconds}}."""
    import number_parser
    from dateparser.search import search_dates
    from quantulum3 import parser as quantulum

    from hf_compress.metrics.text_analysis import analyse

    def clear():
        for _, cache_clear in clearers:
            cache_clear()

    calls = {
        "analyse": analyse,
        "analyse_warm": analyse,
        "dates_en": lambda c: search_dates(c, languages=["en"]),
        "dates_all": search_dates,
        "quantulum3": quantulum.parse,
        "number_parser": lambda c: number_parser.parse(c, language="en"),
    }
    for claim in CLAIMS:  # warm-up: first calls load dateparser's locales and quantulum3's unit tables
        for call in calls.values():
            clear()
            call(claim)
    times: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    names = list(calls)
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            if name == "dates_all" and round_index % all_languages_every:
                continue
            call = calls[name]
            for index, claim in enumerate(CLAIMS):
                if name == "analyse":
                    clear()
                elif name == "analyse_warm":  # this claim's words are in the word caches, the claim is not
                    analyse.cache_clear()
                    analyse(claim)
                    analyse.cache_clear()
                start = time.perf_counter()
                call(claim)
                times[name][round_index, index] = time.perf_counter() - start
    return times


def summarise(times) -> dict[str, dict]:
    rows = {}
    for name, values in times.items():
        rows[name] = {"ms": 1e3 * statistics.median(values.values()), "calls": len(values)}
    combined = [sum(times[name][key] for name in COMBINED) for key in times[COMBINED[0]]]
    rows["combined"] = {"ms": 1e3 * statistics.median(combined), "calls": len(combined)}
    return rows


# ----------------------------------------------------------------------------------------------- what each finds
def date_parts(dates_per_base, index: int) -> tuple[str, str, tuple[int | None, ...]]:
    """(matched text, ISO date with the parts not written shown as yyyy/mm/dd, (year, month, day) written)."""
    text, first = dates_per_base[0][index]
    second = dates_per_base[1][index][1]
    parts, shown, filled = [], [], []
    for part, width, placeholder in (("year", 4, "yyyy"), ("month", 2, "mm"), ("day", 2, "dd")):
        a, b = getattr(first, part), getattr(second, part)
        if a == b:
            parts.append(a)
            shown.append(f"{a:0{width}d}")
        else:
            parts.append(None)
            shown.append(placeholder)
            filled.append(part)
    iso = "-".join(shown)
    if filled:
        iso += f" ({', '.join(filled)} from the run date)"
    return text, iso, tuple(parts)


def describe_analyse(quantity) -> str:
    text = f'"{quantity.text}"'
    if quantity.dimension == "date":
        if quantity.decade:
            return f"{text}: date, the {quantity.year}s (decade)"
        year, month, day = quantity.year, quantity.month, quantity.day
        shown = "-".join(
            (f"{year:04d}" if year else "yyyy", f"{month:02d}" if month else "mm", f"{day:02d}" if day else "dd")
        )
        return f"{text}: date {shown}" + (" (year only)" if year and not month else "")
    value = f"{quantity.value:g}"
    if quantity.dimension == "ordinal":
        kind = "ordinal"
    elif quantity.dimension is None:
        kind = "count"
    else:
        kind = quantity.dimension
    out = f"{text} = {value} {kind}"
    if quantity.nouns:
        out += " of {" + ", ".join(sorted(quantity.nouns)) + "}"
    if quantity.hedged:
        out += ", hedged"
    return out


def describe_quantulum(surface, value, unit, entity, uncertainty) -> str:
    out = f'"{surface}" = {value:g}' + ("" if unit == "dimensionless" else f" {unit}") + f" ({entity})"
    return out + ("" if uncertainty is None else f" ± {uncertainty:g}")


def ambiguous_units(clearers) -> list[tuple[str, str, str, str]]:
    """(claim, analyse, quantulum3 as installed, quantulum3 with its heuristic forced) for AMBIGUOUS."""
    from quantulum3 import classifier
    from quantulum3 import parser as quantulum

    from hf_compress.metrics.text_analysis import analyse

    def run(claim: str) -> str:
        try:
            found = quantulum.parse(claim)
        except Exception as exc:  # the bundled classifier may not load with this scikit-learn
            return f"**error** {type(exc).__name__}: {exc}"
        return cell(
            [describe_quantulum(q.surface, q.value, q.unit.name, q.unit.entity.name, q.uncertainty) for q in found]
        )

    rows = []
    installed_mode = classifier.USE_CLF
    for claim in AMBIGUOUS:
        for _, cache_clear in clearers:
            cache_clear()
        as_installed = run(claim)
        classifier.USE_CLF = False
        try:
            heuristic = run(claim)
        finally:
            classifier.USE_CLF = installed_mode
        rows.append((claim, cell([describe_analyse(q) for q in analyse(claim).quantities]), as_installed, heuristic))
    return rows


def quantulum_mode() -> str:
    from quantulum3 import classifier

    if not classifier.USE_CLF:
        return "heuristic disambiguation (scikit-learn not importable)"
    return (
        f"classifier mode: scikit-learn {importlib.metadata.version('scikit-learn')} is importable in this "
        "environment, so quantulum3 uses its bundled `clf.joblib` for ambiguous units, without the [classifier] extra"
    )


def extractions(clearers):
    import number_parser
    from dateparser.search import search_dates
    from quantulum3 import parser as quantulum

    from hf_compress.metrics.text_analysis import analyse

    rows = []
    for claim in CLAIMS:
        for _, cache_clear in clearers:
            cache_clear()
        analysis = analyse(claim)
        per_base = [search_dates(claim, languages=["en"], settings={"RELATIVE_BASE": base}) or [] for base in BASES]
        dates = [date_parts(per_base, index) for index in range(min(map(len, per_base)))]
        quantities = [
            (q.surface, q.value, q.unit.name, q.unit.entity.name, q.uncertainty) for q in quantulum.parse(claim)
        ]
        rows.append(
            {
                "claim": claim,
                "analyse": list(analysis.quantities),
                "dates": dates,
                "quantulum3": quantities,
                "number_parser": number_parser.parse(claim, language="en"),
            }
        )
    return rows


def correctness_counts(rows) -> dict[str, int]:
    counts = defaultdict(int)
    for row in rows:
        analysed_dates = [q for q in row["analyse"] if q.dimension == "date"]
        counts["dates"] += len(analysed_dates)
        for quantity in analysed_dates:
            wanted = (quantity.year, quantity.month, quantity.day)
            if not quantity.decade and any(parts == wanted for _, _, parts in row["dates"]):
                counts["dates_agree"] += 1
        counts["sd_matches"] += len(row["dates"])
        counts["sd_filled"] += sum("from the run date" in iso for _, iso, _ in row["dates"])
        if not analysed_dates:
            counts["sd_no_date_in_claim"] += len(row["dates"])
            counts["sd_false_texts"] = counts.get("sd_false_texts", ()) + tuple(text for text, _, _ in row["dates"])
        counts["decades"] += sum(q.decade for q in analysed_dates)
        counted = [q for q in row["analyse"] if q.nouns]
        counts["counted"] += len(counted)
        counts["units"] += sum(q.dimension not in (None, "date", "ordinal", "percent") for q in row["analyse"])
        counts["q_units"] += sum(q[3] != "dimensionless" for q in row["quantulum3"])
        if analysed_dates:
            counts["q_bare_date_numbers"] += sum(q[3] == "dimensionless" for q in row["quantulum3"])
        counts["hedged"] += sum(q.hedged for q in row["analyse"])
        counts["q_uncertain"] += sum(q[4] is not None for q in row["quantulum3"])
        ordinals = [q for q in row["analyse"] if q.dimension == "ordinal"]
        counts["ordinals"] += len(ordinals)
        counts["q_ordinals"] += sum(surface.lower() in ORDINAL_WORDS for surface, *_ in row["quantulum3"])
        written = row["number_parser"].lower().split()
        counts["np_ordinals_rewritten"] += sum(q.text.lower() not in written for q in ordinals)
    return counts


# ----------------------------------------------------------------------------------------------- report
def cell(items) -> str:
    return "; ".join(items).replace("|", "\\|") or "none"


def versions() -> str:
    out = []
    for dist in ("hf_compress", "dateparser", "quantulum3", "number-parser", "pint", "text2num"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def over_budget(ms: float) -> str:
    ratio = ms / BUDGET_MS
    return f"within ({ratio:.2f}× the budget)" if ms <= BUDGET_MS else f"**over** ({ratio:.1f}× the budget)"


def write_report(args, pinned, clearers, summary, offline, rows, ambiguous) -> Path:
    base = summary["analyse"]["ms"]
    labels = dict(METHODS, combined="libraries combined: search_dates(en) + quantulum3 + number-parser(en)")
    lines = [
        "# Hallucination metric: could dateparser, quantulum3 or number-parser replace the grammar?",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} logical CPUs, shared with other jobs; one process, one thread, {pinned}), Python "
        f"{platform.python_version()}; {versions()}.",
        "",
        f"Reproduce: `{INSTALL}` (not the `[classifier]` extra), then `python benchmarks/hallucination_libraries.py`",
        "",
        f"{len(CLAIMS)} made-up English claims (listed below). Each figure is the median of single calls, one claim "
        f"per call, after a warm-up call per claim; {args.rounds} interleaved rounds (the order of the calls rotates "
        f"each round), all-languages `search_dates` in 1 round of {args.all_languages_every} only. Before each "
        "`analyse` call in the first row every lru cache of `text_analysis` and `language` is cleared "
        f"({len(clearers)}: " + ", ".join(f"`{name}`" for name, _ in clearers) + "), so each claim is analysed from "
        "scratch. The second row is the metric's usual case, where claims and facts share words: only the per-text "
        "`analyse` cache is cleared, after an untimed call on the same claim has put its words in the word caches. "
        "The libraries' own internal caches (pint's, wordfreq's, dateparser's, quantulum3's) stay warm throughout. "
        "'× analyse' is against the first row. `analyse` does the whole analysis a claim needs (content words, "
        "names, negation, quantities, dates); the libraries cover only dates, quantities and number words. "
        "'libraries combined' is the median over claims and rounds of the three calls' summed time on the same "
        f"claim. Budget: 2,000 claims/s per core = {BUDGET_MS} ms per claim. quantulum3: {quantulum_mode()}; no "
        "unit in these claims is ambiguous, so the classifier is not used in the timings.",
        "",
        "## Speed",
        "",
        "| call | calls timed | median ms/claim | claims/s | × analyse | against the 0.5 ms budget |",
        "|---|---|---|---|---|---|",
    ]
    for name in (*METHODS, "combined"):
        row = summary[name]
        lines.append(
            f"| {labels[name]} | {row['calls']} | {row['ms']:.3f} | {1e3 / row['ms']:,.0f} | "
            f"{row['ms'] / base:.1f} | {over_budget(row['ms'])} |"
        )
    lines += [
        "",
        "## No network",
        "",
        "Each call's first use (import and first call on one claim) in a fresh process, with proxy variables "
        "removed and `socket.socket`, `socket.create_connection` and `socket.getaddrinfo` patched to raise.",
        "",
        "| call | first use, s | result |",
        "|---|---|---|",
    ]
    for name in ("analyse", *LIBRARIES):
        result = offline[name]
        if result["error"]:
            verdict = f"error: {result['error']}"
        elif result["attempts"]:
            verdict = "network attempted: " + ", ".join(result["attempts"][:3])
        else:
            verdict = "no network use"
        seconds = "" if result["seconds"] is None else f"{result['seconds']:.3f}"
        label = "hf_compress `analyse(c)`" if name == "analyse" else labels[name]
        lines.append(f"| {label} | {seconds} | {verdict.replace('|', '/')} |")
    lines += [
        "",
        "## What each finds",
        "",
        "`analyse`: quantities in SI base units (km → m, °C → K), dates with the parts written (yyyy/mm/dd = not "
        "written), hedges, counted nouns (as stems). `search_dates(c, languages=['en'])`: the matched text and the "
        "date; a part shown as yyyy/mm/dd was not in the claim but filled in from the current date (found by running "
        "it with two different `RELATIVE_BASE` dates). quantulum3: surface, value, unit (entity), ± its uncertainty "
        "when it gives one. number-parser: the claim as it rewrites it, when it changes it.",
        "",
        "| claim | `analyse` | `search_dates` (en) | quantulum3 | number-parser (en) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        analysed = [describe_analyse(q) for q in row["analyse"]]
        dates = [f'"{text}" → {iso}' for text, iso, _ in row["dates"]]
        quantities = [describe_quantulum(*q) for q in row["quantulum3"]]
        rewritten = row["number_parser"] if row["number_parser"] != row["claim"] else "unchanged"
        lines.append(
            f"| {row['claim']} | {cell(analysed)} | {cell(dates)} | {cell(quantities)} | {cell([rewritten])} |"
        )
    lines += [
        "",
        "## An ambiguous unit",
        "",
        "'pound' is a unit of mass and a currency. quantulum3 as installed here, and with its heuristic forced "
        "(`quantulum3.classifier.USE_CLF = False`, what an environment without scikit-learn gets):",
        "",
        "| claim | `analyse` | quantulum3 as installed | quantulum3, heuristic |",
        "|---|---|---|---|",
        *(f"| {claim} | {found} | {installed} | {heuristic} |" for claim, found, installed, heuristic in ambiguous),
    ]
    failed = sum("**error**" in installed for _, _, installed, _ in ambiguous)
    lines += ["", "## Reading", "", reading(summary, correctness_counts(rows), failed)]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "hallucination_libraries.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def reading(summary, counts, failed: int) -> str:
    ms = {name: row["ms"] for name, row in summary.items()}
    base, warm, combined = ms["analyse"], ms["analyse_warm"], ms["combined"]
    within = [name for name in LIBRARIES if ms[name] <= BUDGET_MS]
    over = [name for name in LIBRARIES if ms[name] > BUDGET_MS]
    text = (
        f"`analyse` takes {base:.3f} ms per claim ({1e3 / base:,.0f} claims/s, {base / BUDGET_MS:.2f}× the "
        f"{BUDGET_MS} ms budget) with every cache cleared, and {warm:.3f} ms ({1e3 / warm:,.0f} claims/s) with the "
        "claim's words already cached, for the whole analysis. Replacing its date, unit and number-word grammar with "
        f"search_dates(en) + quantulum3 + number-parser(en) would take {combined:.2f} ms per claim "
        f"({1e3 / combined:,.0f} claims/s): {combined / base:.1f}× `analyse` from scratch, {combined / warm:.0f}× "
        f"with warm word caches, and {combined / BUDGET_MS:.1f}× the budget before any of the rest of the analysis "
        "runs. "
    )
    if over:
        text += "Over the budget on their own: " + ", ".join(f"{SHORT[n]} ({ms[n]:.2f} ms)" for n in over) + ". "
    if within:
        text += "Within it: " + ", ".join(f"{SHORT[n]} ({ms[n]:.3f} ms)" for n in within) + ". "
    text += (
        f"They are also less right on these claims: search_dates(en) gives back {counts['dates_agree']} of the "
        f"{counts['dates']} dates `analyse` finds with the same parts ({counts['decades']} of them a decade, which it "
        f"cannot give), {counts['sd_filled']} of its {counts['sd_matches']} matches carry a year, month or day taken from "
        f"the run date, and {counts['sd_no_date_in_claim']} are dates found in a claim with none ("
        + ", ".join(f"'{text}'" for text in counts.get("sd_false_texts", ()))
        + f"); quantulum3 finds {counts['q_units']} quantities with units ({counts['units']} for "
        f"`analyse`) but splits the dates into {counts['q_bare_date_numbers']} bare numbers, marks "
        f"{counts['q_uncertain']} as approximate ({counts['hedged']} hedged for `analyse`), and ties no number to "
        f"the noun it counts (`analyse`: {counts['counted']}) and finds {counts['q_ordinals']} ordinals; number-parser turns "
        f"{counts['np_ordinals_rewritten']} of the {counts['ordinals']} ordinals into plain numbers and otherwise "
        "only rewrites number words as digits, which `language.digits_for_number_words` (text2num) already does. "
    )
    if failed:
        text += (
            f"In this environment quantulum3 also raises on {failed} of the {len(AMBIGUOUS)} claims with an "
            "ambiguous unit, because its bundled classifier does not load with the installed scikit-learn. "
        )
    if combined > BUDGET_MS:
        text += "Verdict: keep the grammar; together the libraries do not fit the budget, and they are less right."
    else:
        text += "Verdict: together the libraries fit the budget, but they are less right on these claims."
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--all-languages-every", type=int, default=5, help="all-languages search_dates: 1 round in N")
    parser.add_argument("--offline-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_libraries()
    if args.offline_child:
        offline_child(args.offline_child)
        return
    warnings.filterwarnings("ignore")  # quantulum3 and scikit-learn warnings; results are reported, not warned
    print("offline checks ...", flush=True)
    offline = offline_checks()
    pinned = pin_to_one_cpu()
    clearers = cache_clearers()
    print(f"timing {len(CLAIMS)} claims x {args.rounds} rounds ...", flush=True)
    summary = summarise(time_methods(args.rounds, args.all_languages_every, clearers))
    rows = extractions(clearers)
    path = write_report(args, pinned, clearers, summary, offline, rows, ambiguous_units(clearers))
    for name, row in summary.items():
        print(f"{name:14s} {row['ms']:8.3f} ms/claim")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
