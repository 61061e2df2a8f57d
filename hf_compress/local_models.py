"""Model folders given by path (teachers, ``hf-compress export``, ``hf-compress report``): local only, never the hub.

hf_compress never downloads weights. A name that is neither a folder nor already in the local Hugging Face cache
is refused with "not found" before ``from_pretrained`` can try the network or complain about repo id syntax.
"""

from __future__ import annotations

import os


def check_local_model(path: str | os.PathLike, field: str) -> str:
    """``path`` if it is a model folder (or a name already in the local Hugging Face cache).

    Raises:
        ValueError: ``"<field>: <path> not found ..."`` naming the field, for a missing folder or a folder without
            ``config.json``.
    """
    text = os.fspath(path)
    if os.path.isdir(text):
        if not os.path.exists(os.path.join(text, "config.json")):
            raise ValueError(f"{field}: {text!r} is a folder without config.json, not a saved transformers model")
        return text
    if os.path.exists(text):
        raise ValueError(f"{field}: {text!r} is a file; expected a saved model folder (with config.json)")
    try:
        from transformers.utils import cached_file

        if cached_file(text, "config.json", local_files_only=True) is not None:
            return text
    except Exception:  # an invalid repo id, or nothing cached: both mean "not found" here
        pass
    raise ValueError(
        f"{field}: {text!r} not found: no such folder (and not in the local Hugging Face cache; hf_compress never "
        "downloads models). Pass the path of a saved model folder"
    )
