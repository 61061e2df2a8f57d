"""Structured compression: whole heads, KV groups, MLP neurons, hidden channels and layers removed physically.

``hf_compress.shrink(model)`` turns zeroed whole structures into a smaller dense model with a stock config;
criteria score structures, selection picks a uniform shape for a target, and the callbacks run it in a Trainer.
"""
