"""role_margins: one role's per-gene margins at a two-role boundary against groups (TF
families), a per-gene score and another cache -- H and rho against scipy, the margins against
a plain loop, calibration on Gaussian and hub-heavy layers (with the family-wise error of the
per-group maxT p-values), planted family differences, a family trend with depth, a score, seed
stability, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    genes_ref,
    hub_heavy_layers,
    named_cache,
    run,
    run_layers,
)
from scipy import stats

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.probes.role_margins import centroid_margins

N, D = 300, 8
POS, NEG = range(60), range(60, 160)
FAMILIES = [range(0, 12), range(12, 24), range(24, 36), range(36, 48)]


def _roles(rng, shift=(0.0, 0.0, 0.0, 0.0), n=N, d=D):
    """Layer with the positive role (rows 0-59) on +axis 0, the negative (60-159) on -axis 0;
    family f of the positive role moved by shift[f] along axis 0 (away from the targets)."""
    X = rng.standard_normal((n, d))
    X[:60, 0] += 1.5
    X[60:160, 0] -= 1.0
    for f, s in zip(FAMILIES, shift):
        X[list(f), 0] += s
    return X


def _base(**kw):
    return {"positive": genes_ref(POS), "negative": genes_ref(NEG), "subspace": [1, 2, 3],
            **kw}


def _groups(fams=FAMILIES):
    return [genes_ref(f) for f in fams]


def test_margins_h_and_rho_match_references(tmp_path):
    rng = np.random.default_rng(1)
    X = _roles(rng, shift=(1.0, 0.0, 0.0, -0.5))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    r = run("role_margins", _base(groups=_groups(), n_permutations=199), ctx, "L0")
    svd = ctx.svd("L0")
    Z = svd.scores([1, 2, 3])
    P, Q = Z[svd.local(np.arange(60))], Z[svd.local(np.arange(60, 160))]
    loop = np.array([np.linalg.norm(P[i] - Q.mean(0))
                     - np.linalg.norm(P[i] - np.delete(P, i, 0).mean(0)) for i in range(60)])
    assert centroid_margins(np.vstack([P, Q]), 60) == pytest.approx(loop)
    grouped = [loop[list(f)] for f in FAMILIES]
    h = stats.kruskal(*grouped).statistic
    assert r.statistic == pytest.approx(h, rel=1e-10)
    assert r.effect_size == pytest.approx((h - 3) / (48 - 4))
    # Dunn's contrast of the first two families, written out
    rk = stats.rankdata(np.concatenate(grouped))
    s2 = ((rk - rk.mean()) ** 2).sum() / 47
    dunn = (rk[:12].mean() - rk[12:24].mean()) / np.sqrt(s2 * (2 / 12))
    p01 = {(q["higher"], q["lower"]): q["z"] for q in r.extra["pairs"]}
    assert abs(dunn) == pytest.approx(p01.get((genes_ref(FAMILIES[0]), genes_ref(FAMILIES[1])),
                                              p01.get((genes_ref(FAMILIES[1]),
                                                       genes_ref(FAMILIES[0])))))
    top = r.extra["groups"][0]
    assert top["group"] == genes_ref(FAMILIES[0])
    assert top["mean_margin"] == pytest.approx(grouped[0].mean())
    # each group's mean rank z from its exact moments: the same as a direct computation
    ranks = stats.rankdata(np.concatenate(grouped))
    m0 = ranks[:12].mean()
    sd = np.sqrt(ranks.var() / 12 * (48 - 12) / 47)
    assert top["z"] == pytest.approx((m0 - ranks.mean()) / sd)
    # score mode: Spearman rho against scipy over the genes with a score
    score = tmp_path / "s.tsv"
    vals = rng.standard_normal(60) + 0.5 * loop
    score.write_text("".join(f"G{i}\t{v}\n" for i, v in enumerate(vals[:50])))
    s = run("role_margins", _base(score=f"file:{score}", n_permutations=199), ctx, "L0",
            "two-sided")
    assert s.statistic == pytest.approx(stats.spearmanr(loop[:50], vals[:50]).statistic)
    assert s.n == 50


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_calibrated_on_random_roles_and_groups(tmp_path, kind):
    """Random roles and random groups of the positive genes, on Gaussian and hub-heavy layers:
    H's p-values are uniform (with centroid and with classifier margins), the pairwise maxT
    p-values hold the family-wise error, and a random score's rho is uniform too."""
    layers = hub_heavy_layers(kind, 150, N, D, 11)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(12)
    score = tmp_path / "s.tsv"
    score.write_text("".join(f"G{i}\t{v}\n" for i, v in enumerate(rng.standard_normal(N))))
    ph, ps, pc, fwer = [], [], [], []
    for i in range(150):
        g = rng.choice(N, 160, replace=False)
        fams = [g[j:j + 10] for j in range(0, 40, 10)]
        prm = {"positive": genes_ref(g[:60]), "negative": genes_ref(g[60:]),
               "subspace": [1, 2, 3], "n_permutations": 199}
        ctx.seed = i
        r = run("role_margins", {**prm, "groups": _groups(fams)}, ctx, f"L{i}")
        ph.append(r.p_value)
        fwer.append(r.extra["pairs_differing"] > 0)
        ps.append(run("role_margins", {**prm, "score": f"file:{score}"}, ctx, f"L{i}",
                      "two-sided").p_value)
        pc.append(run("role_margins", {**prm, "groups": _groups(fams), "margin": "classifier"},
                      ctx, f"L{i}").p_value)
    for name, p in (("groups", ph), ("score", ps), ("groups, classifier margins", pc)):
        c = assert_calibrated(p)
        print(f"\nCALIBRATION role_margins/{name}, {kind}: n={c['n']} KS p={c['ks_p']:.3f} "
              f"FPR(0.05)={c['fpr']:.3f}")
    print(f"CALIBRATION role_margins/groups pairwise maxT family-wise error, {kind}: "
          f"{np.mean(fwer):.3f}")
    assert np.mean(fwer) <= 0.11  # 99.9% binomial band's top for 150 tests at 0.05


