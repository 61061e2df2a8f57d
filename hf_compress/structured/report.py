"""Shapes before and after structured pruning, as ``hf-compress report`` prints them for a saved model."""

from __future__ import annotations

import json
import os

ROWS = (
    ("layers", "num_layers"),
    ("attention heads", "num_heads"),
    ("KV groups", "num_kv_heads"),
    ("head_dim", "head_dim"),
    ("MLP neurons", "intermediate"),
    ("hidden size", "hidden"),
)


def shapes_table(record: dict) -> str:
    """A text table of ``config.hf_compress_structured`` (``before`` / ``after`` shapes)."""
    before, after = record["before"], record["after"]
    lines = [f"{'structure':<16}{'before':>8}{'after':>8}"]
    for label, key in ROWS:
        lines.append(f"{label:<16}{before[key]:>8}{after[key]:>8}")
    return "\n".join(lines)


def saved_model_shapes(model_dir: str | os.PathLike) -> str | None:
    """The shapes table of a saved model shrunk by hf-compress, or None when it was not."""
    path = os.path.join(os.fspath(model_dir), "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        record = json.load(handle).get("hf_compress_structured")
    if not record or "before" not in record:
        return None
    return shapes_table(record)
