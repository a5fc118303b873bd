"""Where the CDK app finds the code it packages, relative to the repository root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
LAYER_PROJECT_DIR = REPO_ROOT / "layers" / "providers"
BUILD_LAYER_SCRIPT = LAYER_PROJECT_DIR / "build_layer.py"
