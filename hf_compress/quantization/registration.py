"""Registers the built-in weight quantizers (registry kind ``quantizer``) and export formats (``export_format``).

- ``"int"``: affine integer grid, scales recomputed from the weights at every forward (min/max or MSE clipping).
- ``"lsq"``: learned step size; the scales join the Trainer's optimizer and its checkpoints.

The interface a plugin quantizer implements is documented in :mod:`hf_compress.quantization.observers`.
"""

from __future__ import annotations


def qat_callback(config):
    from hf_compress.quantization.callback import QATCallback

    return QATCallback(config)


def register(registry) -> None:
    from hf_compress.recipes.technique import Technique

    registry.register(
        "technique", "quantization", Technique("hf_compress.quantization.config:QATConfig", qat_callback, order=50)
    )
    from hf_compress.quantization.export_formats import register_export_formats
    from hf_compress.registry import lazy

    registry.register("quantizer", "int", lazy("hf_compress.quantization.observers:WeightQuantizer"))
    registry.register("quantizer", "lsq", lazy("hf_compress.quantization.observers:LSQWeightQuantizer"))
    register_export_formats(registry)
