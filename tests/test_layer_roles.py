"""Layers named by role (first, last, embedding, block:N): one spec, the same layer in a cache
with the embedding stored (`geoscreen extract`) and in an imported cache without it."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import gene_names

import geoscreen
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.preflight import check_layers
from geoscreen.store.cache import resolve_layer, write_cache

WITH_EMB = ["emb"] + [f"L{i}" for i in range(1, 13)]  # what extract writes: 13 layers
WITHOUT = [f"L{i}" for i in range(12)]  # an imported paper cache: 12 blocks


@pytest.mark.parametrize("role,a,b", [
    ("first", "L1", "L0"), ("last", "L12", "L11"), ("block:1", "L1", "L0"),
    ("block:3", "L3", "L2"), ("block:12", "L12", "L11"), ("block:-1", "L12", "L11"),
    ("block:-12", "L1", "L0"),
])
def test_roles_name_the_same_block_in_both_layouts(role, a, b):
    assert WITH_EMB[resolve_layer(role, WITH_EMB)[0]] == a
    assert WITHOUT[resolve_layer(role, WITHOUT)[0]] == b


def test_names_and_positions_keep_their_meaning():
    assert resolve_layer(0, WITH_EMB) == (0, "") and resolve_layer(-1, WITHOUT) == (11, "")
    assert resolve_layer("embedding", WITH_EMB) == (0, "")
    named = ["first", "x", "y"]  # a layer whose name is a role keeps its name
    assert resolve_layer("first", named) == (0, "") and resolve_layer("last", named) == (2, "")


@pytest.mark.parametrize("layer,names,says", [
    ("embedding", WITHOUT, "stores no embedding layer"),
    ("block:0", WITH_EMB, "block:1 to block:12"),
    ("block:13", WITH_EMB, "this cache has 12 blocks"),
    ("block:-13", WITHOUT, "this cache has 12 blocks"),
    ("lst", WITHOUT, "or a role: first, last, embedding, block:N"),
    (12, WITHOUT, "out of range"),
])
def test_what_does_not_exist_is_named(layer, names, says):
    pos, problem = resolve_layer(layer, names)
    assert pos is None and says in problem


def test_preflight_refuses_two_names_for_one_layer():
    assert "same layer" in check_layers(["last", -1], WITHOUT)
    assert check_layers(["first", "block:2", "last"], WITH_EMB) == ""


def test_one_spec_runs_on_both_layouts_with_the_same_numbers(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((300, 8)).astype(np.float32) for _ in range(4)]
    genes = gene_names(300)
    a = write_cache(tmp_path / "a", {"emb": rng.standard_normal((300, 8)).astype(np.float32),
                                     **{f"L{i + 1}": x for i, x in enumerate(blocks)}}, genes,
                    model="test", synthetic=True)
    b = write_cache(tmp_path / "b", {f"L{i}": x for i, x in enumerate(blocks)}, genes,
                    model="test", synthetic=True)
    spec = {"statement": "the spectrum of three blocks", "probe": "spectrum",
            "params": {"measure": "participation_ratio", "n_bootstrap": 0},
            "layers": ["first", "block:2", "last"], "across_layers": "trend"}
    ra = geoscreen.run_spec(spec, a.path, seed=1, work_dir=tmp_path / "w")
    rb = geoscreen.run_spec(spec, b.path, seed=1, work_dir=tmp_path / "w")
    assert [r.layer for r in ra.layers] == ["L1", "L2", "L4"]
    assert [r.layer for r in rb.layers] == ["L0", "L1", "L3"]
    assert [r.statistic for r in ra.layers] == [r.statistic for r in rb.layers]
    with pytest.raises(GeoscreenError, match="stores no embedding layer"):
        geoscreen.run_spec({**spec, "layers": ["embedding", "first", "last"]}, b.path)


def test_reference_checks_are_remembered_per_cache(tmp_path):
    """The queue-time reference check resolves a reference once per cache (the offline
    brainstormer proposes the same ones every iteration): the verdict is remembered, an error
    included, and a cache with other genes gets its own verdict."""
    from conftest import make_cache

    from geoscreen.hypotheses import preflight as pf
    from geoscreen.hypotheses.loader import parse_spec

    a = make_cache(tmp_path / "a", n_genes=60)
    b = make_cache(tmp_path / "b", n_genes=60, prefix="X")
    spec = parse_spec({"statement": "G1-G3 cohere", "probe": "set_cohesion",
                       "params": {"gene_set": "genes:G1,G2,G3"}}, "s")
    pf._REF_CHECKS.clear()
    assert pf.check_references(spec, a) == ""
    assert len(pf._REF_CHECKS) == 1
    assert pf.check_references(spec, a) == "" and len(pf._REF_CHECKS) == 1
    err = pf.check_references(spec, b)  # no G genes in this cache
    assert err.startswith("field 'params.gene_set'") and len(pf._REF_CHECKS) == 2
    assert pf.check_references(spec, b) == err
    assert pf.check_references(spec, None) == ""  # resolving alone: the genes exist
