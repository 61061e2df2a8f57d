"""The export formats, registered under the registry kind ``export_format``.

Each format is an :class:`ExportFormat`: the package it needs (with the pip command when it is missing) and the
module that implements it. That module provides:

- ``check(source, options)``: raise a ValueError before anything is written when the format cannot hold the model;
  it may also move layers to another exact grid (see ``export_quanto``). Returns notes.
- ``write(source, folder)``: write the checkpoint into ``folder``; returns notes.
- ``load(folder, model_class)``: reload the checkpoint with the format's own loader (used by the verification).

Example:

```python
>>> from hf_compress.registry import get_registry
>>> get_registry().get("export_format", "quanto").pip_install
'pip install "hf-compress[quanto]"'
```
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from hf_compress.extras import pip_install_command, require_extra


@dataclass(frozen=True)
class ExportFormat:
    """A checkpoint format that :func:`hf_compress.export` can write.

    Args:
        name (`str`): the ``format=`` value.
        implementation (`str`): module with ``check``, ``write`` and ``load``.
        description (`str`): one line, shown by ``hf-compress export --help``.
        package (`str`, *optional*): import name of the package the format needs.
        pip_install (`str`, *optional*): the command that installs it.
        extra (`str`, *optional*): the hf-compress extra that installs it (then ``pip_install`` names that extra).
        keeps_activation_quantization (`bool`): whether the checkpoint can hold int8 activation quantization.
        whole_model (`bool`): the module exports the whole model itself (``export_model(model, path, format,
            options)``, e.g. ONNX), instead of ``check`` / ``write`` / ``load`` of quantized weights.
    """

    name: str
    implementation: str
    description: str
    package: str | None = None
    pip_install: str | None = None
    keeps_activation_quantization: bool = False
    extra: str | None = None
    whole_model: bool = False

    def module(self) -> ModuleType:
        """The implementation module; an ImportError with the pip command when the package is missing."""
        if self.extra is not None:
            require_extra(self.package, self.extra, f"export format {self.name!r}")
        elif self.package is not None:
            try:
                importlib.import_module(self.package)
            except ImportError as error:
                raise ImportError(
                    f"export format {self.name!r} needs the package {self.package!r}, which is not installed "
                    f"({error}). Install it with: {self.pip_install}"
                ) from None
        return importlib.import_module(self.implementation)


BUILTIN_FORMATS = (
    ExportFormat(
        name="dequantized",
        implementation="hf_compress.quantization.export_dequantized",
        description="plain transformers checkpoint whose float weights are the quantized values",
    ),
    ExportFormat(
        name="quanto",
        implementation="hf_compress.quantization.export_quanto",
        description="int8/int4/int2 weights through optimum-quanto (reload with optimum.quanto.requantize)",
        package="optimum.quanto",
        pip_install=pip_install_command("quanto"),
        extra="quanto",
    ),
    ExportFormat(
        name="compressed-tensors",
        implementation="hf_compress.quantization.export_compressed_tensors",
        description="the compressed-tensors checkpoint vLLM loads (pack-quantized / int-quantized)",
        package="compressed_tensors",
        pip_install="pip install hf-compress  (compressed-tensors is a base dependency)",
        keeps_activation_quantization=True,
    ),
    ExportFormat(
        name="onnx",
        implementation="hf_compress.quantization.export_onnx",
        description="float32 ONNX graph (logits forward, dynamic batch/sequence) for ONNX Runtime",
        package="onnxruntime",
        pip_install=pip_install_command("onnx"),
        extra="onnx",
        whole_model=True,
    ),
    ExportFormat(
        name="onnx-int8",
        implementation="hf_compress.quantization.export_onnx",
        description="int8 ONNX graph for ONNX Runtime on CPU: the QAT grid, or ORT static/dynamic PTQ",
        package="onnxruntime",
        pip_install=pip_install_command("onnx"),
        extra="onnx",
        keeps_activation_quantization=True,
        whole_model=True,
    ),
)


def register_export_formats(registry) -> None:
    """Register the built-in export formats (registry kind ``export_format``)."""
    for export_format in BUILTIN_FORMATS:
        registry.register("export_format", export_format.name, export_format)
