"""A live local Tollgate (``python -m tollgate.local.runner``, exactly what ``make dev`` runs),
started as a child process on free ports, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Provider variables of the developer's shell must not leak into a test server.
PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DEEPSEEK_API_KEY",
    "XAI_API_KEY",
    "OPENROUTER_API_KEY",
    "ARK_API_KEY",
    "POE_API_KEY",
    "GEMINI_API_KEY",
    "OLLAMA_HOST",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "AWS_BEARER_TOKEN_BEDROCK",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    admin_key: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def banner_value(self, label: str) -> str:
        match = re.search(rf"^\s*{re.escape(label)}\s+(\S+)", self.log(), re.MULTILINE)
        if match is None:
            raise AssertionError(f"'{label}' not in the banner:\n{self.log()}")
        return match.group(1)

    @property
    def moto_endpoint(self) -> str:
        match = re.search(r"AWS is moto at (http://\S+?)\)", self.log())
        if match is None:
            raise AssertionError(f"no moto endpoint in the banner:\n{self.log()}")
        return match.group(1)

    def stop(self, timeout: float = 15.0) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(log_dir: Path, *, admin_key: str, extra_env: dict[str, str] | None = None) -> LiveServer:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in PROVIDER_ENV}
    env |= {
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_ADMIN_KEY": admin_key,
        "PYTHONUNBUFFERED": "1",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    env |= extra_env or {}
    log_path = log_dir / f"tollgate-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tollgate.local.runner"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = LiveServer(process=process, port=port, admin_key=admin_key, log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the local server exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"the local server did not come up in 60 s:\n{server.log()}")
