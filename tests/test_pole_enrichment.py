"""Families of gene sets (go:*, reactome:*, trrust:TF=*, GMT files) and the pole-enrichment
scan over them: reference agreement, a planted effect, and what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, gene_names, run
from scipy import sparse, stats

from geoscreen.errors import GeoscreenError
from geoscreen.probes.enrichment import scan_statistics
from geoscreen.store.resources.api import resolve_gene_family, resolve_gene_set


def write_gmt(path, sets: dict[str, list[str]]) -> str:
    path.write_text("".join(f"{name}\tna\t" + "\t".join(genes) + "\n"
                            for name, genes in sets.items()))
    return f"file:{path}"


@pytest.mark.parametrize("family,member,single", [
    ("go:*?aspect=CC", "GO:0005615", "go:GO:0005615"),
    ("go:*?aspect=CC;evidence=-IEA", "GO:0005829", "go:GO:0005829?evidence=-IEA"),
    ("trrust:TF=*", "TF=PAX5", "trrust:TF=PAX5"),
    ("reactome:*", "R-HSA-109582", "reactome:R-HSA-109582"),
])
def test_a_family_member_is_the_single_set(family, member, single):
    fam = resolve_gene_family(family)
    j = fam.set_ids.index(member)
    assert sorted(fam.members(j)) == sorted(resolve_gene_set(single).genes)
    rec = fam.record()
    assert rec["sets"] == len(fam) and rec["checksum"] and rec["kind"] == "gene_family"


def test_family_refusals_name_the_fix(tmp_path):
    for bad, says in (("go:GO:0005615", "not a family"),
                      ("go:* | reactome:*", "combines references"),
                      ("go:*?aspect=XX", "aspect must be one of BP, CC, MF"),
                      ("genes:A,B", "not a family")):
        with pytest.raises(GeoscreenError, match=says):
            resolve_gene_family(bad)
    bad_gmt = tmp_path / "bad.gmt"
    bad_gmt.write_text("only_a_name\n")
    with pytest.raises(GeoscreenError, match="line 1 has 1 tab-separated fields"):
        resolve_gene_family(f"file:{bad_gmt}")


def test_scan_statistics_match_scipy():
    rng = np.random.default_rng(0)
    n, sets = 200, [rng.choice(200, k, replace=False) for k in (5, 17, 40)]
    coords = rng.standard_normal((n, 2))
    ranks = stats.rankdata(coords, axis=0)
    rows = np.concatenate([[j] * len(s) for j, s in enumerate(sets)])
    M = sparse.csr_matrix((np.ones(rows.size), (rows, np.concatenate(sets))), shape=(3, n))
    k = np.array([len(s) for s in sets])
    z = scan_statistics(ranks, M, k, n, "rank", "top", 0.1)
    for j, s in enumerate(sets):
        rest = np.setdiff1d(np.arange(n), s)
        for a in range(2):
            res = stats.mannwhitneyu(coords[s, a], coords[rest, a], use_continuity=False,
                                     method="asymptotic")
            expect = stats.norm.isf(res.pvalue / 2) * np.sign(res.statistic - k[j] * (n - k[j]) / 2)
            assert z[j, a] == pytest.approx(expect, rel=1e-9)
    top = (ranks > n - 20).astype(float)
    zc = scan_statistics(top, M, k, n, "pole_count", "top", 0.1)
    for j, s in enumerate(sets):
        hg = stats.hypergeom(n, 20, k[j])
        c = top[s, 0].sum()
        assert zc[j, 0] == pytest.approx((c - hg.mean()) / hg.std(), rel=1e-9)


def test_a_planted_pole_is_found_and_named(tmp_path):
    rng = np.random.default_rng(4)
    n, d = 400, 12
    X = rng.standard_normal((n, d)) * np.linspace(3, 1, d)
    X[:20, 0] += 6.0  # genes G0..G19 sit at one end of the dominant axis
    cache = cache_from_layers(tmp_path / "c", [X])
    names = gene_names(n)
    sets = {"planted": names[:20]}
    for i in range(30):
        sets[f"random{i}"] = list(rng.choice(names[20:], 15, replace=False))
    ref = write_gmt(tmp_path / "sets.gmt", sets)
    ctx = context(cache, tmp_path)
    r = run("pole_enrichment", {"family": ref, "axes": [1, 2, 3], "n_permutations": 199,
                                "null": "gene_shuffle"}, ctx, "L0")
    assert r.p_value == pytest.approx(1 / 200) and r.n == 31
    best = r.extra["hits"][0]
    assert best["set"] == "planted" and best["axis"] == 1 and best["p_maxT"] <= 0.01
    assert r.effect_size > 0.9 and best["pole"] in ("top", "bottom")
    assert all(h["p_maxT"] > 0.05 for h in r.extra["hits"][1:])
    json.dumps(r.extra)  # the hits are stored in the ledger as JSON
    counted = run("pole_enrichment", {"family": ref, "axes": [1], "test": "pole_count",
                                      "n_permutations": 199}, ctx, "L0")
    assert counted.p_value <= 0.01 and counted.extra["hits"][0]["set"] == "planted"
    without = {k: v for k, v in sets.items() if k != "planted"}
    null_ref = write_gmt(tmp_path / "null.gmt", without)
    quiet = run("pole_enrichment", {"family": null_ref, "axes": [1, 2, 3],
                                    "n_permutations": 199}, ctx, "L0")
    assert quiet.p_value > 0.05


def test_the_scan_refuses_what_it_cannot_scan(tmp_path):
    rng = np.random.default_rng(0)
    cache = cache_from_layers(tmp_path / "c", [rng.standard_normal((100, 6))])
    ref = write_gmt(tmp_path / "s.gmt", {"a": gene_names(100)[:5]})
    ctx = context(cache, tmp_path)
    with pytest.raises(GeoscreenError, match="no set with 10-99 genes"):
        run("pole_enrichment", {"family": ref}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="axis 9 does not exist"):
        run("pole_enrichment", {"family": ref, "axes": [9], "min_set_size": 3}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="more than max_sets=1"):
        two = write_gmt(tmp_path / "t.gmt", {"a": gene_names(100)[:5], "b": gene_names(100)[5:9]})
        run("pole_enrichment", {"family": two, "min_set_size": 3, "max_sets": 1}, ctx, "L0")


def test_queue_add_checks_the_family_against_the_cache(tmp_path, cli):
    rng = np.random.default_rng(0)
    cache = cache_from_layers(tmp_path / "c", [rng.standard_normal((100, 6))])
    ledger = str(tmp_path / "l.sqlite")
    for family, says in (("go:*?aspect=CC", "no set with 10-200 genes present in the cache"),
                         ("go:GO:0005615", "is not a family of gene sets")):
        spec = tmp_path / "s.json"
        spec.write_text(json.dumps({"statement": "scan", "probe": "pole_enrichment",
                                    "params": {"family": family}}))
        res = cli("queue", "add", str(spec), "--ledger", ledger, "--cache", str(cache.path))
        assert res.returncode == 2 and says in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "params.family" in res.stderr


def test_set_cohesion_takes_a_family_as_the_list_of_its_sets(tmp_path):
    """`gene_set: file:sets.gmt` (or go:*, trrust:TF=*) is the same test as listing its sets."""
    rng = np.random.default_rng(5)
    cache = cache_from_layers(tmp_path / "c", [rng.standard_normal((300, 8))])
    names = gene_names(300)
    sets = {f"s{j}": list(rng.choice(names, int(rng.integers(6, 15)), replace=False))
            for j in range(6)}
    sets["tiny"] = names[:3]  # under min_size: left out of the family, as from the list
    ref = write_gmt(tmp_path / "f.gmt", sets)
    ctx = context(cache, tmp_path, seed=4)
    fam = run("set_cohesion", {"gene_set": ref, "n_permutations": 199}, ctx, "L0")
    listed = run("set_cohesion", {"gene_set": ["genes:" + ",".join(g) for g in
                                               list(sets.values())[:6]],
                                  "n_permutations": 199}, context(cache, tmp_path, seed=4), "L0")
    assert fam.extra["n_sets"] == 6 and fam.extra["family_sets"] == [f"s{j}" for j in range(6)]
    assert fam.statistic == pytest.approx(listed.statistic)
    assert fam.p_value == pytest.approx(listed.p_value)


@pytest.mark.parametrize(("test", "pole"), [("rank", "both"), ("pole_count", "both"),
                                            ("pole_count", "top")])
def test_dense_and_sparse_membership_give_the_same_scan(tmp_path, monkeypatch, test, pole):
    """The membership matrix is dense or sparse by its density; the sums are exact either
    way, so every null draw, hit and p-value is the same."""
    from geoscreen.probes import enrichment

    rng = np.random.default_rng(6)
    n = 300
    X = rng.standard_normal((n, 8)) * np.linspace(3, 1, 8)
    X[:15, 1] += 4.0
    X = np.round(X, 1)  # tied coordinates: half-integer average ranks
    cache = cache_from_layers(tmp_path / "c", [X])
    names = gene_names(n)
    sets = {f"s{i}": list(rng.choice(names, int(rng.integers(10, 40)), replace=False))
            for i in range(25)}
    sets["planted"] = names[:15]
    ref = write_gmt(tmp_path / "sets.gmt", sets)
    prm = {"family": ref, "axes": [1, 2, 3], "n_permutations": 199, "test": test, "pole": pole}
    out = []
    for density in (0.0, 2.0):  # every membership dense, then every one sparse
        monkeypatch.setattr(enrichment, "DENSE_DENSITY", density)
        r = run("pole_enrichment", prm, context(cache, tmp_path), "L0")
        out.append((r.statistic, r.p_value, r.effect_size, r.extra["null_mean"],
                    r.extra["null_sd"], json.dumps(r.extra["hits"])))
    assert out[0] == out[1]


@pytest.mark.parametrize(("test", "pole"), [("rank", "both"), ("pole_count", "both"),
                                            ("pole_count", "bottom")])
def test_every_null_draw_is_the_scan_of_one_relabelling(tmp_path, test, pole):
    """The scan's null, drawn in batches of stacked relabellings, is draw for draw, in order,
    the maximum of the scan run on each relabelled layer alone (a reference written out
    plainly here): its mean and sd, and where a sequential stop falls."""
    from geoscreen.probes.enrichment import POLE_CODE, relabellings

    rng = np.random.default_rng(8)
    n = 250
    X = np.round(rng.standard_normal((n, 6)) * np.linspace(3, 1, 6), 1)  # ties as well
    cache = cache_from_layers(tmp_path / "c", [X])
    names = gene_names(n)
    sets = {f"s{i}": list(rng.choice(names, int(rng.integers(8, 30)), replace=False))
            for i in range(12)}
    ref = write_gmt(tmp_path / "sets.gmt", sets)
    axes, q = [1, 2, 4], 0.1
    prm = {"family": ref, "axes": axes, "n_permutations": 99, "test": test, "pole": pole,
           "pole_fraction": q, "null": "gene_shuffle", "min_set_size": 8}
    ctx = context(cache, tmp_path)
    r = run("pole_enrichment", prm, ctx, "L0")
    # the reference: the same relabellings, each scanned on its own, in float64
    svd = ctx.svd("L0")
    ranks = stats.rankdata(svd.scores(axes), axis=0)
    ids, _, mset, mrow = ctx.family_rows(ref, param="family", min_size=8, max_size=200,
                                         max_sets=5000, include_zero=False)
    assert len(ids) == len(sets)
    M = np.zeros((len(ids), n))
    M[mset, svd.local(mrow)] = 1.0
    k = M.sum(axis=1)[:, None]
    size = int(round(q * n))
    perms = relabellings(None, n, 99, context(cache, tmp_path).rng("L0", "null"))
    null = []
    for perm in perms:
        rk = ranks[perm]
        if test == "rank":
            z = (M @ rk - k * (n + 1) / 2) / np.sqrt(k * (n - k) * (n + 1) / 12)
            z = np.abs(z)
        else:
            top, bottom = M @ (rk > n - size), M @ (rk <= size)
            var = k * (size / n) * (1 - size / n) * (n - k) / (n - 1)
            zs = {"top": top, "bottom": bottom}
            z = np.concatenate([(zs[s] - k * size / n) / np.sqrt(var)
                                for s in (("top", "bottom") if pole == "both" else (pole,))])
        null.append(z.max())
    null = np.array(null)
    assert POLE_CODE > n  # the pole code of a both-pole count holds both counts
    assert r.extra["null_mean"] == pytest.approx(null.mean(), rel=1e-12)
    assert r.extra["null_sd"] == pytest.approx(null.std(ddof=1), rel=1e-12)
    # in draw order: stopping at the h-th draw reaching the observed maximum (Besag-Clifford)
    # stops where the reference's h-th such draw is
    obs = r.statistic
    reach = np.flatnonzero(null >= obs - 1e-12 * max(1.0, abs(obs)))
    for h in (1, 2, 3):
        if reach.size < h:
            continue
        seq = run("pole_enrichment", prm, context(cache, tmp_path, sequential_h=h), "L0")
        assert seq.extra["null_draws_used"] == reach[h - 1] + 1
        assert seq.p_value == pytest.approx(h / (reach[h - 1] + 1), rel=1e-12)
    assert reach.size >= 1  # these random sets reach their observed maximum again


@pytest.mark.parametrize("block_bytes", [1, 8 * 97 * 3, 2**30])
def test_relabellings_are_the_plain_definition(monkeypatch, block_bytes):
    """Made in blocks of rows, the relabellings are those of one (m, n) draw of keys, sorted
    (uniform), or sorted with the stratum added and scattered back to the stratum order
    (matched): the definition written out plainly here."""
    from geoscreen.probes import enrichment
    from geoscreen.probes import stats as S

    monkeypatch.setattr(S, "RELABEL_BLOCK_BYTES", block_bytes)
    n, m = 97, 20
    labels = np.random.default_rng(1).integers(0, 6, size=n)
    got = enrichment.relabellings(None, n, m, np.random.default_rng(2))
    assert np.array_equal(got, np.argsort(np.random.default_rng(2).random((m, n)), axis=1))
    ref = np.empty((m, n), dtype=np.int64)
    ref[:, np.argsort(labels, kind="stable")] = np.argsort(
        labels[None, :] + np.random.default_rng(3).random((m, n)), axis=1)
    got = enrichment.relabellings(labels, n, m, np.random.default_rng(3))
    assert np.array_equal(got, ref)
    # each gene moves within its stratum
    assert (labels[got] == labels[None, :]).all()
    # edge_direction's gene shuffle: columns of the uniform orders
    cols = np.array([5, 0, 96, 5])
    assert np.array_equal(S.random_orders(m, n, np.random.default_rng(4), columns=cols),
                          np.argsort(np.random.default_rng(4).random((m, n)), axis=1)[:, cols])
