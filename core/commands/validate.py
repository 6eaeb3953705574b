"""`lowbit validate MODEL`: can this model be quantized? One line per problem, with a fix."""

from __future__ import annotations

import argparse
import json

from core.commands.exit_codes import BAD_INPUT, OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "validate",
        help="report whether a model can be quantized, which ops stay in float, and how to change that",
    )
    p.add_argument("model", help="model file (.pt2 or .onnx)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.graph import validate_model
    from core.io import load_model

    loaded = load_model(args.model)
    # The same capture as `lowbit quantize` and service jobs: the .pt2's program, or the module.
    report = validate_model(loaded.graph_source, loaded.example_inputs)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_table())
    return OK if report.ok else BAD_INPUT
