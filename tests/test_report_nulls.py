"""The null model next to every result: in the HTML report (discoveries, profiles, the embedded
data behind the all-hypotheses table) and in `geoscreen ledger show`, with a warning marker for
a null that failed real-geometry calibration (`geoscreen.probes.nulls.warning`)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from geoscreen.agent.report.page import collect, render_report
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.probes import nulls
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Hypothesis

FS = "feature_shuffle"
SPECS = [
    {"statement": "Cell-cycle genes cluster", "probe": "set_cohesion",
     "params": {"gene_set": "genes:G0001,G0002,G0003,G0004,G0005", "null": FS}},
    {"statement": "Listed pairs sit close", "probe": "pair_proximity",
     "params": {"pairs": "pairs:G0001-G0002,G0003-G0004", "null": "degree_preserving"}},
    {"statement": "An odd null label <b>x</b>", "probe": "pair_proximity",
     "params": {"pairs": "pairs:G0005-G0006,G0007-G0008"}},
    {"statement": "Still queued", "probe": "set_cohesion",
     "params": {"gene_set": "genes:G0010,G0011,G0012,G0013,G0014"}},
]
RECORDED = [FS, "degree_preserving", "<b>odd</b>"]  # what each run's layers recorded


def _outcome(null: str) -> dict:
    layers = [{"layer": f"L{i}", "layer_index": i, "statistic_name": "s", "statistic": 1.0,
               "effect_name": "z", "effect_size": 4.0 + i, "p_value": 1e-4, "n": 5,
               "null": null, "n_permutations": 999, "seed": i} for i in range(3)]
    return {"layers": layers, "combined": {"p_value": 1e-4, "method": "cauchy",
                                           "effect_name": "z", "effect_size": 5.0}}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report-nulls") / "ledger.sqlite"
    led = Ledger(path)
    with led.session() as s:
        c = led.campaign(s)
        added, _ = led.add_hypotheses(s, c, [parse_spec(r, "test") for r in SPECS])
        ids = [h.id for h in added]
    for hid, null in zip(ids, RECORDED):
        led.record_result(hid, _outcome(null))
    with led.session() as s:
        for hid in ids[:3]:
            h = s.get(Hypothesis, hid)
            h.significant, h.q_bh, h.q_by = True, 1e-3, 1e-3
    led.close()
    return path


@pytest.fixture(scope="module")
def page(ledger, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report-nulls-html") / "report.html"
    render_report(str(ledger), out)
    return out.read_text(encoding="utf-8")


def _table(page: str, table_id: str) -> str:
    m = re.search(rf'<table[^>]*id="{table_id}".*?</table>', page, re.S)
    assert m, table_id
    return m.group(0)


def test_each_discovery_carries_its_recorded_null(ledger):
    data = collect(str(ledger))
    by_stmt = {d["statement"]: d for d in data["discoveries"]}
    fs = by_stmt["Cell-cycle genes cluster"]
    assert fs["null_name"] == FS and fs["null_label"] == nulls.label(FS)
    assert fs["null_warning"] == nulls.warning(FS) is not None
    dp = by_stmt["Listed pairs sit close"]
    assert dp["null_label"] == "degree-preserving rewiring" and dp["null_warning"] is None
    # not run yet: the null its spec implies, whatever the probe's default is
    client = json.loads(data["client_json"].replace("<\\/", "</"))
    rows, strings = {r["stmt"]: r for r in client["rows"]}, client["strings"]
    assert strings[rows["Cell-cycle genes cluster"]["nw"]] == nulls.warning(FS)
    expect = nulls.label(nulls.spec_null("set_cohesion", SPECS[3]["params"]))
    assert strings[rows["Still queued"]["nl"]] == expect


def test_report_shows_the_null_label_and_a_warning_marker(page):
    disc = _table(page, "discoveries-table")
    row_fs = next(r for r in disc.split("<tr>") if "Cell-cycle genes cluster" in r)
    assert f"null: {html.escape(nulls.label(FS))}" in row_fs
    m = re.search(r'<span class="badge nullwarn" title="([^"]*)"[^>]*>⚠ ([^<]*)</span>', row_fs)
    assert m, "no warning marker on the feature_shuffle discovery"
    assert html.unescape(m.group(1)) == nulls.warning(FS)
    assert m.group(2).startswith("feature_shuffle: fails for gene-set claims")
    row_dp = next(r for r in disc.split("<tr>") if "Listed pairs sit close" in r)
    assert "null: degree-preserving rewiring" in row_dp and "nullwarn" not in row_dp
    # profile cards say it too
    card = page.split('id="h-', 1)[1]
    assert "null-used" in card


def test_recorded_null_names_are_escaped(page):
    assert "<b>odd</b>" not in page.split('<script type="application/json"', 1)[0]
    assert "null: &lt;b&gt;odd&lt;/b&gt;" in page
    data = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "</b>" not in data  # the embedded JSON cannot close its script element


def test_ledger_show_prints_the_null(ledger):
    fs = run_cli("ledger", "show", "1", "--ledger", str(ledger))
    assert fs.returncode == 0, fs.stderr
    assert f"null: {nulls.label(FS)} ({FS})" in fs.stdout
    assert f"warning: null {nulls.warning(FS)}" in fs.stdout
    dp = run_cli("ledger", "show", "2", "--ledger", str(ledger))
    assert "null: degree-preserving rewiring (degree_preserving)" in dp.stdout
    assert "warning: null" not in dp.stdout
    queued = run_cli("ledger", "show", "4", "--ledger", str(ledger))
    expect = nulls.label(nulls.spec_null("set_cohesion", SPECS[3]["params"]))
    assert f"null: {expect} (" in queued.stdout and "from the spec" in queued.stdout
    js = json.loads(run_cli("ledger", "show", "1", "--ledger", str(ledger), "--json").stdout)
    assert js["null_model"]["label"] == nulls.label(FS) and js["null_model"]["warning"]
