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
    }
    for name in ("bits", "granularity", "group_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.asymmetric:
        options["symmetric"] = False
    try:
        model = load_model(args.model_dir)
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
    return 0


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
