"""Helpers for the probe tests: synthetic caches, literal resources, running probes, calibration.

Calibration runs a probe on many independent null data sets at once by storing each replicate as
its own layer of one cache: every layer gets its own seed, so per-layer p-values are independent
draws of the probe's null distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.registry import get_probe
from geoscreen.result import E_BOUND_SPLIT, LayerResult, bound_split_share
from geoscreen.store.cache import Cache, write_cache


def gene_names(n: int, prefix: str = "G") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def cache_from_layers(path: Path, layers: Sequence[np.ndarray], prefix: str = "G") -> Cache:
    """A cache whose layers are the given (genes, dim) arrays, named L0, L1, ..."""
    n = layers[0].shape[0]
    return write_cache(path, {f"L{k}": np.asarray(x, dtype=np.float32)
                              for k, x in enumerate(layers)}, gene_names(n, prefix),
                       model="test", synthetic=True)


def named_cache(path: Path, layers: Sequence[np.ndarray], names: Sequence[str],
                model: str = "other") -> Cache:
    """A second cache (another seed or model) with its own gene names and order, layers L0, ..."""
    return write_cache(path, {f"L{k}": np.asarray(x, dtype=np.float32)
                              for k, x in enumerate(layers)}, list(names), model=model,
                       synthetic=True)


def unrelated_cache_pair(tmp: Path, kind: str, n_layers: int, n_genes: int, dim: int,
                         own: int = 0) -> tuple[ProbeContext, str]:
    """A cache of `n_layers` layers (Gaussian or 'hubs', `hub_heavy_layers`) and a second one
    drawn on its own, its genes in shuffled order plus `own` genes only it holds: (context of
    the first, path of the second).  The null bed of the other-cache probes."""
    seeds = {"gaussian": (3, 5), "hubs": (4, 6)}[kind]
    mine = hub_heavy_layers(kind, n_layers, n_genes, dim, seeds[0])
    theirs = hub_heavy_layers(kind, n_layers, n_genes + own, dim, seeds[1])
    ctx = context(cache_from_layers(tmp / "c", mine), tmp)
    names = gene_names(n_genes) + [f"X{i}" for i in range(own)]
    names = [names[i] for i in np.random.default_rng(7).permutation(n_genes + own)]
    named_cache(tmp / "o", theirs, names)
    return ctx, str(tmp / "o")


def gaussian_layers(n_layers: int, n_genes: int, dim: int, seed: int,
                    scales: np.ndarray | None = None) -> list[np.ndarray]:
    """Independent Gaussian layers: exchangeable genes, independent dimensions (the null)."""
    rng = np.random.default_rng(seed)
    sc = np.ones(dim) if scales is None else scales
    return [rng.standard_normal((n_genes, dim)) * sc for _ in range(n_layers)]


def hub_heavy_layers(kind: str, n_layers: int, n_genes: int, dim: int, seed: int,
                     hubs: int = 15, random_hubs: bool = True) -> list[np.ndarray]:
    """Gaussian layers (`kind` 'gaussian'), or ('hubs') layers with a decaying spectrum and
    `hubs` genes of 6x norm: at random rows of each layer (so genes stay exchangeable and a
    relabelling null holds), or, with `random_hubs` False, the first rows of every layer."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_layers):
        X = rng.standard_normal((n_genes, dim))
        if kind == "hubs":
            X *= np.exp(-np.arange(dim) / 3.0)
            rows = rng.choice(n_genes, hubs, replace=False) if random_hubs else np.arange(hubs)
            X[rows] *= 6.0
        out.append(X)
    return out


def context(cache: Cache, tmp: Path, seed: int = 0, **kw: Any) -> ProbeContext:
    return ProbeContext(cache=cache, seed=seed, work_dir=tmp / "work", **kw)


def run(name: str, params: dict[str, Any], ctx: ProbeContext, layer: str,
        alternative: str | None = None) -> LayerResult:
    """Validate params through the registry and run one layer, as the executor would."""
    info = get_probe(name)
    ctx.alternative = alternative or info.alternatives[0]
    return info.fn(ctx, info.validate_params(params), layer)


def run_layers(name: str, params: dict[str, Any], ctx: ProbeContext,
               layers: Iterable[str] | None = None, alternative: str | None = None,
               ) -> list[LayerResult]:
    return [run(name, params, ctx, layer, alternative)
            for layer in (layers if layers is not None else ctx.cache.layers)]


def genes_ref(idx: Iterable[int], prefix: str = "G") -> str:
    return "genes:" + ",".join(f"{prefix}{i}" for i in idx)


def pairs_ref(i: Iterable[int], j: Iterable[int], prefix: str = "G") -> str:
    return "pairs:" + ",".join(f"{prefix}{a}-{prefix}{b}" for a, b in zip(i, j))


def pairs_file(path: Path, i: Iterable[int], j: Iterable[int], score: Iterable[float] | None = None,
               prefix: str = "G") -> str:
    """A TSV pair set (a, b[, score]) written to `path`; returns its file: reference."""
    rows = []
    sc = list(score) if score is not None else None
    for k, (a, b) in enumerate(zip(i, j)):
        rows.append(f"{prefix}{a}\t{prefix}{b}" + (f"\t{sc[k]}" if sc is not None else ""))
    path.write_text("\n".join(rows) + "\n")
    return f"file:{path}"


