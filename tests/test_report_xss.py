"""Report XSS (issue 12, item 15): ledger text is data in the HTML report, never markup.

A campaign against the scripted LLM server on 127.0.0.1 records hostile statements, rationales
and raw `parents` (rejected proposals keep them in their spec); the report is rendered by the
installed command and opened in headless Chromium: the table, and the detail view of every
hostile row.  No injected element may exist in the live DOM, no injected script may have run
(it would change the title) and the page's own script must have finished.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from llm_server import ScriptedServer, proposals
from test_llm import GENES
from test_llm_campaign import config
from test_report_browser import _browser, _chromium

from geoscreen.agent.campaign import run_campaign
from geoscreen.agent.report.page import _script_json
from geoscreen.store.query import list_hypotheses

PWN = "document.title='pwned'"
VECTORS = [
    f'<img id="inj-img" src="x" onerror="{PWN}">',
    f"</script><script id=\"inj-script\">{PWN}</script>",
    f'<!-- <svg id="inj-svg" onload="{PWN}">',
    '"><b id="inj-attr">bold</b><span title="',
    f'<a id="inj-link" href="javascript:{PWN}">x</a>',
    "\u2028<iframe id=\"inj-frame\" srcdoc=\"<script>parent.document.title='pwned'</script>\">",
    "<style id=\"inj-style\">body{display:none}</style>",
]


def _hostile_ledger(cache_path: Path, tmp: Path) -> Path:
    accepted = [{"statement": f"Planted genes separate on axis {k + 1} {v}",
                 "probe": "axis_separation",
                 "params": {"axis": k + 1, "positive": f"genes:{GENES}"},
                 "alternative": "two-sided", "rationale": f"because {v}", "parents": []}
                for k, v in enumerate(VECTORS[:4])]
    rejected = [{"statement": f"Rejected {v}", "probe": "axis_separation",
                 "params": {"axis": 1, "positive": f"genes:{GENES}"}, "rationale": v,
                 "parents": [v, {"a": 1}, [2], True]} for v in VECTORS[4:]]
    ledger = tmp / "ledger.db"
    with ScriptedServer([proposals(*accepted, *rejected)]) as srv:
        run_campaign(cache_path, ledger, config(srv, 1, 4, llm={"repair_rounds": 0}))
    return ledger


def test_no_injected_element_exists_in_the_report(small_cache, tmp_path: Path, cli):
    browser = _browser()
    ledger = _hostile_ledger(small_cache.path, tmp_path)
    rows = list_hypotheses(str(ledger))
    hostile = [r["hypothesis_id"] for r in rows if any(
        v in (r["statement"] or "") + (r["rationale"] or "") for v in VECTORS)]
    assert len(hostile) == len(VECTORS)
    assert {r["status"] for r in rows} >= {"done", "rejected"}
    out = tmp_path / "report.html"
    res = cli("report", "--ledger", str(ledger), "--out", str(out))  # parents [{"a": 1}] too
    assert res.returncode == 0, res.stderr
    views = [out.as_uri()] + [f"{out.as_uri()}?h={i}" for i in hostile]
    inert = 0
    for url in views:
        dom = _chromium(browser, "--dump-dom", "--virtual-time-budget=2000", url).stdout
        assert 'data-js-ready="1"' in dom, f"the page's script did not finish: {url}"
        injected = re.findall(r"<[a-z]+[^>]*\sid=\"inj-[a-z]+\"", dom)
        title = re.search(r"<title>(.*?)</title>", dom, re.S)
        ok = not injected and title is not None and "pwned" not in title.group(1)
        inert += ok
        assert ok, f"{url}: injected {injected[:3]}, title {title.group(1) if title else None}"
        if "?h=" in url:
            assert re.search(r'<dialog id="detail"[^>]*\sopen', dom), "detail did not open"
    print(f"report XSS: {len(VECTORS)} vectors in statements, rationales and parents, "
          f"{len(views)} views opened in Chromium / {inert} inert")


@pytest.mark.parametrize("text", VECTORS + ["<!--", "</SCRIPT >", "a & b", "\u2029"])
def test_script_json_keeps_the_data_and_closes_nothing(text):
    s = _script_json({"t": text})
    assert json.loads(s) == {"t": text}
    assert "<" not in s and ">" not in s and "&" not in s
