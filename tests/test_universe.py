"""`universe:` restricts a whole test (SVD, sets, nulls) to a gene list: the same numbers as a
cache that only ever held those genes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_helpers import cache_from_layers, gene_names

import geoscreen
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.hypotheses.spec import HypothesisSpec
from geoscreen.store.cache import write_cache

SPEC = {"statement": "axis 1 separates the first genes", "probe": "axis_separation",
        "params": {"positive": "genes:" + ",".join(f"G{i}" for i in range(25))},
        "alternative": "two-sided"}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("universe")
    rng = np.random.default_rng(3)
    layers = [rng.standard_normal((400, 10)) * np.linspace(3, 1, 10) for _ in range(3)]
    for X in layers:
        X[:25, 0] += 1.5
    full = cache_from_layers(tmp / "full", layers)
    keep = np.r_[0:25, 100:300]  # the study's genes: 225 of 400
    names = gene_names(400)
    sub = write_cache(tmp / "sub", {f"L{k}": np.asarray(X[keep], dtype=np.float32)
                                    for k, X in enumerate(layers)},
                      [names[i] for i in keep], model="test", synthetic=True)
    gene_file = tmp / "study.txt"
    gene_file.write_text("\n".join(names[i] for i in keep) + "\n")
    return full, sub, gene_file, tmp


def test_a_universe_is_a_cache_of_those_genes(caches):
    full, sub, gene_file, tmp = caches
    within = geoscreen.run_spec({**SPEC, "universe": f"file:{gene_file}"}, full.path,
                                work_dir=tmp / "w")
    alone = geoscreen.run_spec(SPEC, sub.path, work_dir=tmp / "w")
    everything = geoscreen.run_spec(SPEC, full.path, work_dir=tmp / "w")
    for a, b in zip(within.layers, alone.layers):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-6)
        assert a.p_value == pytest.approx(b.p_value, rel=1e-6) and a.n == b.n
    assert [r.statistic for r in everything.layers] != [r.statistic for r in within.layers]
    rec = within.provenance["universe"]
    assert rec["present"] == 225 and rec["resource"] == "file"


def test_the_hash_changes_only_when_a_universe_is_given():
    plain = parse_spec(dict(SPEC), "s")
    assert "universe" not in plain.canonical()
    narrowed = parse_spec({**SPEC, "universe": "genes:A,B"}, "s")
    assert narrowed.hash != plain.hash and narrowed.canonical()["universe"] == "genes:A,B"


def test_queue_add_checks_the_universe(caches, tmp_path, cli):
    full, _, _, _ = caches
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({**SPEC, "universe": "genes:G1,G2,G3"}))
    res = cli("queue", "add", str(spec), "--ledger", str(tmp_path / "l.sqlite"), "--cache",
              str(full.path))
    assert res.returncode == 2 and "field 'universe'" in res.stderr
    assert "needs at least 10" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_model_may_not_read_a_universe_file():
    from geoscreen.agent.llm.brainstormer import check_files

    spec = HypothesisSpec.model_validate({**SPEC, "universe": "file:/etc/hostname",
                                          "source": "llm:test"})
    assert "file:/etc/hostname may not be read" in check_files(spec, ())
