"""layer_profile: where a probe's per-layer statistic peaks, and how two profiles relate, with
gene half-samples shared by both profiles.  Reference values, power on planted bumps,
calibration on Gaussian and hub-heavy layers, and the spec checks."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    binomial_band,
    cache_from_layers,
    context,
    genes_ref,
    run,
)
from scipy import stats

from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.spec import HypothesisSpec
from geoscreen.probes.profile import profile_centre


def _layers(seed: int, *, bump_a: float, bump_b: float, strength: float, n_layers: int = 6,
            n: int = 300, d: int = 16, size: int = 40, hub: bool = False, overlap: int = 20,
            width_a: float = 1.5, width_b: float = 1.5, one_direction: bool = False):
    """Layers in which set A (genes 0..size-1) and set B (sharing `overlap` genes) are pulled
    towards their own direction (`one_direction`: the same one) with a Gaussian bump of
    `strength` over depth.  `hub`: a decaying spectrum and Pareto gene norms (anisotropic,
    hub-heavy)."""
    rng = np.random.default_rng(seed)
    a = np.arange(size)
    b = np.arange(size - overlap, 2 * size - overlap)
    ua, ub = rng.standard_normal(d), rng.standard_normal(d)
    if one_direction:
        ub = ua
    scale = np.linspace(3.0, 0.2, d) if hub else np.ones(d)
    out = []
    for layer in range(n_layers):
        X = rng.standard_normal((n, d)) * scale
        if hub:
            X *= rng.pareto(2.0, n)[:, None] + 1.0
        X[a] += strength * np.exp(-0.5 * ((layer - bump_a) / width_a) ** 2) * ua
        X[b] += strength * np.exp(-0.5 * ((layer - bump_b) / width_b) ** 2) * ub
        out.append(X.astype(np.float32))
    return out, a, b


def _params(a, b, statistic: str, replicates: int = 30, **kw):
    sub = {"probe": "set_cohesion", "params": {"gene_set": genes_ref(a), "null": "gene_shuffle"}}
    out = {"profile": sub, "statistic": statistic, "replicates": replicates, **kw}
    if b is not None:
        out["versus"] = {"probe": "set_cohesion",
                         "params": {"gene_set": genes_ref(b), "null": "gene_shuffle"}}
    return out


def _profile(tmp_path, layers, params, alternative, seed=0, name="c"):
    cache = cache_from_layers(tmp_path / name, layers)
    ctx = context(cache, tmp_path, seed=seed)
    return run("layer_profile", params, ctx, cache.layers[-1], alternative)


def test_centre_and_correlation_match_their_definitions(tmp_path):
    pos = np.arange(5.0)
    assert profile_centre(np.array([0.0, 1.0, 3.0, 1.0, 0.0]), pos) == pytest.approx(2.0)
    assert profile_centre(np.array([0.5, 2.5, 0.5, 0.5, 0.5]), pos, 0.5) == pytest.approx(1.0)
    assert profile_centre(np.array([0.0, 1.0, 0.0, -0.5, 0.0]), pos) == pytest.approx(-1.0)
    assert np.isnan(profile_centre(np.zeros(5), pos))  # no mass above the baseline
    layers, a, b = _layers(1, bump_a=1.0, bump_b=2.0, strength=0.6)
    r = _profile(tmp_path, layers, _params(a, b, "curve_correlation", replicates=20), "greater")
    pa, pb = r.extra["profiles"]
    assert r.effect_size == pytest.approx(stats.pearsonr(pa["values"], pb["values"])[0], abs=1e-5)
    assert r.ci_low < r.effect_size < r.ci_high
    # a statistic profile is the sub-probe's own statistic, layer by layer; an excess profile
    # (the default) that statistic minus its null mean (19 draws: within Monte Carlo error of
    # the mean of 999)
    bare = _profile(tmp_path, layers, _params(a, b, "curve_correlation", replicates=20,
                                              curve="statistic"), "greater", name="c3")
    ctx = context(cache_from_layers(tmp_path / "c2", layers), tmp_path)
    direct = [run("set_cohesion", {"gene_set": genes_ref(a), "null": "gene_shuffle",
                                   "n_permutations": 999}, ctx, f"L{k}")
              for k in range(len(layers))]
    assert bare.extra["profiles"][0]["values"] == pytest.approx([x.statistic for x in direct],
                                                                 rel=1e-6)
    for value, x in zip(pa["values"], direct):
        expected = x.statistic - x.extra["null_mean"]
        assert abs(value - expected) < 4 * x.extra["null_sd"] / np.sqrt(19)


def test_planted_peaks_are_ordered_correlated_and_placed(tmp_path):
    early_late, a, b = _layers(2, bump_a=1.0, bump_b=4.0, strength=0.6)
    r = _profile(tmp_path, early_late, _params(a, b, "peak_order"), "less", name="o")
    assert r.p_value < 0.001 and r.effect_size < -1.0 and r.ci_high < 0
    assert r.extra["profiles"][0]["peak_layer"] in ("L0", "L1", "L2")
    assert r.extra["profiles"][1]["peak_layer"] in ("L3", "L4", "L5")
    lo, hi = r.extra["profiles"][0]["peak_interval"]
    assert 0 <= lo <= hi <= 3
    together, a, b = _layers(3, bump_a=2.5, bump_b=2.5, strength=0.6)
    r = _profile(tmp_path, together, _params(a, b, "curve_correlation"), "greater", name="t")
    assert r.p_value < 0.01 and r.effect_size > 0.8
    r = _profile(tmp_path, early_late, _params(a, None, "peak_layer", relative_to=3), "less",
                 name="p")
    assert r.p_value < 0.01 and r.effect_size < 0 and r.extra["relative_to"] == 3.0


def test_identical_profiles_share_every_half_sample(tmp_path):
    """The same genes go into both profiles of a replicate: a profile against itself differs by
    exactly 0 in every half-sample (standard error 0, z 0)."""
    layers, a, _ = _layers(4, bump_a=1.0, bump_b=4.0, strength=0.6)
    r = _profile(tmp_path, layers, _params(a, a, "peak_order", replicates=20), "less")
    assert r.effect_size == 0.0 and r.extra["se"] == 0.0 and r.statistic == 0.0
    assert r.p_value == 0.5


def test_same_seed_same_result_and_the_seed_matters(tmp_path):
    layers, a, b = _layers(5, bump_a=1.0, bump_b=3.0, strength=0.4)
    cache = cache_from_layers(tmp_path / "c", layers)
    prm = _params(a, b, "peak_order", replicates=20)
    one = run("layer_profile", prm, context(cache, tmp_path, seed=3), "L5")
    two = run("layer_profile", prm, context(cache, tmp_path, seed=3), "L5")
    other = run("layer_profile", prm, context(cache, tmp_path, seed=4), "L5")
    assert one.model_dump(exclude={"runtime_s"}) == two.model_dump(exclude={"runtime_s"})
    # the seed draws the half-samples and the null means an excess profile subtracts
    assert one.extra["se"] != other.extra["se"]
    assert one.effect_size == pytest.approx(other.effect_size, abs=0.3)


@pytest.mark.parametrize("hub", [False, True], ids=["gaussian", "hub-heavy"])
def test_peak_order_is_calibrated_when_both_centre_on_one_layer(tmp_path, hub):
    """H0 at its boundary: both profiles are centred on layer 3 of 0..6 but have different
    shapes (a narrow and a wide bump, so flat tails weigh differently).  Valid, and
    conservative: half-samples overstate the pair-level noise of a mean similarity (see the
    module docstring), so the p-values are not smaller than uniform."""
    ps = []
    for k in range(60):
        layers, a, b = _layers(100 + k, bump_a=3.0, bump_b=3.0, strength=3.0 if hub else 0.6,
                               hub=hub, n_layers=7, width_a=0.8, width_b=2.0)
        ps.append(_profile(tmp_path, layers, _params(a, b, "peak_order"), "two-sided", seed=k,
                           name=f"c{k}").p_value)
    res = assert_calibrated(ps, conservative_ok=True)
    print(f"peak_order, same centre, {'hub-heavy' if hub else 'gaussian'}: {res}")


def test_peak_layer_is_calibrated_when_the_centre_is_the_layer(tmp_path):
    ps = []
    for k in range(60):
        layers, a, _ = _layers(200 + k, bump_a=3.0, bump_b=3.0, strength=0.6, n_layers=7,
                               width_a=1.0)
        ps.append(_profile(tmp_path, layers, _params(a, None, "peak_layer", relative_to=3),
                           "two-sided", seed=k, name=f"c{k}").p_value)
    res = assert_calibrated(ps, conservative_ok=True)
    print(f"peak_layer at the true centre, gaussian: {res}")


def test_a_profile_without_an_effect_has_no_peak_to_locate(tmp_path):
    layers, a, b = _layers(8, bump_a=2.0, bump_b=2.0, strength=0.0)
    with pytest.raises(GeoscreenError, match="no clear effect to locate") as err:
        _profile(tmp_path, layers, _params(a, b, "peak_order"), "less")
    assert err.value.field == "params.profile"
    # a bare statistic has no no-effect value to measure a peak from
    with pytest.raises(GeoscreenError, match="no no-effect value") as err:
        _profile(tmp_path, layers, _params(a, b, "peak_order", curve="statistic"), "less",
                 name="c2")
    assert err.value.field == "params.curve"


@pytest.mark.parametrize("hub", [False, True], ids=["gaussian", "hub-heavy"])
def test_curve_correlation_is_calibrated_on_unrelated_profiles(tmp_path, hub):
    """Two disjoint sets with no planted structure: their profiles are unrelated.  (Sets that
    share genes have profiles that really do move together through those genes.)"""
    ps = []
    for k in range(60):
        layers, a, b = _layers(300 + k, bump_a=2.5, bump_b=2.5, strength=0.0, overlap=0,
                               hub=hub)
        ps.append(_profile(tmp_path, layers, _params(a, b, "curve_correlation"), "greater",
                           seed=k, name=f"c{k}").p_value)
    res = assert_calibrated(ps)
    print(f"curve_correlation on unrelated profiles ({'hub-heavy' if hub else 'gaussian'}): "
          f"{res}")


def test_bare_statistic_profiles_share_the_layer_baseline(tmp_path):
    """Why `curve: excess` is the default: on hub-heavy layers the bare statistic of any set
    follows the layer's baseline, so unrelated sets' profiles correlate."""
    ps = []
    for k in range(60):
        layers, a, b = _layers(300 + k, bump_a=2.5, bump_b=2.5, strength=0.0, overlap=0,
                               hub=True)
        ps.append(_profile(tmp_path, layers, _params(a, b, "curve_correlation",
                                                     curve="statistic"), "greater",
                           seed=k, name=f"c{k}").p_value)
    rate = float(np.mean(np.array(ps) <= 0.05))
    print(f"curve_correlation of bare statistics, unrelated sets, hub-heavy: FPR {rate:.3f}")
    assert rate > binomial_band(len(ps))[1]


def _spec(**kw):
    base = {"statement": "a profile claim", "probe": "layer_profile", "layers": ["last"],
            "params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:G1,G2"}},
                       "statistic": "peak_layer", "relative_to": "block:2"}}
    base.update(kw)
    return HypothesisSpec.model_validate(base)


@pytest.mark.parametrize("change, field, words", [
    ({"layers": "all"}, "layers", "write layers: [last]"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A,B"}}}},
     "params", "give versus"),
    ({"params": {"profile": {"probe": "set_coheson", "params": {}}, "statistic": "peak_layer",
                 "relative_to": 2}}, "params.profile", "did you mean 'set_cohesion'"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_st": "genes:A"}},
                 "statistic": "peak_layer", "relative_to": 2}}, "params.profile",
     "did you mean 'gene_set'"),
    ({"params": {"profile": {"probe": "layer_profile", "params": {}}, "statistic": "peak_layer",
                 "relative_to": 2}}, "params.profile", "per-layer probe"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A"}},
                 "statistic": "peak_layer"}}, "params", "give relative_to"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A"}},
                 "statistic": "level_difference"}}, "params", "give versus"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A"}},
                 "versus": {"probe": "set_cohesion", "params": {"gene_set": "genes:B"}},
                 "statistic": "level_difference", "relative_to": 2}}, "params",
     "drop relative_to"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A"}},
                 "versus": {"probe": "set_cohesion", "params": {"gene_set": "genes:B"},
                            "curve": "statistic"},
                 "statistic": "level_difference"}}, "params", "same units"),
    ({"params": {"profile": {"probe": "set_cohesion", "params": {"gene_set": "genes:A"}},
                 "versus": {"probe": "pair_proximity", "params": {"pairs": "pairs:A-B"}},
                 "statistic": "level_difference"}}, "params", "same units"),
])
def test_bad_specs_name_the_field_and_the_fix(change, field, words):
    with pytest.raises(GeoscreenError) as err:
        _spec(**change).resolved()
    assert err.value.field == field and words in str(err.value)


def test_a_half_sample_too_small_for_the_sub_probe_is_a_clear_error(tmp_path):
    layers, _, _ = _layers(6, bump_a=1.0, bump_b=3.0, strength=0.4)
    small = np.arange(6)  # set_cohesion needs 5 genes; a half-sample of 6 rarely keeps them
    with pytest.raises(GeoscreenError, match="half-sample keeps") as err:
        _profile(tmp_path, layers, _params(small, None, "peak_layer", relative_to=2), "less")
    assert err.value.field == "params.profile.params.gene_set"


def test_a_profile_spec_runs_in_the_worker_as_one_result(tmp_path):
    """Through the worker, as a campaign runs it: one layer named, one result, the layer's
    p-value is the hypothesis's, and the resources of both sub-specs are recorded."""
    from geoscreen.agent.worker import run_job
    from geoscreen.hypotheses.loader import parse_spec

    layers, a, b = _layers(7, bump_a=1.0, bump_b=4.0, strength=0.6)
    cache = cache_from_layers(tmp_path / "c", layers)
    spec = {"statement": "set A peaks before set B", "probe": "layer_profile",
            "params": _params(a, b, "peak_order", replicates=20), "layers": ["last"],
            "alternative": "less"}
    out = run_job({"spec": parse_spec(spec, "s").to_record(), "cache_path": str(cache.path),
                   "seed": 1, "work_dir": str(tmp_path / "work")})
    assert [r.layer for r in out.layers] == ["L5"]
    assert out.combined.p_value == out.layers[0].p_value < 0.01
    used = out.provenance["resources"]
    assert set(used) == {"profile.gene_set", "versus.gene_set"}
    assert used["profile.gene_set"]["present"] == 40 == used["versus.gene_set"]["present"]


