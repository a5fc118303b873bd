"""Cold import time of each Lambda entry module, in a fresh process each time.

Each run starts a new interpreter (pinned to the server core) in the function's folder, with the
``TOLLGATE_*`` variables set to dummies and ``AWS_ENDPOINT_URL`` on a closed loopback port, and
times ``import <entry module>`` alone (the interpreter's own start-up is reported apart). One
untimed run first makes sure every ``.pyc`` exists; the figure is the median of the timed runs.
Every run installs a socket guard first, which refuses and counts connection attempts and name
lookups: importing must do no network I/O.

    python -m bench.coldstart                      # each entry, 11 fresh imports (JSON)
    python -m bench.coldstart --against fb12c06    # each entry at that commit and now, and the
                                                   # bare FastAPI floor, interleaved round by round
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENTRIES: dict[str, tuple[str, str]] = {
    "gateway": ("functions/gateway", "handler"),
    "admin": ("functions/admin", "handler"),
    "rollup": ("functions/rollup", "handler"),
    "stream": ("functions/stream", "main"),
}

_TIMED = """
import resource, socket, sys, time
# The guard: connection attempts and name lookups are refused and counted (importing must do no
# network I/O). Installing it costs microseconds, before the clock starts.
attempts = []
def _refuse(kind):
    def refuse(*args, **kwargs):
        attempts.append(kind)
        raise OSError("network I/O during import")
    return refuse
socket.socket.connect = _refuse("connect")
socket.socket.connect_ex = _refuse("connect")
socket.getaddrinfo = _refuse("getaddrinfo")
socket.create_connection = _refuse("create_connection")
started = time.perf_counter()
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, time.perf_counter() - started, flush=True)
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print("network", len(attempts))
"""


def _run(
    python: str, code: str, modules: list[str], cwd: Path, env: dict[str, str], core: int | None
) -> tuple[float, str]:
    command = [python, "-c", code, *modules]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(modules)} failed in {cwd}:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def _parse(stdout: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                values[parts[0]] = float(parts[1])
    return values


@dataclass(frozen=True)
class Target:
    """What one fresh process imports: ``modules`` (in order), run in ``cwd`` with ``env``."""

    modules: list[str]
    cwd: Path
    env: dict[str, str]


def measure_round_robin(
    python: str, targets: dict[str, Target], *, runs: int, core: int | None, precompile: bool = True
) -> dict[str, dict[str, Any]]:
    """Each target's median import time over ``runs`` fresh processes, the targets taking turns
    (one process of each per round), so that the machine's drift over the minutes this takes falls
    on every target alike rather than on whichever ran in the slow minute."""
    if precompile:
        for target in targets.values():
            _run(python, _TIMED, target.modules, target.cwd, target.env, core)  # writes every .pyc
    samples: dict[str, dict[str, list[float]]] = {
        label: {name: [] for name in target.modules} for label, target in targets.items()
    }
    walls: dict[str, list[float]] = {label: [] for label in targets}
    rss: dict[str, list[float]] = {label: [] for label in targets}
    network = dict.fromkeys(targets, 0)
    for _ in range(runs):
        for label, target in targets.items():
            wall, stdout = _run(python, _TIMED, target.modules, target.cwd, target.env, core)
            values = _parse(stdout)
            for name in target.modules:
                samples[label][name].append(values[name])
            walls[label].append(wall)
            rss[label].append(values.get("maxrss_kib", 0))
            network[label] = max(network[label], int(values.get("network", 0)))
    return {
        label: {
            "runs": runs,
            "import_ms": {name: statistics.median(v) * 1000 for name, v in samples[label].items()},
            "import_ms_all": {name: [round(x * 1000, 1) for x in v] for name, v in samples[label].items()},
            "process_wall_ms": statistics.median(walls[label]) * 1000,
            "maxrss_kib": statistics.median(rss[label]),
            "network_attempts": network[label],
        }
        for label in targets
    }


def measure(
    python: str,
    modules: list[str],
    cwd: Path,
    env: dict[str, str],
    *,
    runs: int,
    core: int | None,
    precompile: bool = True,
) -> dict[str, Any]:
    """Median import time of ``modules`` (cumulative, in order) over ``runs`` fresh processes."""
    targets = {"only": Target(modules, cwd, env)}
    return measure_round_robin(python, targets, runs=runs, core=core, precompile=precompile)["only"]


FLOOR = "floor"


CANDIDATE = "@candidate"


def tollgate_entries(
    python: str,
    env: dict[str, str],
    *,
    runs: int,
    core: int | None,
    precompile: bool = True,
    with_floor: bool = False,
    candidate_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every function's entry module, measured round-robin, together with: under ``FLOOR`` (with
    ``with_floor``) the bare FastAPI + Mangum app of ``bench/floor/floor_handler.py``, and under
    ``<entry>@candidate`` (with ``candidate_env``) each entry again in that environment."""
    variants = {"": env} | ({CANDIDATE: candidate_env} if candidate_env is not None else {})
    targets = {
        name + suffix: Target([module], ROOT / folder, variant_env)
        for suffix, variant_env in variants.items()
        for name, (folder, module) in ENTRIES.items()
    }
    if with_floor:
        targets[FLOOR] = Target(["floor_handler"], HERE / "floor", env)
    results = measure_round_robin(python, targets, runs=runs, core=core, precompile=precompile)
    for suffix in variants:
        for name, (folder, module) in ENTRIES.items():
            results[name + suffix]["module"] = f"{folder}/{module}.py"
    if with_floor:
        results[FLOOR]["module"] = "bench/floor/floor_handler.py"
    return results


