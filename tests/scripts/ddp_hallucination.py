"""Run under `accelerate launch --multi_gpu --num_processes 2 ddp_hallucination.py OUT_DIR` (CPU, gloo).

HallucinationEvalCallback splits the prompts between the ranks and gathers the generations. Each rank writes
OUT_DIR/rank<r>.json: its world size, the hallucination keys of every evaluation in log_history, the callback's
generations, and the same prompts generated one by one on that rank without the callback.
tests/metrics/test_hallucination_callback.py compares them.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "metrics"))
from test_hallucination_callback import OneSentence, make_tokenizer  # noqa: E402
from transformers import Trainer  # noqa: E402

from conftest import end_launched_process, tiny_gpt2, training_args  # noqa: E402
from hf_compress import HallucinationEvalCallback, distributed  # noqa: E402

PROMPTS = ["the sky is", "grass is green", "mount everest is"]  # 3 prompts: uneven shards
REFERENCES = [["The sky is blue."], ["Grass is green."], ["Mount Everest is 8849 metres tall."]]
GENERATION = {"max_new_tokens": 5, "do_sample": False}


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    data = OneSentence(tokenizer, n=16)
    callback = HallucinationEvalCallback(PROMPTS, REFERENCES, GENERATION, generation_batch_size=1)
    args = training_args(
        out_dir, max_steps=10, learning_rate=1e-2, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=5
    )
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.add_callback(callback)
    trainer.train()

    model = trainer.model.eval()
    by_hand = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([tokenizer(prompt)["input_ids"]])
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=0, **GENERATION)
            by_hand.append(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip())
    evaluations = [
        {key: value for key, value in entry.items() if "hallucination" in key or key == "step"}
        for entry in trainer.state.log_history
        if "eval_loss" in entry
    ]
    record = {
        "world_size": distributed.world_size(),
        "evaluations": evaluations,
        "generations": callback.last_generations,
        "by_hand": by_hand,
    }
    with open(os.path.join(out_dir, f"rank{distributed.rank()}.json"), "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main(sys.argv[1])
    end_launched_process()
