"""What the demo measures on each model: perplexity, hallucination rate, size, non-zeros and CPU latency."""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from dataclasses import dataclass

import torch

from hf_compress.demo.training import DemoData, SentenceDataset


@dataclass
class ModelRow:
    """One row of the demo's table; perplexities on the in-distribution set and on held-out phrasings."""

    key: str
    name: str
    in_distribution_perplexity: float
    heldout_perplexity: float
    hallucination_rate: float
    params: int
    nonzeros: int
    export_format: str
    size_bytes: int
    latency_ms: float
    training_steps: int


@torch.no_grad()
def perplexity(model, dataset: SentenceDataset) -> float:
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(dataset), 64):
        rows = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_loss += float(loss)
        total_tokens += int((labels != -100).sum())
    return math.exp(total_loss / total_tokens)


@torch.no_grad()
def answer_prompts(model, tokenizer, prompts: list[str], max_new_tokens: int = 4) -> list[str]:
    """Greedy completions of the fact prompts, cut after the first full stop: ``prompt + completion``."""
    model.eval()
    period = tokenizer.convert_tokens_to_ids(".")
    tokenizer.padding_side = "left"
    outputs = []
    for start in range(0, len(prompts), 64):
        chunk = prompts[start : start + 64]
        encoded = tokenizer(chunk, return_tensors="pt", padding=True)
        generated = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[tokenizer.eos_token_id, period],
            pad_token_id=tokenizer.pad_token_id,
        )
        for prompt, row in zip(chunk, generated[:, encoded["input_ids"].shape[1] :]):
            completion = tokenizer.decode(row, skip_special_tokens=True).split(".")[0].strip()
            outputs.append(f"{prompt} {completion}.")
    tokenizer.padding_side = "right"
    return outputs


def hallucination_rate(model, data: DemoData) -> float:
    from hf_compress.metrics import load_metric

    predictions = answer_prompts(model, data.tokenizer, data.prompts)
    result = load_metric("hallucination").compute(predictions=predictions, references=data.references)
    return float(result["hallucination_rate"])


def one_shot_magnitude(model, sparsity: float):
    """A copy of ``model`` with each targeted layer's smallest weights removed at once (no recovery training)."""
    from hf_compress.pruning.masks import apply_masks_
    from hf_compress.pruning.patterns import compute_mask
    from hf_compress.targets import find_target_modules, weight_out_in

    pruned = copy.deepcopy(model)
    modules = find_target_modules(pruned)
    masks = {name: compute_mask(weight_out_in(m.weight.detach(), m).abs(), sparsity) for name, m in modules.items()}
    apply_masks_(modules, masks)
    return pruned


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


@torch.no_grad()
def interleaved_latency_ms(models: list, batch: dict, runs: int) -> list[float]:
    """Median forward time of each model on ``batch``, measured in alternating rounds so load from other work on
    the machine hits every model alike."""
    for model in models:
        model.eval()
        for _ in range(3):
            model(**batch)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for index, model in enumerate(models):
            start = time.perf_counter()
            model(**batch)
            times[index].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def count_parameters(model) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    nonzeros = sum(int((p != 0).sum()) for p in model.parameters())
    return params, nonzeros
