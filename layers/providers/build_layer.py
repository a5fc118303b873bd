"""Build the shared Lambda layer: the ``tollgate`` package and its locked dependencies.

Usage::

    uv run python layers/providers/build_layer.py OUTPUT_DIR

The layer targets the Lambda platform, not this machine: Python 3.13 on arm64 (Graviton), so every
dependency comes from an ``aarch64`` manylinux wheel (``--only-binary :all:``). The versions come from
the workspace's ``uv.lock``, exported to a requirements file, so the layer runs exactly what the tests ran.

Steps:
1. ``uv export`` the locked runtime dependencies of ``tollgate`` (no dev group, no workspace members).
2. ``uv pip install`` them into ``OUTPUT_DIR/python`` for ``aarch64-manylinux2014`` / CPython 3.13.
3. Install ``tollgate`` itself into the same folder, without dependencies.
4. Strip what Lambda never reads: tests, caches, type stubs, build metadata.
5. Compile ``.pyc`` with a Python 3.13 interpreter (cold start matters: see DESIGN.md). The byte code
   uses unchecked hashes, so it is reproducible and the runtime never stats the sources to validate it.
   Without a 3.13 interpreter the step is skipped with a warning (the layer still works, only colder).

CDK calls this script from ``infra/layer.py`` (local bundling); it has no dependencies beyond the
standard library and ``uv`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON_VERSION = "3.13"
PYTHON_PLATFORM = "aarch64-manylinux2014"
PACKAGE = "tollgate"

PROJECT_DIR = Path(__file__).resolve().parent
WORKSPACE_ROOT = PROJECT_DIR.parent.parent

# Folders dropped anywhere under python/: bundled test suites and stale caches, never imported on Lambda.
_JUNK_DIRS = frozenset({"__pycache__", "tests"})
# dist-info files that only an installer reads; METADATA and entry points stay for importlib.metadata.
_JUNK_DIST_INFO_FILES = frozenset(
    {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_build.json", "uv_cache.json"}
)
_JUNK_SUFFIXES = (".pyi", ".c", ".h", ".pyx", ".pxd")


def log(message: str) -> None:
    print(f"[build_layer] {message}", file=sys.stderr, flush=True)


def run(command: list[str], cwd: Path = WORKSPACE_ROOT) -> None:
    log("$ " + " ".join(command))
    subprocess.run(command, cwd=cwd, check=True)  # noqa: S603  # fixed argv, no shell


def uv_executable() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("build_layer: `uv` is not on PATH; install it (https://docs.astral.sh/uv/)")
    return uv


def export_requirements(uv: str, requirements: Path) -> None:
    run(
        [
            uv,
            "export",
            "--quiet",
            "--frozen",
            "--no-dev",
            "--no-emit-workspace",
            "--package",
            PACKAGE,
            "--no-hashes",
            "--format",
            "requirements-txt",
            "--output-file",
            str(requirements),
        ]
    )


def install(uv: str, target: Path, *args: str) -> None:
    run(
        [
            uv,
            "pip",
            "install",
            "--target",
            str(target),
            "--python-platform",
            PYTHON_PLATFORM,
            "--python-version",
            PYTHON_VERSION,
            "--no-compile",
            "--quiet",
            *args,
        ]
    )


def strip(site: Path) -> None:
    """Remove files Lambda never reads, keeping what ``importlib.metadata`` needs."""
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.exists():
            continue
        if path.is_dir():
            if path.name in _JUNK_DIRS:
                shutil.rmtree(path)
        elif path.suffix in _JUNK_SUFFIXES or (
            path.parent.name.endswith(".dist-info") and path.name in _JUNK_DIST_INFO_FILES
        ):
            path.unlink()
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: no use inside a layer


def _runs_as(candidate: str, version: str) -> bool:
    """True when ``candidate`` really starts and is CPython ``version`` (pyenv shims may not)."""
    try:
        probe = subprocess.run(  # noqa: S603  # fixed argv
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return probe.returncode == 0 and probe.stdout.strip() == version


def find_python(version: str = PYTHON_VERSION) -> str | None:
    """A Python ``version`` interpreter: uv's discovery first, then pyenv, then ``PATH``."""
    candidates: list[str] = []
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run(  # noqa: S603  # fixed argv
            [uv, "python", "find", "--no-project", version],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(found.stdout.strip())
    pyenv = shutil.which("pyenv")
    if pyenv:
        latest = subprocess.run(  # noqa: S603  # fixed argv
            [pyenv, "latest", version], capture_output=True, text=True, check=False
        )
        if latest.returncode == 0 and latest.stdout.strip():
            root = subprocess.run(  # noqa: S603  # fixed argv
                [pyenv, "root"], capture_output=True, text=True, check=False
            ).stdout.strip()
            candidates.append(str(Path(root, "versions", latest.stdout.strip(), "bin", f"python{version}")))
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    return next((c for c in candidates if _runs_as(c, version)), None)


def compile_bytecode(site: Path) -> None:
    python = find_python()
    if python is None:
        log(
            f"WARNING: no Python {PYTHON_VERSION} interpreter found (tried `uv python find`, pyenv, PATH); "
            "skipping .pyc compilation. The layer works, but cold starts compile imports every time. "
            f"Install one with `uv python install {PYTHON_VERSION}`."
        )
        return
    log(f"compiling .pyc with {python}")
    # -j0: all cores; unchecked-hash: reproducible output, no source stat at import.
    run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(site),
        ]
    )


def build(output_dir: Path) -> Path:
    uv = uv_executable()
    site = output_dir / "python"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="tollgate-layer-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        export_requirements(uv, requirements)
        install(uv, site, "--only-binary", ":all:", "--requirement", str(requirements))
        install(uv, site, "--no-deps", "--reinstall-package", PACKAGE, str(PROJECT_DIR))
    strip(site)
    compile_bytecode(site)
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    log(f"layer ready in {site} ({size / 1_000_000:.1f} MB unzipped)")
    return site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("output_dir", type=Path, help="folder that receives python/ (the layer root)")
    args = parser.parse_args(argv)
    os.environ.setdefault("UV_NO_PROGRESS", "1")
    build(args.output_dir.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
