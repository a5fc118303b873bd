from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer, start_server

E2E_ADMIN_KEY = "tga-e2e-admin-key-for-tests-only"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(Path(tmp_path_factory.mktemp("live")), admin_key=E2E_ADMIN_KEY)
    yield server
    server.stop()
