"""`lowbit export MODEL --encodings FILE --out DIR`: re-export a model with existing encodings.

Loads an encodings file (any AIMET format) into a fresh QuantSim of the model and writes the
ONNX model, the encodings in the requested format and the QDQ model — e.g. to convert a 0.6.1
file to 2.0.0, or to produce a QDQ ONNX from encodings computed elsewhere.
"""

from __future__ import annotations

import argparse
import json

from core.commands.exit_codes import OK
from core.commands.options import add_quant_options


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "export", help="export ONNX + encodings (+ QDQ ONNX) from a model and an encodings file"
    )
    p.add_argument("model", help="model file (.pt2 or .onnx)")
    p.add_argument("--encodings", required=True, help="encodings file (AIMET 0.6.1, 1.0.0 or 2.0.0)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--encoding-version", default="1.0.0", choices=["0.6.1", "1.0.0", "2.0.0"])
    p.add_argument("--no-qdq", action="store_true", help="skip the QDQ ONNX model")
    add_quant_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.commands.options import sim_kwargs
    from core.export.loader import batch_norms_folded_in
    from core.export.reader import read_encodings_file
    from core.graph import prepare_model
    from core.io import load_model
    from core.ptq.bn_fold import fold_all_batch_norms
    from core.quantsim import QuantSim

    loaded = load_model(args.model)
    sim = QuantSim(loaded, **sim_kwargs(args))
    doc = read_encodings_file(args.encodings)
    if batch_norms_folded_in(sim, doc):
        # The file encodes BN-folded weights (AIMET folds before simulating): fold here too.
        example = tuple(loaded.example_inputs)
        folded = prepare_model(loaded.graph_source, example)
        fold_all_batch_norms(folded)
        sim = QuantSim(folded, example, prepared=True, **sim_kwargs(args))
        sim.use_io_of(loaded)
    # AIMET run on the user's own ONNX names its tensors; the imported graph resolves those lowbit's lacks.
    user_graph = None
    if loaded.source_format == "onnx" and loaded.path is not None:
        import onnx

        user_graph = onnx.load(str(loaded.path), load_external_data=False).graph
    ignored: dict[str, str] = {}
    sim.load_encodings(doc, strict=True, user_graph=user_graph, ignored=ignored)
    result = sim.export(args.out, encoding_version=args.encoding_version, qdq=not args.no_qdq)
    print(
        json.dumps(
            {
                "onnx": str(result.onnx),
                "encodings": str(result.encodings),
                "qdq_onnx": str(result.qdq_onnx) if result.qdq_onnx else None,
                # Entries of the file that set no quantizer, and why (none of them changes the result).
                "ignored": ignored,
            },
            indent=2,
        )
    )
    return OK
