"""The campaign, queue and ledger commands end to end, and their bad-input messages."""

from __future__ import annotations

import csv
import json

import numpy as np
from conftest import make_cache

from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Hypothesis

PLANTED = ",".join(f"G{i}" for i in range(40))
SPECS = f"""
- statement: axis 1 separates the planted genes
  probe: axis_separation
  params: {{axis: 1, positive: "genes:{PLANTED}"}}
- statement: axis 5 separates the planted genes
  probe: axis_separation
  params: {{axis: 5, positive: "genes:{PLANTED}"}}
- statement: planted genes pair up
  probe: pair_proximity
  params: {{pairs: "pairs:G0-G1,G2-G3,G4-G5,G6-G7,G8-G9", n_permutations: 199}}
"""


def test_queue_run_review_export(small_cache, tmp_path, cli):
    specs = tmp_path / "s.yaml"
    specs.write_text(SPECS)
    ledger = tmp_path / "l.sqlite"
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--per-iteration", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "campaign done: the queue is empty. 2 iterations, 3 tested, 0 failed" in res.stdout
    st = cli("campaign", "status", "--ledger", str(ledger))
    assert "done" in st.stdout and "hypotheses: done 3" in st.stdout
    js = json.loads(cli("ledger", "list", "--ledger", str(ledger), "--json").stdout)
    assert [r["iteration"] for r in js] == [1, 1, 2]
    sig = json.loads(cli("ledger", "list", "--ledger", str(ledger), "--significant",
                         "--json").stdout)
    assert "axis 1 separates the planted genes" in [r["statement"] for r in sig]
    assert all(r["q_bh"] <= 0.05 for r in sig)
    show = cli("ledger", "show", "1", "--ledger", str(ledger))
    assert "per layer" in show.stdout and "mann_whitney" in show.stdout
    out = tmp_path / "r.csv"
    assert cli("ledger", "export", "--ledger", str(ledger), "--format", "csv", "-o",
               str(out)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    for col in ("hypothesis_id", "iteration", "source", "probe", "statement", "status",
                "p_value", "q_bh", "significant"):
        assert col in rows[0]
    out_json = tmp_path / "r.json"
    cli("ledger", "export", "--ledger", str(ledger), "--format", "json", "-o", str(out_json))
    assert len(json.loads(out_json.read_text())) == 3


def test_offline_brainstormer_fills_iterations_deterministically(tmp_path, cli):
    cache = make_cache(tmp_path / "c", n_genes=300, dim=12, n_layers=2)
    outs = []
    for k in range(2):
        ledger = tmp_path / f"l{k}.sqlite"
        res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
                  "--iterations", "2", "--per-iteration", "3", "--seed", "5", "--quiet")
        assert res.returncode == 0, res.stderr
        outs.append([(r["hash"], r["status"], r["p_value"]) for r in json.loads(
            cli("ledger", "list", "--ledger", str(ledger), "--json").stdout)])
    assert outs[0] == outs[1]
    assert len(outs[0]) == 6 and {s for _, s, _ in outs[0]} <= {"done", "failed"}
    led = Ledger(tmp_path / "l0.sqlite")
    with led.session() as s:
        srcs = {h.source for h in s.query(Hypothesis)}
        rationales = [h.rationale for h in s.query(Hypothesis)]
    assert srcs == {"offline"} and all(rationales)


def test_ledger_bound_to_its_cache_and_seed(small_cache, tmp_path, cli):
    ledger = tmp_path / "l.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text(SPECS)
    cli("queue", "add", str(specs), "--ledger", str(ledger))
    assert cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
               "--brainstormer", "none", "--quiet").returncode == 0
    other = make_cache(tmp_path / "other", seed=3)
    res = cli("campaign", "run", "--cache", str(other.path), "--ledger", str(ledger),
              "--brainstormer", "none")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "field '--cache': belongs to cache" in res.stderr
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--seed", "9")
    assert res.returncode == 2
    assert "was started with --seed 0" in res.stderr and "pass --seed 0" in res.stderr


