"""Realized FDR and power of every procedure on streams drawn the way the offline brainstormer
draws them: refinements of discoveries re-test overlapping gene sets, neighbouring axes and
layer halves on the *same* planted cache, so p-values (and e-values) are positively and
adaptively dependent.

    python benchmarks/bench_adaptive_fdr.py [--reps 200] [--iterations 60] [--per-iteration 4]

The model of one campaign (`simulate_campaign`):

* A planted cache: G genes x A axes x L layers.  Neighbouring layers share most of their noise
  (layer l = rho * layer l-1 + sqrt(1 - rho^2) * fresh noise, rho = 0.8, as real embeddings'
  layers are strongly correlated).  Four planted modules of 20 genes each are shifted by delta on
  one axis in the early, late or all layers.
* A catalogue of gene sets, overlapping one another: each module (with 0-5 genes swapped out)
  and random sets drawn from a pool of 150 genes, so random sets share genes with each other and
  with the modules.
* A hypothesis is (gene set, axis, layers): "the set's mean score on this axis is higher than
  random sets' of the same size", per layer by a gene-label permutation test with m draws
  (`permutation_p`, `permutation_e`: the probes' own helpers), combined across layers by Cauchy
  (p) and the mean (e), as `across_layers: any`.  It is a true null exactly when no planted
  shift touches the set on that axis in those layers.  The m random sets are drawn once per set
  size and campaign (as if every probe ran with one seed): each test stays exactly valid, the
  shared draws add one more source of dependence between tests, and the loop runs in seconds.
* Each iteration proposes `per_iteration` specs from three pools taken in turn, as
  `OfflineBrainstormer.propose` does: (A) seed tests of untested sets on their catalogue axis,
  (B) refinements of the current discoveries (BH at alpha over everything tested, the
  `significant` flag the brainstormer reads), strongest first: neighbouring axes, the early and
  late layer halves, and a stricter set (a quarter of its genes dropped); (C) exploration sweeps
  of tested sets over other axes.  A spec is never tested twice.
* Every procedure sees the same stream, as in a campaign: LORD++, SAFFRON, LOND (arbitrary
  dependence), Batch-BH and e-LOND online (one batch per iteration); BH, BY and e-BH offline at
  the end; and the uncorrected p <= alpha.

`--independent` replaces the adaptive choice with specs drawn uniformly from the same universe
(the same cache, so still dependent, but not chosen because of earlier results).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoscreen.combine import cauchy_combination
from geoscreen.multitest import bh_by, e_bh
from geoscreen.online_fdr import BatchBH, ELond, Lond, LordPlusPlus, Saffron
from geoscreen.probes.stats import distinct_draws
from geoscreen.result import permutation_e, permutation_p

METHODS = ("uncorrected p <= alpha", "BH (offline, end)", "BY (offline, end)",
           "e-BH (offline, end)", "Batch-BH (online)", "SAFFRON (online)", "LORD++ (online)",
           "LOND, any dependence (online)", "e-LOND (online)")
VALID_UNDER = {"uncorrected p <= alpha": "nothing",
               "BH (offline, end)": "PRDS", "BY (offline, end)": "any dependence",
               "e-BH (offline, end)": "any dependence (e-values)",
               "Batch-BH (online)": "independent p-values",
               "SAFFRON (online)": "independent nulls", "LORD++ (online)": "independent nulls",
               "LOND, any dependence (online)": "any dependence",
               "e-LOND (online)": "any dependence (e-values)"}


@dataclass
class Settings:
    """One simulated campaign's size and planted effects."""

    genes: int = 400
    axes: int = 10
    layers: int = 6
    rho: float = 0.8
    modules: int = 4
    module_size: int = 20
    delta: float = 0.8
    random_sets: int = 26
    set_pool: int = 150
    iterations: int = 60
    per_iteration: int = 4
    permutations: int = 9999
    alpha: float = 0.05
    adaptive: bool = True


@dataclass
class _Cache:
    X: np.ndarray  # (layers, genes, axes) scores
    shifted: np.ndarray  # (layers, genes, axes) bool: a planted shift
    sets: list[np.ndarray]
    home_axis: list[int]
    null_sets: dict[int, np.ndarray] = field(default_factory=dict)  # set size -> (m, size)
    null_means: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)


@dataclass
class _Campaign:
    tested: list[tuple[int, int, str]] = field(default_factory=list)
    p: list[float] = field(default_factory=list)
    e: list[float] = field(default_factory=list)
    null: list[bool] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)


LAYER_RANGES = ("all", "early", "late")


def _layers(which: str, n: int) -> range:
    half = n // 2
    return {"all": range(n), "early": range(half), "late": range(half, n)}[which]


