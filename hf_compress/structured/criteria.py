"""Importance of whole structures: registered components of kind ``structure_criterion`` (plugins can add more).

A criterion is a class built with its keyword options; it scores structures as :class:`StructureScores`
(higher = more important). Width criteria score heads, neurons and hidden channels; depth criteria score layers.

- ``activation`` (Minitron): mean (``aggregate="mean"``) or L2 (``"l2"``) over tokens of the activations each
  structure produces: the MLP intermediate activations per neuron, the attention output per head, the norm outputs
  per channel. From calibration batches, or accumulated on training batches.
- ``taylor``: first-order Taylor ``|sum(w * g)|`` over each structure's weights, accumulated over training steps
  (``accumulate`` after each backward).
- ``magnitude``: L2 norm of each structure's weights.
- ``block_influence`` (ShortGPT): ``1 - cos(input, output)`` of each layer, averaged over tokens.
- ``skip_loss``: the loss increase when a layer is skipped (needs batches with labels).

Interface: ``kind`` (``"width"`` or ``"depth"``), ``needs_batches``, ``needs_gradients``, ``observe(family, batches)``
(forward passes over batches), ``accumulate(family)`` (after a backward), and ``scores(family)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_compress.distributed import all_reduce_sum_
from hf_compress.structured.families import Family
from hf_compress.targets import weight_out_in


@dataclass
class StructureScores:
    """Per layer: ``heads`` [num_heads], ``neurons`` [intermediate]; global ``channels`` [hidden], ``layers``."""

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    channels: torch.Tensor | None = None
    layers: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"heads.{i}": t for i, t in self.heads.items()}
        out.update({f"neurons.{i}": t for i, t in self.neurons.items()})
        if self.channels is not None:
            out["channels"] = self.channels
        if self.layers is not None:
            out["layers"] = self.layers
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> StructureScores:
        scores = cls(channels=tensors.get("channels"), layers=tensors.get("layers"))
        for key, value in tensors.items():
            kind, _, index = key.partition(".")
            if kind == "heads":
                scores.heads[int(index)] = value
            elif kind == "neurons":
                scores.neurons[int(index)] = value
        return scores

    def all_reduce_(self) -> StructureScores:
        """Sum across ranks so every rank chooses the same structures."""
        for tensor in self.tensors().values():
            all_reduce_sum_(tensor)
        return self


def _run(model: nn.Module, batch: dict) -> torch.Tensor | None:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    output = model(**inputs)
    return getattr(output, "loss", None)


def forward_with_hooks(model: nn.Module, batches: Iterable[dict], handles: list) -> None:
    """Run ``batches`` through ``model`` in eval mode without gradients, then restore the mode and remove the hook
    ``handles`` (also on error)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                _run(model, batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- weights per structure
def structure_sums(family: Family, values: dict[nn.Module, torch.Tensor]) -> StructureScores:
    """Sum per structure of a per-weight tensor (``values[module]`` shaped like ``module.weight``)."""
    shape = family.shape()
    scores = StructureScores(channels=torch.zeros(shape.hidden))
    hd = shape.head_dim

    def oi(module):
        return weight_out_in(values[module], module).float()

    for index, layer in enumerate(family.layer_list()):
        parts = family.layer_parts(layer)
        group = shape.num_heads // shape.num_kv_heads
        o = oi(parts.o)  # [hidden, heads * hd]
        heads = o.reshape(o.shape[0], shape.num_heads, hd).sum(dim=(0, 2))
        if parts.qkv is not None:
            qkv = oi(parts.qkv).reshape(3, shape.num_heads, hd, -1).sum(dim=(2, 3))
            heads = heads + qkv.sum(0)
            channel_in = oi(parts.qkv).sum(0)
        else:
            q, k, v = oi(parts.q), oi(parts.k), oi(parts.v)
            heads = heads + q.reshape(shape.num_heads, -1).sum(1)
            kv = (k.reshape(shape.num_kv_heads, -1).sum(1) + v.reshape(shape.num_kv_heads, -1).sum(1)) / group
            heads = heads + kv.repeat_interleave(group)
            channel_in = q.sum(0) + k.sum(0) + v.sum(0)
        neurons = oi(parts.mlp_output).sum(0)
        for module in parts.mlp_inputs:
            neurons = neurons + oi(module).sum(1)
            channel_in = channel_in + oi(module).sum(0)
        scores.heads[index] = heads
        scores.neurons[index] = neurons
        scores.channels += channel_in + o.sum(1) + oi(parts.mlp_output).sum(1)
    for embedding in family.embeddings():
        if embedding in values:
            scores.channels += values[embedding].float().sum(0)
    return scores


class MagnitudeStructureCriterion:
    """L2 norm of each structure's weights."""

    kind = "width"
    needs_batches = False
    needs_gradients = False

    def observe(self, family: Family, batches: Iterable[dict]) -> None:
        return None

    def accumulate(self, family: Family) -> None:
        return None

    def scores(self, family: Family) -> StructureScores:
        modules = _weighted_modules(family)
        sums = structure_sums(family, {m: m.weight.detach() ** 2 for m in modules})
        return _sqrt(sums)


class TaylorStructureCriterion:
    """``|sum(w * g)|`` per structure, accumulated over steps (call ``accumulate`` after each backward)."""

    kind = "width"
    needs_batches = False
    needs_gradients = True

    def __init__(self) -> None:
        self.total: StructureScores | None = None
        self.steps = 0

    def observe(self, family: Family, batches: Iterable[dict]) -> None:
        """Calibration use: one backward per batch (gradients are zeroed afterwards)."""
        model = family.model
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = _run(model, batch)
            if loss is None:
                raise ValueError("criterion 'taylor' needs batches with labels (the model must return a loss)")
            loss.backward()
            self.accumulate(family)
        model.zero_grad(set_to_none=True)

    def accumulate(self, family: Family) -> None:
        modules = _weighted_modules(family)
        if all(m.weight.grad is None for m in modules):
            return
        values = {
            m: m.weight.detach() * m.weight.grad.detach() if m.weight.grad is not None else torch.zeros_like(m.weight)
            for m in modules
        }
        step = _abs(structure_sums(family, values))
        self.total = step if self.total is None else _add(self.total, step)
        self.steps += 1

    def scores(self, family: Family) -> StructureScores:
        if self.total is None:
            raise ValueError("criterion 'taylor' has no gradients accumulated yet")
        return self.total


class ActivationStructureCriterion:
    """Minitron: activations per neuron (MLP intermediate), head (attention output), channel (norm outputs)."""

    kind = "width"
    needs_batches = True
    needs_gradients = False

    def __init__(self, aggregate: str = "mean") -> None:
        if aggregate not in ("mean", "l2"):
            raise ValueError(f"criterion_kwargs.aggregate must be 'mean' or 'l2'; got {aggregate!r}")
        self.aggregate = aggregate
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens = 0
        self._handles: list = []

    def _add(self, key: str, activations: torch.Tensor) -> None:
        flat = activations.detach().float().reshape(-1, activations.shape[-1])
        value = flat.abs().sum(0) if self.aggregate == "mean" else flat.pow(2).sum(0)
        self.sums[key] = self.sums[key] + value if key in self.sums else value

    def attach(self, family: Family) -> None:
        """Register the forward hooks (training-batch use); :meth:`detach` removes them."""
        shape = family.shape()
        for index, layer in enumerate(family.layer_list()):
            parts = family.layer_parts(layer)

            def neurons_hook(module, args, index=index):
                self._add(f"neurons.{index}", args[0])

            def heads_hook(module, args, index=index):
                x = args[0]
                per_head = x.reshape(*x.shape[:-1], shape.num_heads, shape.head_dim).float().norm(dim=-1)
                self._add(f"heads.{index}", per_head)
                if index == 0:
                    self.tokens += per_head.reshape(-1, shape.num_heads).shape[0]

            self._handles.append(parts.mlp_output.register_forward_pre_hook(neurons_hook))
            self._handles.append(parts.o.register_forward_pre_hook(heads_hook))
            for norm in parts.norms:
                self._handles.append(norm.register_forward_hook(lambda m, a, out: self._add("channels", out)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def observe(self, family: Family, batches: Iterable[dict]) -> None:
        self.attach(family)
        handles, self._handles = self._handles, []
        forward_with_hooks(family.model, batches, handles)

    def accumulate(self, family: Family) -> None:
        return None

    def scores(self, family: Family) -> StructureScores:
        if not self.sums:
            raise ValueError("criterion 'activation' has seen no batches yet")
        scores = StructureScores.from_tensors(dict(self.sums))
        if self.aggregate == "l2":
            scores = _sqrt(scores)
        return scores


class _LayerScoreCriterion:
    """Shared plumbing of the depth criteria: per-layer totals summed over ``observe`` calls."""

    name = ""
    kind = "depth"
    needs_batches = True
    needs_gradients = False

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None

    def _add(self, total: torch.Tensor) -> None:
        self.total = total if self.total is None else self.total + total

    def accumulate(self, family: Family) -> None:
        return None

    def scores(self, family: Family) -> StructureScores:
        if self.total is None:
            raise ValueError(f"criterion {self.name!r} has seen no batches yet")
        return StructureScores(layers=self.total.clone())


class BlockInfluenceCriterion(_LayerScoreCriterion):
    """ShortGPT block influence: ``1 - cos(input, output)`` of each layer, averaged over tokens."""

    name = "block_influence"

    def observe(self, family: Family, batches: Iterable[dict]) -> None:
        layers = family.layer_list()
        total = torch.zeros(len(layers))
        handles = []

        def hook(module, args, kwargs, output, index):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            total[index] += float((1 - cos).mean())

        for index, layer in enumerate(layers):
            handles.append(
                layer.register_forward_hook(lambda m, a, k, o, i=index: hook(m, a, k, o, i), with_kwargs=True)
            )
        forward_with_hooks(family.model, batches, handles)
        self._add(total)


class SkipLossCriterion(_LayerScoreCriterion):
    """Loss increase when each layer is skipped (its output replaced by its input)."""

    name = "skip_loss"

    def observe(self, family: Family, batches: Iterable[dict]) -> None:
        batches = list(batches)
        layers = family.layer_list()

        def mean_loss() -> float:
            losses = []
            with torch.no_grad():
                for batch in batches:
                    loss = _run(family.model, batch)
                    if loss is None:
                        raise ValueError(
                            "criterion 'skip_loss' needs batches with labels (the model must return a loss)"
                        )
                    losses.append(float(loss))
            return sum(losses) / len(losses)

        base = mean_loss()
        total = torch.zeros(len(layers))
        for index, layer in enumerate(layers):
            handle = layer.register_forward_hook(_skip_hook, with_kwargs=True)
            try:
                total[index] = mean_loss() - base
            finally:
                handle.remove()
        self._add(total)


def _skip_hook(module, args, kwargs, output):
    x = args[0] if args else kwargs["hidden_states"]
    if isinstance(output, tuple):
        return (x, *output[1:])
    return x


def _weighted_modules(family: Family) -> list[nn.Module]:
    modules = []
    for layer in family.layer_list():
        parts = family.layer_parts(layer)
        modules += parts.readers + parts.writers
    return modules + list(family.embeddings())


def _map(scores: StructureScores, fn) -> StructureScores:
    return StructureScores.from_tensors({k: fn(v) for k, v in scores.tensors().items()})


def _sqrt(scores: StructureScores) -> StructureScores:
    return _map(scores, lambda t: t.clamp_min(0).sqrt())


def _abs(scores: StructureScores) -> StructureScores:
    return _map(scores, torch.abs)


def _add(a: StructureScores, b: StructureScores) -> StructureScores:
    other = b.tensors()
    return StructureScores.from_tensors({k: v + other[k] for k, v in a.tensors().items()})


BUILTIN_STRUCTURE_CRITERIA = {
    "activation": ActivationStructureCriterion,
    "taylor": TaylorStructureCriterion,
    "magnitude": MagnitudeStructureCriterion,
    "block_influence": BlockInfluenceCriterion,
    "skip_loss": SkipLossCriterion,
}
