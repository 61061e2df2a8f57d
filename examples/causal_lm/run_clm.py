"""Fine-tune a causal language model on text files: the usual Hugging Face script shape, plus hf_compress.

The three lines marked ``# hf_compress`` are all that compression adds (see README.md for the diff).

    python examples/causal_lm/run_clm.py --model_name_or_path /tmp/tiny-lm/model \
        --train_file /tmp/tiny-lm/train.txt --validation_file /tmp/tiny-lm/validation.txt \
        --output_dir /tmp/clm-out --max_steps 200 --per_device_train_batch_size 8 \
        --compression_recipe examples/recipes/prune_distill_qat.yaml
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain

from datasets import load_dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

import hf_compress  # hf_compress
from hf_compress.distributed import shutdown  # hf_compress
from hf_compress.recipes import CompressionArguments  # hf_compress


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "A local model folder (or a Hub id, when online)."})


@dataclass
class DataTrainingArguments:
    train_file: str = field(metadata={"help": "A .txt file, one document per line."})
    validation_file: str | None = field(default=None)
    block_size: int = field(default=64)
    max_train_samples: int | None = field(default=None)


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments, CompressionArguments))
    model_args, data_args, training_args, compression_args = parser.parse_args_into_dataclasses()
    set_seed(training_args.seed)

    data_files = {"train": data_args.train_file}
    if data_args.validation_file:
        data_files["validation"] = data_args.validation_file
    raw = load_dataset("text", data_files=data_files)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)

    def tokenize(batch):
        return tokenizer(batch["text"])

    def group_texts(examples):
        joined = {k: list(chain(*examples[k])) for k in examples}
        total = (len(joined["input_ids"]) // data_args.block_size) * data_args.block_size
        blocks = {
            k: [t[i : i + data_args.block_size] for i in range(0, total, data_args.block_size)]
            for k, t in joined.items()
        }
        blocks["labels"] = [ids.copy() for ids in blocks["input_ids"]]
        return blocks

    tokenized = raw.map(tokenize, batched=True, remove_columns=["text"])
    lm_datasets = tokenized.map(group_texts, batched=True)
    train_dataset = lm_datasets["train"]
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
    eval_dataset = lm_datasets["validation"] if "validation" in lm_datasets else None

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    if compression_args.compression_recipe:  # hf_compress
        hf_compress.attach(trainer, compression_args.compression_recipe, teacher=model_args.model_name_or_path)

    trainer.train()
    trainer.save_model()
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        metrics["perplexity"] = math.exp(metrics["eval_loss"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
    shutdown()  # hf_compress: tear the process group down cleanly under accelerate launch
