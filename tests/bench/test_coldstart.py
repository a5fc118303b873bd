"""The cold-import measure takes its targets in turns, so drift cannot favour one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import coldstart


def test_targets_take_turns_and_each_keeps_its_own_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    clock = iter(range(1, 1000))

    def fake_run(
        python: str, code: str, modules: list[str], cwd: Path, env: dict[str, str], core: int | None
    ) -> tuple[float, str]:
        calls.append(modules[0])
        # Each target's import takes a different, rising time: the samples must stay apart.
        seconds = {"a": 0.1, "b": 0.2, "c": 0.3}[modules[0]] + next(clock) / 1e6
        return 0.5, f"{modules[0]} {seconds}\nmaxrss_kib 100\nnetwork 0\n"

    monkeypatch.setattr(coldstart, "_run", fake_run)
    targets = {label: coldstart.Target([label], Path("."), {}) for label in ("a", "b", "c")}
    results = coldstart.measure_round_robin("python", targets, runs=3, core=None, precompile=True)

    assert calls == ["a", "b", "c"] * 4  # one untimed round that writes the .pyc files, then 3
    for label, base in (("a", 100), ("b", 200), ("c", 300)):
        (samples,) = results[label]["import_ms_all"].values()
        assert len(samples) == 3
        assert all(base <= sample < base + 1 for sample in samples)
        assert results[label]["runs"] == 3


def test_floor_is_measured_with_the_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def fake_round_robin(python: str, targets: dict[str, Any], **options: Any) -> dict[str, Any]:
        seen.extend((label, target.modules[0]) for label, target in targets.items())
        return {label: {} for label in targets}

    monkeypatch.setattr(coldstart, "measure_round_robin", fake_round_robin)
    results = coldstart.tollgate_entries("python", {}, runs=1, core=None, with_floor=True)
    assert dict(seen) == {
        "gateway": "handler",
        "admin": "handler",
        "rollup": "handler",
        "stream": "main",
        coldstart.FLOOR: "floor_handler",
    }
    assert results[coldstart.FLOOR]["module"] == "bench/floor/floor_handler.py"
    assert results["stream"]["module"] == "functions/stream/main.py"


def test_a_candidate_tree_takes_turns_with_the_entries_in_its_own_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, dict[str, str]] = {}

    def fake_round_robin(python: str, targets: dict[str, Any], **options: Any) -> dict[str, Any]:
        seen.update({label: target.env for label, target in targets.items()})
        return {label: {} for label in targets}

    monkeypatch.setattr(coldstart, "measure_round_robin", fake_round_robin)
    mine, theirs = {"PYTHONPATH": "mine"}, {"PYTHONPATH": "candidate"}
    results = coldstart.tollgate_entries("python", mine, runs=1, core=None, candidate_env=theirs)
    assert seen == {
        **dict.fromkeys(coldstart.ENTRIES, mine),
        **{name + coldstart.CANDIDATE: theirs for name in coldstart.ENTRIES},
    }
    assert results["gateway@candidate"]["module"] == "functions/gateway/handler.py"