def test_planted_family_differences_are_found_and_named(tmp_path):
    rng = np.random.default_rng(21)
    X = _roles(rng, shift=(1.5, 0.0, 0.0, -2.0))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    r = run("role_margins", _base(groups=_groups(), n_permutations=499), ctx, "L0")
    assert r.p_value == pytest.approx(1 / 500) and r.effect_size > 0.2
    pairs = {(q["higher"], q["lower"]): q["p_adjusted"] for q in r.extra["pairs"]}
    up, down, mid = (genes_ref(FAMILIES[i]) for i in (0, 3, 1))
    assert pairs[(up, mid)] < 0.05 and pairs[(up, down)] < 0.01
    assert pairs.get((mid, genes_ref(FAMILIES[2])), pairs.get((genes_ref(FAMILIES[2]), mid))) \
        > 0.05
    by = {g["group"]: g for g in r.extra["groups"]}
    assert by[up]["z"] > 0 > by[down]["z"]
    assert r.extra["widest"][0]["gene"] in {f"G{i}" for i in FAMILIES[0]}
    # the classifier's margins see the same families
    c = run("role_margins", _base(groups=_groups(), margin="classifier", n_permutations=199),
            ctx, "L0")
    assert c.p_value < 0.01


@pytest.mark.parametrize("shift", [1.5, 3.0])
def test_pairwise_p_values_hold_when_one_family_differs(tmp_path, shift):
    """One family shifted, three not: the pairs among the unshifted families are rejected at
    most at the level (a group-against-the-rest contrast would call them different, since
    the shifted family moves the pool), over 150 layers; the classifier's margins alike."""
    layers = [_roles(np.random.default_rng(700 + i), shift=(shift, 0.0, 0.0, 0.0))
              for i in range(150)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    null_pairs = {(genes_ref(FAMILIES[i]), genes_ref(FAMILIES[j]))
                  for i in (1, 2, 3) for j in (1, 2, 3) if i != j}
    for margin in ("centroid", "classifier"):
        wrong = []
        for i, layer in enumerate(ctx.cache.layers):
            ctx.seed = i
            r = run("role_margins", _base(groups=_groups(), margin=margin, n_permutations=99),
                    ctx, layer)
            wrong.append(any((q["higher"], q["lower"]) in null_pairs
                             and q["p_adjusted"] <= 0.05 for q in r.extra["pairs"]))
        print(f"\nCALIBRATION role_margins/groups {margin}, one family shifted {shift}: "
              f"family-wise error over the unshifted pairs {np.mean(wrong):.3f}")
        assert np.mean(wrong) <= 0.11


def test_family_differences_growing_with_depth_trend(tmp_path):
    rng = np.random.default_rng(31)
    layers = [_roles(rng, shift=(0.25 * t, 0.0, 0.0, -0.15 * t)) for t in range(8)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("role_margins", _base(groups=_groups(), n_permutations=199), ctx)
    tr = combine(res, "trend", "greater", seed=0)
    assert tr.method.endswith("vs_null_sets") and tr.p_value < 0.05 and tr.effect_size > 0.5


def test_family_trend_calibrated_without_a_change(tmp_path):
    """Families with no difference in hub-heavy stacks whose layers share the genes' places
    (each layer the last plus noise): the trend against the relabelled groups is uniform."""
    rng = np.random.default_rng(32)
    ps = []
    for rep in range(150):
        base = hub_heavy_layers("hubs", 1, N, D, 1000 + rep)[0]
        base[:60, 0] += 1.5
        base[60:160, 0] -= 1.0
        layers = [base + 0.4 * t * rng.standard_normal(base.shape) for t in range(6)]
        ctx = context(cache_from_layers(tmp_path / f"f{rep}", layers), tmp_path, seed=rep)
        res = run_layers("role_margins", _base(groups=_groups(), n_permutations=99), ctx)
        ps.append(combine(res, "trend", "greater", seed=rep).p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION role_margins/groups trend, hub-heavy correlated layers: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")

def test_seed_stability_against_another_cache(tmp_path):
    rng = np.random.default_rng(41)
    X = _roles(rng, shift=(1.0, 0.5, 0.0, -1.0))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    names = [f"G{i}" for i in range(N)]
    order = rng.permutation(N)  # the other cache holds the genes in another order
    noisy = X + 0.3 * rng.standard_normal(X.shape)
    named_cache(tmp_path / "seed2", [noisy[order]], [names[i] for i in order])
    named_cache(tmp_path / "other", [_roles(rng)[order]], [names[i] for i in order])
    same = run("role_margins", _base(versus_cache=str(tmp_path / "seed2"), n_permutations=199),
               ctx, "L0")
    assert same.statistic > 0.6 and same.p_value == pytest.approx(1 / 200)
    other = run("role_margins", _base(versus_cache=str(tmp_path / "other"),
                                      n_permutations=199), ctx, "L0", "two-sided")
    assert other.p_value > 0.01
    assert same.extra["versus_cache"]["cache"] == str(tmp_path / "seed2")
    assert same.extra["versus_cache"]["n_positive"] == 60


def test_the_other_cache_keeps_the_roles_of_genes_this_cache_lacks(tmp_path):
    """With negative: rest, positives that this cache holds as all-zero rows are still
    positives in the other cache (not part of its rest)."""
    rng = np.random.default_rng(42)
    X = _roles(rng)
    mine = X.copy()
    mine[:20] = 0.0  # 20 positives absent here
    ctx = context(cache_from_layers(tmp_path / "c", [mine]), tmp_path)
    named_cache(tmp_path / "o", [X], [f"G{i}" for i in range(N)])
    r = run("role_margins", {"positive": genes_ref(POS), "negative": "rest",
                             "subspace": [1, 2, 3], "versus_cache": str(tmp_path / "o"),
                             "n_permutations": 99}, ctx, "L0")
    assert r.extra["n_positive"] == 40
    assert r.extra["versus_cache"]["n_positive"] == 60
    assert r.extra["versus_cache"]["n_negative"] == N - 60
    assert r.n == 40 and r.statistic > 0.5
    # a layer the other cache lacks is refused naming versus_cache, the parameter that set it
    ctx2 = context(cache_from_layers(tmp_path / "c2", [mine, mine]), tmp_path)
    with pytest.raises(GeoscreenError, match="has no layer") as e:
        run("role_margins", {"positive": genes_ref(POS), "negative": "rest",
                             "subspace": [1, 2, 3], "versus_cache": str(tmp_path / "o"),
                             "n_permutations": 99}, ctx2, "L1")
    assert e.value.field == "params.versus_cache"
    # an other cache holding too few genes of a role, and one that does not exist
    named_cache(tmp_path / "few", [X[:65]], [f"G{i}" for i in range(65)])
    prm = {"positive": genes_ref(POS), "negative": genes_ref(NEG), "subspace": [1, 2, 3],
           "n_permutations": 99}
    with pytest.raises(GeoscreenError, match=r"holds 60 and 5 genes of the two roles") as e:
        run("role_margins", {**prm, "versus_cache": str(tmp_path / "few")}, ctx, "L0")
    assert e.value.field == "params.versus_cache"
    with pytest.raises(GeoscreenError) as e:
        run("role_margins", {**prm, "versus_cache": str(tmp_path / "none")}, ctx, "L0")
    assert str(tmp_path / "none") in str(e.value)


def test_refusals(tmp_path):
    rng = np.random.default_rng(51)
    ctx = context(cache_from_layers(tmp_path / "c", [_roles(rng)]), tmp_path)
    with pytest.raises(GeoscreenError, match="give exactly one of groups, score or versus_cache"):
        run("role_margins", _base(), ctx, "L0")
    with pytest.raises(GeoscreenError, match="not groups and score"):
        run("role_margins", _base(groups=_groups(), score="string_degree"), ctx, "L0")
    with pytest.raises(GeoscreenError, match="role_margins needs an explicit list of at most 32"):
        run("role_margins", _base(groups=_groups(), subspace="full"), ctx, "L0")
    with pytest.raises(GeoscreenError, match="folds and C apply to margin: classifier"):
        run("role_margins", _base(groups=_groups(), folds=3), ctx, "L0")
    # H is large when groups differ: a layer's p is its upper tail whatever the alternative
    # (which then sets only a trend's direction)
    up = run("role_margins", _base(groups=_groups(), n_permutations=99), ctx, "L0")
    two = run("role_margins", _base(groups=_groups(), n_permutations=99), ctx, "L0",
              "two-sided")
    assert up.p_value == two.p_value
    with pytest.raises(GeoscreenError, match="groups of at least 3") as e:
        run("role_margins", _base(groups=[genes_ref(range(2)), genes_ref(range(2, 4))]),
            ctx, "L0")
    assert e.value.field == "params.groups"
    with pytest.raises(GeoscreenError, match="have a value of score"):
        empty = tmp_path / "e.tsv"
        empty.write_text("G200\t1.0\n")
        run("role_margins", _base(score=f"file:{empty}"), ctx, "L0", "two-sided")


def test_a_group_the_cache_lacks_is_left_out_and_listed(tmp_path):
    """A family none of whose genes the cache holds passes the queue-time check (its
    reference is still resolved) and is dropped from the test, named in the result; a
    misspelt reference is refused at queue time."""
    from geoscreen.hypotheses.loader import parse_spec
    from geoscreen.hypotheses.preflight import preflight

    rng = np.random.default_rng(61)
    cache = cache_from_layers(tmp_path / "c", [_roles(rng, shift=(1.5, 0.0, 0.0, -2.0))])
    ctx = context(cache, tmp_path)
    groups = _groups() + ["genes:FOXO1,FOXO3"]  # real symbols, absent from this cache
    spec = {"statement": "Families differ", "probe": "role_margins", "layers": ["L0"],
            "params": _base(groups=groups, n_permutations=99)}
    assert preflight(parse_spec(spec, "s"), cache=cache) == ""
    r = run("role_margins", _base(groups=groups, n_permutations=99), ctx, "L0")
    assert r.extra["groups_dropped"] == [{"group": "genes:FOXO1,FOXO3", "genes": 0}]
    assert len(r.extra["groups"]) == 4
    # a gene in a kept family and in a family that is left out keeps its kept family
    extra_small = _groups() + [genes_ref([0, 1])]
    r2 = run("role_margins", _base(groups=extra_small, n_permutations=99), ctx, "L0")
    assert r2.extra["genes_in_groups"] == 48 and r2.extra["groups"][0]["genes"] == 12
    bad = {**spec, "params": _base(groups=_groups() + ["go:GO:99999999"])}
    assert "no GO term named 'GO:99999999'" in preflight(parse_spec(bad, "s"), cache=cache)


def test_a_trend_compares_draws_only_when_the_layers_relabel_the_same_genes(tmp_path):
    """The layers' results carry a key of the grouped genes: equal keys let the trend compare
    the observed curve with the relabelled groups' curves; a layer whose key differs (other
    genes grouped) sends the trend back to layer orders instead of misaligned draws."""
    rng = np.random.default_rng(71)
    layers = [_roles(rng, shift=(0.3 * t, 0.0, 0.0, 0.0)) for t in range(5)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("role_margins", _base(groups=_groups(), n_permutations=99), ctx)
    assert len({r.extra["null_draws_key"] for r in res}) == 1
    assert combine(res, "trend", "greater", seed=0).method.endswith("vs_null_sets")
    assert combine(res, "changepoint", "greater", seed=0).method.endswith("vs_null_sets")
    res[2].extra["null_draws_key"] = "another"
    assert not combine(res, "trend", "greater", seed=0).method.endswith("vs_null_sets")
    for across in ("changepoint", "slope_change"):
        assert "null_sets" not in combine(res, across, "greater", seed=0).method
