"""TRL SFTTrainer with peft_config and an hf_compress recipe (pruning 0.5 + distillation [+ QAT]); saves the adapter.

Usage: python peft_sft_save.py WORKDIR [--qat]
Writes WORKDIR/base (the base model), WORKDIR/teacher, WORKDIR/out (trainer.save_model()) and
WORKDIR/expected.safetensors: the merged model's weights in this process, for the reloading process to compare.
"""

from __future__ import annotations

import os
import sys

import trl
from datasets import Dataset
from peft import LoraConfig
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hf_compress  # noqa: E402
from conftest import VOCAB, LMDataset, tiny_llama  # noqa: E402


def main(workdir: str, qat: bool) -> None:
    tiny_llama(seed=0).save_pretrained(f"{workdir}/base")
    tiny_llama(seed=1).save_pretrained(f"{workdir}/teacher")
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), pad_token="t0", eos_token="t1"
    )
    data = Dataset.from_dict({"input_ids": [row.tolist() for row in LMDataset(n=32).ids]})
    args = trl.SFTConfig(
        output_dir=f"{workdir}/out", max_steps=12, per_device_train_batch_size=8, learning_rate=1e-2, report_to=[],
        use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(f"{workdir}/base"),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], lora_dropout=0.0),
    )
    recipe = {
        "pruning": {"target_sparsity": 0.5, "start": 0, "end": 0.5, "frequency": 2},
        "distillation": {"teacher": f"{workdir}/teacher", "alpha": 0.5},
    }
    if qat:
        recipe["quantization"] = {"weight_bits": 4, "start": 0.5}
    hf_compress.attach(trainer, recipe)
    trainer.train()
    trainer.save_model()
    merged = hf_compress.merge_and_unload(trainer.model)
    save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, f"{workdir}/expected.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], "--qat" in sys.argv)
