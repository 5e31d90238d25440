"""The Python API (`import geoscreen`): a ledger as DataFrames, one spec in-process, a campaign."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import geoscreen
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.store.ledger import Ledger

PLANTED = "genes:" + ",".join(f"G{i}" for i in range(40))
SPEC = {"statement": "Planted genes separate on axis 1", "probe": "axis_separation",
        "params": {"axis": 1, "positive": PLANTED}, "alternative": "two-sided"}


def test_import_geoscreen_is_cheap_and_versioned():
    code = ("import sys, geoscreen; print(geoscreen.__version__); "
            "print(any(m.startswith(('geoscreen.agent', 'pandas', 'torch')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == geoscreen.package_version() and out[1] == "False"


def test_run_spec_and_open_ledger(small_cache, tmp_path: Path):
    res = geoscreen.run_spec(SPEC, small_cache.path, seed=3, work_dir=tmp_path / "w")
    assert [r.layer for r in res.layers] == small_cache.layers
    assert res.combined.p_value < 1e-6 and res.provenance["seed"] == 3
    again = geoscreen.run_spec(SPEC, small_cache.path, seed=3, work_dir=tmp_path / "w")
    def numbers(r):
        return [x.model_dump(exclude={"runtime_s"}) for x in r.layers]

    assert numbers(again) == numbers(res)  # seeded: the same numbers
    with pytest.raises(GeoscreenError, match="unknown probe"):
        geoscreen.run_spec({**SPEC, "probe": "axis_separatio"}, small_cache.path)

    ledger = tmp_path / "l.sqlite"
    led = Ledger(ledger)
    with led.session() as s:
        led.add_hypotheses(s, led.campaign(s), [parse_spec(SPEC, "spec")])
    led.close()
    summary = geoscreen.run_campaign(small_cache.path, ledger, iterations=1, per_iteration=1,
                                     brainstormer="none", memory_mb=None)
    assert summary.tested == 1
    view = geoscreen.open_ledger(ledger)
    hyps = view.hypotheses()
    assert isinstance(hyps, pd.DataFrame) and len(hyps) == 1
    assert {"hypothesis_id", "statement", "p_value", "q_bh", "significant"} <= set(hyps)
    assert hyps.loc[0, "statement"] == SPEC["statement"] and bool(hyps.loc[0, "significant"])
    layers = view.layer_results()
    assert list(layers["layer"]) == small_cache.layers
    assert (layers["hypothesis_id"] == hyps.loc[0, "hypothesis_id"]).all()
    assert len(view.campaigns()) == 1 and len(view.hypotheses(status="failed")) == 0
    shown = view.hypothesis(int(hyps.loc[0, "hypothesis_id"]))
    assert json.loads(json.dumps(shown, default=str))["statement"] == SPEC["statement"]
    with pytest.raises(GeoscreenError):
        geoscreen.open_ledger(tmp_path / "missing" / "nope.sqlite")


def test_the_no_effect_line_comes_from_the_probe(small_cache, tmp_path: Path):
    """axis_separation declares effect_null=0.5: its 'auroc_oriented' profile is drawn against
    0.5, not the 0 a name-based guess gave; ledgers without the record fall back to the name."""
    from geoscreen.agent.report.page import collect
    from geoscreen.store.query import effect_null

    ledger = tmp_path / "l.sqlite"
    led = Ledger(ledger)
    with led.session() as s:
        led.add_hypotheses(s, led.campaign(s), [parse_spec(SPEC, "spec")])
    led.close()
    geoscreen.run_campaign(small_cache.path, ledger, iterations=1, per_iteration=1,
                           brainstormer="none", memory_mb=None)
    data = collect(ledger)
    assert data["discoveries"][0]["provenance"]["effect_null"] == 0.5
    assert '"nulls":{"auroc_oriented":0.5}' in data["client_json"]
    assert effect_null("auroc_oriented") == 0.5 and effect_null("z") == 0.0
    assert effect_null("auroc_oriented", {"effect_null": 0.25}) == 0.25


def test_campaign_stops_null_layers_as_run_spec_does(small_cache, tmp_path: Path):
    """A campaign stops its Monte Carlo nulls at 10 exceedances by default: a null layer draws
    a few dozen permutations with p = 10 / draws, a planted layer draws them all; run_spec with
    the campaign's seed and sequential_h=10 gives the same numbers, and with every draw the
    planted layers' p-values are the same."""
    null_genes = "genes:" + ",".join(f"G{i}" for i in range(200, 240))
    specs = [{**SPEC, "statement": f"{name} genes on axis 1", "alternative": "greater",
              "params": {"axis": 1, "positive": genes, "test": "label_shuffle",
                         "n_permutations": 999}}
             for name, genes in (("planted", PLANTED), ("unplanted", null_genes))]
    ledger = tmp_path / "l.sqlite"
    led = Ledger(ledger)
    with led.session() as s:
        led.add_hypotheses(s, led.campaign(s), [parse_spec(x, "spec") for x in specs])
    led.close()
    geoscreen.run_campaign(small_cache.path, ledger, iterations=1, per_iteration=2,
                           brainstormer="none", memory_mb=None, work_dir=str(tmp_path / "w"))
    view = geoscreen.open_ledger(ledger)
    assert view.campaigns().loc[0, "config"]["sequential_h"] == 10  # registered
    stopped = 0
    for hid, spec in zip(view.hypotheses()["hypothesis_id"], specs):
        shown = view.hypothesis(int(hid))
        seed = shown["provenance"]["seed"]
        assert shown["provenance"]["sequential_h"] == 10
        same = geoscreen.run_spec(spec, small_cache.path, seed=seed, sequential_h=10,
                                  work_dir=tmp_path / "w")
        every = geoscreen.run_spec(spec, small_cache.path, seed=seed, work_dir=tmp_path / "w")
        for row, a, b in zip(shown["layers_detail"], same.layers, every.layers):
            assert row["p_value"] == a.p_value and row["n_permutations"] == a.n_permutations
            assert b.n_permutations == 999 and (b.extra or {}).get("sequential_h") is None
            if b.p_value < 10 / 1000:  # never stops: the fixed-draw p, draw for draw
                assert a.p_value == b.p_value and a.n_permutations == 999
            elif a.n_permutations < 999:
                stopped += 1
                assert a.p_value == pytest.approx(10 / a.n_permutations)
    print(f"{stopped} of {len(small_cache.layers)} unplanted layers stopped early")
    for bad in (1, -3, 2.5, True):
        with pytest.raises(GeoscreenError, match="sequential_h must be a whole number"):
            geoscreen.run_spec(specs[1], small_cache.path, sequential_h=bad)
    from geoscreen.agent.report.page import collect

    assert dict(collect(ledger)["budget"])["Monte Carlo nulls"].startswith(
        "a layer stops at 10 draws as extreme as observed")
    assert stopped >= len(small_cache.layers) // 2  # the unplanted set stops on most layers
