"""Queue-time validation (issue 12, item 13): what is known when a spec is queued is checked then,
as a one-line error naming the file, the spec and the field, with the ledger left unchanged."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from geoscreen.agent.cli import main
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Hypothesis

GENES = "genes:" + ",".join(f"G{i}" for i in range(10))
AXIS = {"statement": "Planted genes separate on axis 1", "probe": "axis_separation",
        "params": {"axis": 1, "positive": GENES}}

# (name, spec, expected text in the error); the cache has 3 layers L0-L2, 400 genes, width 16
BAD = [
    ("layer position past the cache", {**AXIS, "layers": [0, 7]},
     "field 'layers': 7 is out of range (this cache has 3 layers"),
    ("unknown layer name", {**AXIS, "layers": ["L0", "L9"]},
     "field 'layers': unknown layer 'L9'; valid: L0, L1, L2"),
    ("axis beyond the width", {**AXIS, "params": {**AXIS["params"], "axis": 40}},
     "field 'params.axis': axis 40 does not exist; a layer of this cache has 16 singular axes"),
    ("subspace beyond the width", {"statement": "Pairs closer in a far subspace",
                                   "probe": "pair_proximity",
                                   "params": {"pairs": "pairs:G1-G2,G3-G4", "subspace": [2, 17]}},
     "field 'params.subspace': axis 17 does not exist"),
    ("spectrum without a trend", {"statement": "Effective rank is low", "probe": "spectrum",
                                  "params": {"measure": "effective_rank"}},
     "field 'across_layers': probe 'spectrum' with null 'none' reports a value per layer but "
     "no p-value"),
    ("trend over two layers", {"statement": "Effective rank falls", "probe": "spectrum",
                               "across_layers": "trend", "layers": [0, 1]},
     "field 'layers': a trend across layers needs at least 3 layers"),
    ("C: inf", {"statement": "Regulators separate", "probe": "role_separation",
                "params": {"positive": GENES, "C": float("inf")}},
     "field 'params.C': Input should be a finite number"),
    ("boolean axis", {**AXIS, "params": {**AXIS["params"], "axis": True}},
     "field 'params.axis': is a boolean (True) where a value of type int is expected"),
    ("boolean layer", {**AXIS, "layers": [True, 2]}, "field 'layers'"),
    ("parent not in the ledger", {**AXIS, "parents": [99]},
     "field 'parents': #99 not in the ledger"),
    ("model source from a file", {**AXIS, "source": "llm:gpt-4o"},
     "field 'source': 'llm:gpt-4o' is reserved for proposals the LLM brainstormer records"),
    ("unknown resource", {**AXIS, "params": {**AXIS["params"], "positive": "gp:GO:0005615"}},
     "unknown resource 'gp'"),
    ("bad selector syntax", {**AXIS, "params": {**AXIS["params"], "positive": "go:GO:0005615 &"}},
     "position"),
    ("genes none of which are in the cache",
     {**AXIS, "params": {**AXIS["params"], "positive": "genes:CD19,PAX5,MS4A1"}},
     "field 'params.positive': gene set 'genes:CD19,PAX5,MS4A1' has 0 genes present in the "
     "cache"),
    ("pairs none of which are in the cache",
     {"statement": "Pairs closer", "probe": "pair_proximity",
      "params": {"pairs": "pairs:CD19-PAX5,MS4A1-CD79A"}},
     "field 'params.pairs': pair set"),
    ("missing gene file", {**AXIS, "params": {**AXIS["params"], "positive": "file:nope.txt"}},
     "nope.txt: field 'gene set': does not exist"),
    ("a profile's pairs none of which are in the cache",
     {"statement": "Two profiles peak in order", "probe": "layer_profile", "layers": ["L2"],
      "params": {"profile": {"probe": "pair_proximity", "params": {"pairs": "pairs:G1-G2"}},
                 "versus": {"probe": "pair_proximity",
                            "params": {"pairs": "pairs:CD19-PAX5"}}}},
     "field 'params.versus.params.pairs': pair set"),
]


def _queue(args: list[str]) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(["queue", "add", *args])
    return rc, out.getvalue(), err.getvalue()


def _snapshot(ledger: Path) -> list[str]:
    """The ledger's whole content as SQL (every table, every row), read without writing.

    Bytes are the wrong comparison here: `queue add` runs in this process, and SQLite moves the
    write-ahead log into the database file whenever the last connection closes."""
    import sqlite3

    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_queue_add_checks_what_is_known_at_queue_time(small_cache, tmp_path: Path):
    ledger = tmp_path / "ledger" / "l.sqlite"
    ledger.parent.mkdir()
    good = tmp_path / "good.json"
    good.write_text(json.dumps([AXIS]))
    rc, out, err = _queue([str(good), "--ledger", str(ledger), "--cache", str(small_cache.path)])
    assert rc == 0, err
    assert "queued 1 hypotheses" in out and "note:" not in out
    before = _snapshot(ledger)
    failures, one_line = [], 0
    for k, (name, spec, expected) in enumerate(BAD):
        f = tmp_path / f"bad{k}.json"
        # a good spec first: the whole file is refused, not just the bad spec
        f.write_text(json.dumps([{**AXIS, "statement": f"good spec {k}",
                                  "params": {**AXIS["params"], "axis": 2}}, spec]))
        rc, _out, err = _queue([str(f), "--ledger", str(ledger),
                                "--cache", str(small_cache.path)])
        lines = err.strip().splitlines()
        ok = (rc == 2 and len(lines) == 1 and f"bad{k}.json: spec #2" in lines[0]
              and expected in lines[0])
        one_line += ok
        if not ok:
            failures.append(f"{name}: exit {rc}: {err.strip()}")
    identical = _snapshot(ledger) == before
    print(f"queue-time checks: {len(BAD)} bad specs tried / {one_line} one-line errors naming "
          f"the field / ledger content identical: {'yes' if identical else 'NO'}")
    assert not failures, "\n".join(failures)
    assert identical


def test_the_bound_cache_is_used_when_no_cache_is_given(small_cache, tmp_path: Path, cli):
    from geoscreen.agent.campaign import CampaignConfig, run_campaign

    ledger = tmp_path / "l.sqlite"
    run_campaign(small_cache.path, ledger,
                 CampaignConfig(iterations=1, per_iteration=1, brainstormer="none",
                                memory_mb=None))
    f = tmp_path / "far.json"
    f.write_text(json.dumps({**AXIS, "layers": [5]}))
    res = cli("queue", "add", str(f), "--ledger", str(ledger))  # the installed command
    assert res.returncode == 2
    assert "field 'layers': 5 is out of range (this cache has 3 layers" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    # another cache than the campaign's is refused
    from conftest import make_cache

    other = make_cache(tmp_path / "other", seed=5)
    rc, _out, err = _queue([str(f), "--ledger", str(ledger), "--cache", str(other.path)])
    assert rc == 2 and "is not the cache this campaign runs on" in err


def test_without_a_cache_references_still_resolve(tmp_path: Path):
    ledger = tmp_path / "l.sqlite"
    f = tmp_path / "s.json"
    f.write_text(json.dumps({**AXIS, "params": {**AXIS["params"], "positive": "gp:GO:1"}}))
    rc, _out, err = _queue([str(f), "--ledger", str(ledger)])
    assert rc == 2 and "unknown resource 'gp'" in err
    f.write_text(json.dumps({**AXIS, "layers": [40]}))
    rc, out, err = _queue([str(f), "--ledger", str(ledger)])
    assert rc == 0, err
    assert "note: no cache given and none bound yet" in out
    led = Ledger(ledger)
    with led.session() as s:
        assert s.query(Hypothesis).count() == 1
    led.close()


@pytest.mark.parametrize("field,value", [("layers", [0, False]), ("parents", [True])])
def test_booleans_are_not_numbers_in_specs(field, value):
    from geoscreen.errors import GeoscreenError
    from geoscreen.hypotheses.loader import parse_spec

    with pytest.raises(GeoscreenError, match=f"field '{field}'.*boolean"):
        parse_spec({**AXIS, field: value}, "s")
