"""The external load generators (k6 for the open model, wrk for closed-loop saturation), the
Python fallback, and CPU accounting: per trial, the server's own CPU time per request, how busy
the client core was (a saturated client core means the harness, not the server, is the limit),
and how much CPU *other* processes took on the server core (a shared machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import open_loop, percentile, request_bytes

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting ------------------------------------------------------------------------------


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot."""
    times: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *fields = line.split()
            values = [int(v) for v in fields]
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values[:8])
            times[int(name[3:])] = ((total - idle) / CLK_TCK, total / CLK_TCK)
    return times


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (LiteLLM's CLI forks uvicorn)."""
    total = process_cpu(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu(int(child)) for child in children)


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of a process (and its children).
    Each thread hop of a request (a thread pool, a lock handed over) costs at least two."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            continue
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(context_switches(int(child)) for child in children)


@dataclass
class CpuWindow:
    """CPU use over one measured window."""

    seconds: float = 0.0
    server_cpu_s: float = 0.0
    server_switches: int = 0  # context switches of the server's threads
    server_core_busy: float = 0.0  # fraction of the server core in use, by anyone
    client_core_busy: float = 0.0
    foreign_on_server_core: float = 0.0  # fraction of the server core used by other processes

    @classmethod
    def measure(cls, server_pid: int | None, server_core: int, client_core: int) -> CpuMeter:
        return CpuMeter(server_pid, server_core, client_core)


class CpuMeter:
    def __init__(self, server_pid: int | None, server_core: int, client_core: int) -> None:
        self.pid = server_pid
        self.server_core = server_core
        self.client_core = client_core
        self.started = time.perf_counter()
        self.cores = core_times()
        self.cpu = tree_cpu(server_pid) if server_pid else 0.0
        self.switches = context_switches(server_pid) if server_pid else 0

    def stop(self) -> CpuWindow:
        seconds = time.perf_counter() - self.started
        cores = core_times()
        cpu = (tree_cpu(self.pid) - self.cpu) if self.pid else 0.0
        switches = (context_switches(self.pid) - self.switches) if self.pid else 0

        def busy(core: int) -> tuple[float, float]:
            b0, t0 = self.cores.get(core, (0.0, 0.0))
            b1, t1 = cores.get(core, (0.0, 0.0))
            return b1 - b0, max(t1 - t0, 1e-9)

        server_busy, server_total = busy(self.server_core)
        client_busy, client_total = busy(self.client_core)
        return CpuWindow(
            seconds=seconds,
            server_cpu_s=cpu,
            server_switches=switches,
            server_core_busy=server_busy / server_total,
            client_core_busy=client_busy / client_total,
            foreign_on_server_core=max(0.0, server_busy - cpu) / server_total,
        )


def machine_load(seconds: float = 2.0) -> dict[str, Any]:
    """How busy each core is with nothing of ours running: a shared machine skews every figure."""
    before = core_times()
    time.sleep(seconds)
    after = core_times()
    busy = {
        core: (after[core][0] - before[core][0]) / max(after[core][1] - before[core][1], 1e-9)
        for core in after
    }
    return {"busy": busy, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


# -- trials ----------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One constant-rate trial against one target."""

    target: str
    rate: float
    duration: float
    tool: str
    requests: int = 0
    achieved_rate: float = 0.0
    failed: int = 0
    dropped: int = 0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    cpu: CpuWindow = field(default_factory=CpuWindow)
    rss_kib: int = 0

    @property
    def server_cpu_us_per_request(self) -> float:
        return self.cpu.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["server_cpu_us_per_request"] = self.server_cpu_us_per_request
        data["server_switches_per_request"] = (
            self.cpu.server_switches / self.requests if self.requests else None
        )
        return data


def k6_binary() -> str | None:
    found = shutil.which("k6")
    if found:
        return found
    candidate = Path(sys.executable).parent / "k6"
    return str(candidate) if candidate.exists() else None


def k6_version() -> str | None:
    binary = k6_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (
        (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "wrk"
    )


def _vus(rate: float, latency: float) -> int:
    """The VUs k6 needs at ``rate`` against ``latency``, all allocated up front (``preAllocatedVUs``
    = ``maxVUs``).

    k6 initialises a VU it did not pre-allocate while the test runs, and counts the iterations due
    meanwhile as dropped. With 2x the expected concurrency pre-allocated, a latency blip of a few
    milliseconds made the direct path itself (the mock alone) "drop" requests at 1,300-1,500
    req/s, and any target fail a trial its latency had passed; with all of them pre-allocated, the
    direct path passes every rate up to 2,250 (0 ms) and 2,750 req/s (50 ms mock).
    """
    in_flight = rate * (latency + 0.005)
    return min(4000, int(in_flight * 6) + 50)


def run_k6(
    target: str,
    url: str,
    body: dict[str, Any],
    key: str,
    *,
    rate: float,
    duration: float,
    warmup: float,
    latency_hint: float,
    client_core: int,
    server_core: int,
    server_pid: int | None,
) -> Trial:
    binary = k6_binary()
    if binary is None:
        raise RuntimeError("k6 is not installed (it comes with the bench dependency group)")
    vus = _vus(rate, latency_hint)
    with tempfile.TemporaryDirectory() as folder:
        summary = Path(folder) / "summary.json"
        env = {
            **os.environ,
            "RATE": str(rate),
            "WARMUP": str(warmup),
            "DURATION": str(duration),
            "PREALLOCATED_VUS": str(vus),
            "MAX_VUS": str(vus),
            "BODY": json.dumps(body),
            "KEY": key,
            "URL": url,
            "SUMMARY": str(summary),
            "K6_NO_USAGE_REPORT": "true",  # k6 reports usage to its vendor unless told not to
        }
        command = [
            "taskset",
            "-c",
            str(client_core),
            binary,
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
        ]
        command.append(str(HERE / "k6" / "open_model.js"))
        meter = CpuWindow.measure(server_pid, server_core, client_core)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stdout, stderr = process.communicate(timeout=warmup + duration + 120)
        cpu = meter.stop()
        if not summary.exists():
            raise RuntimeError(
                f"k6 wrote no summary (exit {process.returncode}):\n{stderr[-2000:]}{stdout[-1000:]}"
            )
        data = json.loads(summary.read_text())
    metrics = data["metrics"]

    def metric(name: str) -> dict[str, Any]:
        return metrics.get(f"{name}{{scenario:main}}", {}).get("values", {})

    durations = metric("http_req_duration")
    requests = int(metric("http_reqs").get("count", 0))
    failed_rate = metric("http_req_failed").get("rate", 0.0)
    trial = Trial(
        target=target,
        rate=rate,
        duration=duration,
        tool="k6",
        requests=requests,
        achieved_rate=requests / duration,
        failed=round(failed_rate * requests),
        dropped=int(metric("dropped_iterations").get("count", 0)),
        p50_ms=durations.get("med", float("nan")),
        p90_ms=durations.get("p(90)", float("nan")),
        p99_ms=durations.get("p(99)", float("nan")),
        max_ms=durations.get("max", float("nan")),
    )
    # The meter spans the whole k6 run (warm-up included): attribute the server's CPU per request.
    trial.cpu = cpu
    all_requests = int(metrics.get("http_reqs", {}).get("values", {}).get("count", requests))
    share = requests / all_requests if all_requests else 1.0
    trial.cpu.server_cpu_s *= share
    trial.cpu.server_switches = round(trial.cpu.server_switches * share)
    return trial


def run_python_open_loop(
    target: str,
    port: int,
    path: str,
    body: dict[str, Any],
    key: str,
    *,
    rate: float,
    duration: float,
    warmup: float,
    client_core: int,
    server_core: int,
    server_pid: int | None,
) -> Trial:
    """The fallback generator, in this process (which runs on the client core)."""
    import uvloop

    data = request_bytes(port, path, body, {"Authorization": f"Bearer {key}"})
    meter = CpuWindow.measure(server_pid, server_core, client_core)
    report = uvloop.run(open_loop(port, data, rate=rate, duration=duration, warmup=warmup))
    cpu = meter.stop()
    latencies = report.latencies()
    requests = len(report.results)
    total_sent = report.sent or 1
    cpu.server_cpu_s *= requests / total_sent
    cpu.server_switches = round(cpu.server_switches * requests / total_sent)
    return Trial(
        target=target,
        rate=rate,
        duration=duration,
        tool="python",
        requests=requests,
        achieved_rate=requests / duration,
        failed=report.errors(),
        dropped=report.dropped,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=max(latencies) * 1000 if latencies else float("nan"),
        cpu=cpu,
    )


def run_wrk(
    target: str,
    url: str,
    body: dict[str, Any],
    key: str,
    *,
    connections: int,
    duration: float,
    client_core: int,
    server_core: int,
    server_pid: int | None,
) -> dict[str, Any]:
    """Closed loop: ``connections`` connections as fast as the server answers (saturation)."""
    env = {**os.environ, "WRK_BODY": json.dumps(body), "WRK_KEY": key}
    command = ["taskset", "-c", str(client_core), "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    command += ["--timeout", "10s", "-s", str(HERE / "wrk_post.lua"), url]
    meter = CpuWindow.measure(server_pid, server_core, client_core)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    cpu = meter.stop()
    line = next((row for row in done.stdout.splitlines() if row.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    seconds = data["duration_us"] / 1e6
    return {
        "target": target,
        "connections": connections,
        "requests_per_second": data["requests"] / seconds,
        "requests": data["requests"],
        "errors": errors,
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "server_cpu_us_per_request": cpu.server_cpu_s / data["requests"] * 1e6 if data["requests"] else None,
        "cpu": asdict(cpu),
    }


def python_open_loop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
