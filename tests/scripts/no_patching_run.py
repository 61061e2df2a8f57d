"""Snapshot transformers', accelerate's and torch's classes, import hf_compress, run a whole compressed training run
(pruning + distillation with learned projections + LSQ QAT + L1, a checkpoint, a resume, an export), then compare.
Prints "NO PATCHING OK" or raises."""

from __future__ import annotations

import inspect
import os
import sys
import tempfile

import torch
import transformers
import transformers.trainer
import transformers.trainer_callback
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.scheduler import AcceleratedScheduler
from accelerate.state import PartialState

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CLASSES = [
    transformers.Trainer,
    transformers.TrainingArguments,
    transformers.TrainerCallback,
    transformers.trainer_callback.CallbackHandler,
    transformers.trainer_callback.TrainerState,
    transformers.trainer_callback.TrainerControl,
    transformers.trainer_callback.DefaultFlowCallback,
    transformers.trainer_callback.PrinterCallback,
    transformers.PreTrainedModel,
    transformers.LlamaForCausalLM,
    transformers.GPT2LMHeadModel,
    transformers.pytorch_utils.Conv1D,
    Accelerator,
    AcceleratedOptimizer,
    AcceleratedScheduler,
    PartialState,
    torch.optim.Optimizer,
    torch.optim.AdamW,
    torch.optim.lr_scheduler.LRScheduler,
    torch.optim.lr_scheduler.LambdaLR,
    torch.nn.Module,
    torch.nn.Linear,
]
MODULES = [transformers.trainer, transformers.trainer_callback]


def is_method(value) -> bool:
    """Functions, descriptors and nested classes: what a monkey-patch replaces (plain values are caches the
    libraries fill themselves, e.g. copyreg's ``__slotnames__``)."""
    return callable(value) or isinstance(value, (staticmethod, classmethod, property))


def snapshot():
    classes = {cls: {name: id(value) for name, value in vars(cls).items() if is_method(value)} for cls in CLASSES}
    modules = {
        module: {
            name: id(value)
            for name, value in vars(module).items()
            if inspect.isfunction(value) or inspect.isclass(value)
        }
        for module in MODULES
    }
    return classes, modules


def shadowed_methods(obj) -> list[str]:
    """Instance attributes that hide a method of the object's class (an instance monkey-patch)."""
    return [name for name in vars(obj) if callable(getattr(type(obj), name, None)) and not name.startswith("__")]


def main() -> None:
    from conftest import LMDataset, tiny_llama, training_args  # conftest does not import hf_compress

    def trainer_objects(trainer):
        objects = {"trainer": trainer, "handler": trainer.callback_handler, "accelerator": trainer.accelerator}
        objects.update(optimizer=trainer.optimizer, scheduler=trainer.lr_scheduler)
        objects.update(torch_optimizer=trainer.optimizer.optimizer)
        return {role: sorted(shadowed_methods(obj)) for role, obj in objects.items()}

    with tempfile.TemporaryDirectory() as folder:  # what transformers and accelerate themselves set on instances
        plain = transformers.Trainer(
            model=tiny_llama(seed=0), args=training_args(folder, max_steps=2), train_dataset=LMDataset(n=32)
        )
        plain.train()
        baseline = trainer_objects(plain)

    # a plain run first: torch wraps each optimizer class's step once, at its first construction
    before = snapshot()
    assert not any(name.startswith("hf_compress") for name in sys.modules)
    import hf_compress
    from hf_compress import (
        DistillationCallback,
        DistillationConfig,
        L1RegularizationCallback,
        L1RegularizationConfig,
        PruningCallback,
        PruningConfig,
        QATCallback,
        QATConfig,
    )

    def callbacks():
        teacher = tiny_llama(
            seed=1, hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2
        )
        return [
            PruningCallback(PruningConfig(target_sparsity=0.5, criterion="movement", start=0, end=8, frequency=2)),
            DistillationCallback(teacher, DistillationConfig(alpha=0.5, layer_map={2: 2})),
            QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=16, quantizer="lsq")),
            L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-5)),
        ]

    with tempfile.TemporaryDirectory() as folder:
        args = training_args(folder, max_steps=10, logging_steps=5, save_strategy="steps", save_steps=5)
        trainer = transformers.Trainer(model=tiny_llama(seed=0), args=args, train_dataset=LMDataset(n=32))
        hf_compress.add_callbacks(trainer, *callbacks())
        trainer.train()
        runs = [trainer_objects(trainer)]
        resumed = transformers.Trainer(model=tiny_llama(seed=0), args=args, train_dataset=LMDataset(n=32))
        hf_compress.add_callbacks(resumed, *callbacks())
        resumed.train(resume_from_checkpoint=os.path.join(folder, "checkpoint-5"))
        hf_compress.export(resumed.model, os.path.join(folder, "exported"), format="dequantized")
        runs.append(trainer_objects(resumed))
        for run in runs:
            for role, names in run.items():
                if names != baseline[role]:
                    raise AssertionError(f"{role}: replaced methods {names}, a plain run has {baseline[role]}")
    after = snapshot()
    for cls, members in before[0].items():
        now = after[0][cls]
        changed = sorted(name for name in set(members) | set(now) if members.get(name) != now.get(name))
        if changed:
            raise AssertionError(f"{cls.__module__}.{cls.__qualname__} changed: {changed}")
    for module, members in before[1].items():
        now = after[1][module]
        changed = sorted(name for name in members if members[name] != now.get(name))
        if changed:
            raise AssertionError(f"{module.__name__} changed: {changed}")
    print("NO PATCHING OK")


if __name__ == "__main__":
    main()
