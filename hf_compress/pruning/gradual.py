"""A gradual pruner that needs no Trainer: :class:`GradualPruner` (``update(step)`` after each optimizer step).

The math lives in :mod:`~hf_compress.pruning.schedules`, :mod:`~hf_compress.pruning.patterns`,
:mod:`~hf_compress.pruning.scope`, :mod:`~hf_compress.pruning.heads`, :mod:`~hf_compress.pruning.criteria` and
:mod:`~hf_compress.pruning.masks`; this class keeps the masks and calls them at the right steps.

A hand-written loop:

```python
>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from hf_compress import PruningConfig
>>> from hf_compress.pruning.gradual import GradualPruner
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
>>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
>>> pruner = GradualPruner(model, PruningConfig(target_sparsity=0.5, start=0, end=4, frequency=2), total_steps=6)
>>> for step in range(1, 7):
...     ids = torch.randint(0, 64, (2, 8))
...     model(ids, labels=ids).loss.backward()
...     pruner.before_optimizer_step()
...     optimizer.step(); optimizer.zero_grad()
...     pruner.update(step)
>>> pruner.finish()
>>> round(pruner.sparsity_logs(6)["sparsity"], 2)
0.5

```
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import nn

from hf_compress import distributed
from hf_compress.peft_support import lora_hooks as peft_lora_hooks
from hf_compress.pruning.config import PruningConfig
from hf_compress.pruning.criteria import PruningCriterion, check_criterion_scores
from hf_compress.pruning.heads import AttentionHeads, find_attention_heads
from hf_compress.pruning.masks import KeepMasks, mask_fingerprint, mask_from_weight, pack_bits, unpack_bits
from hf_compress.pruning.patterns import (
    check_pattern_fits,
    keep_from_pruned_units,
    lowest_units,
    pattern_family,
    unit_scores,
    units_for_sparsity,
)
from hf_compress.pruning.schedules import (
    is_mask_update_step,
    resolve_start_end,
    scheduled_sparsity,
    warn_if_schedule_outruns,
)
from hf_compress.pruning.scope import select_global
from hf_compress.registry import get_registry
from hf_compress.targets import find_target_modules, in_out_features

logger = logging.getLogger(__name__)


@dataclass
class _Group:
    """What is pruned together at one sparsity: one module, or one attention block for the ``head`` pattern."""

    name: str
    modules: list[str]
    final_sparsity: float
    in_global_pool: bool
    heads: AttentionHeads | None = None
    initial_sparsity: float = 0.0


def resolve_groups(model: nn.Module, config: PruningConfig) -> tuple[dict[str, nn.Module], list[_Group]]:
    """Targeted modules and pruning groups; every model-dependent check raises here."""
    pattern = config.normalized_pattern
    modules = find_target_modules(model, config.targets, config.exclude, field="targets")
    if not modules:
        raise ValueError("targets: no Linear/Conv1D module to prune after applying targets and exclude")
    for name, module in modules.items():
        check_pattern_fits(pattern, name, in_out_features(module)[0], field="pattern")
    overrides = [(re.compile(regex), float(value)) for regex, value in (config.per_layer or {}).items()]
    for regex, _ in overrides:
        if not any(regex.search(name) for name in modules):
            examples = ", ".join(list(modules)[:6])
            raise ValueError(
                f"per_layer: pattern {regex.pattern!r} matches no targeted module; targeted modules look like: "
                f"{examples}"
            )

    def sparsity_for(name: str) -> tuple[float, bool]:
        for regex, value in overrides:
            if regex.search(name):
                return value, False
        return config.final_sparsity, True

    groups = []
    if pattern_family(pattern) == "head":
        blocks = find_attention_heads(model, list(modules))
        modules = {name: modules[name] for block in blocks for name in block.modules}
        for block in blocks:
            sparsity, pooled = sparsity_for(block.name)
            groups.append(_Group(block.name, block.modules, sparsity, pooled, heads=block))
    else:
        for name in modules:
            sparsity, pooled = sparsity_for(name)
            groups.append(_Group(name, [name], sparsity, pooled))
    return modules, groups


class GradualPruner:
    """Masks that follow a sparsity schedule while ``model`` trains.

    Args:
        model (`nn.Module`): the (unwrapped) model; a PeftModel's LoRA updates are masked too.
        config (`PruningConfig`): what to prune, how much and when.
        total_steps (`int`): optimizer steps of the run (resolves fractional ``start`` / ``end``).
        step (`int`, *optional*, defaults to 0): the optimizer step training starts from.
        saved (`tuple`, *optional*): ``(tensors, meta)`` from :meth:`state` to resume from.

    Call :meth:`before_optimizer_step` before ``optimizer.step()`` (criteria that read gradients), :meth:`update`
    after it with the number of optimizer steps taken, and :meth:`finish` at the end (bakes the masks).
    """

    def __init__(self, model: nn.Module, config: PruningConfig, total_steps: int, step: int = 0, saved=None) -> None:
        self.config = config
        self.pattern = config.normalized_pattern
        self.last_update_step: int | None = None
        self.mask_divergences = 0
        self.initial_sparsity = 0.0
        self._pruned_any: dict[str, bool] = {}
        self._layer_sparsity: dict[str, float] = {}
        self._scores_checked: set[str] = set()
        self.start_step, self.end_step = resolve_start_end(config.start, config.end, total_steps)
        warn_if_schedule_outruns(config, self.start_step, self.end_step, total_steps)
        self.modules, self.groups = resolve_groups(model, config)
        self.keep_masks = KeepMasks(self.modules)  # partitioned like the weights under ZeRO-3 / FSDP2
        criterion_cls = get_registry().get("pruning_criterion", config.criterion)
        refuse_unsupported_engine(config, criterion_cls, self.modules)
        # PEFT: LoRA updates over pruned base layers are masked too (no-op for other models)
        peft_lora_hooks.attach_pruning(
            model, self.modules, self._mask_or_none, needs_weight_gradients=criterion_cls.uses_gradients
        )
        self.criterion: PruningCriterion = criterion_cls(seed=config.seed, **(config.criterion_kwargs or {}))
        self.criterion.attach(self.modules)
        self.active = True
        if saved is not None:
            self._restore(*saved)
        else:
            if step > 0:
                logger.warning(
                    "hf_compress: resuming without saved pruning state; masks restart from the weights' zeros"
                )
            for name, module in self.modules.items():
                self.keep_masks.set(name, mask_from_weight(module))
            self._measure_initial_sparsity()
            if step == 0 and is_mask_update_step(0, self.start_step, self.end_step, config.frequency):
                self._update_masks(0)
        self._refresh_statistics()
        self.keep_masks.apply_()

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{module name: bool [out, in]}``, True = kept. Under ZeRO-3 / FSDP2 this gathers every mask whole (a
        collective: read it on every rank); :attr:`keep_masks` serves one module at a time."""
        return {name: self.keep_masks.full(name) for name in self.keep_masks.names()}

    def _mask_or_none(self, name: str) -> torch.Tensor | None:
        return self.keep_masks.full(name) if name in self.keep_masks else None

    def _measure_initial_sparsity(self) -> None:
        pooled_pruned = pooled_total = 0
        for group in self.groups:
            units, unit_size = self._unit_scores(group, scores=None)
            pruned = int((units == float("-inf")).sum())
            group.initial_sparsity = pruned / units.numel()
            if group.in_global_pool:
                pooled_pruned += pruned * unit_size
                pooled_total += units.numel() * unit_size
        self.initial_sparsity = pooled_pruned / pooled_total if pooled_total else 0.0
        if self.initial_sparsity > self.config.final_sparsity:
            logger.warning(
                "hf_compress: the model is already %.2f%% sparse, above target_sparsity=%s; its zeros are kept",
                100 * self.initial_sparsity,
                self.config.final_sparsity,
            )

    # ---------------------------------------------------------------- mask updates
    def _module_scores(self, group: _Group) -> dict[str, torch.Tensor]:
        with distributed.gathered_weights(self.modules[name] for name in group.modules):  # ZeRO-3: this group only
            scores = {name: self.criterion.scores(name, self.modules[name]) for name in group.modules}
            for name in set(scores) - self._scores_checked:  # plugin output is checked once, at its first use
                check_criterion_scores(self.config.criterion, name, self.modules[name], scores[name])
                self._scores_checked.add(name)
        return scores

    def _group_keeps(self, group: _Group) -> dict[str, torch.Tensor]:
        """The whole masks of one group (ZeRO-3 / FSDP2: gathered, this group only)."""
        return {name: self.keep_masks.full(name) for name in group.modules}

    def _unit_scores(
        self, group: _Group, scores: dict[str, torch.Tensor] | None, keeps: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, int]:
        """Unit scores of a group (``-inf`` = already pruned); ``scores=None`` gives zeros (for counting only)."""
        keeps = self._group_keeps(group) if keeps is None else keeps
        if scores is None:
            scores = {name: torch.zeros(keep.shape, device=keep.device) for name, keep in keeps.items()}
        if group.heads is not None:
            units = group.heads.unit_scores(scores).to(keeps[group.modules[0]].device)
            units.masked_fill_(group.heads.pruned_units(keeps).to(units.device), float("-inf"))
            return units, group.heads.unit_size
        name = group.modules[0]
        return unit_scores(scores[name], self.pattern, keeps[name])

    def _group_numel(self, group: _Group) -> int:
        """Weights a group's units stand for (units times unit size)."""
        if group.heads is not None:
            return group.heads.num_units * group.heads.unit_size
        return self.keep_masks.numel(group.modules[0])

    def _group_target(self, group: _Group, step: int, initial: float, final: float) -> float:
        schedule = get_registry().get("schedule", self.config.schedule)
        initial = self.config.initial_sparsity if self.config.initial_sparsity is not None else initial
        return scheduled_sparsity(schedule, step, self.start_step, self.end_step, initial, max(final, initial))

    def scheduled_target(self, step: int) -> float:
        """The schedule's sparsity for the global target at ``step`` (what ``sparsity_target`` logs)."""
        return self._group_target(
            _Group("", [], self.config.final_sparsity, True), step, self.initial_sparsity, self.config.final_sparsity
        )

    def _apply_pruned_units(
        self, group: _Group, pruned: torch.Tensor, keeps: dict[str, torch.Tensor] | None = None
    ) -> None:
        keeps = self._group_keeps(group) if keeps is None else keeps
        if group.heads is not None:
            keeps = {name: keep.clone() for name, keep in keeps.items()}
            group.heads.apply_pruned_units(pruned.cpu(), keeps)
            for name, keep in keeps.items():
                self.keep_masks.set(name, keep)
            return
        name = group.modules[0]
        old = keeps[name]
        self.keep_masks.set(name, keep_from_pruned_units(pruned, self.pattern, old.shape).to(old.device) & old)

    @torch.no_grad()
    def _update_masks(self, step: int) -> None:
        if self.criterion.data_dependent:
            for tensor in self.criterion.local_statistics().values():
                distributed.all_reduce_mean_(tensor)
        pooled = self.config.scope == "global"
        layer_groups = [g for g in self.groups if not (pooled and g.in_global_pool)]
        pool = [g for g in self.groups if pooled and g.in_global_pool]
        for group in layer_groups:
            keeps = self._group_keeps(group)
            units, _ = self._unit_scores(group, self._module_scores(group), keeps)
            target = self._group_target(group, step, group.initial_sparsity, group.final_sparsity)
            self._apply_pruned_units(group, lowest_units(units, units_for_sparsity(target, units.numel())), keeps)
        if pool:
            score_fns = [lambda group=group: self._unit_scores(group, self._module_scores(group)) for group in pool]
            total = sum(self._group_numel(group) for group in pool)
            target = self._group_target(pool[0], step, self.initial_sparsity, self.config.final_sparsity)
            for group, pruned in zip(pool, select_global(score_fns, int(round(target * total)))):
                self._apply_pruned_units(group, pruned)
        self._agree_across_ranks()
        if self.criterion.updates_weights:  # e.g. sparsegpt: compensate the removed weights with the kept ones
            for name, module in self.modules.items():
                with distributed.gathered_weights([module]):
                    self.criterion.update_weights(name, module, self.keep_masks.full(name))
        self.last_update_step = step
        self._refresh_statistics()

    def _agree_across_ranks(self) -> None:
        """Compare a checksum of the masks each rank computed; should they differ, make them one.

        Unpartitioned masks become rank 0's. Masks partitioned like the weights (ZeRO-3, FSDP2) are pieced together
        from each rank's own piece, the same whole on every rank.
        """
        if not distributed.is_distributed():
            return
        names = self.keep_masks.names()
        checksums = distributed.all_gather_objects([self.keep_masks.fingerprint(name) for name in names])
        if all(checksum == checksums[0] for checksum in checksums):
            return
        self.mask_divergences += 1
        logger.warning("hf_compress: pruning masks differed across ranks; using rank 0's masks")
        for name in names:
            as_bytes = self.keep_masks.full(name).to(torch.uint8)
            distributed.broadcast_(as_bytes, src=0)
            self.keep_masks.set(name, as_bytes.bool())

    def _refresh_statistics(self) -> None:
        self._layer_sparsity = {
            name: 1.0 - self.keep_masks.kept(name) / self.keep_masks.numel(name) for name in self.keep_masks.names()
        }
        self._pruned_any = {name: value > 0 for name, value in self._layer_sparsity.items()}

    # ---------------------------------------------------------------- training steps
    def before_optimizer_step(self) -> None:
        """Criteria read the gradients (movement); with ``mask_gradients`` pruned weights get none."""
        if not self.active:
            return
        if self.criterion.uses_gradients:
            self.criterion.on_gradients(self.modules)
        if self.config.mask_gradients:
            self.keep_masks.apply_to_gradients_(self._nontrivial_names())

    def update(self, step: int) -> None:
        """After optimizer step ``step`` (1-based): update the masks on a mask-update step, and re-apply them."""
        if not self.active:
            return
        if step != self.last_update_step and is_mask_update_step(
            step, self.start_step, self.end_step, self.config.frequency
        ):
            self._update_masks(step)
        self.keep_masks.apply_(self._nontrivial_names())

    def _nontrivial_names(self) -> list[str]:
        return [name for name in self.keep_masks.names() if self._pruned_any.get(name, True)]

    def sparsity_logs(self, step: int) -> dict[str, float]:
        """``sparsity`` (current, over the pruned modules), ``sparsity_target`` (the schedule's value in force),
        ``sparsity_layer_min`` and ``sparsity_layer_max``."""
        names = self.keep_masks.names()
        pruned = sum(self._layer_sparsity[name] * self.keep_masks.numel(name) for name in names)
        total = sum(self.keep_masks.numel(name) for name in names)
        last = self.last_update_step
        target = self.initial_sparsity if last is None else self.scheduled_target(min(step, last))
        return {
            "sparsity": round(pruned / total, 6),
            "sparsity_target": round(target, 6),
            "sparsity_layer_min": round(min(self._layer_sparsity.values()), 6),
            "sparsity_layer_max": round(max(self._layer_sparsity.values()), 6),
        }

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, meta)`` to checkpoint: masks, criterion tensors, schedule position."""
        tensors = {}
        for name in self.keep_masks.names():  # whole masks, one at a time, bit-packed: a checkpoint is portable
            tensors[f"mask_bits.{name}"] = pack_bits(self.keep_masks.full(name))
        tensors.update({f"criterion.{key}": value for key, value in self.criterion.state_dict().items()})
        meta = {
            "config": self.config.to_dict(),
            "start_step": self.start_step,
            "end_step": self.end_step,
            "last_update_step": self.last_update_step,
            "initial_sparsity": self.initial_sparsity,
            "group_initial_sparsity": {group.name: group.initial_sparsity for group in self.groups},
            "mask_divergences": self.mask_divergences,
            "mask_shapes": {name: list(self.keep_masks.shape(name)) for name in self.keep_masks.names()},
        }
        return tensors, meta

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        shapes = meta.get("mask_shapes", {})
        missing = [
            name
            for name in self.modules
            if f"mask.{name}" not in tensors and not (f"mask_bits.{name}" in tensors and name in shapes)
        ]
        if missing:
            raise ValueError(
                f"targets: the checkpoint's pruning state has no masks for {missing[:4]}; resume with the same "
                "targets/exclude/pattern as the run that wrote it"
            )
        for name, module in self.modules.items():
            if f"mask_bits.{name}" in tensors:
                mask = unpack_bits(tensors[f"mask_bits.{name}"], torch.Size(shapes[name]))
            else:  # written before masks were bit-packed
                mask = tensors[f"mask.{name}"].to(torch.bool)
            self.keep_masks.set(name, mask.to(module.weight.device))
        prefix = "criterion."
        self.criterion.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        self.last_update_step = meta.get("last_update_step")
        self.initial_sparsity = float(meta.get("initial_sparsity", 0.0))
        saved_initial = meta.get("group_initial_sparsity", {})
        for group in self.groups:
            group.initial_sparsity = float(saved_initial.get(group.name, 0.0))
        self.mask_divergences = int(meta.get("mask_divergences", 0))

    def finish(self) -> None:
        """Bake the masks into the weights (the weights themselves hold the zeros) and detach the criterion."""
        if not self.active:
            return
        self.keep_masks.apply_()
        self.criterion.detach()
        self.active = False


@torch.no_grad()
def refuse_unsupported_engine(config: PruningConfig, criterion_cls, modules: dict[str, nn.Module]) -> None:
    """DeepSpeed steps the optimizer inside backward, so no callback event sees gradients: refuse what needs them."""
    if distributed.gradients_visible_to_callbacks(module.weight for module in modules.values()):
        return
    needs = []
    if criterion_cls.uses_gradients:
        needs.append(f"criterion={config.criterion!r} (it reads gradients)")
    if config.mask_gradients:
        needs.append("mask_gradients=True")
    if needs:
        raise ValueError(
            f"{' and '.join(needs)}: not supported under DeepSpeed ZeRO, whose engine.step() consumes the "
            "gradients inside backward, before any callback event; use criterion 'magnitude', 'sparsegpt' or "
            "'random' with mask_gradients=False (masks still reach the fp32 master after every step)"
        )


def mask_checksum(masks: dict[str, torch.Tensor]) -> list[tuple[str, int, int, int]]:
    """A cheap fingerprint of masks: per module, kept count and index-weighted row and column sums of the mask."""
    return [(name, *mask_fingerprint(mask)) for name, mask in masks.items()]