def planted_cache(s: Settings, rng: np.random.Generator) -> _Cache:
    """Correlated layers, planted modules and an overlapping catalogue of gene sets."""
    noise = np.empty((s.layers, s.genes, s.axes))
    noise[0] = rng.standard_normal((s.genes, s.axes))
    for layer in range(1, s.layers):
        noise[layer] = s.rho * noise[layer - 1] + np.sqrt(1 - s.rho ** 2) * \
            rng.standard_normal((s.genes, s.axes))
    shifted = np.zeros_like(noise, dtype=bool)
    genes = rng.permutation(s.genes)
    sets, home = [], []
    for k in range(s.modules):
        members = genes[k * s.module_size:(k + 1) * s.module_size]
        axis = int(rng.integers(0, s.axes))
        for layer in _layers(LAYER_RANGES[k % 3], s.layers):
            shifted[layer, members, axis] = True
        swap = int(rng.integers(0, 6))  # the catalogue's version of the module is imperfect
        outsiders = rng.choice(np.setdiff1d(np.arange(s.genes), members), swap, replace=False)
        sets.append(np.sort(np.concatenate([members[swap:], outsiders])))
        home.append(axis)
    pool = rng.choice(s.genes, s.set_pool, replace=False)
    for _ in range(s.random_sets):
        sets.append(np.sort(rng.choice(pool, s.module_size, replace=False)))
        home.append(int(rng.integers(0, s.axes)))
    X = noise + s.delta * shifted
    return _Cache(X=X, shifted=shifted, sets=sets, home_axis=home)


def _test(cache: _Cache, s: Settings, spec: tuple[int, int, str], rng: np.random.Generator,
          ) -> tuple[float, float, bool]:
    """(p, e, is_null) of one spec: a gene-label permutation test per layer, combined as `any`."""
    set_id, axis, which = spec
    members = cache.sets[set_id]
    layers = _layers(which, s.layers)
    if members.size not in cache.null_sets:  # one draw of random sets per size and campaign
        cache.null_sets[members.size] = distinct_draws(s.genes, members.size, s.permutations,
                                                       rng)
    draws = cache.null_sets[members.size]
    ps, es = [], []
    for layer in layers:
        v = cache.X[layer, :, axis]
        observed = float(v[members].mean())
        key = (layer, axis, members.size)
        if key not in cache.null_means:
            cache.null_means[key] = v[draws].mean(axis=1)
        null = cache.null_means[key]
        ps.append(permutation_p(observed, null, "greater"))
        es.append(permutation_e(observed, null, "greater"))
    is_null = not bool(cache.shifted[list(layers)][:, members, axis].any())
    return cauchy_combination(ps), float(np.mean(es)), is_null


def _neighbours(spec: tuple[int, int, str], s: Settings, cache: _Cache,
                rng: np.random.Generator) -> list[tuple[int, int, str]]:
    """The brainstormer's refinements of a discovery: neighbouring axes, layer halves, and a
    stricter set (registered as a new catalogue entry on first use)."""
    set_id, axis, which = spec
    out = [(set_id, a, which) for a in (axis + 1, axis - 1) if 0 <= a < s.axes]
    if which == "all":
        out += [(set_id, axis, "early"), (set_id, axis, "late")]
    members = cache.sets[set_id]
    if members.size >= 12:
        keep = np.sort(rng.choice(members, int(members.size * 0.75), replace=False))
        cache.sets.append(keep)
        cache.home_axis.append(axis)
        out.append((len(cache.sets) - 1, axis, which))
    return out


def simulate_campaign(s: Settings, rng: np.random.Generator) -> _Campaign:
    """One campaign's stream of (p, e, truth) in test order, with iteration boundaries."""
    cache = planted_cache(s, rng)
    c = _Campaign()
    seen: set[tuple[int, int, str]] = set()
    refinements: dict[tuple[int, int, str], list[tuple[int, int, str]]] = {}
    universe = [(k, a, w) for k in range(len(cache.sets)) for a in range(s.axes)
                for w in LAYER_RANGES]
    for _ in range(s.iterations):
        batch: list[tuple[int, int, str]] = []
        if not s.adaptive:
            rng.shuffle(universe)
            batch = [x for x in universe if x not in seen][:s.per_iteration]
        else:
            discoveries: list[int] = []
            if c.p:
                q = bh_by(np.array(c.p))[0]
                discoveries = [i for i in np.argsort(c.p, kind="stable") if q[i] <= s.alpha]
            pool_a = [(k, cache.home_axis[k], "all") for k in range(len(cache.sets))]
            pool_b: list[tuple[int, int, str]] = []
            for i in discoveries:
                spec = c.tested[i]
                if spec not in refinements:
                    refinements[spec] = _neighbours(spec, s, cache, rng)
                pool_b += refinements[spec]
            tested_sets = sorted({t[0] for t in c.tested}) or [0]
            pool_c = [(k, int(a), "all") for k in tested_sets
                      for a in rng.permutation(s.axes)]
            pools = [pool_a, pool_b, pool_c]
            cursor = [0, 0, 0]
            turn = 0
            while len(batch) < s.per_iteration and any(cursor[i] < len(pools[i])
                                                       for i in range(3)):
                i = turn % 3
                turn += 1
                while cursor[i] < len(pools[i]):
                    spec = pools[i][cursor[i]]
                    cursor[i] += 1
                    if spec not in seen and spec not in batch:
                        batch.append(spec)
                        break
        if not batch:
            break
        for spec in batch:
            seen.add(spec)
            p, e, is_null = _test(cache, s, spec, rng)
            c.tested.append(spec)
            c.p.append(p)
            c.e.append(e)
            c.null.append(is_null)
        c.batches.append(len(batch))
    return c


