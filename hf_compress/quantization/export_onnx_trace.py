"""Tracing a model's logits forward into an ONNX graph with torch's exporter (TorchScript-based or dynamo).

Used by :mod:`hf_compress.quantization.export_onnx`, which writes, quantizes and checks the graph.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import warnings

import torch
from torch import nn


class OnnxExportError(ValueError):
    """torch's exporter cannot trace the model; the message names the model class and the op."""


class LogitsForward(nn.Module):
    """The model's logits as a function of positional ``input_ids, attention_mask[, token_type_ids]``."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        values = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        output = self.model(**{name: values[name] for name in self.input_names}, **self.extra, return_dict=True)
        logits = getattr(output, "logits", None)
        return logits if logits is not None else output[0]


def onnx_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The graph inputs, in order: ``input_ids``, ``attention_mask`` (ones when absent), ``token_type_ids`` if given."""
    if "input_ids" not in batch:
        raise ValueError(f"sample_inputs must hold input_ids for an ONNX export; got keys {sorted(batch)}")
    accepted = inspect.signature(model.forward).parameters
    inputs = {"input_ids": batch["input_ids"].long()}
    inputs["attention_mask"] = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).long()
    if "token_type_ids" in batch and "token_type_ids" in accepted:
        inputs["token_type_ids"] = batch["token_type_ids"].long()
    return inputs


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Trace with transformers' eager attention (explicit matmul, mask add, softmax), then switch ``model`` back.

    The SDPA forward, transformers' default, traces into a longer graph (its scale and mask arithmetic adds 153 nodes
    to MiniLM) that ONNX Runtime runs slower: dynamic int8 on all-MiniLM-L6-v2 ran 1.26-1.41x faster traced from eager
    (7.8 against 9.9 ms at 1 thread, 1 x 128; ``benchmarks/onnx_attention_trace.py``). Both forwards compute the
    same logits, and the export check compares the graph with the model as given. The setting is not serialized,
    so the exported ``config.json`` keeps the model's own.
    """
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    switched = False
    if switch is not None and previous not in (None, "eager"):
        try:
            switch("eager")
            switched = True
        except (ValueError, ImportError, NotImplementedError):  # a model without an eager path: trace it as it is
            pass
    try:
        yield
    finally:
        if switched:
            switch(previous)


def trace_to_onnx(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    file: str,
    exporter: str,
    opset: int,
    trace_eager_attention: bool = True,
    cache=None,
) -> None:
    """Export ``model``'s logits forward to ``file`` with dynamic batch and sequence axes, traced with eager attention
    (:func:`eager_attention`) unless ``trace_eager_attention=False`` (the benchmarks time the model's own). With
    ``cache`` (a :class:`~hf_compress.quantization.export_onnx_cache.CacheLayout`), the graph is one decoding step
    with a KV cache (:mod:`~hf_compress.quantization.export_onnx_cache`; TorchScript exporter only).

    Raises:
        OnnxExportError: the exporter cannot trace the model (the message names the model class and the op).
    """
    names = tuple(inputs)
    wrapper = LogitsForward(model, names).eval()
    args = tuple(inputs[name] for name in names)
    try:
        attention = eager_attention(model) if trace_eager_attention else contextlib.nullcontext()
        with warnings.catch_warnings(), torch.no_grad(), attention:
            warnings.simplefilter("ignore")
            if cache is not None:
                from hf_compress.quantization import export_onnx_cache as cached

                torch.onnx.export(
                    cached.CachedLogitsForward(model).eval(),
                    cached.trace_arguments(model, inputs),
                    file,
                    dynamo=False,
                    input_names=["input_ids", "attention_mask", *cached.past_names(cache.layers)],
                    output_names=["logits", *cached.present_names(cache.layers)],
                    dynamic_axes=cached.dynamic_axes(cache.layers),
                    opset_version=opset,
                    do_constant_folding=True,
                )
            elif exporter == "dynamo":
                batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
                torch.onnx.export(
                    wrapper,
                    args,
                    file,
                    dynamo=True,
                    input_names=list(names),
                    output_names=["logits"],
                    dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                    opset_version=opset,
                    verbose=False,
                )
            else:
                axes = {0: "batch", 1: "sequence"}
                torch.onnx.export(
                    wrapper,
                    args,
                    file,
                    dynamo=False,
                    input_names=list(names),
                    output_names=["logits"],
                    dynamic_axes={**{name: axes for name in names}, "logits": axes},
                    opset_version=opset,
                    do_constant_folding=True,
                )
    except Exception as error:  # the exporters raise many types; the user needs the class and the op
        message = str(error)
        if "unordered_map::at" in message and _transformers_major() < 5:
            raise OnnxExportError(
                f"cannot export {type(model).__name__} to ONNX with transformers {_transformers_version()}: its "
                "attention masks are built with torch.vmap, which torch's exporter cannot trace. Export with "
                "transformers>=5.0 (pip install 'transformers>=5')"
            ) from error
        found = re.search(r"aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?", message)
        op = found.group(0) if found else (message.strip().splitlines() or ["unknown"])[0][:200]
        raise OnnxExportError(
            f"cannot export {type(model).__name__} to ONNX with torch's {exporter} exporter (opset {opset}): "
            f"unsupported op {op}. Try exporter={'dynamo' if exporter == 'torchscript' else 'torchscript'!r}, "
            "a higher opset=, or another export format"
        ) from error


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _transformers_major() -> int:
    return int(_transformers_version().split(".")[0])
