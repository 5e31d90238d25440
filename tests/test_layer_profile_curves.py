"""layer_profile 1.2: a whole-layer profile (no named genes) against a gene set's profile,
Spearman's rho, and the partial correlation given depth.  Reference values (scipy,
statsmodels), the gene-free profile computed once, calibration on Gaussian and hub-heavy layers
(pearson and partial Spearman), power on a shared zig-zag, the depth confound that `control:
depth` removes, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
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
from geoscreen.probes.profile import curve_correlation

ZIGZAG = np.array([0.0, 1.0, -0.5, 0.8, -1.0, 0.4, -0.2])


def _layers(seed: int, *, n_layers: int = 7, n: int = 300, d: int = 16, size: int = 40,
            hub: bool = False, cohesion: np.ndarray | None = None,
            scale: np.ndarray | None = None):
    """Layers whose spectrum concentrates with depth (a falling effective rank, plus a fixed
    zig-zag), so a whole-layer profile has a trend; set A (genes 0..size-1) pulled towards one
    direction by `cohesion[l]` (none: no structure).  `hub`: Pareto gene norms.  `scale`:
    instead an isotropic layer multiplied by scale[l] (its Frobenius norm follows the scale, no
    cosine changes)."""
    rng = np.random.default_rng(seed)
    a = np.arange(size)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    out = []
    for layer in range(n_layers):
        rate = 0.05 + 0.04 * layer + 0.06 * ZIGZAG[layer % ZIGZAG.size]
        X = rng.standard_normal((n, d)) * np.exp(-rate * np.arange(d))
        if scale is not None:
            X = rng.standard_normal((n, d)) * scale[layer]
        if hub:
            X *= rng.pareto(2.0, n)[:, None] + 1.0
        if cohesion is not None:
            X[a] += cohesion[layer] * u * np.sqrt(d) * (1.0 if scale is None else scale[layer])
        out.append(X.astype(np.float32))
    return out, a


def _params(a, *, replicates: int = 30, set_curve: str | None = None, **kw):
    sub = {"probe": "set_cohesion", "params": {"gene_set": genes_ref(a), "null": "gene_shuffle"}}
    if set_curve:
        sub["curve"] = set_curve
    return {"profile": sub,
            "versus": {"probe": "spectrum", "params": {"measure": "effective_rank_energy",
                                                       "n_bootstrap": 0},
                       "curve": "statistic"},
            "statistic": "curve_correlation", "replicates": replicates, **kw}


def _run(tmp_path, layers, params, alternative="two-sided", seed=0, name="c"):
    cache = cache_from_layers(tmp_path / name, layers)
    ctx = context(cache, tmp_path, seed=seed)
    return run("layer_profile", params, ctx, cache.layers[-1], alternative)


def test_correlations_match_scipy_and_statsmodels():
    rng = np.random.default_rng(7)
    pos = np.arange(12.0)
    for _ in range(20):
        a = rng.standard_normal(12) + 0.3 * pos
        b = 0.5 * a + rng.standard_normal(12)
        assert curve_correlation(a, b, pos) == pytest.approx(stats.pearsonr(a, b)[0])
        assert curve_correlation(a, b, pos, "spearman") == \
            pytest.approx(stats.spearmanr(a, b)[0])
        X = sm.add_constant(pos)
        ra, rb = sm.OLS(a, X).fit().resid, sm.OLS(b, X).fit().resid
        assert curve_correlation(a, b, pos, control="depth") == \
            pytest.approx(stats.pearsonr(ra, rb)[0])
        # partial Spearman: ranks residualised on the rank of depth (as the published screen)
        qa = sm.OLS(stats.rankdata(a), X).fit().resid
        qb = sm.OLS(stats.rankdata(b), X).fit().resid
        assert curve_correlation(a, b, pos, "spearman", "depth") == \
            pytest.approx(stats.pearsonr(qa, qb)[0])
        # the textbook first-order partial correlation
        rab, rax, rbx = (stats.pearsonr(x, y)[0] for x, y in ((a, b), (a, pos), (b, pos)))
        want = (rab - rax * rbx) / np.sqrt((1 - rax ** 2) * (1 - rbx ** 2))
        assert curve_correlation(a, b, pos, control="depth") == pytest.approx(want)
    # a straight line in depth leaves nothing; a constant has nothing
    assert curve_correlation(1e6 + 3 * pos, rng.standard_normal(12), pos, control="depth") == 0
    assert curve_correlation(np.full(12, 2.5), rng.standard_normal(12), pos) == 0


def test_a_gene_free_profile_is_read_once_and_equals_the_probe(tmp_path):
    layers, a = _layers(1, cohesion=np.linspace(0.1, 0.6, 7))
    r = _run(tmp_path, layers, _params(a, replicates=20), "greater")
    assert r.extra["gene_free"] == [False, True]
    assert r.extra["curves"] == ["excess", "statistic"]
    spec_vals = r.extra["profiles"][1]["values"]
    ctx = context(cache_from_layers(tmp_path / "d", layers), tmp_path)
    direct = [run("spectrum", {"measure": "effective_rank_energy", "n_bootstrap": 0}, ctx,
                  f"L{i}").statistic for i in range(7)]
    assert spec_vals == pytest.approx(direct, rel=1e-6)
    set_vals = r.extra["profiles"][0]["values"]
    assert r.effect_size == pytest.approx(np.corrcoef(set_vals, spec_vals)[0, 1], abs=1e-9)
    assert r.extra["correlation"] == "pearson" and r.extra["control"] == "none"
    # a set profile that does vary between half-samples gives a standard error
    assert r.extra["se"] > 0


def _rates(tmp_path, *, hub: bool, reps: int = 60, cohesion=None, tag: str = "c",
           scale=None, versus=None, **kw) -> list[float]:
    ps = []
    for k in range(reps):
        layers, a = _layers(500 + k, hub=hub, cohesion=cohesion, scale=scale)
        params = _params(a, **kw)
        if versus:
            params["versus"] = versus
        ps.append(_run(tmp_path, layers, params, seed=k, name=f"{tag}{k}").p_value)
    return ps


SPEARMAN = {"correlation": "spearman"}
PARTIAL = {"correlation": "spearman", "control": "depth"}


@pytest.mark.parametrize("hub,how", [
    (False, {}), (False, PARTIAL), (True, {}), (True, {**SPEARMAN, "replicates": 100}),
    (True, PARTIAL)],
    ids=["gaussian-pearson", "gaussian-partial-spearman", "hub-heavy-pearson",
         "hub-heavy-spearman", "hub-heavy-partial-spearman"])
def test_a_gene_free_trend_against_an_unrelated_set_is_valid(tmp_path, hub, how):
    """The layers' effective rank falls (with a zig-zag); a set with no structure has a flat
    expected excess profile, so the population correlation is 0 however the spectrum moves.
    Pearson tests the projection of the set's profile on the spectrum's (linear in the set's
    profile): valid, and conservative for a structureless set, whose mean similarity is a
    degenerate U-statistic that half-samples overstate."""
    ps = _rates(tmp_path, hub=hub, **how)
    c = assert_calibrated(ps, conservative_ok=not how or hub)
    print(f"\nCALIBRATION layer_profile gene-free spectrum vs unrelated set "
          f"({'hub-heavy' if hub else 'gaussian'}, {how or 'pearson'}): n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_cohesive_set_with_a_flat_profile_against_the_layers_norm(tmp_path):
    """The realistic null: a set with real structure (a constant pull) whose profile does not
    follow the layers (scaled isotropic layers: the norm moves, no cosine does).  Its mean
    similarity is no longer degenerate, so this is where atanh(r)'s half-sampling error
    understates; the projection is calibrated."""
    scale = 1.0 + 0.3 * np.arange(7) + 0.3 * ZIGZAG
    norm = {"probe": "spectrum", "params": {"measure": "frobenius_norm", "n_bootstrap": 0},
            "curve": "statistic"}
    flat = np.full(7, 0.5)
    ps = _rates(tmp_path, hub=False, cohesion=flat, scale=scale, versus=norm, tag="f")
    c = assert_calibrated(ps)
    sp = _rates(tmp_path, hub=False, cohesion=flat, scale=scale, versus=norm, tag="s",
                **SPEARMAN)
    rate = float(np.mean(np.array(sp) <= 0.05))
    print(f"\nCALIBRATION layer_profile cohesive flat set vs norm: Pearson (projection) "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}; Spearman FPR {rate:.3f}")
    assert rate <= binomial_band(len(sp))[1]


def test_a_shared_depth_trend_correlates_unless_depth_is_controlled(tmp_path):
    """Isotropic layers scaled up with depth (plus a zig-zag): their Frobenius norm rises with
    depth and changes no cosine.  A set whose cohesion grows along a straight line in depth:
    the two profiles correlate through depth alone.  Pearson r calls most of them related; the
    partial correlation given depth is calibrated (the set's expected mean cosine is close to
    linear in depth, and the norm's wiggle about its line is orthogonal to any quadratic, so
    only the set's noise is left to correlate with it)."""
    depth = np.arange(7.0)
    poly = np.vander(depth, 3)  # the zig-zag made orthogonal to any quadratic in depth, so
    wiggle = ZIGZAG - poly @ np.linalg.lstsq(poly, ZIGZAG, rcond=None)[0]  # a set's curvature
    scale = 1.0 + 0.3 * depth + 0.5 * wiggle  # (its cosine is not exactly linear) is not it
    target = np.linspace(0.05, 0.35, 7)  # mean cosine ~ c^2 / (c^2 + 1) for a pull c sqrt(d)
    cohesion = np.sqrt(target / (1 - target))
    norm = {"probe": "spectrum", "params": {"measure": "frobenius_norm", "n_bootstrap": 0},
            "curve": "statistic"}
    plain = _rates(tmp_path, hub=False, cohesion=cohesion, scale=scale, versus=norm, reps=40,
                   set_curve="statistic")
    rate = float(np.mean(np.array(plain) <= 0.05))
    assert rate > binomial_band(40)[1]
    partial = _rates(tmp_path, hub=False, cohesion=cohesion, scale=scale, versus=norm,
                     reps=60, set_curve="statistic", control="depth", tag="p")
    c = assert_calibrated(partial)
    print(f"\nDEPTH CONFOUND layer_profile: pearson FPR {rate:.3f} (n=40); partial given depth "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_set_that_follows_the_spectrum_zigzag_is_found(tmp_path):
    """Power: the set's pull follows the layers' zig-zag (not depth): both the plain and the
    partial correlation find it."""
    cohesion = 0.45 + 0.3 * ZIGZAG
    found = {}
    for name, kw in (("pearson", {}), ("partial-spearman", {"correlation": "spearman",
                                                            "control": "depth"})):
        ps = _rates(tmp_path, hub=False, cohesion=cohesion, reps=20, tag=name, **kw)
        found[name] = float(np.mean(np.array(ps) <= 0.05))
    print(f"\nPOWER layer_profile set following the spectrum's zig-zag: {found}")
    assert found["pearson"] >= 0.8 and found["partial-spearman"] >= 0.5


def test_refusals_name_the_field(tmp_path):
    layers, a = _layers(3)
    spec = {"probe": "spectrum", "params": {"measure": "effective_rank_energy",
                                            "n_bootstrap": 0}, "curve": "statistic"}
    both = {"profile": spec, "versus": {**spec, "params": {"measure": "participation_ratio",
                                                          "n_bootstrap": 0}},
            "statistic": "curve_correlation", "replicates": 20}
    with pytest.raises(GeoscreenError, match="at least one profile must name genes") as err:
        _run(tmp_path, layers, both, name="b")
    assert err.value.field == "params.fraction"
    same = [layers[0]] * 4
    with pytest.raises(GeoscreenError, match="does not vary over the layers") as err:
        _run(tmp_path, same, _params(a, replicates=20), name="s")
    assert err.value.field == "params.versus"
    with pytest.raises(GeoscreenError, match="correlation applies to statistic curve_corr"):
        run("layer_profile", {**_params(a), "statistic": "peak_order", "correlation":
                              "spearman"},
            context(cache_from_layers(tmp_path / "r", layers), tmp_path), "L6")
    with pytest.raises(GeoscreenError, match="control applies to statistic curve_correlation"):
        run("layer_profile", {"profile": _params(a)["profile"], "statistic": "peak_layer",
                              "relative_to": 2, "control": "depth"},
            context(cache_from_layers(tmp_path / "q", layers), tmp_path), "L6")
    with pytest.raises(GeoscreenError, match="too few for a correlation") as err:
        _run(tmp_path, layers, {**_params(a, replicates=20), "control": "depth",
                                "curve_layers": [0, 1, 2, 3]}, name="f")
    assert err.value.field == "params.curve_layers"


def test_the_projection_is_zero_exactly_when_r_is_and_reports_r(tmp_path):
    """Pearson against a gene-free profile: the tested estimate is the projection of the set's
    profile on the fixed one's unit residual, its sign is r's, and the effect is r itself."""
    layers, a = _layers(4, cohesion=0.45 + 0.3 * ZIGZAG)
    for control in ("none", "depth"):
        r = _run(tmp_path, layers, _params(a, replicates=20, control=control),
                 name=f"z{control}")
        assert r.extra["tested"] == "projection on the gene-free profile"
        vals = [np.array(pr["values"]) for pr in r.extra["profiles"]]
        pos = np.arange(7.0)
        want = curve_correlation(vals[0], vals[1], pos, control=control)
        assert r.effect_size == pytest.approx(want)
        assert np.sign(r.extra["estimate"]) == np.sign(want)
        fixed = vals[1] - vals[1].mean()
        if control == "depth":
            X = sm.add_constant(pos)
            fixed = sm.OLS(vals[1], X).fit().resid
        assert r.extra["estimate"] == pytest.approx(
            float(fixed @ vals[0]) / float(np.linalg.norm(fixed)), rel=1e-9)
        assert r.ci_low <= r.effect_size <= r.ci_high
    sp = _run(tmp_path, layers, _params(a, replicates=20, correlation="spearman"), name="zs")
    assert sp.extra["tested"] == "atanh(r)" and sp.effect_name == "spearman_rho"
