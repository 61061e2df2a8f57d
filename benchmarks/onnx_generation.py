"""Greedy generation speed on CPU: ONNX Runtime with and without the KV cache (``export(..., kv_cache=True)`` and
``onnx_generate``) against PyTorch's own ``generate``, in one run with interleaved rounds (issue 14).

Two decoder shapes with random weights (speed only; the tokens are checked equal between PyTorch and the float32
graphs): the 4 x 256 byte-level Llama of the structured benchmarks, and a ~125M Llama (12 layers, width 768, 32,000
tokens). One thread, prompt 64 tokens, 64 new tokens, batch 1 and 4. Rows:

- PyTorch fp32 ``model.generate`` (greedy, transformers' own KV cache): the baseline;
- ORT fp32 without the cache (the plain ``format="onnx"`` graph; every step recomputes the sequence);
- ORT fp32 with the cache; ORT int8 (dynamic) with the cache.

    python benchmarks/onnx_generation.py --rounds 5   # writes benchmarks/results/onnx_generation.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))

from onnx_speed import cpu_name, load_average, time_cell  # noqa: E402
from structured_bench import base_config, teacher_config  # noqa: E402

from hf_compress import export, onnx_generate  # noqa: E402
from hf_compress.quantization.export_onnx import inference_session  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "onnx_generation.md"
PROMPT, NEW_TOKENS = 64, 64
ROWS = ("PyTorch fp32 generate", "ORT fp32, no cache", "ORT fp32, KV cache", "ORT int8, KV cache")


def exports(model, work: str) -> dict[str, str]:
    folders = {
        "ORT fp32, no cache": dict(format="onnx"),
        "ORT fp32, KV cache": dict(format="onnx", kv_cache=True),
        # random weights give near-flat logits, whose argmax int8 flips often: speed only, so no top-1 floor here
        "ORT int8, KV cache": dict(format="onnx-int8", int8_mode="dynamic", kv_cache=True, min_top1_agreement=0.0),
    }
    paths = {}
    for name, options in folders.items():
        folder = os.path.join(work, name.replace(" ", "_").replace(",", ""))
        export(model, folder, print_report=False, speed_repeats=0, **options)
        paths[name] = os.path.join(folder, "model.onnx")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    torch.manual_seed(0)
    lines = [
        "# Generation with a KV cache: ONNX Runtime against PyTorch (issue 14)",
        "",
        f"{datetime.date.today()}, {cpu_name()} ({platform.machine()}, {os.cpu_count()} logical CPUs), 1 thread, torch "
        f"{torch.__version__}; `python benchmarks/onnx_generation.py --rounds {options.rounds}` (medians of "
        "interleaved rounds, one warm-up round). Greedy, prompt "
        f"{PROMPT} tokens, {NEW_TOKENS} new tokens, random weights (speed only). Tokens/s counts new tokens of the "
        "whole batch.",
        "",
        "| model | batch | PyTorch fp32 generate (tok/s) | ORT fp32, no cache | ORT fp32, KV cache | ORT int8, KV cache "
        "| KV cache / no cache (fp32) | int8 KV / PyTorch | fp32 tokens equal PyTorch | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    torch.set_num_threads(1)
    for label, config in (("4 x 256 byte-level Llama", teacher_config()), ("~125M Llama (12 x 768)", base_config())):
        config.max_position_embeddings = max(config.max_position_embeddings, PROMPT + NEW_TOKENS)
        model = LlamaForCausalLM(config).eval()
        work = tempfile.mkdtemp(prefix="hf_compress_generation_")
        sessions = {name: inference_session(path, 1) for name, path in exports(model, work).items()}
        for batch_size in (1, 4):
            ids = torch.randint(0, config.vocab_size, (batch_size, PROMPT))
            outputs = {}

            def pytorch(ids=ids, model=model, outputs=outputs):
                with torch.inference_mode():
                    outputs["PyTorch fp32 generate"] = model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=NEW_TOKENS,
                        min_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        eos_token_id=None,
                        pad_token_id=0,
                    )

            runners = {"PyTorch fp32 generate": pytorch}
            for name, session in sessions.items():

                def run(name=name, session=session, ids=ids, outputs=outputs):
                    outputs[name] = onnx_generate(session, ids, max_new_tokens=NEW_TOKENS)

                runners[name] = run
            ms = time_cell(runners, options.rounds)
            rate = {name: batch_size * NEW_TOKENS / (value / 1e3) for name, value in ms.items()}
            same = all(
                torch.equal(outputs[name], outputs["PyTorch fp32 generate"])
                for name in ("ORT fp32, no cache", "ORT fp32, KV cache")
            )
            lines.append(
                f"| {label} | {batch_size} | "
                + " | ".join(f"{rate[name]:.1f}" for name in ROWS)
                + f" | {rate['ORT fp32, KV cache'] / rate['ORT fp32, no cache']:.2f}x | "
                f"**{rate['ORT int8, KV cache'] / rate['PyTorch fp32 generate']:.2f}x** | "
                f"{'yes' if same else 'NO'} | {load_average()} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "'KV cache / no cache' is what `kv_cache=True` buys in ONNX Runtime; 'int8 KV / PyTorch' is the deployable "
        "int8 graph against the PyTorch baseline most users start from. Without the cache, ONNX Runtime recomputes "
        "the whole sequence at every step, so its cost grows with the length generated.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
