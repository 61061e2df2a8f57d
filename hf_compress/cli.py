"""The ``hf-compress`` command.

```
hf-compress demo [--quick] [--output-dir DIR]      # the main job: teacher -> pruned+distilled+QAT student, report
hf-compress plugins list [--json]                  # every registered component, and broken plugins
hf-compress report MODEL_DIR [--plot FILE.png]     # per-layer sparsity of a saved model
hf-compress export MODEL_DIR OUT_DIR --format F    # dequantized | quanto | compressed-tensors | onnx | onnx-int8
hf-compress recipe check FILE                      # validate a compression recipe
```
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _plugins_list(args: argparse.Namespace) -> int:
    from hf_compress.registry import get_registry

    registry = get_registry()
    if args.json:
        print(json.dumps(registry.as_dict(), indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "MODULE")]
    rows += [(c.kind, c.name, f"{c.distribution} {c.version}", c.module) for c in registry]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if registry.broken:
        print("\nBroken plugins (skipped):")
        for plugin in registry.broken:
            print(f"  {plugin.entry_point} from {plugin.distribution} {plugin.version}: {plugin.error}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from hf_compress.pruning.report import report_main

    try:
        report_main(args.model_dir, plot=args.plot)
    except (OSError, ValueError) as error:
        print(f"hf-compress report: error: {error}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hf_compress.demo import run_demo

    run_demo(output_dir=args.output_dir, quick=args.quick, seed=args.seed)
    return 0


def _recipe_check(args: argparse.Namespace) -> int:
    from hf_compress.recipes.check import check_recipe

    try:
        recipe = check_recipe(args.file)
    except ValueError as error:
        print(f"invalid recipe: {error}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({', '.join(recipe.techniques()) or 'no techniques'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-compress", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a teacher, compress a student, write a report (no downloads)")
    demo.add_argument("--quick", action="store_true", help="tiny settings (about 2 minutes), as CI runs it")
    demo.add_argument("--output-dir", default="hf_compress_demo", help="where the report and plots go")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)

    plugins = commands.add_parser("plugins", help="inspect the plugin registry")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", required=True)
    listing = plugin_commands.add_parser("list", help="list every component and every broken plugin")
    listing.add_argument("--json", action="store_true", help='print {"components": [...], "broken": [...]}')
    listing.set_defaults(handler=_plugins_list)

    report = commands.add_parser("report", help="per-layer sparsity of a saved model")
    report.add_argument("model_dir")
    report.add_argument("--plot", metavar="FILE.png", default=None, help="also write a bar chart")
    report.set_defaults(handler=_report)

    from hf_compress.quantization.cli import add_export_parser

    add_export_parser(commands)

    recipe = commands.add_parser("recipe", help="compression recipes")
    recipe_commands = recipe.add_subparsers(dest="recipe_command", required=True)
    check = recipe_commands.add_parser("check", help="validate a recipe file against the schema")
    check.add_argument("file")
    check.set_defaults(handler=_recipe_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