def test_a_half_sample_never_reuses_what_was_computed_on_the_named_genes(tmp_path):
    """Half-samples share a layer's background memo (similarity matrices, matching covariates)
    but not what a probe computed on the named genes (e.g. layer_similarity's normalisers of a
    gene set): a half-sample after the full data gives what a fresh context gives."""
    from geoscreen.probes.profile import _HalfSample, _ReplicateMemo

    layers, a, _ = _layers(9, bump_a=1.0, bump_b=3.0, strength=0.6, size=80)
    cache = cache_from_layers(tmp_path / "c", layers)
    prm = {"gene_set": genes_ref(a), "reference_layer": "first", "null_method": "draws"}
    full = context(cache, tmp_path, seed=2)
    run("layer_similarity", prm, full, "L2")  # fills full.memo with the whole set's values
    keep = np.random.default_rng(0).random(len(cache.genes.symbols)) < 0.5

    def half(memo):
        ctx = _HalfSample(cache=cache, seed=2, work_dir=tmp_path / "work", memo=memo, keep=keep)
        return run("layer_similarity", prm, ctx, "L2").statistic

    shared = half(_ReplicateMemo(full.memo))
    assert shared == half({})
    assert shared != run("layer_similarity", prm, full, "L2").statistic
    assert any(k[0] == "layer_similarity:invariants" for k in full.memo)  # full data's own
    memo = _ReplicateMemo(full.memo)
    memo[("knn", "L2")] = "background"
    memo[("layer_similarity:invariants", "x")] = "private"
    assert full.memo[("knn", "L2")] == "background"
    assert ("layer_similarity:invariants", "x") not in full.memo