def test_bad_ledgers_and_options(small_cache, tmp_path, cli):
    res = cli("campaign", "status", "--ledger", str(tmp_path / "missing.sqlite"))
    assert res.returncode == 2 and "missing.sqlite: field '--ledger': does not exist" in res.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    res = cli("ledger", "list", "--ledger", str(junk))
    assert res.returncode == 2 and "is not a readable ledger database" in res.stderr
    assert junk.read_bytes() == b"this is not a database at all" * 100  # untouched
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger",
              str(tmp_path / "l.sqlite"), "--brainstormer", "gpt")
    assert res.returncode == 2 and "unknown brainstormer 'gpt'" in res.stderr
    res = cli("campaign", "run", "--cache", str(tmp_path / "nope"), "--ledger",
              str(tmp_path / "l.sqlite"))
    assert res.returncode == 2 and "is not a cache directory" in res.stderr
    res = cli("ledger", "show", "99", "--ledger", str(tmp_path / "l.sqlite"))
    assert res.returncode == 2 and "no hypothesis #99" in res.stderr
    res = cli("ledger", "list", "--ledger", str(tmp_path / "l.sqlite"), "--sort", "pval")
    assert res.returncode == 2 and "cannot sort by 'pval'" in res.stderr


def test_approval_mode(tmp_path, cli):
    cache = make_cache(tmp_path / "c", n_genes=300, dim=12, n_layers=2)
    ledger = tmp_path / "l.sqlite"
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--iterations", "1", "--per-iteration", "2", "--approve")
    assert res.returncode == 0 and "campaign paused" in res.stdout
    waiting = json.loads(cli("ledger", "list", "--ledger", str(ledger), "--status",
                             "pending_approval", "--json").stdout)
    assert len(waiting) == 2
    a, b = (str(r["hypothesis_id"]) for r in waiting)
    assert cli("queue", "approve", a, "--ledger", str(ledger)).returncode == 0
    assert cli("queue", "reject", b, "--ledger", str(ledger)).returncode == 0
    res = cli("queue", "approve", b, "--ledger", str(ledger))
    assert res.returncode == 2 and "is rejected, not waiting for approval" in res.stderr
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--iterations", "1", "--per-iteration", "2", "--approve", "--quiet")
    assert res.returncode == 0 and "campaign done" in res.stdout
    final = {r["hypothesis_id"]: r["status"] for r in json.loads(
        cli("ledger", "list", "--ledger", str(ledger), "--json").stdout)}
    assert final[int(a)] in ("done", "failed") and final[int(b)] == "rejected"


def test_zero_rows_excluded_by_default_and_on_request(tmp_path, cli):
    cache = make_cache(tmp_path / "c", n_genes=200, dim=8, n_layers=1, zero_rows=(0, 1, 2))
    specs = tmp_path / "s.yaml"
    genes = ",".join(f"G{i}" for i in range(12))
    specs.write_text(
        f"- {{statement: default excludes zeros, probe: axis_separation, "
        f"params: {{positive: 'genes:{genes}'}}}}\n"
        f"- {{statement: include zeros on request, probe: axis_separation, "
        f"params: {{positive: 'genes:{genes}', include_zero_genes: true}}}}\n")
    ledger = tmp_path / "l.sqlite"
    cli("queue", "add", str(specs), "--ledger", str(ledger))
    cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
        "--brainstormer", "none", "--quiet")
    a = json.loads(cli("ledger", "show", "1", "--ledger", str(ledger), "--json").stdout)
    b = json.loads(cli("ledger", "show", "2", "--ledger", str(ledger), "--json").stdout)
    assert a["provenance"]["resources"]["positive"]["present"] == 9
    assert b["provenance"]["resources"]["positive"]["present"] == 12
    assert np.isfinite(a["p_value"]) and np.isfinite(b["p_value"])


def test_probes_list(cli):
    res = cli("probes", "list", "--json")
    assert res.returncode == 0
    probes = {p["name"]: p for p in json.loads(res.stdout)}
    for name in ("axis_separation", "pair_proximity"):
        p = probes[name]
        assert p["family"] and p["version"] and p["nulls"] and p["effect_size"]
        assert "properties" in p["params"]
    assert set(probes["pair_proximity"]["params"]["properties"]) >= {
        "pairs", "subspace", "metric", "null", "n_permutations"}
    table = cli("probes", "list")
    assert "axis_separation" in table.stdout and "module_structure" in table.stdout
