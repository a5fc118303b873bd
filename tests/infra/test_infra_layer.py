"""The shared layer: one LayerVersion for Python 3.13 on arm64, built by layers/providers/build_layer.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from infra.paths import BUILD_LAYER_SCRIPT, LAYER_PROJECT_DIR

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

ELF_MACHINE_AARCH64 = 0xB7


def test_one_layer_for_python_3_13_on_arm64(resources: dict[str, Any]) -> None:
    layers = [r for r in resources.values() if r["Type"] == "AWS::Lambda::LayerVersion"]

    assert len(layers) == 1
    assert layers[0]["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layers[0]["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_template_synth_skips_the_layer_build(synthesized: Synthesized) -> None:
    """With ``aws:cdk:bundling-stacks = []`` CDK stages the source folder, so no build ran."""
    assets = json.loads((synthesized.assembly_dir / "Tollgate.assets.json").read_text())["files"]
    sources = [Path(asset["source"]["path"]) for asset in assets.values()]

    assert LAYER_PROJECT_DIR in sources


def _load_build_layer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_layer", BUILD_LAYER_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF shared object"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.slow
def test_build_layer_produces_an_arm64_python_3_13_layer(tmp_path: Path) -> None:
    subprocess.run(  # noqa: S603  # fixed argv
        [sys.executable, str(BUILD_LAYER_SCRIPT), str(tmp_path)], check=True, timeout=600
    )
    site = tmp_path / "python"

    assert (site / "tollgate" / "__init__.py").is_file()
    assert (site / "tollgate" / "store" / "schema.py").is_file()
    assert (site / "starlette" / "__init__.py").is_file()
    assert not (site / "fastapi").exists(), "no function loads a web framework: the layer has none"

    extensions = list((site / "pydantic_core").glob("_pydantic_core.cpython-313-aarch64-linux-gnu.so"))
    assert len(extensions) == 1, sorted(p.name for p in (site / "pydantic_core").iterdir())
    assert _elf_machine(extensions[0]) == ELF_MACHINE_AARCH64
    wheel_tags = next(site.glob("pydantic_core-*.dist-info")).joinpath("WHEEL").read_text()
    assert "cp313-cp313-manylinux" in wheel_tags
    assert "aarch64" in wheel_tags

    assert not list(site.rglob("tests")), "bundled test suites are stripped"
    assert not list(site.glob("*.dist-info/RECORD")), "installer records are stripped"

    if _load_build_layer().find_python() is None:
        pytest.skip("no Python 3.13 interpreter here, so build_layer.py skipped .pyc (checked above)")
    assert (site / "tollgate" / "__pycache__" / "__init__.cpython-313.pyc").is_file()
    assert (site / "starlette" / "__pycache__" / "__init__.cpython-313.pyc").is_file()
    assert not list(site.rglob("*.cpython-311.pyc")), "only 3.13 byte code ships"
