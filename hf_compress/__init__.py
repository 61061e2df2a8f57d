"""hf_compress: training-aware compression for the Hugging Face Trainer, as plain callbacks.

```python
from hf_compress import PruningCallback, PruningConfig

trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
trainer.add_callback(PruningCallback(PruningConfig(target_sparsity=0.5, schedule="cubic")))
trainer.train()
```

Public names are imported lazily, so ``import hf_compress`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "DistillationCallback": "hf_compress.distillation.callback",
    "DistillationConfig": "hf_compress.distillation.config",
    "HallucinationEvalCallback": "hf_compress.metrics.callback",
    "L1RegularizationCallback": "hf_compress.pruning.l1",
    "L1RegularizationConfig": "hf_compress.pruning.l1",
    "OneShotPruningCallback": "hf_compress.pruning.one_shot",
    "PruningCallback": "hf_compress.pruning.callback",
    "PruningConfig": "hf_compress.pruning.config",
    "QATCallback": "hf_compress.quantization.callback",
    "QATConfig": "hf_compress.quantization.config",
    "add_callbacks": "hf_compress.trainer.logs",
    "attach": "hf_compress.recipes",
    "callbacks_from_recipe": "hf_compress.recipes",
    "compression_run": "hf_compress.trainer.cleanup",
    "convert_": "hf_compress.quantization.qat",
    "export": "hf_compress.quantization.export",
    "get_registry": "hf_compress.registry",
    "load_metric": "hf_compress.metrics",
    "merge_and_unload": "hf_compress.peft_support",
    "onnx_session": "hf_compress.quantization.export_onnx_runtime",
    "onnx_generate": "hf_compress.quantization.export_onnx_cache",
    "prepare_qat_": "hf_compress.quantization.qat",
    "prune_one_shot": "hf_compress.pruning.one_shot",
    "release": "hf_compress.trainer.cleanup",
    "restore_compression": "hf_compress.peft_support.saved_base",
    "save_compression": "hf_compress.peft_support.saved_base",
    "sensitivity_analysis": "hf_compress.pruning.sensitivity",
    "sparsity_at": "hf_compress.pruning.schedules",
    "sparsity_report": "hf_compress.pruning.report",
    "shrink": "hf_compress.structured.shrink",
    "shrink_to": "hf_compress.structured.apply",
    "StructuredPruningCallback": "hf_compress.structured.callback",
    "StructuredPruningConfig": "hf_compress.structured.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hf_compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
