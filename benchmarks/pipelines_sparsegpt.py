"""SparseGPT one-shot with llm-compressor, run by ``benchmarks/pipelines.py`` in llm-compressor's own venv.

llm-compressor pins its own transformers, so it lives in a separate venv (``benchmarks/_work/llmc-venv``). This
script loads the saved teacher, runs ``llmcompressor.oneshot`` with ``SparseGPTModifier`` on the calibration windows
(a ``.pt`` tensor of byte ids, ``[samples, seq_len]``) and writes the pruned weights as a plain safetensors state
dict, which the main venv loads into a copy of the teacher.

    benchmarks/_work/llmc-venv/bin/python benchmarks/pipelines_sparsegpt.py --model TEACHER_DIR \
        --calibration calib.pt --sparsity 0.7 --mask-structure 0:0 --output pruned.safetensors
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="folder of the saved teacher (save_pretrained)")
    parser.add_argument("--calibration", required=True, help=".pt file: LongTensor [samples, seq_len] of byte ids")
    parser.add_argument("--sparsity", type=float, required=True)
    parser.add_argument("--mask-structure", default="0:0", help='"0:0" (unstructured) or "2:4"')
    parser.add_argument("--output", required=True, help="safetensors file for the pruned state dict")
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, ByT5Tokenizer

    began = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(options.model, dtype=torch.float32)
    ids = torch.load(options.calibration)
    calibration = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    recipe = SparseGPTModifier(
        sparsity=options.sparsity,
        mask_structure=options.mask_structure,
        targets=["Linear"],
        ignore=["re:.*lm_head"],
    )
    oneshot(
        model=model,
        # oneshot insists on a processor when given a dataset; the windows are already byte ids, so it only pads
        # (never: every window has the same length)
        processor=ByT5Tokenizer(),
        dataset=calibration,
        recipe=recipe,
        num_calibration_samples=len(ids),
        max_seq_length=ids.shape[1],
        shuffle_calibration_samples=False,
    )
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, options.output)
    print(json.dumps({"seconds": time.perf_counter() - began}))


if __name__ == "__main__":
    main()