def random_pairs(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """m distinct unordered pairs of distinct genes."""
    seen: set[tuple[int, int]] = set()
    while len(seen) < m:
        a, b = rng.integers(0, n, 2)
        if a != b:
            seen.add((min(a, b), max(a, b)))
    arr = np.array(sorted(seen))
    rng.shuffle(arr)
    return arr[:, 0], arr[:, 1]


def binomial_band(n: int, alpha: float = 0.05, level: float = 0.999) -> tuple[float, float]:
    """Central `level` band of the false-positive rate of n independent level-alpha tests."""
    lo = stats.binom.ppf((1 - level) / 2, n, alpha) / n
    hi = stats.binom.isf((1 - level) / 2, n, alpha) / n
    return float(lo), float(hi)


def calibration(pvalues: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """KS test of uniformity and the false-positive rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    lo, hi = binomial_band(p.size, alpha)
    return {"n": p.size, "ks_p": float(stats.kstest(p, "uniform").pvalue),
            "ks_smaller_p": float(stats.kstest(p, "uniform", alternative="greater").pvalue),
            "fpr": float(np.mean(p <= alpha)), "band_lo": lo, "band_hi": hi}


def assert_calibrated(pvalues: Sequence[float], alpha: float = 0.05,
                      conservative_ok: bool = False) -> dict[str, float]:
    """p-values uniform (KS p > 0.001) and FPR at alpha inside the 99.9% binomial band.

    `conservative_ok` (intersection-union tests) only requires p-values not to be stochastically
    smaller than uniform and the FPR not to exceed the band.
    """
    c = calibration(pvalues, alpha)
    if conservative_ok:
        assert c["ks_smaller_p"] > 1e-3, c
        assert c["fpr"] <= c["band_hi"], c
    else:
        assert c["ks_p"] > 1e-3, c
        assert c["band_lo"] <= c["fpr"] <= c["band_hi"], c
    return c


def e_validity(evalues: Sequence[float]) -> dict[str, float]:
    """Monte-Carlo summary of null e-values: the mean with its standard error, the means of e
    truncated at 5 and 20 with theirs, and the Markov tails P(e >= x).

    A valid e-value has E[e] <= 1, hence E[min(e, c)] <= 1 and P(e >= x) <= 1/x.  Null e-values
    are heavy-tailed, so the plain mean's standard error is large; min(e, c) has variance at
    most c, which makes its mean a sharp check of the bulk (1/p, for instance, has
    E[min(1/p, 20)] = 1 + ln 20 = 4).
    """
    e = np.asarray(evalues, dtype=float)
    n = e.size
    big = np.minimum(e, 1e100)  # a calibrated p of 0 gives ~1e294, whose square overflows
    out = {"n": float(n), "mean": float(e.mean()), "se": float(big.std(ddof=1) / np.sqrt(n)),
           "max": float(e.max())}
    for c in (5, 20):
        t = np.minimum(e, c)
        out[f"mean_min{c}"] = float(t.mean())
        out[f"se_min{c}"] = float(t.std(ddof=1) / np.sqrt(n))
    for x in (2, 5, 20):
        out[f"P(e>={x})"] = float(np.mean(e >= x))
    return out


def assert_e_valid(evalues: Sequence[float], z: float = 3.0) -> dict[str, float]:
    """Null e-values look valid: mean(e) and mean(min(e, c)) for c = 5, 20 at most 1 + z SE, and
    P(e >= x) inside the 99.9% binomial band of a rate 1/x, x = 2, 5, 20 (Markov)."""
    c = e_validity(evalues)
    assert np.all(np.asarray(evalues, dtype=float) >= 0), c
    assert c["mean"] <= 1.0 + z * c["se"], c
    for t in (5, 20):
        assert c[f"mean_min{t}"] <= 1.0 + z * c[f"se_min{t}"], (t, c)
    n = int(c["n"])
    for x in (2, 5, 20):
        hi = stats.binom.isf(0.0005, n, 1.0 / x) / n
        assert c[f"P(e>={x})"] <= hi, (x, c)
    return c


def assert_draws_e_value(bounded: LayerResult, drawn: LayerResult, m: int) -> None:
    """`bounded` (``null_method: bound`` or ``moments``, where the draws decided) has the
    e-value of `drawn` (``null_method: draws``, the same draws): times `bound_split_share` (m)
    with ``e_method`` + ``_bound_split`` where a bound was computed, else unchanged."""
    if bounded.extra.get("bound") is None:
        assert (bounded.e_value, bounded.e_method) == (drawn.e_value, drawn.e_method)
        return
    assert drawn.e_value is not None and drawn.e_value > 0
    assert bounded.e_value == bound_split_share(m) * drawn.e_value
    assert bounded.e_method == drawn.e_method + E_BOUND_SPLIT
