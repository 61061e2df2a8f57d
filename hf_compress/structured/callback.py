"""`StructuredPruningCallback`: structured pruning in an unmodified Trainer, ending in a physically smaller model.

```python
from hf_compress import DistillationCallback, DistillationConfig, StructuredPruningCallback, StructuredPruningConfig

config = StructuredPruningConfig(shape={"num_key_value_heads": 2, "intermediate_size": 512}, mode="one_shot")
trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
trainer.add_callback(StructuredPruningCallback(config))
trainer.add_callback(DistillationCallback(teacher, DistillationConfig(alpha=1.0, temperature=1.0)))  # recovery
trainer.train()
trainer.save_model()  # the smaller checkpoint; AutoModelForCausalLM loads it
```

``mode="one_shot"``: at train begin, scores on ``calibration_batches`` training batches choose the structures (for
``target_params``, a budget search picks the shape first); they are masked (zeroed, and kept zero after every
optimizer step) while the model recovers. ``mode="gradual"``: the shape follows the schedule from the model's to the
target between ``start_step`` and ``end_step``, re-scoring every ``update_every`` steps. Either way
:func:`hf_compress.shrink` removes the structures at train end. Every rank chooses the same structures (scores are
summed across ranks), and the choice is checkpointed, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import itertools
import json
import logging
import os

import torch
from transformers import TrainerCallback

from hf_compress.config_base import resolve_step
from hf_compress.distributed import is_main_process, unwrap_model
from hf_compress.structured.apply import choose_one_shot_, rotate_if_wanted_, rotation_message, target_shape
from hf_compress.structured.config import StructuredPruningConfig
from hf_compress.structured.criteria import StructureScores, _skip_hook
from hf_compress.structured.families import Shape, family_of
from hf_compress.structured.selection import interpolate_shape, select_structures
from hf_compress.structured.shrink import shrink
from hf_compress.structured.structures import StructureSelection, zero_structures_
from hf_compress.trainer import add_to_logs, checkpoint_dir, load_state, resume_folder, save_state

logger = logging.getLogger(__name__)
STATE_NAME = "hf_compress_structured"


def _pin_removed(scores: StructureScores, removed: StructureSelection, group_size: int) -> StructureScores:
    """Scores with already-removed structures at -inf, so a gradual run only ever removes more."""
    tensors = {k: v.clone().float() for k, v in scores.tensors().items()}

    def pin(key: str, indices: list[int]) -> None:
        if key in tensors and indices:
            tensors[key][torch.tensor(indices)] = -float("inf")

    pin("layers", removed.layers)
    for index, groups in removed.kv_groups.items():
        pin(f"heads.{index}", [g * group_size + j for g in groups for j in range(group_size)])
    for index, heads in removed.query_heads.items():
        pin(f"heads.{index}", heads)
    for index, neurons in removed.neurons.items():
        pin(f"neurons.{index}", neurons)
    pin("channels", removed.channels)
    return StructureScores.from_tensors(tensors)


class StructuredPruningCallback(TrainerCallback):
    """Masks whole structures during training and shrinks the model at train end (see the module docstring).

    Args:
        config (`StructuredPruningConfig`): what to prune, to what size, how.
    """

    def __init__(self, config: StructuredPruningConfig | None = None, **fields) -> None:
        if config is None:
            config = StructuredPruningConfig(**fields)
        elif fields:
            raise ValueError("pass either a StructuredPruningConfig or its fields, not both")
        if not isinstance(config, StructuredPruningConfig):
            raise ValueError(f"config must be a StructuredPruningConfig; got {type(config).__name__}")
        self.config = config
        self.selection = StructureSelection()
        self.shape: Shape | None = None
        self.before: Shape | None = None
        self.search: dict | None = None
        self.messages: list[str] = []
        self.width_criterion = None
        self._skip_handles: list = []
        self._start = self._end = 0

    # ------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        model = unwrap_model(model)
        family = family_of(model)  # refuses models it cannot shrink, before any step
        self.before = family.shape()
        self._start = resolve_step(self.config.start_step, state.max_steps)
        self._end = max(self._start, resolve_step(self.config.end_step, state.max_steps))
        folder = resume_folder(args, state)
        if folder is not None and self._restore(folder, model):
            return
        batches = list(itertools.islice(iter(train_dataloader), self.config.calibration_batches))
        if not batches:
            raise ValueError("structured pruning needs at least one training batch to score structures")
        self.width_criterion, _ = self.config.make_criteria()
        if self.config.mode == "one_shot":
            choice = choose_one_shot_(model, self.config, batches)
            self.shape, self.selection, self.messages = choice.shape, choice.selection, choice.messages
            self.search = None if choice.search is None else choice.search.to_dict()
            self._apply(model)
            self._log(state, model)
        else:
            self.shape, self.messages, _ = target_shape(model, self.config, batches, StructureScores())
            shares = rotate_if_wanted_(model, self.config, batches)
            if shares is not None:
                self.messages.append(rotation_message(shares, self.shape.hidden))
            if self.width_criterion.needs_batches:
                self.width_criterion.attach(family)
        for message in self.messages:
            logger.warning("hf_compress structured: %s", message)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.config.mode == "gradual" and self.width_criterion is not None and self._active(state.global_step):
            if self.width_criterion.needs_gradients:
                self.width_criterion.accumulate(family_of(unwrap_model(model)))

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model = unwrap_model(model)
        step = state.global_step + 1  # the step being finished
        if (
            self.config.mode == "gradual"
            and self._active(step - 1)
            and (step - self._start) % self.config.update_every == 0
        ):
            self._update(model, step)
        elif not self.selection.is_empty():
            self._zero(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.config.mode == "gradual" and state.global_step == self._end + 1 and self.width_criterion is not None:
            detach = getattr(self.width_criterion, "detach", None)
            if detach is not None:
                detach()

    def on_save(self, args, state, control, model=None, **kwargs):
        tensors = {}
        accumulated = self._criterion_state()
        tensors.update({f"criterion.{k}": v for k, v in accumulated.items()})
        meta = {
            "config": self._identity(),
            "selection": self.selection.to_dict(),
            "shape": None if self.shape is None else self.shape.to_dict(),
            "search": self.search,
            "messages": self.messages,
            "criterion_steps": getattr(self.width_criterion, "steps", 0),
            "criterion_tokens": getattr(self.width_criterion, "tokens", 0),
        }
        save_state(checkpoint_dir(args, state), STATE_NAME, tensors, meta)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model = unwrap_model(model)
        detach = getattr(self.width_criterion, "detach", None)
        if detach is not None:
            detach()
        for handle in self._skip_handles:
            handle.remove()
        self._skip_handles = []
        if not self.config.shrink_at_end:
            return
        family = family_of(model)
        if self.config.mode == "gradual" and self.shape is not None:
            self._update(model, self._end + 1, final=True)
        self._zero(model)
        drop = self.selection.layers if not family.pre_norm else None
        _, plan = shrink(model, round_to=self.config.round_to, drop_layers=drop, inplace=True, return_plan=True)
        record_ = dict(model.config.hf_compress_structured)
        record_["search"] = self.search
        record_["messages"] = list(self.messages) + [m for m in record_["messages"] if m not in self.messages]
        model.config.hf_compress_structured = record_
        if self.search is not None and is_main_process():
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "structured_search.json"), "w") as handle:
                json.dump(self.search, handle, indent=2)
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        state.log_history.append({"structured/params": params, **plan.to_dict(), "step": state.global_step})
        logger.warning("hf_compress structured: shrunk %s -> %s", plan.before, plan.after)

    # ------------------------------------------------------------ helpers
    def _active(self, step: int) -> bool:
        return self._start <= step <= self._end

    def _identity(self) -> dict:
        keys = ("shape", "target_params", "mode", "criterion", "depth_criterion", "schedule", "start_step", "end_step")
        return {k: self.config.to_dict()[k] for k in keys}

    def _apply(self, model) -> None:
        family = family_of(model)
        self._zero(model)
        if not family.pre_norm and self.selection.layers and not self._skip_handles:
            layers = family.layer_list()
            self._skip_handles = [
                layers[i].register_forward_hook(_skip_hook, with_kwargs=True) for i in self.selection.layers
            ]

    def _zero(self, model) -> None:
        family = family_of(model)
        selection = self.selection
        if not family.pre_norm:
            selection = StructureSelection(**{**selection.__dict__, "layers": []})
        zero_structures_(family, selection)

    def _update(self, model, step: int, final: bool = False) -> None:
        from hf_compress.registry import get_registry

        family = family_of(model)
        span = max(1, self._end - self._start)
        progress = min(1.0, max(0.0, (step - self._start) / span))
        fraction = 1.0 if final else float(get_registry().get("schedule", self.config.schedule)(progress))
        shape = interpolate_shape(self.before, self.shape, fraction, explicit_head_dim=family.explicit_head_dim)
        scores = self.width_criterion.scores(family) if self.width_criterion is not None else StructureScores()
        scores = StructureScores.from_tensors(scores.tensors())
        if shape.num_layers < self.before.num_layers:
            scores.layers = _layer_writer_norms(family)
        group_size = self.before.num_heads // self.before.num_kv_heads
        scores = _pin_removed(scores.all_reduce_(), self.selection, group_size)
        self.selection = select_structures(family, scores, shape)
        self._apply(model)

    def _criterion_state(self) -> dict[str, torch.Tensor]:
        criterion = self.width_criterion
        if criterion is None:
            return {}
        if getattr(criterion, "sums", None):
            return dict(criterion.sums)
        total = getattr(criterion, "total", None)
        if isinstance(total, StructureScores):
            return total.tensors()
        return {}

    def _restore(self, folder: str, model) -> bool:
        loaded = load_state(folder, STATE_NAME)
        if loaded is None:
            return False
        tensors, meta = loaded
        if meta["config"] != self._identity():
            raise ValueError(
                f"structured pruning: the checkpoint {folder} was written with "
                f"{json.dumps(meta['config'], sort_keys=True)}, but this run asks for "
                f"{json.dumps(self._identity(), sort_keys=True)}; resume with the same structure and target, or "
                "start a new run"
            )
        self.selection = StructureSelection.from_dict(meta["selection"])
        self.shape = None if meta["shape"] is None else Shape(**meta["shape"])
        self.search, self.messages = meta.get("search"), meta.get("messages", [])
        family = family_of(model)
        self.width_criterion, _ = self.config.make_criteria()
        accumulated = {k.removeprefix("criterion."): v for k, v in tensors.items() if k.startswith("criterion.")}
        if accumulated:
            if hasattr(self.width_criterion, "sums"):
                self.width_criterion.sums = accumulated
                self.width_criterion.tokens = meta.get("criterion_tokens", 0)
            else:
                self.width_criterion.total = StructureScores.from_tensors(accumulated)
                self.width_criterion.steps = meta.get("criterion_steps", 0)
        if self.config.mode == "gradual" and self.width_criterion.needs_batches:
            self.width_criterion.attach(family)
        self._apply(model)
        return True

    def _log(self, state, model) -> None:
        self._pending = {f"structured/{k}": v for k, v in self.shape.to_dict().items()}
        if self.search is not None:
            self._pending["structured/search_chosen_loss"] = self.search["chosen"]["calibration_loss"]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if getattr(self, "_pending", None):
            add_to_logs(self, args, state, logs, self._pending)
            self._pending = {}


def _layer_writer_norms(family) -> torch.Tensor:
    """Gradual depth pruning: a layer's importance is the norm of its output projections (zeroing them makes it
    the identity)."""
    norms = []
    for layer in family.layer_list():
        parts = family.layer_parts(layer)
        norms.append(sum(float(m.weight.detach().float().norm()) for m in parts.writers))
    return torch.tensor(norms)


def structured_pruning_callback(**fields) -> StructuredPruningCallback:
    """Recipe / registry factory: ``callbacks: [{name: structured_pruning, shape: {...}}]``."""
    return StructuredPruningCallback(StructuredPruningConfig(**fields))
