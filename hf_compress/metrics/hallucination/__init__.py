"""The ``evaluate`` module folder of the hallucination metric: ``evaluate.load`` takes this folder's path.

See ``hallucination.py`` (the module) and ``README.md`` (the metric card).
"""
