"""The manual: the probe reference matches the registry, docs/index.md is the README's front
page, and the site builds with `mkdocs build --strict` (every page, link and API docstring)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import venv_tool

ROOT = Path(__file__).resolve().parents[1]


def test_probe_reference_is_generated_from_the_registry():
    from geoscreen.agent.cli.probes import reference_markdown
    from geoscreen.probes.registry import list_probes

    page = (ROOT / "docs" / "reference" / "probes.md").read_text()
    assert page == reference_markdown(), (
        "docs/reference/probes.md is stale: run "
        "'geoscreen probes list --markdown > docs/reference/probes.md'")
    for p in [p for p in list_probes() if p.module.startswith("geoscreen.")]:
        assert f"## `{p.name}`" in page


def test_index_is_the_readme_with_links_into_docs():
    readme = (ROOT / "README.md").read_text()
    index = (ROOT / "docs" / "index.md").read_text()
    assert index.strip() == readme.replace("](docs/", "](").replace(
        "`make docs` builds the manual as a website (mkdocs, `--strict`; CI builds it too).",
        "").strip()
    assert len(readme.encode()) < 12_000  # the front page stays a front page
    for target in ("docs/caches.md", "docs/specs.md", "docs/multiple-testing.md",
                   "docs/reference/probes.md", "docs/api.md"):
        assert f"]({target})" in readme and (ROOT / target).is_file()


def test_the_site_builds_strictly(tmp_path: Path):
    mkdocs = venv_tool("mkdocs", "mkdocs")
    res = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "LedgerView" in api and "run_spec" in api  # rendered from the docstrings
