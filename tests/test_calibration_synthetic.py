"""The four real-geometry false-positive cases, fast, on synthetic layers with real-like geometry.

`realgeom.realistic_layers` mimics the MiniLM test bed: power-law spectrum, a shared mean
direction, hubness, and genes placed by how well studied they are (GO annotation count, STRING
degree).  On it, as on the real test bed, the nulls that ignore this fail and the defaults hold:

1. `persistent_homology` H0 against feature_shuffle on random sets;
2. `set_cohesion` against feature_shuffle on random sets;
3. `pair_proximity` against gene_shuffle on STRING's hub structure with interactions destroyed;
4. `set_cohesion` against gene_shuffle on random sets of well-annotated genes.

The slow, real version is test_calibration_realgeom.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import calibration, run
from realgeom import gene_texts, realistic_layers
from threadpoolctl import threadpool_limits

from geoscreen.probes.context import ProbeContext
from geoscreen.store.cache import write_cache

REPS = 60
N_GENES, DIM, LAYERS = 1200, 96, 6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    from geoscreen.store.resources.api import resolve_pair_set
    from geoscreen.store.resources.covariates import annotation_counts

    tmp = tmp_path_factory.mktemp("synreal")
    symbols, _ = gene_texts(N_GENES, seed=3)
    layers = realistic_layers(symbols, LAYERS, DIM, seed=11)
    cache = write_cache(tmp / "cache", {f"S{k}": x.astype(np.float32)
                                         for k, x in enumerate(layers)}, symbols,
                        model="realistic synthetic", synthetic=True)
    ann, _ = annotation_counts(symbols)
    idx = cache.genes.index
    ps = resolve_pair_set("string:>=700")
    a = np.array([idx.get(x, -1) for x in ps.a])
    b = np.array([idx.get(x, -1) for x in ps.b])
    ok = (a >= 0) & (b >= 0) & (a != b)
    return {"tmp": tmp, "cache": cache, "symbols": symbols, "rng": np.random.default_rng(9),
            "well": np.flatnonzero(ann >= np.quantile(ann, 0.75)), "a": a[ok], "b": b[ok],
            "ctx": ProbeContext(cache=cache, seed=0, work_dir=tmp / "work")}


def _genes(d, idx) -> str:
    return "genes:" + ",".join(d["symbols"][i] for i in idx)


def _hub_pairs(d, k: int) -> str:
    j = d["rng"].permutation(d["b"])
    keep = d["a"] != j
    path = d["tmp"] / f"hub_{k}.tsv"
    path.write_text("".join(f"{d['symbols'][x]}\t{d['symbols'][y]}\n"
                            for x, y in zip(d["a"][keep], j[keep])))
    return f"file:{path}"


def _pvalues(d, probe, make, alternative=None, reps=REPS):
    ctx, out = d["ctx"], []
    for r in range(reps):
        ctx.seed = r
        layer = d["cache"].layers[r % LAYERS]
        out.append(run(probe, make(r), ctx, layer, alternative).p_value)
    return calibration(out)


def _ok(c) -> bool:
    return c["ks_p"] > 1e-3 and c["band_lo"] <= c["fpr"] <= c["band_hi"]


def _check(label, naive, default):
    print(f"\nSYNTHETIC {label}: naive FPR {naive['fpr']:.3f} (KS p {naive['ks_p']:.2g}); "
          f"default FPR {default['fpr']:.3f} (KS p {default['ks_p']:.2g})")
    assert not _ok(naive), f"{label}: the naive null no longer fails on this geometry"
    assert _ok(default), (label, default)


def test_geometry_is_real_like(syn):
    from realgeom import geometry_summary

    s = geometry_summary(np.asarray(syn["cache"].array("S0")))
    assert 0.55 < s["mean_cos"] < 0.95 and s["eff_rank"] < 0.3 * DIM, s


def test_homology_feature_shuffle_vs_matched(syn):
    def make(null):
        return lambda _r: {"gene_set": _genes(syn, syn["rng"].choice(N_GENES, 60, replace=False)),
                           "dims": [0], "null": null, "n_permutations": 99}
    _check("persistent_homology H0, random sets",
           _pvalues(syn, "persistent_homology", make("feature_shuffle"), "two-sided", reps=30),
           _pvalues(syn, "persistent_homology", make("matched"), "two-sided"))


def test_cohesion_feature_shuffle_vs_matched(syn):
    def make(null):
        return lambda _r: {"gene_set": _genes(syn, syn["rng"].choice(N_GENES, 30, replace=False)),
                           "null": null, "n_permutations": 199}
    _check("set_cohesion, random sets",
           _pvalues(syn, "set_cohesion", make("feature_shuffle"), "two-sided", reps=30),
           _pvalues(syn, "set_cohesion", make("matched"), "two-sided"))


def test_pair_proximity_gene_shuffle_vs_degree_preserving(syn):
    def make(null):
        return lambda r: {"pairs": _hub_pairs(syn, r), "null": null, "n_permutations": 199}
    _check("pair_proximity, hub-structured random pairs",
           _pvalues(syn, "pair_proximity", make("gene_shuffle"), reps=30),
           _pvalues(syn, "pair_proximity", make("degree_preserving")))


def test_cohesion_gene_shuffle_vs_matched_on_well_annotated(syn):
    def make(null):
        return lambda _r: {"gene_set": _genes(syn, syn["rng"].choice(syn["well"], 30,
                                                                      replace=False)),
                           "null": null, "n_permutations": 199}
    _check("set_cohesion, well-annotated sets",
           _pvalues(syn, "set_cohesion", make("gene_shuffle"), reps=30),
           _pvalues(syn, "set_cohesion", make("matched")))
