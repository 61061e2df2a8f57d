"""The teacher for distilling into a LoRA student: the same base model with its adapters disabled.

:func:`adapters_disabled_teacher` returns a module that, when called, runs the PeftModel's transformers model with
``disable_adapter()`` in eval mode. It holds no parameters of its own and does not register the student as a
submodule, so ``DistillationCallback``'s ``teacher.eval()`` / ``requires_grad_(False)`` / ``.to(...)`` leave the
student alone and only one copy of the weights is in memory. The teacher sees the base weights as they are: frozen
under LoRA, but pruned or fake-quantized if other callbacks compress them in the same run.

```python
from hf_compress import DistillationCallback, DistillationConfig
from hf_compress.peft_support import adapters_disabled_teacher

trainer = Trainer(model=peft_model, args=args, train_dataset=train_dataset)
trainer.add_callback(DistillationCallback(adapters_disabled_teacher(peft_model), DistillationConfig(alpha=0.5)))
trainer.train()
```
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.peft_support.modules import is_peft_model


class AdapterDisabledTeacher(nn.Module):
    """A view of ``peft_model`` with its adapters disabled, usable as a distillation teacher (no weight copy).

    Args:
        peft_model (`peft.PeftModel`): the student.
    """

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        peft_model = unwrap_model(peft_model)
        if not is_peft_model(peft_model):
            raise ValueError(
                f"adapters_disabled_teacher needs a peft.PeftModel (the LoRA student); got {type(peft_model).__name__}"
            )
        # Not a submodule: eval()/requires_grad_()/to() on the teacher must not reach the student.
        object.__setattr__(self, "peft_model", peft_model)

    @property
    def config(self) -> Any:
        return self.peft_model.get_base_model().config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        inner = self.peft_model.get_base_model()
        modes = [(module, module.training) for module in inner.modules()]
        inner.eval()
        try:
            with self.peft_model.disable_adapter():
                return inner(*args, **kwargs)
        finally:
            for module, training in modes:
                module.training = training

    def __repr__(self) -> str:
        return f"AdapterDisabledTeacher({type(self.peft_model.get_base_model()).__name__})"


def adapters_disabled_teacher(peft_model: nn.Module) -> AdapterDisabledTeacher:
    """The base model under ``peft_model`` with its adapters disabled, to pass as ``DistillationCallback``'s teacher."""
    return AdapterDisabledTeacher(peft_model)
