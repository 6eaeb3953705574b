"""`python -m bench [NAME ...] [-- extra args]` runs registered benchmarks (all by default) and prints tables."""

from __future__ import annotations

import sys

from bench.registry import discover


def main(argv: list[str]) -> int:
    benches = discover()
    if argv and argv[0] in ("-h", "--help", "list"):
        for name, (_, help_text) in benches.items():
            print(f"{name:20s} {help_text}")
        return 0
    names = [a for a in argv if not a.startswith("-")] or list(benches)
    extra = [a for a in argv if a.startswith("-")]
    unknown = [n for n in names if n not in benches]
    if unknown:
        print(f"unknown bench(es) {', '.join(unknown)}; choose from {', '.join(benches)}", file=sys.stderr)
        return 2
    for name in names:
        benches[name][0](extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
