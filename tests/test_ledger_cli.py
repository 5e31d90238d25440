"""`geoscreen ledger list / show / diff / export` on a real campaign's ledger."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import run_cli
from test_report_support import campaign_ledger

from geoscreen.errors import GeoscreenError
from geoscreen.store.query import diff_campaigns, list_hypotheses, show_hypothesis


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    return campaign_ledger(tmp_path_factory)


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory):
    """The same specs on a cache generated with another seed (like a second extraction)."""
    return campaign_ledger(tmp_path_factory, name="report-campaign-seed1", cache_seed=1,
                           iterations=1, per_iteration=6)


def _ids(rows):
    return [r["hypothesis_id"] for r in rows]


def test_list_filters_and_sorts(ledger):
    L = str(ledger)
    rows = list_hypotheses(L)
    assert _ids(rows) == sorted(_ids(rows)) and len(rows) >= 9
    done = [r for r in rows if r["status"] == "done"]
    sig = list_hypotheses(L, significant=True)
    assert _ids(sig) == [r["hypothesis_id"] for r in rows if r["significant"]]
    assert set(_ids(list_hypotheses(L, significant=False))) == set(_ids(rows)) - set(_ids(sig))
    assert _ids(list_hypotheses(L, significant=True, fdr="by")) == [
        r["hypothesis_id"] for r in done if r["q_by"] <= 0.05]
    assert _ids(list_hypotheses(L, significant=True, fdr="online")) == [
        r["hypothesis_id"] for r in done if r["online_decision"]]
    assert {r["status"] for r in list_hypotheses(L, statuses=["failed", "rejected"])} == {
        "failed", "rejected"}
    assert all(r["probe"] == "pair_proximity" for r in list_hypotheses(L, probe="pair_proximity"))
    assert all(r["family"] == "module_structure"
               for r in list_hypotheses(L, family=["module_structure"]))
    assert _ids(list_hypotheses(L, source="llm:*")) == [
        r["hypothesis_id"] for r in rows if r["source"].startswith("llm:")]
    assert {r["iteration"] for r in list_hypotheses(L, iteration="2-")} == {2}
    assert {r["iteration"] for r in list_hypotheses(L, iteration=1)} == {1}
    assert all("control" in r["statement"].lower() for r in list_hypotheses(L, text="CONTROL"))
    by_p = list_hypotheses(L, sort="p")
    ps = [r["p_value"] for r in by_p if r["p_value"] is not None]
    assert ps == sorted(ps) and by_p[-1]["p_value"] is None  # untested rows last
    rev = [r["p_value"] for r in list_hypotheses(L, sort="-p") if r["p_value"] is not None]
    assert rev == sorted(ps, reverse=True)
    assert len(list_hypotheses(L, sort="abs_effect", limit=3)) == 3
    with pytest.raises(GeoscreenError, match="cannot sort by 'pvalue'"):
        list_hypotheses(L, sort="pvalue")
    with pytest.raises(GeoscreenError, match="unknown FDR method"):
        list_hypotheses(L, significant=True, fdr="storey")


def test_list_command_table_and_json(ledger):
    res = run_cli("ledger", "list", "--ledger", str(ledger), "--status", "done,failed",
                  "--sort", "-p")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "it", "source", "probe"]
    assert "too small to test" in res.stdout  # failed rows listed, with their reason
    assert "SV0 orders genes" not in res.stdout  # the rejected proposal is filtered out
    assert "significant (BH)" in lines[-1]
    res = run_cli("ledger", "list", "--ledger", str(ledger), "--json", "--significant",
                  "--family", "manifold_distance")
    rows = json.loads(res.stdout)
    assert rows and all(r["significant"] and r["family"] == "manifold_distance" for r in rows)
    assert {"hypothesis_id", "q_bh", "q_by", "online_decision", "parents"} <= set(rows[0])
    bad = run_cli("ledger", "list", "--ledger", str(ledger), "--iteration", "x")
    assert bad.returncode == 2 and "cannot read iteration" in bad.stderr


def test_list_reads_sqlite_without_importing_sqlalchemy(ledger):
    """The fast path behind the one-second budget for `ledger list` on 10,000 rows."""
    code = ("import sys; from geoscreen.store.query import list_hypotheses; "
            f"rows = list_hypotheses({str(ledger)!r}, significant=True); "
            "print(len(rows), 'sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    n, imported = out.stdout.split()
    assert int(n) >= 2 and imported == "False"


def test_show_has_spec_layers_null_seed_provenance_and_lineage(ledger):
    rows = list_hypotheses(str(ledger))
    child = next(r for r in rows if r["parents"])
    parent = child["parents"][0]
    d = show_hypothesis(str(ledger), child["hypothesis_id"])
    assert d["ancestors"][0]["hypothesis_id"] == parent
    assert child["hypothesis_id"] in show_hypothesis(str(ledger), parent)["children"]
    assert d["layers_detail"] and all(x["null"] and x["seed"] is not None
                                      for x in d["layers_detail"])
    res = run_cli("ledger", "show", str(child["hypothesis_id"]), "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for needle in ("why proposed:", "spec", "params.", "per layer", "null", "seed",
                   "provenance", "lineage", f"motivated by #{parent}", "synthetic_cache"):
        assert needle in out, needle
    assert d["layers_detail"][0]["null"] in out
    js = json.loads(run_cli("ledger", "show", str(parent), "--ledger", str(ledger),
                            "--json").stdout)
    assert child["hypothesis_id"] in js["children"] and js["spec"]["probe"]
    missing = run_cli("ledger", "show", "9999", "--ledger", str(ledger))
    assert missing.returncode == 2 and "no hypothesis #9999" in missing.stderr


def test_diff_two_seeds(ledger, other_seed):
    d = diff_campaigns(str(ledger), str(other_seed))
    assert not d["same_cache"]
    # the six hand-written specs have the same canonical hash in both campaigns
    assert d["in_both"] >= 6 and d["tested_in_both"] >= 5
    by_stmt = {p["statement"]: p for p in d["pairs"]}
    pairs = by_stmt["Planted pairs sit closer than chance in SV2-SV4"]
    assert pairs["agreement"] == "both significant, same direction"
    control = by_stmt["Planted pairs sit closer in SV12-SV14 (negative control)"]
    assert control["agreement"] == "neither significant"
    axis = by_stmt["Axis 1 separates the planted genes from the rest"]
    assert axis["significant_a"] and axis["significant_b"]
    failed = by_stmt["A five-gene set is too small to test"]
    assert failed["agreement"] == "not tested in both"
    assert sum(d["tally"].values()) == d["in_both"]
    assert 0 <= d["agreement_rate"] <= 1
    only = {o["hash"] for o in d["only_a"]} & {o["hash"] for o in d["only_b"]}
    assert not only

    res = run_cli("ledger", "diff", str(ledger), str(other_seed))
    assert res.returncode == 0, res.stderr
    assert "tested in both" in res.stdout and "findings agree" in res.stdout
    js = json.loads(run_cli("ledger", "diff", str(ledger), str(other_seed), "--json").stdout)
    assert js["in_both"] == d["in_both"]


def test_diff_with_itself_agrees_everywhere(ledger):
    d = diff_campaigns(str(ledger), str(ledger))
    assert d["same_cache"] and not d["only_a"] and not d["only_b"]
    assert d["agreeing"] == d["tested_in_both"] and d["agreement_rate"] == 1.0


def test_export_csv_keeps_every_column(ledger, tmp_path):
    out = tmp_path / "x.csv"
    res = run_cli("ledger", "export", "--ledger", str(ledger), "-o", str(out))
    assert res.returncode == 0, res.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list_hypotheses(str(ledger)))
    assert json.loads(rows[-1]["parents"]) is not None and "online_procedure" in rows[0]


def test_export_parquet_and_layers_match_json_and_the_api(ledger, tmp_path):
    """One name per column: Parquet, JSON and the Python API carry the same columns and values,
    for hypotheses and for per-layer results."""
    import pandas as pd

    import geoscreen

    L = str(ledger)
    view = geoscreen.open_ledger(L)
    for table, api_frame in (("hypotheses", view.hypotheses()), ("layers", view.layer_results())):
        pq, js = tmp_path / f"{table}.parquet", tmp_path / f"{table}.json"
        for fmt, path in (("parquet", pq), ("json", js)):
            res = run_cli("ledger", "export", "--ledger", L, "--table", table, "--format", fmt,
                          "-o", str(path))
            assert res.returncode == 0, res.stderr
        frame = pd.read_parquet(pq)
        rows = json.loads(js.read_text())
        assert list(frame.columns) == list(rows[0]) == list(api_frame.columns)
        assert len(frame) == len(rows) == len(api_frame) > 0
        num = [c for c in frame.columns if c in ("p_value", "q_bh", "effect_size", "statistic")]
        pd.testing.assert_frame_equal(frame[num].astype(float),
                                      api_frame[num].astype(float), check_dtype=False)
        if table == "hypotheses":
            assert [json.loads(x) for x in frame["parents"]] == [r["parents"] for r in rows]
    assert len(pd.read_parquet(tmp_path / "layers.parquet")) > len(view.hypotheses())


def test_export_refuses_to_overwrite_and_names_the_choices(ledger, tmp_path):
    out = tmp_path / "x.csv"
    out.write_text("mine\n")
    res = run_cli("ledger", "export", "--ledger", str(ledger), "-o", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert out.read_text() == "mine\n" and len(res.stderr.strip().splitlines()) == 1
    res = run_cli("ledger", "export", "--ledger", str(ledger), "-o", str(out), "--overwrite")
    assert res.returncode == 0 and out.read_text().startswith("hypothesis_id,")
    res = run_cli("ledger", "export", "--ledger", str(ledger), "--format", "parquett",
                  "-o", str(tmp_path / "y"))
    assert res.returncode == 2 and "did you mean 'parquet'" in res.stderr
    assert not (tmp_path / "y").exists()
