# ruff: noqa: E501, RUF001 - Markdown table rows read best on one line each
"""Turns ``bench/out/full/results.json`` into ``bench/RESULTS.md`` and ``bench/latency_vs_load.png``.

    python -m bench.report [results.json]

The analysis under "Where the time goes" is written by hand (``bench/ANALYSIS.md``) and included
as is: it explains the figures of the run it was written against, and names the profiles behind it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ["direct", "passthrough", "tollgate", "candidate", "litellm"]


def _f(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def _label(name: str, results: dict[str, Any]) -> str:
    litellm = (results.get("meta") or {}).get("litellm") or {}
    return {
        "direct": "direct (mock)",
        "passthrough": "naive FastAPI+aiohttp",
        "tollgate": "**Tollgate**",
        "candidate": "Tollgate (candidate)",
        "litellm": f"LiteLLM {litellm.get('litellm', '')} proxy".strip(),
    }.get(name, name)


def _names(mapping: dict[str, Any]) -> list[str]:
    return [name for name in ORDER if name in mapping] + [n for n in mapping if n not in ORDER]


def _get(data: Any, *path: Any) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: Tollgate's figure, what the references did in the same run, and
    whether the target is met."""
    rows: list[dict[str, Any]] = []

    def row(measure: str, target: str, ok: bool | None, shown: str, reference: str = "") -> None:
        rows.append({"measure": measure, "target": target, "ok": ok, "shown": shown, "reference": reference})

    def added(name: str, key: str, section: str = "c1") -> Any:
        return _get(results, section, "added", name, key)

    def refs(section: str, key: str, digits: int = 3) -> str:
        parts = []
        for name, label in (("passthrough", "naive"), ("litellm", "LiteLLM")):
            value = added(name, key, section)
            if value is not None:
                parts.append(f"{label} {_f(value, digits, ' ms')}")
        return ", ".join(parts)

    p50, p99 = added("tollgate", "p50"), added("tollgate", "p99")
    row(
        "Added latency, c=1, non-stream, p50",
        "≤ 0.5 ms",
        p50 is not None and p50 <= 0.5,
        _f(p50, 3, " ms"),
        refs("c1", "p50"),
    )
    row(
        "Added latency, c=1, non-stream, p99",
        "≤ 1.5 ms",
        p99 is not None and p99 <= 1.5,
        _f(p99, 3, " ms"),
        refs("c1", "p99"),
    )

    def frontier(latency: str, name: str) -> Any:
        return _get(results, "frontier", latency, name, "frontier")

    def frontier_refs(latency: str) -> str:
        parts = [
            f"{label} {_f(frontier(latency, name), 0)}"
            for name, label in (
                ("passthrough", "naive"),
                ("litellm", "LiteLLM"),
                ("direct", "direct (harness limit)"),
            )
            if frontier(latency, name) is not None
        ]
        return ", ".join(parts) + " req/s" if parts else ""

    f0, l0 = frontier("0", "tollgate"), frontier("0", "litellm")
    row(
        "Frontier at 0 ms mock",
        "≥ 2,000 req/s",
        f0 is not None and f0 >= 2000,
        _f(f0, 0, " req/s"),
        frontier_refs("0"),
    )
    ratio = f0 / l0 if f0 and l0 else None
    row(
        "Frontier at 0 ms mock, vs LiteLLM",
        "≥ 15× LiteLLM's",
        None if ratio is None else ratio >= 15,
        _f(ratio, 1, "×") if ratio is not None else f"n/a (LiteLLM {_f(l0, 0)} req/s)",
    )
    f50 = frontier("50", "tollgate")
    row(
        "Frontier at 50 ms mock",
        "≥ 900 req/s",
        f50 is not None and f50 >= 900,
        _f(f50, 0, " req/s"),
        frontier_refs("50"),
    )
    ttfb = added("tollgate", "ttfb_p50", "stream_c1")
    row(
        "Added time to first streamed byte, p50",
        "≤ 2 ms",
        ttfb is not None and ttfb <= 2,
        _f(ttfb, 3, " ms"),
        refs("stream_c1", "ttfb_p50"),
    )
    gap1 = added("tollgate", "gap_p99", "stream_c1")
    row(
        "Added inter-chunk gap, c=1, p99",
        "(reported)",
        None,
        _f(gap1, 3, " ms"),
        refs("stream_c1", "gap_p99"),
    )
    gap = added("tollgate", "gap_p99", "stream_c50")
    row(
        "Added inter-chunk gap, c=50, p99",
        "≤ 0.5 ms",
        gap is not None and gap <= 0.5,
        _f(gap, 3, " ms"),
        refs("stream_c50", "gap_p99"),
    )
    entries = _get(results, "cold_import", "tollgate") or {}
    floor = _get(results, "cold_import", "floor", "import_ms", "floor_handler")
    litellm_import = _get(results, "cold_import", "litellm", "import_ms", "litellm.proxy.proxy_server")
    worst_name, worst = None, None
    for name, entry in entries.items():
        value = entry["import_ms"][next(iter(entry["import_ms"]))]
        if worst is None or value > worst:
            worst_name, worst = name, value
        row(  # the target holds for each entry: one row each
            f"Cold import, {name} entry",
            "≤ 300 ms",
            value <= 300,
            _f(value, 0, " ms"),
            f"bare FastAPI + Mangum {_f(floor, 0, ' ms')}" if floor else "",
        )
    share = worst / litellm_import if worst and litellm_import else None
    row(
        "Cold import vs LiteLLM's (slowest entry)",
        "≤ 1/5",
        None if share is None else share <= 0.2,
        f"1/{_f(1 / share, 1)} ({worst_name})" if share else "n/a",
        f"LiteLLM proxy {_f(litellm_import, 0, ' ms')}" if litellm_import else "",
    )
    mangum = _get(results, "mangum", "tollgate", "median_us")
    bare = _get(results, "mangum", "tollgate", "bare_fastapi", "median_us")
    row(
        "Mangum per-invoke (GET /v1/models)",
        "≤ 0.2 ms",
        mangum is not None and mangum <= 200,
        _f((mangum or 0) / 1000, 3, " ms"),
        f"bare FastAPI under Mangum {_f(bare / 1000, 3, ' ms')}" if bare else "",
    )
    rss = _get(results, "startup", "tollgate", "rss_kib")
    rss_refs = ", ".join(
        f"{label} {_f(_get(results, 'startup', name, 'rss_kib') / 1024, 1, ' MiB')}"
        for name, label in (("passthrough", "naive"), ("litellm", "LiteLLM"))
        if _get(results, "startup", name, "rss_kib")
    )
    row(
        "RSS after start-up",
        "≤ 100 MB",
        rss is not None and rss / 1024 <= 100,
        _f((rss or 0) / 1024, 1, " MiB"),
        rss_refs,
    )
    peak = _get(results, "rss_peaks_kib", "load", "tollgate")
    row("RSS under load (peak)", "(reported)", None, _f((peak or 0) / 1024, 1, " MiB") if peak else "n/a")
    ddb = _get(results, "dynamodb", "tollgate", "non_stream", "dynamodb_per_request") or {}
    writes = sum(
        v for k, v in ddb.items() if k in ("put_item", "update_item", "delete_item", "transact_write_items")
    )
    reads = sum(v for k, v in ddb.items() if k in ("get_item", "query"))
    cold = _get(results, "dynamodb", "tollgate", "cold_first_request", "dynamodb") or {}
    cold_reads = sum(v for k, v in cold.items() if k in ("get_item", "query"))
    row(
        "DynamoDB round trips per chat request, steady state",
        "≤ 2 writes, 0 reads",
        bool(ddb) and writes <= 2 and reads == 0,
        f"{_f(writes, 2)} writes, {_f(reads, 3)} reads",
        f"first request after start-up: {_f(cold_reads, 0)} reads" if cold else "",
    )
    return rows


