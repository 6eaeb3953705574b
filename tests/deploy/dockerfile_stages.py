"""A Dockerfile's build stages, read with dockerfile-parse (PyPI; the parser of containerbuildsystem's
tools, which joins continuations, drops comments and substitutes global ARG defaults into FROM).

What the checks in test_dockerfile.py need on top: named stages and the stages a stage depends on (its
FROM parent and every ``COPY --from``).

>>> stages = parse("ARG B=python:3.11\\nFROM ${B} AS a\\nRUN true\\n")
>>> stages["a"].base, [i.keyword for i in stages["a"].instructions]
('python:3.11', ['RUN'])
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser


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


def parse(text: str) -> dict[str, Stage]:
    """Stages by name (unnamed stages get their index as name), in file order."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    bases = iter(parser.parent_images)  # FROM images in order, global ARGs substituted
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in parser.structure:
        keyword, value = item["instruction"].upper(), item["value"].strip()
        if keyword == "COMMENT":
            continue
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=next(bases))
            stages[name] = current
        elif current is not None:
            current.instructions.append(Instruction(keyword, value))
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
