"""Registers the built-in weight quantizers (registry kind ``quantizer``) and export formats (``export_format``).

- ``"int"``: affine integer grid, scales recomputed from the weights at every forward (min/max or MSE clipping).
- ``"lsq"``: learned step size; the scales join the Trainer's optimizer and its checkpoints.

The interface a plugin quantizer implements is documented in :mod:`hf_compress.quantization.observers`.
"""

from __future__ import annotations


def register(registry) -> None:
    from hf_compress.quantization.export_formats import register_export_formats
    from hf_compress.quantization.observers import LSQWeightQuantizer, WeightQuantizer

    registry.register("quantizer", "int", WeightQuantizer)
    registry.register("quantizer", "lsq", LSQWeightQuantizer)
    register_export_formats(registry)
