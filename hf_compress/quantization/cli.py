"""``hf-compress export MODEL_DIR OUT_DIR --format F``: export a saved model with :func:`hf_compress.export`.

A QAT model saved by the Trainer keeps its weights on the grid and ``config.hf_compress_quantization``; the grid's
scales are recovered from the weights. Any other model gets post-training quantization (``--bits`` ...).

The lead's ``hf_compress.cli`` wires it with ``add_export_parser(subparsers)``; :func:`export_main` runs it alone:

```python
from hf_compress.quantization.cli import export_main

exit_code = export_main(["runs/qat/final", "out/ct", "--format", "compressed-tensors"])
```
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from hf_compress.quantization.grid import GRANULARITIES, SCALE_METHODS
from hf_compress.registry import get_registry

logger = logging.getLogger(__name__)


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to an ``argparse`` sub-parsers object; its handler is ``args.handler``."""
    registry = get_registry()
    formats = "\n".join(
        f"  {name}: {registry.get('export_format', name).description}" for name in registry.names("export_format")
    )
    parser = subparsers.add_parser(
        "export",
        help="write a (QAT-trained) model as a quantized checkpoint, then reload and check it",
        description="Write MODEL_DIR as a quantized checkpoint in OUT_DIR, reload it with the format's own loader, "
        "run a fixed batch and compare with the model. A model saved after QAT keeps its grid; any other model "
        "gets post-training quantization (--bits, --granularity, ...).",
        epilog=f"formats:\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", help="a transformers model folder (e.g. the Trainer's output after QAT)")
    parser.add_argument("out_dir", help="the folder to write (must be empty unless --overwrite)")
    parser.add_argument("--format", default="dequantized", help="export format (default: dequantized)")
    grid = parser.add_argument_group("post-training quantization (models never QAT-trained)")
    grid.add_argument("--bits", type=int, help="weight bits, 2-8 (default 8)")
    grid.add_argument("--asymmetric", action="store_true", help="asymmetric grid (default symmetric)")
    grid.add_argument("--granularity", choices=GRANULARITIES, help="default per_channel")
    grid.add_argument("--group-size", type=int, help="columns per group (per_group)")
    grid.add_argument("--scale-method", choices=SCALE_METHODS, default="minmax")
    grid.add_argument("--targets", nargs="+", help="regexes of module names to quantize")
    grid.add_argument("--exclude", nargs="+", help="regexes of module names to leave in float")
    parser.add_argument("--no-ptq", action="store_true", help="fail instead of quantizing a model never QAT-trained")
    parser.add_argument(
        "--allow-regrid", action="store_true", help="let a format re-quantize layers it cannot hold exactly"
    )
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs output difference allowed")
    parser.add_argument(
        "--speed-repeats", type=int, default=10, help="timed runs per model for the speed report (0: none)"
    )
    onnx = parser.add_argument_group("ONNX (--format onnx | onnx-int8)")
    onnx.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="torch exporter")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument(
        "--int8-mode",
        choices=("static", "dynamic"),
        default="static",
        help="onnx-int8 for a model never QAT-trained: ONNX Runtime static (needs --calibration-file) or dynamic",
    )
    onnx.add_argument(
        "--calibration-file",
        help="onnx-int8 static: text file (one example a line, tokenized with MODEL_DIR's tokenizer) or JSON lines "
        'with "text" or "input_ids"',
    )
    onnx.add_argument("--calibration-samples", type=int, default=64, help="examples read from --calibration-file")
    onnx.add_argument("--calibration-batch-size", type=int, default=4, help="examples per calibration batch")
    onnx.add_argument("--max-length", type=int, default=128, help="tokens per calibration example (truncation)")
    onnx.add_argument(
        "--min-top1-agreement", type=float, default=0.9, help="onnx-int8 check: argmax agreement with PyTorch"
    )
    onnx.add_argument(
        "--kv-cache",
        action="store_true",
        help="decoder-only LMs: export one decoding step with the KV cache as inputs and outputs (onnx_generate)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``hf-compress export``: 0 on success, 1 with a one-line error on stderr."""
    from hf_compress.quantization.export import ExportVerificationError, export

    options = {
        "scale_method": args.scale_method,
        "targets": args.targets,
        "exclude": args.exclude,
        "allow_ptq": not args.no_ptq,
        "allow_regrid": args.allow_regrid,
        "tolerance": args.tolerance,
        "overwrite": args.overwrite,
        "speed_repeats": args.speed_repeats,
        "print_report": not args.json,
    }
    if args.format in ("onnx", "onnx-int8"):
        options.update(exporter=args.exporter, opset=args.opset, min_top1_agreement=args.min_top1_agreement)
    if args.kv_cache:  # other formats refuse it with the reason
        options["kv_cache"] = True
    if args.format == "onnx-int8":
        options["int8_mode"] = args.int8_mode
    for name in ("bits", "granularity", "group_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.asymmetric:
        options["symmetric"] = False
    try:
        model = load_model(args.model_dir)
        if args.calibration_file:
            options["calibration_batches"] = calibration_batches(
                args.calibration_file,
                args.model_dir,
                args.calibration_samples,
                args.calibration_batch_size,
                args.max_length,
            )
        result = export(model, args.out_dir, format=args.format, **options)
    except (ValueError, ImportError, OSError, ExportVerificationError) as error:
        print(f"hf-compress export: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(
            f"wrote {result.format} to {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.layers} quantized "
            f"layers from {result.method}); reloaded: max abs diff {result.max_abs_diff:.3g}, "
            f"sparsity {result.sparsity:.1%}"
        )
        for note in result.notes:
            print(f"  note: {note}")
        if result.top1_agreement is not None:
            print(f"  ONNX Runtime vs PyTorch: top-1 agreement {result.top1_agreement:.1%}")
    return 0


def calibration_batches(file: str, model_dir: str, samples: int, batch_size: int, max_length: int) -> list[dict]:
    """Batches for ONNX Runtime static calibration from ``file``: plain text lines (tokenized with the tokenizer in
    ``model_dir``) or JSON lines with ``"text"`` or ``"input_ids"``."""
    import torch

    if samples < 1 or batch_size < 1 or max_length < 1:
        raise ValueError("--calibration-samples, --calibration-batch-size and --max-length must be positive")
    with open(file) as handle:
        lines = [line.strip() for line in handle if line.strip()][:samples]
    if not lines:
        raise ValueError(f"--calibration-file {file}: no examples (one a line)")
    records = []
    for number, line in enumerate(lines, 1):
        record = line
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"--calibration-file {file}, line {number}: not valid JSON ({error})") from None
            if "input_ids" not in record and "text" not in record:
                raise ValueError(f'--calibration-file {file}, line {number}: needs "text" or "input_ids"')
            record = record["input_ids"] if "input_ids" in record else record["text"]
        records.append(record)
    tokenizer = None
    if any(isinstance(record, str) for record in records):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"--calibration-file {file} holds text, but {model_dir} has no tokenizer ({error}); save the "
                'tokenizer beside the model or give JSON lines with "input_ids"'
            ) from None
    batches = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        if tokenizer is not None and all(isinstance(record, str) for record in chunk):
            encoded = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            batches.append(dict(encoded))
            continue
        if not all(isinstance(record, list) for record in chunk):
            raise ValueError(f"--calibration-file {file}: mix text and input_ids lines in separate files")
        length = min(max(len(record) for record in chunk), max_length)
        ids = torch.zeros(len(chunk), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, record in enumerate(chunk):
            record = record[:length]
            ids[row, : len(record)] = torch.tensor(record, dtype=torch.long)
            mask[row, : len(record)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def load_model(model_dir: str):
    """The model in ``model_dir`` as the class its config names (``architectures[0]``)."""
    import transformers

    from hf_compress.local_models import check_local_model

    config = transformers.AutoConfig.from_pretrained(check_local_model(model_dir, "MODEL_DIR"), local_files_only=True)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        raise ValueError(
            f"{model_dir}: config.architectures names {architecture!r}, which transformers does not provide; "
            "load the model in Python and call hf_compress.export(model, ...)"
        )
    return model_class.from_pretrained(model_dir, local_files_only=True)


def export_main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-compress export`` with ``argv`` (the arguments after ``export``); returns the exit code."""
    parser = argparse.ArgumentParser(prog="hf-compress")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(export_main())
