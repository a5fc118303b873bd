"""The benchmark harness runs end to end (``make bench-smoke``): a few requests per path, every
step producing figures. Figures are never asserted here: performance claims live in
``bench/RESULTS.md``, produced by ``make bench``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def number(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


@pytest.mark.slow
def test_the_harness_runs_every_step_and_produces_numbers(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603  # our own interpreter, fixed argv
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == []

    c1 = results["c1"]["per_target"]
    assert number(c1["direct"]["p50"]) and number(c1["tollgate"]["p99"])
    assert number(results["c1"]["added"]["tollgate"]["p50"])
    assert number(results["stream_c1"]["added"]["tollgate"]["ttfb_p50"])
    assert number(results["stream_c50"]["added"]["tollgate"]["gap_p99"])
    for latency in ("0", "50"):
        trials = results["frontier"][latency]["tollgate"]["trials"]
        assert trials and number(trials[0]["p99_ms"])
    ddb = results["dynamodb"]["tollgate"]["non_stream"]["dynamodb_per_request"]
    assert ddb and all(number(value) for value in ddb.values())
    share = results["ledger_share"]
    assert number(share["added"]["unmetered"]["p50"]) and number(share["added"]["tollgate"]["p50"])
    assert number(share["per_target"]["unmetered"]["server_cpu_us_per_request"])
    assert number(share["loop"]["fake_us"]) and number(share["loop"]["instant_us"])
    assert set(results["cold_import"]["tollgate"]) == {"gateway", "admin", "rollup", "stream"}
    assert number(results["cold_import"]["floor"]["import_ms"]["floor_handler"])
    for entry in results["cold_import"]["tollgate"].values():
        assert number(next(iter(entry["import_ms"].values())))
        assert entry["network_attempts"] == 0
    assert number(results["mangum"]["tollgate"]["median_us"])
    assert results["startup"]["tollgate"]["rss_kib"] > 0
