"""Keyed sections in a shared Markdown results file, so several benchmark scripts can each rewrite their own."""

from __future__ import annotations

import os


def write_section(path: str, key: str, body: str, header: str) -> None:
    """Replace (or append) the section between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in ``path``.

    ``header`` starts the file when it does not exist yet.
    """
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = open(path).read() if os.path.exists(path) else header
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(text)