def test_a_cache_with_two_layers_is_refused_before_anything_runs(tmp_path):
    """Queue-time check (and the offline brainstormer's): a profile, or a trend over all
    layers, needs three layers; a two-layer cache gets one line naming the field."""
    from geoscreen.hypotheses.loader import parse_spec
    from geoscreen.hypotheses.preflight import preflight

    layers, a, b = _layers(10, bump_a=0.0, bump_b=1.0, strength=0.6, n_layers=2)
    cache = cache_from_layers(tmp_path / "c", layers)
    spec = {"statement": "A and B move together", "probe": "layer_profile", "layers": ["last"],
            "params": _params(a, b, "curve_correlation")}
    err = preflight(parse_spec(spec, "s"), cache=cache)
    assert err.startswith("field 'params.curve_layers'") and "has 2" in err
    trend = {"statement": "effective rank falls", "probe": "spectrum",
             "params": {"measure": "effective_rank"}, "across_layers": "trend"}
    assert preflight(parse_spec(trend, "s"), cache=cache).startswith("field 'across_layers'")
    three = cache_from_layers(tmp_path / "c3", layers + layers[:1])
    assert preflight(parse_spec(spec, "s"), cache=three) == ""


def test_statistic_only_and_shared_unit_rows_change_no_number(tmp_path):
    """A profile's sub-probe runs with ``statistic_only`` (set_cohesion then skips its observed
    retrieval AUROC, a descriptive extra) and reuses the layer's unit rows from the memo: the
    statistic, null, p-value and null mean are those of a fresh, full run, and the shared rows
    cannot be written to."""
    from geoscreen.probes.params import unit_coords

    layers, a, _ = _layers(4, bump_a=1.0, bump_b=3.0, strength=0.6, size=60)
    cache = cache_from_layers(tmp_path / "c", layers)
    prm = {"gene_set": genes_ref(a), "null": "matched", "n_permutations": 99}
    full = run("set_cohesion", prm, context(cache, tmp_path, seed=3), "L2")
    lean_ctx = context(cache, tmp_path, seed=3)
    lean_ctx.statistic_only = True
    run("set_cohesion", prm, lean_ctx, "L1")  # another layer's rows in the memo first
    lean = run("set_cohesion", prm, lean_ctx, "L2")
    again = run("set_cohesion", prm, lean_ctx, "L2")  # from the memo
    assert full.extra["retrieval_auroc"] is not None and lean.extra["retrieval_auroc"] is None
    for r in (lean, again):
        assert (r.statistic, r.p_value, r.effect_size, r.extra["null_mean"]) == \
            (full.statistic, full.p_value, full.effect_size, full.extra["null_mean"])
    _, Z, Zn = unit_coords(lean_ctx, "L2", "full", False)
    with pytest.raises(ValueError):
        Zn[0, 0] = 1.0
    assert np.allclose(np.linalg.norm(Zn, axis=1), 1.0)


