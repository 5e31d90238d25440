"""The layering contract (pyproject's [tool.importlinter]), checked by import-linter itself.

geoscreen's subpackages live in top-level folders mapped into one package, which import-linter
cannot walk in place; the test copies the sources into the layout the wheel has and runs
`lint-imports` there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import venv_tool

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"geoscreen": "geoscreen", "agent": "geoscreen/agent", "probes": "geoscreen/probes",
            "store": "geoscreen/store", "hypotheses": "geoscreen/hypotheses",
            "prompts": "geoscreen/prompts", "extract": "geoscreen/extract"}


def test_layers_point_down(tmp_path: Path):
    lint = venv_tool("lint-imports", "import-linter")
    for src, dst in PACKAGES.items():
        shutil.copytree(ROOT / src, tmp_path / dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([lint, str(tmp_path / "pyproject.toml"), "--no-cache"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 1 kept, 0 broken." in res.stdout