def decisions(c: _Campaign, alpha: float) -> dict[str, np.ndarray]:
    """Every procedure's rejections over the campaign's stream."""
    p, e = np.array(c.p), np.array(c.e)
    online = {"Batch-BH (online)": BatchBH(alpha), "SAFFRON (online)": Saffron(alpha),
              "LORD++ (online)": LordPlusPlus(alpha),
              "LOND, any dependence (online)": Lond(alpha, dependence="arbitrary"),
              "e-LOND (online)": ELond(alpha)}
    out = {name: np.zeros(p.size, dtype=bool) for name in online}
    start = 0
    for n in c.batches:
        for name, proc in online.items():
            x = e[start:start + n] if proc.uses_e_values else p[start:start + n]
            out[name][start:start + n] = [d.reject for d in proc.test_batch(list(x))]
        start += n
    q_bh, q_by = bh_by(p)
    out["BH (offline, end)"] = q_bh <= alpha
    out["BY (offline, end)"] = q_by <= alpha
    out["e-BH (offline, end)"] = e_bh(e, alpha)
    out["uncorrected p <= alpha"] = p <= alpha
    return out


def run(s: Settings, reps: int, seed: int = 20240611) -> dict[str, dict[str, Any]]:
    """Realized FDR (mean FDP, its Monte-Carlo SE) and power per procedure over `reps`
    campaigns; also the average stream length and share of true nulls."""
    rng = np.random.default_rng(seed)
    fdp: dict[str, list[float]] = {m: [] for m in METHODS}
    power: dict[str, list[float]] = {m: [] for m in METHODS}
    sizes, nulls = [], []
    for _ in range(reps):
        c = simulate_campaign(s, rng)
        is_null = np.array(c.null)
        sizes.append(is_null.size)
        nulls.append(float(is_null.mean()))
        for name, r in decisions(c, s.alpha).items():
            fdp[name].append(float(np.sum(r & is_null) / max(int(r.sum()), 1)))
            if (~is_null).any():
                power[name].append(float(np.sum(r & ~is_null) / np.sum(~is_null)))
    out: dict[str, dict[str, Any]] = {}
    for name in METHODS:
        f = np.array(fdp[name])
        out[name] = {"fdr": float(f.mean()), "se": float(f.std(ddof=1) / np.sqrt(f.size)),
                     "power": float(np.mean(power[name])) if power[name] else float("nan"),
                     "valid_under": VALID_UNDER[name]}
    out["_stream"] = {"hypotheses": float(np.mean(sizes)), "null_share": float(np.mean(nulls)),
                      "reps": reps}
    return out


def table(res: dict[str, dict[str, Any]], title: str) -> str:
    """A markdown table of realized FDR (+- SE) and power."""
    st = res["_stream"]
    lines = [f"{title}: {st['reps']} campaigns, {st['hypotheses']:.0f} hypotheses each, "
             f"{st['null_share']:.0%} true nulls", "",
             "| method | valid under | realized FDR (± SE) | power |", "|---|---|---|---|"]
    for name in METHODS:
        r = res[name]
        lines.append(f"| {name} | {r['valid_under']} | {r['fdr']:.3f} (± {r['se']:.3f}) | "
                     f"{r['power']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--per-iteration", type=int, default=4)
    ap.add_argument("--permutations", type=int, default=9999)
    ap.add_argument("--delta", type=float, default=0.8)
    ap.add_argument("--independent", action="store_true",
                    help="draw specs uniformly instead of adaptively")
    ap.add_argument("--seed", type=int, default=20240611)
    a = ap.parse_args()
    s = Settings(iterations=a.iterations, per_iteration=a.per_iteration,
                 permutations=a.permutations, delta=a.delta, adaptive=not a.independent)
    t0 = time.perf_counter()
    res = run(s, a.reps, a.seed)
    kind = "uniformly drawn specs" if a.independent else "adaptive loop (offline brainstormer)"
    print(table(res, f"{kind}, alpha = {s.alpha}, m = {s.permutations} permutations, "
                     f"delta = {s.delta}"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
