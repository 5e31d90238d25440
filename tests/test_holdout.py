"""Confirmation by design (issue 17, item 3): a gene split registered before the screen, the
screen blind to the held-out genes, and its discoveries re-tested on them as a pre-registered
confirmatory family; the report separates discovered from confirmed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cache

from geoscreen.agent.worker import run_job
from geoscreen.store.cache import open_cache, write_cache
from geoscreen.store.query import campaign_status, event_records
from geoscreen.store.split import GeneSplit

PLANTED = "genes:" + ",".join(f"G{i}" for i in range(40))
SPEC = {"statement": "Planted genes separate on axis 1", "probe": "axis_separation",
        "params": {"axis": 1, "positive": PLANTED}, "alternative": "two-sided"}
NULL_SPEC = {"statement": "Random genes separate on axis 5", "probe": "axis_separation",
             "params": {"axis": 5, "positive": "genes:" + ",".join(f"G{i}" for i in
                                                                   range(200, 240))},
             "alternative": "two-sided"}


def test_a_gene_s_part_depends_only_on_seed_and_symbol():
    symbols = [f"G{i}" for i in range(5000)]
    split = GeneSplit(seed=7, fraction=0.3)
    held = split.holdout_mask(symbols)
    assert abs(held.mean() - 0.3) < 0.03
    shuffled = list(reversed(symbols))
    assert dict(zip(shuffled, split.holdout_mask(shuffled))) == dict(zip(symbols, held))
    assert (GeneSplit(seed=8, fraction=0.3).holdout_mask(symbols) != held).any()
    rec = split.record(symbols)
    assert rec["n_holdout"] == int(held.sum()) and len(rec["holdout_sha256"]) == 64
    assert not (split.hidden(symbols, "screen") & split.hidden(symbols, "holdout")).any()
    for bad in (0.0, 1.0, 0.99):
        with pytest.raises(Exception, match="held-out fraction"):
            GeneSplit(seed=1, fraction=bad)


def test_the_screen_never_sees_the_held_out_genes(tmp_path: Path):
    """Replace every held-out gene's vectors with other random numbers: the screen's results
    are identical to the last digit (statistic, p-value, SVD), the held-out part's change."""
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(300)]
    layers = {f"L{k}": rng.standard_normal((300, 12)).astype(np.float32) for k in range(2)}
    for X in layers.values():
        X[:40, 0] += 2.0
    split = {"seed": 3, "fraction": 0.4}
    held = GeneSplit(3, 0.4).holdout_mask(genes)
    other = {k: X.copy() for k, X in layers.items()}
    for X in other.values():
        X[held] = rng.standard_normal((int(held.sum()), 12)).astype(np.float32) * 5
    a = write_cache(tmp_path / "a", layers, genes, model="t", synthetic=True)
    b = write_cache(tmp_path / "b", other, genes, model="t", synthetic=True)
    out = {}
    for name, cache in (("a", a), ("b", b)):
        for part in ("screen", "holdout"):
            res = run_job({"spec": SPEC, "cache_path": str(cache.path), "seed": 5,
                           "split": {**split, "part": part},
                           "work_dir": str(tmp_path / f"work-{name}")})
            out[name, part] = [(r.statistic, r.p_value, r.n) for r in res.layers]
            assert res.provenance["gene_split"]["part"] == part
    assert out["a", "screen"] == out["b", "screen"]
    assert out["a", "holdout"] != out["b", "holdout"]
    n_screen = int((~held[:40]).sum())
    view = open_cache(a.path).split_view({**split, "part": "screen"})
    assert int(view.genes.present.sum()) == int((~held).sum())
    rows, _X = view.matrix("L0", include_zero=True)
    assert not held[rows].any()
    assert out["a", "screen"][0][2] == 300 - int(held.sum())  # n: every gene the axis ranks
    assert n_screen < 40


def _planted(path: Path):
    return make_cache(path, n_genes=600, dim=16, planted=40)


def test_confirm_retests_the_screen_s_discoveries_on_the_held_out_genes(tmp_path: Path, cli):
    cache = _planted(tmp_path / "cache")
    ledger = tmp_path / "l.sqlite"
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps([SPEC, NULL_SPEC]))
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    res = cli("campaign", "confirm", "--ledger", str(ledger))  # before the screen: nothing
    assert res.returncode == 2 and "registered no gene split" in res.stderr
    run = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--per-iteration", "2", "--iterations", "1",
              "--holdout-genes", "0.4", "--seed", "11", "--quiet")
    assert run.returncode == 0, run.stderr
    ev = event_records(str(ledger), kind="split_registered")
    assert len(ev) == 1 and "held out for confirmation" in ev[0]["message"]
    # a split cannot be changed or added after the screen started
    again = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
                "--brainstormer", "none", "--holdout-genes", "0.2", "--seed", "11")
    assert again.returncode == 2
    assert "registered a held-out fraction of 0.4, not 0.2" in again.stderr
    status = campaign_status(str(ledger))
    assert status["discoveries"] >= 1

    conf = cli("campaign", "confirm", "--ledger", str(ledger), "--json")
    assert conf.returncode == 0, conf.stderr
    out = json.loads(conf.stdout)
    rows = {r["statement"]: r for r in out["rows"]}
    assert rows[SPEC["statement"]]["replicated"] is True  # planted: confirmed on held-out genes
    assert out["confirmed"] >= 1 and out["status"] == "done"
    # the copies ran on the held-out genes only
    from geoscreen.store.query import show_hypothesis

    copy = show_hypothesis(str(ledger), rows[SPEC["statement"]]["replication_id"])
    assert copy["provenance"]["gene_split"]["part"] == "holdout"
    # resuming reports, never tests twice
    conf2 = cli("campaign", "confirm", "--ledger", str(ledger), "--json")
    assert json.loads(conf2.stdout)["campaign_id"] == out["campaign_id"]

    html = tmp_path / "report.html"
    assert cli("report", "--ledger", str(ledger), "--out", str(html)).returncode == 0
    page = html.read_text()
    assert re.search(r"<strong>Confirmed</strong>[^:]*: [1-9]", page)
    assert "held-out genes" in page and 'class="badge sig">confirmed<' in page


def test_no_split_no_confirmation(tmp_path: Path, cli):
    cache = _planted(tmp_path / "cache")
    ledger = tmp_path / "l.sqlite"
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps([SPEC]))
    cli("queue", "add", str(specs), "--ledger", str(ledger))
    assert cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
               "--brainstormer", "none", "--quiet").returncode == 0
    res = cli("campaign", "confirm", "--ledger", str(ledger))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "registered no gene split" in res.stderr and "--holdout-genes" in res.stderr
    late = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
               "--brainstormer", "none", "--holdout-genes", "0.3")
    assert late.returncode == 2 and "a split must be registered before the screen" in late.stderr
