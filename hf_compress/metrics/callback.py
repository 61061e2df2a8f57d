"""A Trainer callback that generates from fixed prompts at each evaluation and logs the hallucination metric, so a
compression run shows ``eval_hallucination_rate`` next to ``eval_loss``.

```python
from hf_compress import HallucinationEvalCallback

callback = HallucinationEvalCallback(
    prompts=["Mount Everest is"],
    references=[["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]],
    generation_kwargs={"max_new_tokens": 24},
)
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer)
trainer.add_callback(callback)
trainer.train()
[entry["eval_hallucination_rate"] for entry in trainer.state.log_history if "eval_hallucination_rate" in entry]
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from hf_compress.distributed import all_gather_objects, is_partitioned, rank, unwrap_model, world_size
from hf_compress.metrics.config import HallucinationConfig
from hf_compress.metrics.scoring import score_hallucination, validate_inputs
from hf_compress.trainer.logs import add_to_logs

DEFAULT_GENERATION_KWARGS = {"max_new_tokens": 32, "do_sample": False}


class HallucinationEvalCallback(TrainerCallback):
    """Generate from ``prompts`` at every evaluation and log the hallucination metric against ``references``.

    Args:
        prompts (`list[str]`): prompts to generate from (the model's own text after the prompt is scored).
        references (`list[list[str]]`): for each prompt, the reference facts its generation should agree with.
        generation_kwargs (`dict`, *optional*): passed to ``model.generate``; defaults to
            ``{"max_new_tokens": 32, "do_sample": False}`` (greedy, so evaluations are comparable).
        checker (`str`, *optional*, defaults to `"lexical"`): a ``hallucination_checker`` name from the registry.
        threshold (`float`, *optional*, defaults to 0.5): see :class:`~hf_compress.metrics.config.HallucinationConfig`.
        aggregation (`str`, *optional*, defaults to `"max"`): example score from claim scores, "max" or "mean".
        model_path (`str`, *optional*): local model folder for the checker (``embedding``, ``nli``).
        batch_size (`int`, *optional*): the checker's batch size.
        device (`str`, *optional*): the checker's device.
        tokenizer (*optional*): tokenizer for the prompts; defaults to the Trainer's ``processing_class``.
        generation_batch_size (`int`, *optional*, defaults to 8): prompts per ``generate`` call.
        metric_key_prefix (`str`, *optional*, defaults to `"eval"`): the evaluation prefix whose logs get the metric.
        include_prompt (`bool`, *optional*, defaults to `False`): score "prompt + generation" instead of the
            generation alone; use it for completion prompts such as "Mount Everest is", whose subject is in the prompt.

    The metric keys are ``{prefix}_hallucination_rate``, ``{prefix}_contradiction_rate``,
    ``{prefix}_factual_precision``, ``{prefix}_fact_recall``, ``{prefix}_hallucination_score`` (mean example score),
    ``{prefix}_hallucination_flagged`` (share of flagged generations) and ``{prefix}_hallucination_claims`` (the
    three rates are left out when the generations contain no claim at all). They are
    added to the evaluation's entry in ``state.log_history``, to the logs seen by callbacks and reporters that come
    after this one, and to the dict ``trainer.evaluate()`` returns. ``last_generations`` and ``last_result`` keep
    the latest generations and full metric output (with per-claim details).
    """

    def __init__(
        self,
        prompts: Sequence[str],
        references: Sequence[Sequence[str]],
        generation_kwargs: dict[str, Any] | None = None,
        checker: str = "lexical",
        threshold: float = 0.5,
        aggregation: str = "max",
        model_path: str | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        tokenizer=None,
        generation_batch_size: int = 8,
        metric_key_prefix: str = "eval",
        include_prompt: bool = False,
    ) -> None:
        validate_inputs(prompts, references)
        if not prompts:
            raise ValueError("prompts must not be empty")
        for position, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompts[{position}] is empty; each prompt needs some text to generate from")
        if generation_kwargs is not None and not isinstance(generation_kwargs, dict):
            raise ValueError(
                f"generation_kwargs must be a dict of model.generate arguments, got {generation_kwargs!r}"
            )
        if (
            isinstance(generation_batch_size, bool)
            or not isinstance(generation_batch_size, int)
            or generation_batch_size < 1
        ):
            raise ValueError(f"generation_batch_size must be an integer >= 1, got {generation_batch_size!r}")
        if not isinstance(metric_key_prefix, str) or not metric_key_prefix:
            raise ValueError(f"metric_key_prefix must be a non-empty string, got {metric_key_prefix!r}")
        if not isinstance(include_prompt, bool):
            raise ValueError(f"include_prompt must be True or False, got {include_prompt!r}")
        self.prompts = list(prompts)
        self.references = [list(facts) for facts in references]
        self.generation_kwargs = {**DEFAULT_GENERATION_KWARGS, **(generation_kwargs or {})}
        self.config = HallucinationConfig(
            checker=checker,
            threshold=threshold,
            aggregation=aggregation,
            model_path=model_path,
            batch_size=batch_size,
            device=device,
        )
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size
        self.metric_key_prefix = metric_key_prefix
        self.include_prompt = include_prompt
        self.last_generations: list[str] | None = None
        self.last_result: dict[str, Any] | None = None
        self._checker = None
        self._metrics_step: int | None = None
        self._metrics: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------- events
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not self._is_evaluation_log(logs):
            return
        metrics = self._metrics_for_step(state, kwargs)
        add_to_logs(self, args, state, logs, metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None or not self._is_evaluation_log(metrics):
            return
        found = self._metrics_for_step(state, kwargs)
        self._metrics_step, self._metrics = None, {}  # the next evaluation generates again
        missing = {key: value for key, value in found.items() if key not in metrics}
        metrics.update(missing)
        if missing:
            for entry in reversed(state.log_history):
                if all(entry.get(key) == metrics.get(key) for key in self._runtime_keys(metrics)):
                    entry.update(missing)
                    break

    # ------------------------------------------------------------------------------------------- work
    def evaluate(self, model, tokenizer) -> dict[str, float]:
        """Generate from the prompts with ``model`` and return the metric values to log (also usable by hand)."""
        generations = self.generate(model, tokenizer)
        if self._checker is None:
            self._checker = self.config.build_checker()
        scored = generations
        if self.include_prompt:
            scored = [f"{prompt.rstrip()} {text}".strip() for prompt, text in zip(self.prompts, generations)]
        result = score_hallucination(
            scored, self.references, self._checker, self.config.threshold, self.config.aggregation
        )
        self.last_generations, self.last_result = generations, result
        prefix = self.metric_key_prefix
        values = {
            f"{prefix}_hallucination_rate": result["hallucination_rate"],
            f"{prefix}_contradiction_rate": result["contradiction_rate"],
            f"{prefix}_factual_precision": result["factual_precision"],
            f"{prefix}_fact_recall": result["fact_recall"],
            f"{prefix}_hallucination_score": sum(result["scores"]) / len(result["scores"]),
            f"{prefix}_hallucination_flagged": sum(result["flagged"]) / len(result["flagged"]),
            f"{prefix}_hallucination_claims": result["num_claims"],
        }
        return {key: value for key, value in values.items() if value is not None}

    @torch.no_grad()
    def generate(self, model, tokenizer) -> list[str]:
        """Greedy (by default) continuations of the prompts; with several processes each generates a share."""
        model = unwrap_model(model)
        processes, me = world_size(), rank()
        mine = list(range(me, len(self.prompts), processes))
        per_process = math.ceil(len(self.prompts) / processes)
        padded = mine + [mine[0] if mine else 0] * (per_process - len(mine))  # equal work keeps sharded models in step
        kwargs = dict(self.generation_kwargs)
        if processes > 1 and any(is_partitioned(parameter) for parameter in model.parameters()):
            kwargs.setdefault("synced_gpus", True)
        was_training = model.training
        model.eval()
        try:
            texts = []
            for start in range(0, len(padded), self.generation_batch_size):
                batch = [self.prompts[i] for i in padded[start : start + self.generation_batch_size]]
                texts.extend(self._generate_batch(model, tokenizer, batch, kwargs))
        finally:
            model.train(was_training)
        pairs = list(zip(mine, texts[: len(mine)]))
        if processes > 1:
            pairs = [pair for shard in all_gather_objects(pairs) for pair in shard]
        by_index = dict(pairs)
        return [by_index[i] for i in range(len(self.prompts))]

    def _generate_batch(self, model, tokenizer, prompts: list[str], kwargs: dict[str, Any]) -> list[str]:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        pad_id = 0 if pad_id is None else pad_id
        encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
        width = max(len(ids) for ids in encoded)
        device = next(model.parameters()).device
        # left padding, built here so the user's tokenizer is never modified
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + list(ids) for ids in encoded], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
        kwargs.setdefault("pad_token_id", pad_id)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if not getattr(model.config, "is_encoder_decoder", False):
            output = output[:, width:]
        return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]

    # ------------------------------------------------------------------------------------------- helpers
    def _metrics_for_step(self, state, kwargs: dict[str, Any]) -> dict[str, float]:
        """Generate and score once per evaluation (its log and its on_evaluate share the result)."""
        if self._metrics_step != state.global_step or not self._metrics:
            model = kwargs.get("model")
            if model is None:
                raise ValueError("HallucinationEvalCallback needs the model; it is passed by the Trainer")
            self._metrics = self.evaluate(model, self._tokenizer_from(kwargs))
            self._metrics_step = state.global_step
        return self._metrics

    def _tokenizer_from(self, kwargs: dict[str, Any]):
        tokenizer = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        if tokenizer is None or not callable(tokenizer):
            raise ValueError(
                "HallucinationEvalCallback needs a tokenizer: pass tokenizer= to the callback or "
                "processing_class= to the Trainer"
            )
        return tokenizer

    def _runtime_keys(self, logs: dict[str, Any]) -> list[str]:
        prefix = f"{self.metric_key_prefix}_"
        return [key for key in logs if key.startswith(prefix) and key.endswith("_runtime")]

    def _is_evaluation_log(self, logs: dict[str, Any]) -> bool:
        return bool(self._runtime_keys(logs))