def markdown(results: dict[str, Any], plot_name: str) -> str:
    meta = results.get("meta", {})
    lines: list[str] = ["# Tollgate benchmark results", ""]
    lines += [
        f"Generated by `make bench` (`python -m bench.run`) on {meta.get('started', '?')}, in "
        f"{_f(meta.get('duration_s', 0) / 60, 1)} min; raw figures in `bench/out/full/results.json`. "
        "Rerun with `make bench`; `make bench-smoke` checks the harness in seconds.",
        "",
    ]
    load = results.get("load_before", {})
    busy = load.get("busy", {})
    foreign = max((v for v in busy.values()), default=0.0)
    if foreign > 0.05:
        lines += [
            f"> **The machine was not idle**: before the run, the cores were {', '.join(f'{100 * v:.0f}%' for v in busy.values())} "
            f"busy with other processes (load average {' '.join(load.get('loadavg', []))}). Latency figures, "
            "tails above all, are inflated by that; each frontier trial records the foreign CPU share on the server core.",
            "",
        ]
    if results.get("errors"):
        lines += [
            "> Steps that failed in this run: "
            + "; ".join(f"`{e['step']}`: {e['error'][:200]}" for e in results["errors"]),
            "",
        ]

    lines += [
        "## Targets",
        "",
        "| Measure | Target | Tollgate | References in the same run | Met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in targets(results):
        ok = {True: "yes", False: "**no**", None: "–"}[entry["ok"]]
        lines.append(
            f"| {entry['measure']} | {entry['target']} | {entry['shown']} | {entry['reference']} | {ok} |"
        )
    lines.append("")

    lines += _machine(results)
    lines += _latency_tables(results)
    lines += _frontier_tables(results, plot_name)
    lines += _other_tables(results)
    analysis = HERE / "ANALYSIS.md"
    if analysis.exists():
        lines += ["", analysis.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def _machine(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    packages = meta.get("packages", {})
    litellm = meta.get("litellm") or {}
    lines = ["## Machine, topology and versions", ""]
    lines += [
        f"- **Machine**: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('memory_gib', '?')} GiB; "
        f"{meta.get('os', '?')}, Linux {meta.get('kernel', '?')}.",
        "- **Topology**: each server under test alone on core 0 (`taskset -c 0`), one worker, uvloop + httptools, "
        "no access log. The mock upstream (`bench/mock_upstream.py`, uvloop + httptools), the load generators and "
        "the harness on core 1. Loopback only.",
        "- **Tollgate** (`bench/serve.py`): `tollgate.api.apps.local_app` in **credit mode**, priced models routed "
        "to the mock, DynamoDB on an in-memory fake with DynamoDB's conditional semantics (`bench/fake_dynamo.py`), "
        "Secrets Manager on an in-memory fake behind Tollgate's own `SecretStore` (Powertools cache); the process also "
        "holds idle botocore DynamoDB and Secrets Manager clients, as a deployed function does. Hold + settle run on every request.",
        f"- **Load**: c=1 figures from the harness's own raw-socket client (`bench/clients.py`), interleaved rounds; "
        f"constant-rate (open model) trials with **{meta.get('k6') or 'the Python generator'}** "
        f"(`bench/k6/open_model.js`); closed-loop saturation with **{meta.get('wrk') or 'wrk (absent)'}**.",
        f"- **Python** {meta.get('python', '?')}; "
        + ", ".join(f"{name} {version}" for name, version in packages.items())
        + ".",
        "- **LiteLLM**: "
        + (", ".join(f"{n} {v}" for n, v in litellm.items()) if litellm else "not run")
        + " — `litellm[proxy]` in `bench/.venv-litellm`, 1 worker, no database, master key set, local cost map.",
        f"- Tollgate commit `{meta.get('git', '?')}`"
        + (" with uncommitted changes in `layers/`" if meta.get("tollgate_tree_dirty") else "")
        + (f"; candidate tree `{meta['candidate']}`" if meta.get("candidate") else "")
        + ".",
        "",
    ]
    return lines


def _latency_tables(results: dict[str, Any]) -> list[str]:
    lines = ["## Added latency at c=1 (non-streamed, 0 ms mock)", ""]
    c1 = results.get("c1") or {}
    per = c1.get("per_target", {})
    added = c1.get("added", {})
    if per:
        lines += [
            f"{c1.get('rounds')} interleaved rounds × {c1.get('per_round')} requests per target; each round runs the "
            "targets in a new random order. *Added* is the target's percentile minus the direct path's.",
            "",
            "| Target | p50 | p90 | p99 | mean | added p50 | added p99 | server CPU/request | context switches/request | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in _names(per):
            stats, delta = per[name], added.get(name, {})
            cpu = stats.get("server_cpu_us_per_request") if name != "direct" else None
            switches = stats.get("server_switches_per_request") if name != "direct" else None
            lines.append(
                f"| {_label(name, results)} | {_f(stats.get('p50'), 3)} | {_f(stats.get('p90'), 3)} | {_f(stats.get('p99'), 3)} "
                f"| {_f(stats.get('mean'), 3)} | {_f(delta.get('p50'), 3)} | {_f(delta.get('p99'), 3)} "
                f"| {_f(cpu, 0, ' µs')} | {_f(switches, 1)} | {stats.get('errors', 0)} |"
            )
        lines += [
            "",
            "(milliseconds; server CPU is the server process's CPU time per request, from /proc, at 10 ms resolution over "
            "each block; context switches count every thread of the server: each hop to a thread pool costs at least two)",
            "",
        ]
    for key, title in (("stream_c1", "Streaming at c=1"), ("stream_c50", "Streaming at c=50")):
        data = results.get(key) or {}
        per = data.get("per_target", {})
        if not per:
            continue
        added = data.get("added", {})
        note = (
            "16 content chunks 5 ms apart (`lat0-gap5-n16`)"
            if key == "stream_c1"
            else f"{data.get('concurrency')} concurrent streams per target, each 20 content chunks 20 ms apart (`lat0-gap20-n20`)"
        )
        lines += [
            f"## {title}",
            "",
            f"{note}. TTFB: request sent to first body byte. Gap: time between consecutive content events as the client receives them.",
            "",
            "| Target | TTFB p50 | TTFB p99 | gap p50 | gap p99 | added TTFB p50 | added gap p99 | streams | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in _names(per):
            stats, delta = per[name], added.get(name, {})
            lines.append(
                f"| {_label(name, results)} | {_f(stats['ttfb'].get('p50'), 3)} | {_f(stats['ttfb'].get('p99'), 3)} "
                f"| {_f(stats['gap'].get('p50'), 3)} | {_f(stats['gap'].get('p99'), 3)} | {_f(delta.get('ttfb_p50'), 3)} "
                f"| {_f(delta.get('gap_p99'), 3)} | {stats['ttfb'].get('n', 0)} | {stats.get('errors', 0)} |"
            )
        lines += ["", "(milliseconds)", ""]
    return lines


def _frontier_tables(results: dict[str, Any], plot_name: str) -> list[str]:
    frontier = results.get("frontier") or {}
    lines = ["## Throughput frontier (open model, constant arrival rate)", ""]
    if not frontier:
        return [*lines, "Not measured in this run.", ""]
    lines += [
        f"The highest rate (from a fixed grid) at which the target's p99 is at most {frontier.get('budget_added_p99_ms')} ms "
        f"above the direct path's p99 at the same rate, with no failed and no dropped request; generator: "
        f"{frontier.get('tool')}, {results.get('plan', {}).get('frontier_seconds')} s measured after "
        f"{results.get('plan', {}).get('frontier_warmup')} s of warm-up per trial. Server CPU is the server process's "
        "own CPU time per request; *foreign* is CPU other processes took on core 0 during the trial.",
        "",
        "| Mock latency | Target | Frontier (req/s) | What stopped it | server CPU/request at the frontier |",
        "| --- | --- | --- | --- | --- |",
    ]
    for latency in ("0", "50"):
        per = frontier.get(latency) or {}
        for name in _names(per):
            entry = per[name]
            at = next((t for t in entry.get("trials", []) if t["rate"] == entry.get("frontier")), None)
            cpu = at.get("server_cpu_us_per_request") if at else None
            lines.append(
                f"| {latency} ms | {_label(name, results)} | {_f(entry.get('frontier'), 0)} | {entry.get('limit', '')} | {_f(cpu, 0, ' µs')} |"
            )
    direct_trials = sorted(
        (frontier.get("0") or {}).get("direct", {}).get("trials", []), key=lambda t: t["rate"]
    )
    raw_p50 = _get(results, "c1", "per_target", "direct", "p50")
    if direct_trials and raw_p50 is not None:
        first = direct_trials[0]
        ceiling = (frontier.get("0") or {}).get("direct", {}).get("frontier")
        at_ceiling = next((t for t in direct_trials if t["rate"] == ceiling), None)
        busy = at_ceiling.get("cpu", {}).get("client_core_busy") if at_ceiling else None
        lines += [
            "",
            f"**The generator's own overhead**: the direct path (mock only) through {frontier.get('tool')} at {first['rate']} req/s has "
            f"p50 {_f(first.get('p50_ms'), 3)} ms and p99 {_f(first.get('p99_ms'), 3)} ms, against p50 {_f(raw_p50, 3)} ms through the "
            f"harness's raw-socket client at c=1; the direct path itself passes up to {_f(ceiling, 0)} req/s"
            + (f" (client core {_f(100 * busy, 0)}% busy there)" if busy is not None else "")
            + ", the most this mock + generator pair on one core can show. Every *added* figure subtracts the direct path at the same rate.",
        ]
    lines += ["", f"![latency against load]({plot_name})", "", "<details><summary>Every trial</summary>", ""]
    lines += [
        "| Mock | Target | Rate | Achieved | p50 ms | p99 ms | added p99 ms | failed | dropped | server CPU µs/req | foreign on core 0 | client core busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for latency in ("0", "50"):
        per = frontier.get(latency) or {}
        for name in _names(per):
            for trial in per[name].get("trials", []):
                cpu = trial.get("cpu", {})
                lines.append(
                    f"| {latency} | {name} | {trial['rate']} | {_f(trial.get('achieved_rate'), 0)} | {_f(trial.get('p50_ms'), 2)} "
                    f"| {_f(trial.get('p99_ms'), 2)} | {_f(trial.get('added_p99_ms'), 2)} | {trial.get('failed')} | {trial.get('dropped')} "
                    f"| {_f(trial.get('server_cpu_us_per_request'), 0)} | {_f(100 * cpu.get('foreign_on_server_core', 0), 0)}% "
                    f"| {_f(100 * cpu.get('client_core_busy', 0), 0)}% |"
                )
    lines += ["", "</details>", ""]
    saturation = results.get("saturation") or {}
    if saturation:
        lines += [
            "## Saturation (closed loop, wrk, 50 connections)",
            "",
            "| Mock latency | Target | req/s | p50 ms | p99 ms | errors | server CPU µs/req |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for latency in ("0", "50"):
            per = saturation.get(latency) or {}
            for name in _names(per):
                entry = per[name]
                lines.append(
                    f"| {latency} ms | {_label(name, results)} | {_f(entry['requests_per_second'], 0)} | {_f(entry['p50_ms'], 2)} "
                    f"| {_f(entry['p99_ms'], 2)} | {entry['errors']} | {_f(entry.get('server_cpu_us_per_request'), 0)} |"
                )
        lines.append("")
    return lines


def _other_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cold = results.get("cold_import") or {}
    if cold:
        lines += [
            "## Cold import of each function's entry module",
            "",
            f"A fresh interpreter per run, `.pyc` present, dummy `TOLLGATE_*` variables, pinned to core 0; median of "
            f"{results.get('plan', {}).get('cold_runs')} runs (LiteLLM: {results.get('plan', {}).get('litellm_cold_runs')}); "
            "the entries and the floor take turns, one process of each per round, so the machine's drift falls on all alike. "
            "*Process* is the whole `python -c 'import …'` wall time, interpreter start-up included. *Network* counts connection "
            "attempts and name lookups during the import (a socket guard refuses them).",
            "",
            "| Entry | import (median) | all runs | process | max RSS | network |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for group in ("tollgate", "candidate"):
            for name, entry in (cold.get(group) or {}).items():
                module = next(iter(entry["import_ms"]))
                prefix = "" if group == "tollgate" else "candidate "
                lines.append(
                    f"| {prefix}`{entry.get('module', name)}` | {_f(entry['import_ms'][module], 0, ' ms')} "
                    f"| {', '.join(str(round(x)) for x in entry['import_ms_all'][module])} | {_f(entry['process_wall_ms'], 0, ' ms')} "
                    f"| {_f(entry['maxrss_kib'] / 1024, 1, ' MiB')} | {entry.get('network_attempts')} |"
                )
        floor = cold.get("floor")
        if floor:
            module = next(iter(floor["import_ms"]))
            lines.append(
                f"| floor: bare FastAPI + Mangum (`{floor.get('module')}`) | {_f(floor['import_ms'][module], 0, ' ms')} "
                f"| {', '.join(str(round(x)) for x in floor['import_ms_all'][module])} | {_f(floor['process_wall_ms'], 0, ' ms')} "
                f"| {_f(floor['maxrss_kib'] / 1024, 1, ' MiB')} | {floor.get('network_attempts')} |"
            )
        litellm = cold.get("litellm")
        if litellm:
            for module, value in litellm["import_ms"].items():
                lines.append(
                    f"| LiteLLM `import {module}` (cumulative) | {_f(value, 0, ' ms')} | {', '.join(str(round(x)) for x in litellm['import_ms_all'][module])} "
                    f"| {_f(litellm['process_wall_ms'], 0, ' ms')} | {_f(litellm['maxrss_kib'] / 1024, 1, ' MiB')} | {litellm.get('network_attempts')} |"
                )
        lines.append("")
    mangum = results.get("mangum") or {}
    if mangum:
        lines += [
            "## Mangum per-invoke",
            "",
            "`Mangum(gateway_app(services), lifespan='off')` as in `functions/gateway/handler.py`, called with the stored API "
            "Gateway REST event `bench/events/apigw_rest_get_models.json` (`GET /v1/models` with the bench key), on the fakes.",
            "",
            "| Variant | invokes | median | p90 | p99 | DynamoDB calls per invoke |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, entry in mangum.items():
            lines.append(
                f"| {name} | {entry['invokes']} | {_f(entry['median_us'], 0, ' µs')} | {_f(entry['p90_us'], 0, ' µs')} "
                f"| {_f(entry['p99_us'], 0, ' µs')} | {entry.get('dynamodb_calls_per_invoke')} |"
            )
        lines.append("")
    botocore = results.get("botocore") or {}
    if botocore:
        real, fake, http = botocore.get("botocore", {}), botocore.get("fake", {}), botocore.get("http", {})
        lines += [
            "## What the fake DynamoDB leaves out: the DynamoDB client's CPU per call",
            "",
            "The ledger's two calls per request, timed three ways (`bench/botocore_cost.py`, median of "
            f"{botocore.get('calls')}, core 0): through boto3 whose `before-send` hook answers at once (validation, "
            "serialisation, signing and parsing; no network), through the transport the request path uses "
            "(`tollgate.store.dynamo_http`: JSON, SigV4 and a keep-alive HTTP/1.1 POST to a loopback endpoint served "
            "from core 1), "
            "and on the in-memory fake. In AWS each call also waits a network round trip.",
            "",
            "| Call | boto3, no network | the ledger's transport, loopback | in-memory fake |",
            "| --- | --- | --- | --- |",
            f"| hold (`UpdateItem`) | {_f(real.get('hold_update_item_us'), 0, ' µs')} "
            f"| {_f(http.get('hold_update_item_us'), 0, ' µs')} | {_f(fake.get('hold_update_item_us'), 0, ' µs')} |",
            f"| settle (`TransactWriteItems`) | {_f(real.get('settle_transact_write_items_us'), 0, ' µs')} "
            f"| {_f(http.get('settle_transact_write_items_us'), 0, ' µs')} "
            f"| {_f(fake.get('settle_transact_write_items_us'), 0, ' µs')} |",
            "",
        ]
        if http.get("cpu_us_per_call") is not None:
            lines += [
                f"Client CPU per call against the same loopback endpoint: **{_f(http.get('cpu_us_per_call'), 0, ' µs')}** "
                f"through the ledger's transport, {_f(http.get('boto3_over_loopback_cpu_us_per_call'), 0, ' µs')} through "
                "boto3 (its network I/O included).",
                "",
            ]
    lines += _ledger_share_table(results)
    startup = results.get("startup") or {}
    if startup:
        peaks = results.get("rss_peaks_kib") or {}
        lines += [
            "## Memory (RSS)",
            "",
            "| Server | after start-up | peak, c=1 phases | peak, stream phases | peak, load phases | ready in |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name in _names(startup):
            entry = startup[name]

            def peak(phase: str, name: str = name) -> str:
                value = (peaks.get(phase) or {}).get(name)
                return _f(value / 1024, 1, " MiB") if value else "n/a"

            lines.append(
                f"| {_label(name, results)} | {_f(entry['rss_kib'] / 1024, 1, ' MiB')} | {peak('c1')} | {peak('stream')} "
                f"| {peak('load')} | {_f(entry['ready_seconds'], 1, ' s')} |"
            )
        lines.append("")
    ddb = results.get("dynamodb") or {}
    if ddb:
        lines += [
            "## AWS round trips per request (counted on the fakes)",
            "",
            "Steady state: keys, routes, prices and secrets are cached (30 s TTL), so these are the calls every request makes. "
            "All of them are synchronous on the request's path (awaited before the response, or before the stream's last event).",
            "",
            "| Variant | Request | DynamoDB calls per request | Secrets Manager calls per request |",
            "| --- | --- | --- | --- |",
        ]
        for name, entry in ddb.items():
            for kind in ("non_stream", "stream"):
                data = entry.get(kind) or {}
                calls = {k: v for k, v in (data.get("dynamodb_per_request") or {}).items() if ":" not in k}
                lines.append(
                    f"| {name} | {kind.replace('_', '-')} chat | {calls or 0} | {data.get('secretsmanager_per_request') or 0} |"
                )
            cold = entry.get("cold_first_request") or {}
            calls = {k: v for k, v in (cold.get("dynamodb") or {}).items() if ":" not in k}
            lines.append(
                f"| {name} | first request after start-up | {calls} | {cold.get('secretsmanager')} |"
            )
        lines.append("")
    return lines


def _ledger_share_table(results: dict[str, Any]) -> list[str]:
    share = results.get("ledger_share") or {}
    if not share:
        return []
    per_target, added, loop = share.get("per_target", {}), share.get("added", {}), share.get("loop", {})
    lines = [
        "## What the ledger and metering cost a request (an ablation)",
        "",
        "Tollgate's server beside the same server with `Meter.admit` and `Meter.settle` doing nothing "
        "(`bench.serve --without-metering`: no price lookup, hold, settlement, usage record or metrics line; "
        "it would give tokens away, so it exists only in the benchmark), non-streamed at c=1 in "
        f"{share.get('rounds')} interleaved rounds of {share.get('per_round')} with the direct path, as in the c=1 table.",
        "",
        "| Target | added p50 | added p99 | server CPU per request |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("tollgate", "unmetered", "passthrough"):
        if name not in per_target:
            continue
        label = {"tollgate": "Tollgate", "unmetered": "Tollgate without ledger and metering"}.get(
            name, _label(name, results)
        )
        lines.append(
            f"| {label} | {_f(_get(added, name, 'p50'), 2, ' ms')} | {_f(_get(added, name, 'p99'), 2, ' ms')} "
            f"| {_f(per_target[name].get('server_cpu_us_per_request'), 0, ' µs')} |"
        )
    lines.append("")
    if loop:
        lines += [
            "The metering path alone (`bench/metering_cost.py`: admission with its price lookup and hold, quote, settlement "
            f"with its usage record and metrics line; best of {loop.get('passes')} passes of {loop.get('requests')} "
            f"requests, core 0): **{_f(loop.get('fake_us'), 0, ' µs')}** per request on the in-memory fake, of which "
            f"Tollgate's own code **{_f(loop.get('instant_us'), 0, ' µs')}** (the same calls answered at once) and the "
            f"fake {_f(loop.get('fake_share_us'), 0, ' µs')}. In the server the same work costs more (the difference "
            "between the two servers above), as code interleaved with the rest of a request runs from colder caches.",
            "",
        ]
    return lines


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    frontier = results.get("frontier") or {}
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = {
        "direct": "#888888",
        "passthrough": "#1f77b4",
        "tollgate": "#d62728",
        "candidate": "#ff7f0e",
        "litellm": "#2ca02c",
    }
    for axis, latency in zip(axes, ("0", "50"), strict=True):
        per = frontier.get(latency) or {}
        for name in _names(per):
            trials = sorted(
                (t for t in per[name].get("trials", []) if t.get("requests")), key=lambda t: t["rate"]
            )
            if not trials:
                continue
            rates = [t["rate"] for t in trials]
            colour = colours.get(name)
            label = _label(name, results).replace("*", "")
            axis.plot(rates, [t["p99_ms"] for t in trials], "o-", color=colour, label=f"{label} p99")
            axis.plot(
                rates, [t["p50_ms"] for t in trials], "x--", color=colour, alpha=0.6, label=f"{label} p50"
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("offered load (requests/s, constant arrival rate)")
        axis.set_ylabel("latency (ms)")
        axis.set_title(f"mock upstream latency {latency} ms")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("Latency against load, server on one core (p50 dashed, p99 solid)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write(results: dict[str, Any], markdown_path: Path, plot_path: Path) -> None:
    plotted = plot(results, plot_path)
    text = markdown(results, plot_path.name if plotted else "(matplotlib missing: no plot)")
    markdown_path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    source = Path(args[0]) if args else HERE / "out" / "full" / "results.json"
    write(json.loads(source.read_text()), HERE / "RESULTS.md", HERE / "latency_vs_load.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