@pytest.mark.parametrize("name,params", [
    ("graded_proximity", {"pairs": ["a", "b"]}),
    ("gene_score_association", {"score": "annotation"}),
    ("pair_proximity", {"pairs": "a"}),
])
def test_profiles_draw_the_nulls_of_moment_probes(name, params):
    """A profile's excess curve subtracts each layer's null mean; a moment null would give the
    exact mean on some layers and the draws' mean on others (where the moment p is small), so
    the probes with exact moments draw inside a profile, with the profile's few draws."""
    from geoscreen.probes.profile import _fewer_draws
    from geoscreen.probes.registry import get_probe

    p = get_probe(name).validate_params(params)
    assert p.null_method == "moments"
    q = _fewer_draws(p, 20, name)
    assert q.null_method == "draws" and q.n_permutations == 20


def test_level_difference_is_the_mean_gap_and_finds_a_higher_profile(tmp_path):
    """The estimate is the mean over the layers of A - B, read from the sub-probe run directly;
    a set whose pull lasts longer (a wider bump) lies above one whose pull is brief."""
    layers, a, b = _layers(11, bump_a=3.0, bump_b=3.0, strength=0.6, n_layers=7, width_a=2.5,
                           width_b=0.6, overlap=0)
    r = _profile(tmp_path, layers, _params(a, b, "level_difference", curve="statistic"),
                 "greater")
    ctx = context(cache_from_layers(tmp_path / "d", layers), tmp_path)
    direct = [run("set_cohesion", {"gene_set": genes_ref(s), "null": "gene_shuffle"}, ctx,
                  f"L{k}").statistic for s in (a, b) for k in range(7)]
    gap = np.mean(np.array(direct[:7]) - np.array(direct[7:]))
    assert r.effect_size == pytest.approx(gap, rel=1e-6) and r.effect_name == "mean_difference"
    assert r.p_value < 0.001 and r.ci_low > 0
    # against itself: no gap and no standard error
    same = _profile(tmp_path, layers, _params(a, a, "level_difference"), "greater", name="s")
    assert same.effect_size == 0.0 and same.p_value == 0.5


@pytest.mark.parametrize("hub", [False, True], ids=["gaussian", "hub-heavy"])
def test_level_difference_is_calibrated_when_the_levels_are_equal(tmp_path, hub):
    """Two disjoint sets pulled equally hard towards one direction with the same bump: the
    sets are exchangeable given the layers' structure, so their cohesion profiles have the
    same level.  (Each towards its own random direction would not do: the directions' lengths
    and their place in an anisotropic spectrum differ, and so do the sets' true levels.)"""
    ps = []
    for k in range(60):
        layers, a, b = _layers(400 + k, bump_a=2.5, bump_b=2.5, strength=3.0 if hub else 0.6,
                               overlap=0, hub=hub, one_direction=True)
        ps.append(_profile(tmp_path, layers, _params(a, b, "level_difference"), "two-sided",
                           seed=k, name=f"c{k}").p_value)
    res = assert_calibrated(ps, conservative_ok=True)
    print(f"level_difference, equal levels ({'hub-heavy' if hub else 'gaussian'}): {res}")
