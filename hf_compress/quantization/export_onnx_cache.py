"""KV-cache ONNX graphs of decoder-only language models (``export(..., format="onnx", kv_cache=True)``) and greedy
generation with ONNX Runtime (:func:`onnx_generate`).

A graph exported with ``kv_cache=True`` takes ``input_ids``, ``attention_mask`` (past and new positions) and, for
each layer ``i``, ``past_key_values.{i}.key`` / ``past_key_values.{i}.value`` (batch, kv heads, past length, head
size), and returns ``logits`` and ``present.{i}.key`` / ``present.{i}.value`` with the new positions appended: the
names optimum and ONNX Runtime's own tooling use. The first call feeds empty pasts (length 0); each later call feeds
the new token alone with the presents of the call before, so generating costs one token's compute per step instead
of the whole sequence's. Position ids come from ``attention_mask`` (its running count), so left-padded batches
generate as ``model.generate`` does.

Why not optimum's ``ORTModelForCausalLM``: optimum-onnx pins ``transformers<4.58`` and cannot be installed beside
transformers 5.x, so :func:`onnx_generate` runs the loop itself (greedy only).

```python
from hf_compress import export, onnx_generate

export(model, "out/onnx-kv", format="onnx-int8", int8_mode="dynamic", kv_cache=True)
tokens = onnx_generate("out/onnx-kv", tokenizer("The tower", return_tensors="pt"), max_new_tokens=20)
print(tokenizer.decode(tokens[0]))
```
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hf_compress.quantization.export_verify import model_outputs

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."


def past_names(layers: int) -> list[str]:
    return [f"{PAST_PREFIX}{layer}.{part}" for layer in range(layers) for part in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"{PRESENT_PREFIX}{layer}.{part}" for layer in range(layers) for part in ("key", "value")]


def positions_from_mask(attention_mask):
    """Position ids that count the real tokens so far (left padding does not shift them), as generate() computes."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _cache_argument(model: nn.Module) -> str:
    """The keyword the model's forward takes its cache by: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _layer_tensors(cache) -> list[torch.Tensor]:
    """key, value, key, value, ... of a transformers ``Cache`` (one ``layers`` entry per decoder layer)."""
    tensors = []
    for layer in cache.layers:
        tensors += [layer.keys, layer.values]
    return tensors


@dataclass(frozen=True)
class CacheLayout:
    """What a decoder's KV cache looks like: ``layers`` pairs of (batch, ``heads``, length, ``head_size``) tensors."""

    layers: int
    heads: int
    head_size: int


def cache_layout(model: nn.Module, batch: dict[str, torch.Tensor]) -> CacheLayout:
    """The model's KV cache, from one forward with ``use_cache=True``; a clear error for a model without one.

    Raises:
        ValueError: ``model`` is not a decoder-only language model whose forward returns a transformers ``Cache``.
    """
    config = getattr(model, "config", None)
    name = type(model).__name__
    allowed = "a decoder-only causal LM whose generate() keeps a KV cache (e.g. LlamaForCausalLM, GPT2LMHeadModel)"
    can_generate = getattr(model, "can_generate", None)
    if getattr(config, "is_encoder_decoder", False) or not (callable(can_generate) and can_generate()):
        raise ValueError(f"kv_cache=True needs {allowed}; {name} is not one. Export it with kv_cache=False")
    ids = batch["input_ids"][:1, :2]
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, return_dict=True)
    cache = _returned_cache(output)
    if cache is None or not hasattr(cache, "layers") or not cache.layers:
        raise ValueError(f"kv_cache=True needs {allowed}; {name}'s forward returned no transformers Cache")
    if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        window = getattr(config, "sliding_window", None)
        raise ValueError(
            f"kv_cache=True does not export sliding-window attention yet ({name}, config.sliding_window={window}): "
            "its cache drops old positions, which the exported graph cannot follow. Export with kv_cache=False"
        )
    tensors = _layer_tensors(cache)
    if any(tensor is None or tensor.dim() != 4 for tensor in tensors):
        raise ValueError(f"kv_cache=True: {name}'s cache layers are not (batch, heads, length, head size) tensors")
    _, heads, _, head_size = tensors[0].shape
    return CacheLayout(len(cache.layers), int(heads), int(head_size))


