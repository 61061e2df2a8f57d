"""Evaluation metrics shipped with hf_compress, as ``evaluate`` modules inside the installed package.

```python
>>> import hf_compress
>>> metric = hf_compress.load_metric("hallucination")
>>> metric.compute(predictions=["Paris is the capital of Italy."], references=[["Paris is the capital of France."]])[
...     "hallucination_rate"
... ]
1.0
```
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

METRICS = ("hallucination",)


def metric_path(name: str) -> Path:
    """The folder of the metric module ``name`` inside the installed package (what ``evaluate.load`` takes)."""
    if not isinstance(name, str) or name.lower() not in METRICS:
        close = difflib.get_close_matches(str(name).lower(), METRICS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown metric {name!r}; hf_compress ships: {', '.join(METRICS)}.{hint}")
    return Path(__file__).resolve().parent / name.lower()


def load_metric(name: str = "hallucination", **kwargs: Any):
    """Load an hf_compress metric with ``evaluate.load`` from its folder in the installed package (offline).

    Args:
        name (`str`, *optional*, defaults to `"hallucination"`): one of `METRICS`.
        kwargs: passed to ``evaluate.load`` (e.g. ``experiment_id``, ``keep_in_memory``).
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
