"""A function's modules load with the cycle collector paused, and what they built is frozen after."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from tollgate.startup import cold_start


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # the test process keeps its objects collectable
    if enabled:
        gc.enable()
    else:
        gc.disable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_collector_is_paused_while_loading_and_resumes_after() -> None:
    gc.enable()
    with cold_start():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_what_was_loaded_is_frozen_out_of_later_collections() -> None:
    gc.enable()
    gc.unfreeze()
    with cold_start():
        kept = [Cycle() for _ in range(100)]
    assert gc.get_freeze_count() >= 100
    collectable = {id(obj) for obj in gc.get_objects()}  # every generation but the frozen one
    assert all(gc.is_tracked(item) and id(item) not in collectable for item in kept)


def test_a_failed_load_resumes_the_collector_and_freezes_nothing() -> None:
    gc.enable()
    gc.unfreeze()
    with pytest.raises(RuntimeError, match="bad settings"), cold_start():
        raise RuntimeError("bad settings")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with cold_start():
        pass
    assert not gc.isenabled()


def test_pydantic_plugins_are_not_looked_up_unless_the_operator_says_so(monkeypatch) -> None:
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "restored after the test")
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    with cold_start():
        pass
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "")
    with cold_start():
        pass
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == ""
