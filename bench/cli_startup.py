"""Start-up time of the `lowbit` client commands, side by side with the interpreter alone and torch.

    python -m bench cli [--repeats=5]

Each row is one new process (``python -m core.cli ...``, what the `lowbit` script runs): median wall
time and median CPU time (user + sys of the child) over interleaved repeats. On a shared, loaded host
the wall time grows with the load; the CPU time is what the start-up costs on an idle machine.
``lowbit jobs`` talks to a real API (`lowbit serve-api` on SQLite, one job listed). Target: ``lowbit
--help`` and ``lowbit jobs`` under 1 s; neither imports torch.

The commands run with bytecode caches, as an installed package has them (pip compiles on install): a
PYTHONDONTWRITEBYTECODE inherited from a development shell or CI is dropped for the children, and one
untimed run of each command writes the caches first. Otherwise every run would compile lowbit's modules
again, a cost users never pay.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.registry import register
from bench.table import print_table


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, child CPU s) of one run."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


@register("cli", help="`lowbit --help` / `lowbit jobs` start-up time vs python and torch import")
def bench_cli(argv: list[str]) -> None:
    from service.db.migrate import upgrade
    from service.settings import Settings
    from tests.fixtures.api_process import api_process
    from tests.service.samples import new_project_key

    repeats = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--repeats=")), 5)
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-cli-") as tmp:
        root = Path(tmp)
        env = {
            "LOWBIT_DATABASE_URL": f"sqlite:///{root / 'lowbit.db'}",
            "LOWBIT_LOCAL_STORAGE_DIR": str(root / "objects"),
        }
        settings = Settings(database_url=env["LOWBIT_DATABASE_URL"], local_storage_dir=str(root / "objects"))
        upgrade(settings)
        key = new_project_key(settings, "bench")
        with api_process(env, root / "api.log") as (url, _pid):
            client_env = {**os.environ, "LOWBIT_URL": url, "LOWBIT_API_KEY": key}
            client_env.pop("PYTHONDONTWRITEBYTECODE", None)
            py = sys.executable
            runs = {
                "python -c pass": [py, "-c", "pass"],
                "lowbit --help": [py, "-m", "core.cli", "--help"],
                "lowbit jobs": [py, "-m", "core.cli", "jobs"],
                "lowbit submit --help": [py, "-m", "core.cli", "submit", "--help"],
                "python -c 'import torch'": [py, "-c", "import torch"],
            }
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
            for args in runs.values():  # untimed: writes the bytecode caches
                _run(args, client_env)
            for _ in range(repeats):  # interleaved, so load changes hit every command alike
                for name, args in runs.items():
                    samples[name].append(_run(args, client_env))
    rows = []
    for name, runs_of in samples.items():
        wall = statistics.median(w for w, _ in runs_of)
        cpu = statistics.median(c for _, c in runs_of)
        rows.append((name, wall, cpu, "yes" if wall < 1.0 else "no", "yes" if cpu < 1.0 else "no"))
    print_table(
        f"CLI start-up, median of {repeats} interleaved runs (load average {os.getloadavg()[0]:.1f})",
        ["command", "wall s", "CPU s", "wall < 1 s", "CPU < 1 s"],
        rows,
    )
