"""Open the report in headless Chromium: the page loads from disk, its script runs, the key
elements are there, and a screenshot is kept as a CI artifact.

Chromium comes from Debian's `chromium` package (`.ci/run` installs it).  Without it the test
skips locally and fails under CI (env `CI` set), so a CI image without a browser is noticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_report_support import campaign_ledger

from geoscreen.agent.report.page import render_report
from geoscreen.store.query import list_hypotheses

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    msg = ("headless Chromium not found (install Debian's 'chromium' package: "
           "apt-get install -y chromium)")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _artifacts() -> Path:
    out = Path(os.environ.get("GEOSCREEN_ARTIFACTS") or ROOT / ".ci-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    """One headless run with a fresh profile; no network is needed or used."""
    with tempfile.TemporaryDirectory(prefix="geoscreen-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def browser() -> str:
    return _browser()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ledger = campaign_ledger(tmp_path_factory)
    out = render_report(str(ledger), tmp_path_factory.mktemp("browser") / "report.html")
    return ledger, out


def test_report_renders_in_chromium(browser, report):
    ledger, html = report
    res = _chromium(browser, "--dump-dom", html.as_uri())
    dom = res.stdout
    assert res.returncode == 0 and "<body" in dom, res.stderr[-2000:]
    assert 'data-js-ready="1"' in dom, "the page's script did not run to the end"
    for element in ("synthetic-banner", "discoveries-table", "pvalue-histogram", "fdr-methods",
                    "offline-online-note", "family-chart", "lineage-graph", "problem-table",
                    "llm-table", "all-hypotheses"):
        assert f'id="{element}"' in dom, element
    # the all-hypotheses table is built by the script from the embedded data
    n = len(list_hypotheses(str(ledger)))
    assert len(re.findall(r'<tr class="clickable" data-id="\d+"', dom)) == min(n, 50)
    assert f"{n} of {n} hypotheses" in dom
    assert dom.count('class="profile"') >= 3  # server-drawn per-layer profiles

    shot = _artifacts() / "report.png"
    shot.unlink(missing_ok=True)
    res = _chromium(browser, "--window-size=1280,2000", f"--screenshot={shot}", html.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detail_view_draws_a_profile_on_demand(browser, report):
    ledger, html = report
    tested = [r for r in list_hypotheses(str(ledger)) if r["status"] == "done"]
    target = tested[-1]["hypothesis_id"]
    url = f"{html.as_uri()}?h={target}"
    dom = _chromium(browser, "--dump-dom", url).stdout
    assert re.search(r'<dialog id="detail"[^>]*\sopen', dom), "detail dialog did not open"
    assert f">#{target}<" in dom and "js-profile" in dom and "Why proposed:" in dom
    shot = _artifacts() / "report-detail.png"
    _chromium(browser, "--window-size=1280,1100", f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 10_000
