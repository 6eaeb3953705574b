"""Parse a Dockerfile into build stages (test support, not product code).

Enough of the Dockerfile grammar for the checks in test_dockerfile.py: comments, line
continuations, global ARG defaults substituted into FROM, named stages, and the stages a stage
depends on (its FROM parent and every ``COPY --from``).

>>> stages = parse("ARG B=python:3.11\\nFROM ${B} AS a\\nRUN true\\n")
>>> stages["a"].base, [i.keyword for i in stages["a"].instructions]
('python:3.11', ['RUN'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ARG_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case keyword and its raw argument text (continuations joined)."""

    keyword: str
    args: str


@dataclass
class Stage:
    """A build stage: its name, the image or stage it starts from, and its instructions."""

    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with ``keyword``, in order."""
        return [i.args for i in self.instructions if i.keyword == keyword]

    def copy_sources(self) -> list[str]:
        """Stages named by ``COPY --from=...``."""
        return [m.group(1) for a in self.all("COPY") for m in [re.search(r"--from=(\S+)", a)] if m]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(text: str) -> dict[str, Stage]:
    """Stages by name (unnamed stages get their index as name), in file order.

    Raises ValueError for an instruction before the first FROM other than ARG.
    """
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            base = _ARG_REF.sub(lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=base)
            stages[name] = current
        elif current is None:
            if keyword != "ARG":
                raise ValueError(f"{keyword} before the first FROM")
            arg_name, _, default = args.partition("=")
            global_args[arg_name] = default.strip('"')
        else:
            current.instructions.append(Instruction(keyword, args))
    return stages


def lineage(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target stage and the stages it starts from, nearest first (FROM chain only)."""
    chain = [stages[target]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def closure(stages: dict[str, Stage], target: str) -> set[str]:
    """Every stage whose content can end up in ``target``: FROM parents and COPY --from sources."""
    seen: set[str] = set()
    pending = [target]
    while pending:
        name = pending.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        pending.append(stages[name].base)
        pending.extend(stages[name].copy_sources())
    return seen