class CachedLogitsForward(nn.Module):
    """``(input_ids, attention_mask, *past) -> (logits, *present)``: one decoding step of ``model`` on flat tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cache_argument = _cache_argument(model)

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2])), config=self.model.config)
        position_ids = positions_from_mask(attention_mask)[:, -input_ids.shape[1] :]
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            return_dict=True,
            **{self.cache_argument: cache},
        )
        return (output.logits, *_layer_tensors(_returned_cache(output)))


def trace_arguments(model: nn.Module, batch: dict[str, torch.Tensor]):
    """Example arguments for tracing: the batch's first half as the past (its cache) and its second half as new tokens,
    so that no axis the graph keeps dynamic is traced at length 0 or 1."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    split = max(2, ids.shape[1] // 2)
    with torch.no_grad():
        output = model(input_ids=ids[:, :split], attention_mask=mask[:, :split], use_cache=True, return_dict=True)
    past = [tensor.detach().float() for tensor in _layer_tensors(_returned_cache(output))]
    return (ids[:, split:], mask, *past)


def dynamic_axes(layers: int) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in past_names(layers)})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in present_names(layers)})
    return axes


# ---------------------------------------------------------------------- running a KV-cache graph
def is_cached(session) -> bool:
    return any(node.name.startswith(PAST_PREFIX) for node in session.get_inputs())


def _empty_pasts(inputs, batch_size: int) -> dict[str, np.ndarray]:
    """Zero-length arrays for the ``past_key_values.*`` of ``inputs``, (name, (batch, heads, past, head size))."""
    return {
        name: np.zeros((batch_size, shape[1], 0, shape[3]), dtype=np.float32)
        for name, shape in inputs
        if name.startswith(PAST_PREFIX)
    }


def empty_past_feed(session, batch_size: int) -> dict[str, np.ndarray]:
    """Zero-length pasts for every ``past_key_values.*`` input of ``session`` (the first step, or a logits check)."""
    return _empty_pasts(((node.name, node.shape) for node in session.get_inputs()), batch_size)


def empty_past_for_graph(file: str, batch_size: int) -> dict[str, np.ndarray]:
    """:func:`empty_past_feed` for the graph in ``file`` without a session (ONNX Runtime's calibration feeds)."""
    import onnx

    inputs = onnx.load(file, load_external_data=False).graph.input
    shapes = ((node.name, [dim.dim_value for dim in node.type.tensor_type.shape.dim]) for node in inputs)
    return _empty_pasts(shapes, batch_size)


def next_past(outputs: dict[str, np.ndarray], input_names) -> dict[str, np.ndarray]:
    """The ``past_key_values.*`` feed of the next step: this step's ``present.*`` outputs."""
    return {
        name: outputs[PRESENT_PREFIX + name[len(PAST_PREFIX) :]]
        for name in input_names
        if name.startswith(PAST_PREFIX)
    }


