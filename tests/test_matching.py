"""Matched nulls, the null catalogue and the set-level trend test, piece by piece."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from importlib.resources import files

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, gaussian_layers, genes_ref, run
from scipy import stats

from geoscreen.combine import combine, set_trend_test
from geoscreen.errors import GeoscreenError
from geoscreen.probes import nulls
from geoscreen.probes.matching import Strata, _rank_bins, build_strata
from geoscreen.probes.registry import list_probes
from geoscreen.store.cache import write_cache


def test_strata_draw_is_a_within_strata_relabelling():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [6, 9, 4])
    rng.shuffle(labels)
    strata = Strata(labels=labels, variables=["x"], values={"x": labels.astype(float)})
    members = np.array([0, 3, 5, 3, 8, 11])  # a repeated member (overlapping sets)
    D = strata.draw(members, 6000, rng)
    assert (labels[D] == labels[members][None, :]).all()
    assert (D[:, 1] == D[:, 3]).all()  # the same member maps to the same gene
    uniq = D[:, [0, 1, 2, 4, 5]]
    assert all(len(set(r)) == 5 for r in uniq[:200])  # distinct members -> distinct genes
    g = 0  # member 0's destination is uniform over its stratum
    counts = np.bincount(D[:, g], minlength=labels.size)[labels == labels[members[g]]]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_threshold_sets_stay_in_their_bins():
    """A set chosen as 'value >= 75th percentile' maps only to genes above the cut, even with
    ties at the cut (discrete counts such as GO annotations)."""
    x = np.array([0] * 40 + [1] * 30 + [2] * 20 + [5] * 10 + [9] * 10, dtype=float)
    b = _rank_bins(x, 4)
    top = x >= np.quantile(x, 0.75)
    assert set(b[top]).isdisjoint(set(b[~top]))
    assert (b[x == 0] == b[0]).all()  # ties share a bin


def test_annotation_counts_match_the_bundled_file():
    from geoscreen.store.resources.covariates import annotation_counts

    data = files("geoscreen.store.resources") / "data"
    path = data / "go_annotations_human_orgHsEgDb_3.16.tsv.gz"
    want: dict[str, set[str]] = {}
    with gzip.open(path, "rt") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["symbol"] in ("TP53", "ACTB", "CD19"):
                want.setdefault(row["symbol"], set()).add(row["go_id"])
    got, rec = annotation_counts(["TP53", "ACTB", "CD19", "NOT_A_GENE"])
    assert got.tolist() == [len(want["TP53"]), len(want["ACTB"]), len(want["CD19"]), 0]
    assert rec["resource"] == "go"


def test_matched_result_records_variables_strata_and_balance(tmp_path):
    cache = cache_from_layers(tmp_path / "c", gaussian_layers(1, 200, 8, 1))
    ctx = context(cache, tmp_path)
    res = run("set_cohesion", {"gene_set": genes_ref(range(20)), "n_permutations": 99,
                               "match": ["norm", "centrality"]}, ctx, "L0")
    m = res.extra["matching"]
    assert res.null == "matched"
    assert m["variables"] == ["norm", "centrality"] and m["n_strata"] <= 16
    assert set(m["balance"]) == {"norm", "centrality"}
    assert all(abs(v["smd"]) < 0.5 for v in m["balance"].values())  # stratified draws balance


def test_expression_needs_a_record_and_uses_it(tmp_path):
    X = gaussian_layers(1, 60, 4, 2)[0].astype(np.float32)
    genes = [f"G{i}" for i in range(60)]
    bare = write_cache(tmp_path / "bare", {"L0": X}, genes, synthetic=True)
    with pytest.raises(GeoscreenError, match="records no per-gene expression"):
        run("set_cohesion", {"gene_set": genes_ref(range(10)), "match": ["expression"],
                             "n_permutations": 99}, context(bare, tmp_path), "L0")
    expr = np.arange(60, dtype=np.int64)
    rec = write_cache(tmp_path / "rec", {"L0": X}, genes, synthetic=True,
                      extra={"gene_token_counts": expr})
    ctx = context(rec, tmp_path)
    res = run("set_cohesion", {"gene_set": genes_ref(range(10)), "match": ["expression"],
                               "n_permutations": 99}, ctx, "L0")
    bal = res.extra["matching"]["balance"]["expression"]
    assert bal["set_mean"] == pytest.approx(4.5)
    assert bal["null_mean"] < 15  # drawn from the lowest-expression stratum, like the set
    svd = ctx.svd("L0")
    strata = build_strata(ctx, "L0", svd, ["expression"], 4)
    assert len(set(strata.labels[:10])) == 1


def test_strata_are_built_once_and_a_relabelled_copy_draws_from_its_own_strata(tmp_path):
    """build_strata keeps the strata with the variables (a second call, e.g. a profile's next
    half-sample, reuses them) but each call gets its own record; a caller that replaces a copy's
    labels (the anchors of centroid_convergence) draws from the new strata, the kept ones stay."""
    X = gaussian_layers(1, 80, 4, 3)[0].astype(np.float32)
    genes = [f"G{i}" for i in range(80)]
    rec = write_cache(tmp_path / "rec", {"L0": X}, genes, synthetic=True,
                      extra={"gene_token_counts": np.arange(80, dtype=np.int64)})
    ctx = context(rec, tmp_path)
    svd = ctx.svd("L0")
    first = build_strata(ctx, "L0", svd, ["expression"], 4, np.arange(10))
    second = build_strata(ctx, "L0", svd, ["expression"], 4, np.arange(40, 45))
    assert np.array_equal(first.labels, second.labels)
    assert first.record is not second.record
    assert first.record["max_fill"] != second.record["max_fill"]  # 10 vs 5 of a 20-gene stratum
    rng = np.random.default_rng(0)
    first.draw(np.arange(5), 10, rng)  # pools made for the shared labels
    labels = first.labels.copy()
    labels[:5] = labels.max() + 1  # five genes moved to a stratum of their own
    first.labels = labels
    D = first.draw(np.array([0, 1, 2, 3, 4, 30]), 200, rng)
    assert set(np.unique(D[:, :5])) <= set(range(5))
    assert (~np.isin(D[:, 5], np.arange(5))).all()
    again = build_strata(ctx, "L0", svd, ["expression"], 4)
    assert np.array_equal(again.labels, second.labels)
    assert (again.labels[:5] == again.labels[5]).all()
    D = again.draw(np.array([0]), 400, rng)
    assert not set(np.unique(D)) <= set(range(5))  # the kept strata: a 20-gene pool


def test_set_trend_test_matches_brute_force():
    rng = np.random.default_rng(3)
    depth = np.arange(6)
    effect = rng.normal(size=6) + 0.5 * depth
    draws = rng.normal(size=(6, 499))
    out = set_trend_test(depth, effect, draws, "greater")
    rho = stats.spearmanr(depth, effect)[0]
    null = np.array([stats.spearmanr(depth, draws[:, b])[0] for b in range(499)])
    assert out["rho"] == pytest.approx(rho)
    assert out["p_value"] == pytest.approx((1 + np.sum(null >= rho - 1e-12)) / 500)


def test_anchor_trend_uses_the_same_null_sets_in_every_layer(tmp_path):
    cache = cache_from_layers(tmp_path / "c", gaussian_layers(4, 150, 6, 4))
    ctx = context(cache, tmp_path)
    prm = {"genes": genes_ref([1, 2, 3]), "anchor": "G0", "n_bootstrap": 0,
           "n_permutations": 99, "match": ["annotation"]}
    res = [run("anchor_convergence", prm, ctx, layer) for layer in cache.layers]
    assert all(r.null_draws is not None and len(r.null_draws) == 99 for r in res)
    assert "null_draws" not in res[0].model_dump()  # never stored in the ledger
    out = combine(res, "trend", "greater", seed=0)
    assert out.method == "spearman_trend_vs_null_sets"
    # same seed and strata: a second run draws the same null sets
    again = [run("anchor_convergence", prm, ctx, layer) for layer in cache.layers]
    assert again[2].null_draws == res[2].null_draws


def test_every_probe_null_is_described():
    # the built-in catalogue (test plug-ins registered by other tests declare a "toy" null)
    for info in [p for p in list_probes() if p.module.startswith("geoscreen.")]:
        for name in info.nulls:
            assert nulls.describe(name) is not None, (info.name, name)
        default = nulls.spec_null(info.name, {})
        model = nulls.describe(default)
        assert model is not None, (info.name, default)
        # no default is a null that fails on real geometry for gene-set claims
        assert model.real_geometry != "fails for gene-set claims" or info.name in (
            "spectrum", "layer_similarity"), (info.name, default)


def test_warning_only_for_gene_set_claims():
    assert nulls.warning("feature_shuffle", {"gene_set": "go:GO:0005840"})
    assert nulls.warning("feature_shuffle", {"measure": "effective_rank"}) is None
    assert nulls.warning("matched", {"gene_set": "go:GO:0005840"}) is None
    assert nulls.label("gene_shuffle+coexpression_residualization").startswith("uniformly")


def test_probes_list_marks_defaults_and_failing_nulls():
    out = subprocess.run([sys.executable, "-m", "geoscreen.agent.cli", "probes", "list",
                          "--json"], capture_output=True, text=True, check=True).stdout
    data = {p["name"]: p for p in json.loads(out)}
    assert data["set_cohesion"]["default_null"] == "matched"
    assert data["pair_proximity"]["default_null"] == "degree_preserving"
    fs = data["persistent_homology"]["null_models"]["feature_shuffle"]
    assert fs["real_geometry"] == "fails for gene-set claims"
    table = subprocess.run([sys.executable, "-m", "geoscreen.agent.cli", "probes", "list"],
                           capture_output=True, text=True, check=True,
                           env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"}).stdout
    assert "matched*" in table and "feature_shuffle!" in table
