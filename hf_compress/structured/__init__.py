"""Structured compression: whole heads, KV groups, MLP neurons, hidden channels and layers removed physically.

Entry points:

- ``hf_compress.shrink(model)``: remove every whole structure whose weights are all zero and update the config
  (:mod:`hf_compress.structured.shrink`); a stock ``AutoModelFor*`` loads the saved result.
- ``hf_compress.shrink_to(model, StructuredPruningConfig(...), calibration_batches)``: score, pick the shape (or
  search one for ``target_params``), and return a smaller copy, ready for distillation from ``model``.
- ``StructuredPruningCallback(StructuredPruningConfig(...))``: the same inside a Trainer (one-shot or gradual),
  shrinking at train end.

Modules: ``families`` (where each family's structures live), ``structures`` (zeroing, dead-structure detection),
``criteria`` (registered importance), ``selection`` (target -> valid uniform shape, scores -> structures),
``rotation`` (the residual stream onto its principal axes before hidden channels go), ``refit`` (least-squares refit
of the output projections for the removed heads and neurons), ``apply`` (Trainer-free pipeline and budget search),
``callback``, ``report``.
"""
