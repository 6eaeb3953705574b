"""``python -m examples.digits [--out DIR]``: build the example's artifacts and print where they are."""

from __future__ import annotations

import argparse

from examples.digits.build import DEFAULT_OUT, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.digits", description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = build(args.out)
    print(f"FP32 accuracy on {paths.eval_data.name}: {paths.fp32_accuracy:.3f}")
    for name in ("model_pt2", "model_onnx", "calib_data", "eval_data"):
        print(f"{name:11s} {getattr(paths, name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
