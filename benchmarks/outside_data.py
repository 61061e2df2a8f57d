"""Rebuild the outside evaluation sets of the hallucination metric from the public repositories they come from.

Nobody on this project wrote these sets; see benchmarks/data/SOURCES.md for their sources, commits and licences.

- ``begin``: BEGIN (Dziri et al., 2022), knowledge-grounded dialogue responses labelled "Fully attributable" (supported)
  or "Not fully attributable" (hallucinated) against their knowledge snippet; "Generic" responses are left out.
  CC BY 4.0 (WoW, CMU-DoG) and CDLA-Sharing-1.0 (Topical-Chat), so the converted set is stored in benchmarks/data.
- ``qags_cnndm`` / ``qags_xsum``: QAGS (Wang et al., 2020), summary sentences judged by three annotators against the
  source article (majority "yes" = supported). The repository states no licence, so only this script is stored:
  run it on a clone of the repository to rebuild the two files (they are git-ignored).

Split (made before any tuning): every example goes to ``dev`` when the first byte of
``sha256(set name + "\\n" + reference text)`` is below 77 (about 30%), else to ``test``. Examples that share a
reference (the same article or knowledge snippet) therefore always share a split.

    python benchmarks/outside_data.py --begin-repo PATH/TO/BEGIN-dataset --qags-repo PATH/TO/qags
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
from pathlib import Path

OUT = Path(__file__).parent / "data" / "outside"
BEGIN_FILES = (
    "wow/begin_dev_wow.tsv",
    "wow/begin_test_wow.tsv",
    "cmu-dog/begin_dev_cmu.tsv",
    "topicalchat/begin_dev_tc.tsv",
)
DEV_BYTE_BELOW = 77


def split_of(set_name: str, reference: str) -> str:
    digest = hashlib.sha256(f"{set_name}\n{reference}".encode()).digest()
    return "dev" if digest[0] < DEV_BYTE_BELOW else "test"


def _git_show(repo: Path, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True, check=True
    ).stdout


def _commit(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def build_begin(repo: Path) -> dict:
    items = []
    for path in BEGIN_FILES:
        rows = csv.DictReader(io.StringIO(_git_show(repo, path)), delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in rows:
            label = (row.get("begin_label") or "").strip()
            if label not in {"Fully attributable", "Not fully attributable"}:
                continue
            knowledge, response = row["knowledge"].strip(), row["response"].strip()
            if not knowledge or not response:
                continue
            items.append(
                {
                    "source": f"{row['data_source']}/{row['model_name']}",
                    "references": [knowledge],
                    "prediction": response,
                    "hallucinated": label != "Fully attributable",
                    "split": split_of("begin", knowledge),
                }
            )
    return {
        "name": "begin",
        "repo": "google/BEGIN-dataset",
        "commit": _commit(repo),
        "files": list(BEGIN_FILES),
        "items": items,
    }


def build_qags(repo: Path, which: str) -> dict:
    path = f"data/mturk_{which}.jsonl"
    items = []
    for line in _git_show(repo, path).splitlines():
        record = json.loads(line)
        article = record["article"].strip()
        for sentence in record["summary_sentences"]:
            votes = [response["response"] == "yes" for response in sentence["responses"]]
            items.append(
                {
                    "source": which,
                    "references": [article],
                    "prediction": sentence["sentence"].strip(),
                    "hallucinated": sum(votes) * 2 < len(votes),
                    "split": split_of(f"qags_{which}", article),
                }
            )
    return {
        "name": f"qags_{which}",
        "repo": "W4ngatang/qags",
        "commit": _commit(repo),
        "files": [path],
        "items": items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--begin-repo", type=Path, default=None, help="a clone of google/BEGIN-dataset")
    parser.add_argument("--qags-repo", type=Path, default=None, help="a clone of W4ngatang/qags")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    built = []
    if args.begin_repo:
        built.append(build_begin(args.begin_repo))
    if args.qags_repo:
        built += [build_qags(args.qags_repo, "cnndm"), build_qags(args.qags_repo, "xsum")]
    for data in built:
        (OUT / f"{data['name']}.json").write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n")
        counts = {split: sum(item["split"] == split for item in data["items"]) for split in ("dev", "test")}
        positives = sum(item["hallucinated"] for item in data["items"])
        print(f"{data['name']}: {len(data['items'])} examples ({positives} hallucinated), {counts}")


if __name__ == "__main__":
    main()