def _as_arrays(inputs, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(inputs, "keys"):  # a dict or a tokenizer's BatchEncoding
        attention_mask = inputs.get("attention_mask", attention_mask)
        inputs = inputs["input_ids"]
    ids = np.asarray(inputs.cpu() if torch.is_tensor(inputs) else inputs, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None]
    if attention_mask is None:
        mask = np.ones_like(ids)
    else:
        mask = np.asarray(attention_mask.cpu() if torch.is_tensor(attention_mask) else attention_mask, dtype=np.int64)
        mask = mask.reshape(ids.shape)
    return ids, mask


def onnx_generate(
    model,
    inputs,
    attention_mask=None,
    max_new_tokens: int = 32,
    eos_token_id: int | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Greedy generation with ONNX Runtime from an ONNX export of a causal LM.

    Args:
        model: the export folder (or its ``model.onnx``) or an ``onnxruntime.InferenceSession`` on it. A graph
            exported with ``kv_cache=True`` runs one new token per step; one without recomputes the whole sequence
            every step (slower, and then a left-padded batch's positions shift with its padding).
        inputs: ``input_ids`` (a tensor, array or list of lists) or a tokenizer's output (its ``attention_mask`` is
            used). Left-pad batches of different lengths.
        attention_mask (*optional*): 1 for tokens, 0 for left padding; all ones by default.
        max_new_tokens (`int`): tokens to add to each row.
        eos_token_id (`int`, *optional*): a row that produced it gets it again until every row has (as
            ``generate`` pads with it); generation stops when all rows have.
        threads (`int`, *optional*): ONNX Runtime intra-op threads when ``model`` is a path.

    Returns:
        `torch.LongTensor` of shape (batch, prompt length + generated tokens): the prompt followed by the new tokens.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0; got {max_new_tokens!r}")
    session = model
    if isinstance(model, (str, os.PathLike)):
        from hf_compress.quantization.export_onnx_runtime import onnx_session

        session = onnx_session(model, threads=threads)
    ids, mask = _as_arrays(inputs, attention_mask)
    input_names = {node.name for node in session.get_inputs()}
    cached = is_cached(session)
    output_names = [node.name for node in session.get_outputs()]
    sequence, finished = ids, np.zeros(len(ids), dtype=bool)
    feed = {"input_ids": ids, "attention_mask": mask}
    if cached:
        feed.update(empty_past_feed(session, len(ids)))
    for _ in range(max_new_tokens):
        outputs = session.run(None, {name: value for name, value in feed.items() if name in input_names})
        next_tokens = outputs[0][:, -1].argmax(-1).astype(np.int64)
        if eos_token_id is not None:
            next_tokens = np.where(finished, eos_token_id, next_tokens)
            finished |= next_tokens == eos_token_id
        sequence = np.concatenate([sequence, next_tokens[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((len(ids), 1), dtype=np.int64)], axis=1)
        if cached:
            feed = {"input_ids": next_tokens[:, None], "attention_mask": mask}
            presents = dict(zip(output_names, outputs))
            feed.update(next_past(presents, input_names))
        else:
            feed = {"input_ids": sequence, "attention_mask": mask}
        if finished.all():
            break
    return torch.from_numpy(sequence)


def with_positions(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` plus the position ids a KV-cache graph computes from its attention mask (for PyTorch references)."""
    return {**batch, "position_ids": positions_from_mask(batch["attention_mask"])}


def _prefill_then_step(session, ids: np.ndarray, mask: np.ndarray):
    """Run the graph's prefill on ``ids`` and build the feed of the next step: (next tokens, the step's mask, its
    feed with this prefill's presents as the past)."""
    feed = {"input_ids": ids, "attention_mask": mask, **empty_past_feed(session, len(ids))}
    outputs = dict(zip([node.name for node in session.get_outputs()], session.run(None, feed)))
    next_tokens = outputs["logits"][:, -1].argmax(-1).astype(np.int64)[:, None]
    step_mask = np.concatenate([mask, np.ones_like(next_tokens)], axis=1)
    return next_tokens, step_mask, {"input_ids": next_tokens, "attention_mask": step_mask, **next_past(outputs, feed)}


def check_decode_step(session, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(max abs diff, top-1 agreement) of the graph's next-token logits after its own prefill of ``batch`` against
    ``model`` run on the whole extended sequence: checks that the presents the graph returns are right."""
    ids, mask = batch["input_ids"].long().numpy(), batch["attention_mask"].long().numpy()
    next_tokens, step_mask, step_feed = _prefill_then_step(session, ids, mask)
    step_logits = torch.from_numpy(session.run(["logits"], step_feed)[0][:, -1]).float()
    extended = {
        "input_ids": torch.from_numpy(np.concatenate([ids, next_tokens], axis=1)),
        "attention_mask": torch.from_numpy(step_mask),
    }
    with torch.no_grad():
        reference = model_outputs(model, with_positions(extended))[:, -1]
    difference = (step_logits - reference).abs().max().item()
    agreement = (step_logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return difference, agreement


def decode_step_runners(session, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict:
    """Callables that generate one token after ``batch`` with the cache: the graph fed its own presents, and ``model``
    (float32 PyTorch) with its own transformers cache, cut back to the prompt after each call. For the speed report."""
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    next_tokens, step_mask, step_feed = _prefill_then_step(session, ids.numpy(), mask.numpy())
    model.eval()
    with torch.no_grad():
        cache = _returned_cache(model(input_ids=ids, attention_mask=mask, use_cache=True, return_dict=True))
    step_mask = torch.from_numpy(step_mask)
    step_inputs = {
        "input_ids": torch.from_numpy(next_tokens),
        "attention_mask": step_mask,
        "position_ids": positions_from_mask(step_mask)[:, -1:],
        _cache_argument(model): cache,
        "use_cache": True,
    }

    def pytorch_step():
        with torch.no_grad():
            model(**step_inputs)
        cache.crop(-1)  # drop the step's token: back to the prompt

    return {"exported_decode_step": lambda: session.run(None, step_feed), "pytorch_fp32_decode_step": pytorch_step}
