"""How sparse a model is, layer by layer: a printable table, a dict, a bar chart, and the ``hf-compress report`` entry.

```python
>>> import torch
>>> from hf_compress import sparsity_report
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4))
>>> with torch.no_grad():
...     _ = model[0].weight[:2].zero_()
>>> report = sparsity_report(model, targets=[r"^0$"])
>>> report.sparsity
0.5
>>> print(report)  # doctest: +SKIP
layer  shape   params  zeros  sparsity
0      [4, 4]      16      8    50.00%
total              16      8    50.00%

```
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_compress.distributed import all_reduce_sum_, is_sharded, local_tensor, unwrap_model
from hf_compress.targets import find_target_modules

# Tensor names that a saved model's report leaves out when the architecture cannot be rebuilt from its config.
_NOT_PRUNABLE_NAME = re.compile(r"(embed|wte|wpe|lm_head|norm|ln_|layernorm|classifier|score|pooler)", re.IGNORECASE)


@dataclass(frozen=True)
class LayerSparsity:
    """One weight tensor of the report."""

    name: str
    shape: tuple[int, ...]
    params: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "params": self.params,
            "zeros": self.zeros,
            "sparsity": self.sparsity,
        }


@dataclass
class SparsityReport:
    """Per-layer and total sparsity (exact zeros) of a model's prunable weights.

    ``str(report)`` is an aligned text table, :meth:`to_markdown` a Markdown table, :meth:`to_dict` plain values
    (JSON-ready) and :meth:`plot` a bar chart written to PNG.
    """

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def total_zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Total sparsity: zeros over parameters across all layers (a parameter-weighted mean)."""
        return self.total_zeros / self.total_params if self.total_params else 0.0

    @property
    def min_layer_sparsity(self) -> float:
        return min((layer.sparsity for layer in self.layers), default=0.0)

    @property
    def max_layer_sparsity(self) -> float:
        return max((layer.sparsity for layer in self.layers), default=0.0)

    def __getitem__(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(
            f"no layer {name!r} in the report; layers: {', '.join(layer.name for layer in self.layers[:6])}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "total": {"params": self.total_params, "zeros": self.total_zeros, "sparsity": self.sparsity},
        }

    def _rows(self) -> list[list[str]]:
        rows = [
            [layer.name, str(list(layer.shape)), str(layer.params), str(layer.zeros), f"{layer.sparsity:.2%}"]
            for layer in self.layers
        ]
        rows.append(["total", "", str(self.total_params), str(self.total_zeros), f"{self.sparsity:.2%}"])
        return rows

    def __str__(self) -> str:
        header = ["layer", "shape", "params", "zeros", "sparsity"]
        rows = self._rows()
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = []
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = ["| layer | shape | params | zeros | sparsity |", "|---|---|---:|---:|---:|"]
        for name, shape, params, zeros, sparsity in self._rows():
            name = f"**{name}**" if name == "total" and not shape else f"`{name}`"
            lines.append(f"| {name} | {shape} | {params} | {zeros} | {sparsity} |")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> str:
        """Write a bar chart of per-layer sparsity to ``path`` (PNG). See :func:`plot_sparsity`."""
        return plot_sparsity(self, path, title=title)


def sparsity_report(
    model: nn.Module,
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> SparsityReport:
    """Count the exact zeros in the weights of a model's prunable layers.

    Args:
        model (`nn.Module`): any model; DDP / accelerate wrappers are looked through.
        targets (`list[str]`, *optional*): regexes of module names to report. Defaults to the modules pruning
            targets by default: every ``nn.Linear`` / ``Conv1D`` in the model body (no embeddings, no LM head).
        exclude (`list[str]`, *optional*): regexes of module names to leave out.

    Returns:
        [`SparsityReport`]: per-layer ``(name, shape, params, zeros, sparsity)`` and the total.

    Under FSDP2 each rank counts its shard and the counts are summed, so every rank must call this.

    Example:

    ```python
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_compress import sparsity_report
    >>> model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64))
    >>> report = sparsity_report(model)
    >>> [layer.name for layer in report.layers][:2]
    ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj']

    ```
    """
    modules = find_target_modules(unwrap_model(model), targets, exclude)
    layers = []
    for name, module in modules.items():
        weight = module.weight
        with torch.no_grad():
            zeros = (local_tensor(weight) == 0).sum()
            if is_sharded(weight):
                zeros = all_reduce_sum_(zeros)
        layers.append(LayerSparsity(name, tuple(weight.shape), weight.numel(), int(zeros)))
    return SparsityReport(layers)


def sparsity_report_from_tensors(
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
) -> SparsityReport:
    """A report over named weight tensors (for example read from a safetensors file), in the order given.

    Example:

    ```python
    >>> import torch
    >>> from hf_compress.pruning.report import sparsity_report_from_tensors
    >>> sparsity_report_from_tensors({"fc.weight": torch.tensor([[0.0, 1.0], [0.0, 2.0]])}).sparsity
    0.5

    ```
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    layers = [
        LayerSparsity(name, tuple(tensor.shape), tensor.numel(), int((tensor == 0).sum())) for name, tensor in items
    ]
    return SparsityReport(layers)


def plot_sparsity(report: SparsityReport, path: str | os.PathLike, title: str | None = None) -> str:
    """Write a horizontal bar chart of per-layer sparsity (with the total as a line) to a PNG file.

    matplotlib is a base dependency; it is imported here only, with the Agg backend.

    Returns:
        `str`: the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    names = [layer.name for layer in report.layers]
    values = [100.0 * layer.sparsity for layer in report.layers]
    height = max(2.5, 0.28 * len(names) + 1.2)
    figure, axes = plt.subplots(figsize=(9, height))
    try:
        axes.barh(range(len(names)), values, color="#4c72b0")
        axes.set_yticks(range(len(names)), labels=names, fontsize=7 if len(names) > 30 else 9)
        axes.invert_yaxis()
        axes.axvline(100.0 * report.sparsity, color="#dd5555", linestyle="--", label=f"total {report.sparsity:.2%}")
        axes.set_xlim(0, 100)
        axes.set_xlabel("sparsity (% exact zeros)")
        axes.set_title(title or "Sparsity per layer")
        axes.legend(loc="lower right")
        figure.tight_layout()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, format="png", dpi=120)
    finally:
        plt.close(figure)
    return path


def saved_model_report(model_dir: str | os.PathLike) -> SparsityReport:
    """The sparsity report of a model saved with ``save_pretrained`` (safetensors), without loading it into memory.

    The architecture is rebuilt from ``config.json`` on the meta device (no weights allocated) to find the default
    pruning targets; their tensors are then read one by one from the ``*.safetensors`` files. When the config names
    no architecture transformers knows, every floating-point weight matrix outside embeddings, norms and heads is
    reported instead, so any architecture works.
    """
    from safetensors import safe_open

    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    files = sorted(name for name in os.listdir(model_dir) if name.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors file in {model_dir!r}; save the model with save_pretrained(safe_serialization=True)"
        )
    handles = {name: safe_open(os.path.join(model_dir, name), framework="pt") for name in files}
    where = {key: name for name, handle in handles.items() for key in handle.keys()}
    wanted = _target_tensor_names(model_dir, list(where))
    if wanted is None:
        wanted = [key for key in where if _looks_prunable(key, handles[where[key]].get_slice(key))]
    layers = []
    for key in wanted:
        tensor = handles[where[key]].get_tensor(key)
        module_name = key[: -len(".weight")] if key.endswith(".weight") else key
        layers.append(LayerSparsity(module_name, tuple(tensor.shape), tensor.numel(), int((tensor == 0).sum())))
        del tensor
    return SparsityReport(layers)


def _looks_prunable(key: str, tensor_slice) -> bool:
    dtype = str(tensor_slice.get_dtype()).upper()
    floating = dtype.startswith(("F", "BF"))
    return (
        key.endswith(".weight")
        and floating
        and len(tensor_slice.get_shape()) >= 2
        and not _NOT_PRUNABLE_NAME.search(key)
    )


def _target_tensor_names(model_dir: str, saved_keys: list[str]) -> list[str] | None:
    """Saved tensor names of the default pruning targets, via the config's architecture on the meta device."""
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.exists(config_path):
        return None
    with open(config_path) as handle:
        architectures = json.load(handle).get("architectures") or []
    try:
        import transformers

        config = transformers.AutoConfig.from_pretrained(model_dir)
        model_class = getattr(transformers, architectures[0], None) if architectures else None
        if model_class is None:
            model_class = transformers.AutoModel
            build = model_class.from_config
        else:
            build = model_class._from_config
        with torch.device("meta"):
            model = build(config)
    except Exception:  # unknown or custom architecture: fall back to reading the tensors by name
        return None
    saved = set(saved_keys)
    names = []
    for module_name in find_target_modules(model):
        key = f"{module_name}.weight"
        if key not in saved:  # the saved prefix can differ from the rebuilt class (e.g. a base model)
            matches = [k for k in saved_keys if k.endswith("." + key) or key.endswith("." + k)]
            if len(matches) != 1:
                return None
            key = matches[0]
        names.append(key)
    return names or None


def report_main(model_dir: str | os.PathLike, plot: str | os.PathLike | None = None) -> SparsityReport:
    """Print the sparsity report of a saved model; with ``plot``, also write a bar chart PNG there.

    This is ``hf-compress report MODEL_DIR [--plot FILE.png]``.

    Example:

    ```python
    >>> from hf_compress.pruning.report import report_main
    >>> report = report_main("out/pruned-model", plot="sparsity.png")  # doctest: +SKIP

    ```
    """
    from hf_compress.structured.report import saved_model_shapes

    shapes = saved_model_shapes(model_dir)
    if shapes is not None:
        print(f"Structured shapes of {os.fspath(model_dir)} (hf_compress.shrink)")
        print(shapes)
    report = saved_model_report(model_dir)
    print(f"Sparsity of {os.fspath(model_dir)} ({len(report.layers)} layers)")
    print(report)
    if plot is not None:
        written = report.plot(plot, title=f"Sparsity per layer: {os.path.basename(os.path.normpath(model_dir))}")
        print(f"bar chart written to {written}")
    return report
