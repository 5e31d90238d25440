"""The HTML report: sections, numbers that match the ledger, self-containedness, scale."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli
from test_report_support import campaign_ledger

from geoscreen.agent.report import svg
from geoscreen.agent.report.page import collect, render_report
from geoscreen.errors import GeoscreenError
from geoscreen.multitest import storey_pi0
from geoscreen.store.ledger import Ledger
from geoscreen.store.query import list_hypotheses

ROOT = Path(__file__).resolve().parents[1]


class _Ids(HTMLParser):
    """Element ids, classes, external references and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.external: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.add(a["id"])
        self.classes += (a.get("class") or "").split()
        for key in ("src", "href"):
            v = a.get(key) or ""
            if re.match(r"^(https?:)?//", v):
                self.external.append(v)
        if tag == "link":
            self.external.append(str(a))


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    return campaign_ledger(tmp_path_factory)


@pytest.fixture(scope="module")
def page(ledger, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    render_report(str(ledger), out)
    return out.read_text(encoding="utf-8")


def _report_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m, "embedded data block missing"
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_every_section_is_present_and_self_contained(page):
    p = _Ids()
    p.feed(page)
    for section in ("summary", "discoveries", "profiles", "fdr", "families", "lineage",
                    "problems", "llm", "all"):
        assert section in p.ids, section
    for element in ("synthetic-banner", "verdict", "cache-table", "budget-table",
                    "versions-table", "resources-table", "discoveries-table", "pvalue-histogram",
                    "fdr-methods", "offline-online-note", "family-table", "family-chart",
                    "lineage-graph", "lineage-tree", "problem-reasons", "problem-table",
                    "llm-table", "all-hypotheses", "detail", "report-data"):
        assert element in p.ids, element
    assert p.external == []  # no network: no external scripts, styles, images or fonts
    assert "@import" not in page and "url(http" not in page
    assert p.classes.count("profile-card") >= 3
    assert "SYNTHETIC cache" in page
    assert "can change" in page and "never" in page  # offline vs online, said plainly


def test_numbers_match_the_ledger(ledger):
    data = collect(str(ledger))
    rows = list_hypotheses(str(ledger))
    done = [r for r in rows if r["status"] == "done"]
    assert data["counts"]["proposed"] == len(rows)
    assert data["counts"]["tested"] == len(done)
    assert data["counts"]["bh"] == sum(r["significant"] for r in done) >= 2
    assert data["counts"]["failed"] == sum(r["status"] == "failed" for r in rows) >= 1
    assert data["counts"]["rejected"] == 1
    ps = [r["p_value"] for r in done]
    assert data["pi0"] == pytest.approx(min(1.0, sum(p > 0.5 for p in ps) / (len(ps) * 0.5)))
    assert data["cache"]["synthetic"] is True
    # every discovery under BH is in the discoveries table, strongest (lowest q) first
    disc_ids = [d["hypothesis_id"] for d in data["discoveries"]]
    assert {r["hypothesis_id"] for r in done if r["significant"]} <= set(disc_ids)
    bh = [d for d in data["discoveries"] if d["significant"]]
    assert [d["q_bh"] for d in bh] == sorted(d["q_bh"] for d in bh)
    methods = {r["label"]: r for r in data["fdr_rows"]}
    assert methods["BH"]["hypotheses"] == data["counts"]["bh"]
    assert "Bonferroni" in methods and any(r["kind"] == "online" for r in data["fdr_rows"])
    # the lineage links the offline brainstormer's refinements to the discoveries they refine
    refined = [r for r in rows if r["parents"]]
    assert refined and data["lineage"]["n"] >= len(refined) + 1
    # failed and rejected proposals come with their reasons
    reasons = [(g["status"], g["reason"]) for g in data["problems"]["groups"]]
    assert any(st == "failed" and "genes present in the cache" in r for st, r in reasons)
    assert any(st == "rejected" and "greater than or equal to 1" in r for st, r in reasons)
    assert data["llm"]["n"] == 4 and data["llm"]["cost"] > 0


def test_embedded_data_covers_every_hypothesis(page, ledger):
    data = _report_data(page)
    rows = list_hypotheses(str(ledger))
    assert len(data["rows"]) == len(rows)
    strings = data["strings"]
    by_id = {r["id"]: r for r in data["rows"]}
    for r in rows:
        d = by_id[r["hypothesis_id"]]
        assert strings[d["st"]] == r["status"]
        if r["status"] == "done":
            assert d["p"] == pytest.approx(r["p_value"], rel=5e-3)
            assert len(d["L"][1]) == len(d["L"][2]) >= 1  # per-layer effect and p for plots
        assert d.get("par", []) == r["parents"]


def test_plots_are_well_formed_svg():
    docs = [svg.profile(["L0", "L1", "L2"], [0.5, 0.7, None], [0.3, 1e-5, 0.04],
                        effect_name="auroc", null_level=0.5),
            svg.sparkline([1.0, float("nan"), 3.0], ref=0.0),
            svg.histogram([0.01, 0.2, 0.6, 0.99, 1.0], pi0=0.8),
            svg.stacked_bars(["1", "2"], {"a": [1, 0], "b <&>": [2, 3]}, markers=[1, 0]),
            svg.lineage_graph([{"id": 1, "iteration": 1, "outcome": "significant",
                                "title": "x < y"}, {"id": 2, "iteration": 2, "title": "&"}],
                              [(1, 2)])]
    for doc in docs:
        root = ET.fromstring(doc)
        assert root.tag.endswith("svg")
    assert svg.sparkline([None, None]) == ""
    trend = svg.profile(["L0", "L1"], [40.0, 20.0], [None, None], effect_name="rank",
                        note="tested across layers")
    assert "−log10 p" not in trend and "tested across layers" in trend
    assert svg.neglog10(0.0) == pytest.approx(300.0)


def test_storey_pi0():
    assert storey_pi0([]) is None
    assert storey_pi0([0.9, 0.8, 0.1, 0.2]) == pytest.approx(1.0)
    assert storey_pi0([0.01] * 8 + [0.75, 0.9]) == pytest.approx(2 / (10 * 0.5))


def test_report_command(ledger, tmp_path):
    out = tmp_path / "r.html"
    res = run_cli("report", "--ledger", str(ledger), "-o", str(out), "--profiles", "2")
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and out.exists()
    assert out.read_text().count('class="profile-card"') == 2


def test_report_of_a_campaign_that_has_not_run(tmp_path):
    from geoscreen.hypotheses.loader import parse_spec

    path = tmp_path / "queued.sqlite"
    led = Ledger(path)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec({"statement": "axis 1 separates A", "probe":
                                              "axis_separation", "params": {
                                                  "axis": 1, "positive": "genes:A,B,C,D,E"}},
                                             "test")])
    led.close()
    html = render_report(str(path), tmp_path / "r.html").read_text()
    assert 'id="no-discoveries"' in html and 'id="lineage-empty"' in html
    assert 'id="llm-none"' in html


