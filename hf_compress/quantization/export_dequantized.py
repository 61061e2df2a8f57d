"""Export format ``"dequantized"``: a plain transformers checkpoint whose float weights are the quantized values.

It loads anywhere ``from_pretrained`` works and reproduces the QAT model's weights exactly. It cannot hold activation
quantization: :func:`hf_compress.export` warns and records that in ``config.hf_compress_export``.

Example:

```python
from hf_compress import export

result = export(model, "out/dequantized", format="dequantized")
reloaded = type(model).from_pretrained("out/dequantized")
```
"""

from __future__ import annotations

from torch import nn

from hf_compress.quantization.export_source import ExportSource


def check(source: ExportSource, options) -> list[str]:
    """Any model that ``save_pretrained`` can write fits; nothing to check."""
    return []


def write(source: ExportSource, folder: str) -> list[str]:
    source.model.save_pretrained(folder)
    return []


def load(folder: str, model_class: type[nn.Module]) -> nn.Module:
    return model_class.from_pretrained(folder).eval()