def entry_environment() -> dict[str, str]:
    """A clean environment for the entry modules: the bench's dummies, no inherited AWS settings."""
    from bench.serve import bench_environment

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env |= bench_environment()
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def interleaved(
    python: str, env: dict[str, str], against: str, *, rounds: int, core: int | None
) -> dict[str, dict[str, float]]:
    """Each entry module of the working tree and of commit ``against``, and the floor, imported in
    fresh processes, one of each per round, so that the machine's drift falls on all of them alike.

    Returns, per label (``floor``, ``<entry>@<against>``, ``<entry>``), the median, minimum and
    maximum import time in milliseconds.
    """
    with tempfile.TemporaryDirectory(prefix="tollgate-coldstart-") as scratch:
        old = Path(scratch)
        archive = subprocess.run(
            ["git", "archive", against, "layers", "functions"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)

        def target(folder: Path, module: str, source: Path) -> Target:
            return Target([module], folder, env | {"PYTHONPATH": str(source)})

        targets = {FLOOR: Target(["floor_handler"], HERE / "floor", env)}
        for name, (folder, module) in ENTRIES.items():
            targets[f"{name}@{against}"] = target(old / folder, module, old / "layers/providers/src")
            targets[name] = target(ROOT / folder, module, ROOT / "layers/providers/src")
        results = measure_round_robin(python, targets, runs=rounds, core=core)
    figures = {}
    for label, result in results.items():
        (samples,) = result["import_ms_all"].values()
        figures[label] = {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--against", help="a commit: compare its entries with the working tree's, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=11, help="fresh imports of each module (default 11)")
    parser.add_argument("--core", type=int, default=0, help="the core to pin the imports to (default 0)")
    options = parser.parse_args(argv)
    env = entry_environment()
    if options.against is None:
        print(
            json.dumps(
                tollgate_entries(sys.executable, env, runs=options.rounds, core=options.core), indent=2
            )
        )
        return 0
    results = interleaved(sys.executable, env, options.against, rounds=options.rounds, core=options.core)
    for label, figures in results.items():
        median, low, high = figures["median"], figures["min"], figures["max"]
        print(f"{label:24} median {median:6.0f} ms   min {low:6.0f}   max {high:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