def test_an_empty_ledger_is_a_clear_error(tmp_path):
    Ledger(tmp_path / "empty.sqlite").close()
    with pytest.raises(GeoscreenError, match="no campaign"):
        render_report(str(tmp_path / "empty.sqlite"), tmp_path / "r.html")
    res = run_cli("report", "--ledger", str(tmp_path / "missing.sqlite"), "-o",
                  str(tmp_path / "r.html"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def _bench():
    spec = importlib.util.spec_from_file_location("bench_report",
                                                  ROOT / "benchmarks" / "bench_report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_report_scales_to_thousands(tmp_path):
    """A 2,000-hypothesis ledger (the benchmark's generator) renders fast into a modest page:
    profile plots stay capped, the rest travels as compact data."""
    ledger = _bench().build_ledger(tmp_path / "big.sqlite", n=2000, per_iteration=50)
    t = time.perf_counter()
    out = render_report(str(ledger), tmp_path / "big.html")
    elapsed = time.perf_counter() - t
    html = out.read_text()
    assert html.count('class="profile-card"') == 40
    assert len(_report_data(html)["rows"]) == 2000
    assert out.stat().st_size < 3_000_000
    assert elapsed < 30  # generous: the benchmark prints the real 10,000-row figure
    assert not math.isnan(collect(str(ledger))["pi0"])
