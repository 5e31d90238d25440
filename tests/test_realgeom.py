"""The real-geometry test bed: MiniLM layer embeddings and the synthetic look-alike.

The MiniLM cache (``real_cache``, built once per machine) must show what makes real embeddings
hard for permutation nulls: anisotropy, low effective rank, hubs, and positions that depend on
how well studied a gene is.  `realistic_layers` must reproduce that geometry.  Run with ``-s``
to see the measured tables.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from realgeom import gene_texts, geometry_summary, minilm_cache, realistic_layers
from scipy import stats

from geoscreen.store.cache import write_cache
from geoscreen.store.resources.covariates import annotation_counts

MIDDLE = ["L1", "L2", "L3", "L4", "L5"]  # MiniLM's transformer layers before the last
COLUMNS = ["mean_cos", "mean_cos_centred", "eff_rank", "participation_ratio", "k_skew",
           "norm_vs_annotation", "top_quartile_cos", "random_set_cos"]
SET_SIZE = 30
N_SETS = 200


def _set_cosines(U: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean pairwise cosine of each of `N_SETS` random `SET_SIZE`-sets drawn from `pool`."""
    out = np.empty(N_SETS)
    for t in range(N_SETS):
        V = U[rng.choice(pool, SET_SIZE, replace=False)]
        total = np.square(V.sum(axis=0)).sum()
        out[t] = (total - SET_SIZE) / (SET_SIZE * (SET_SIZE - 1))
    return out


def _cohesion(X: np.ndarray, counts: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Set cosines (centred) of random top-quartile-annotated sets and of random sets."""
    Xc = X - X.mean(axis=0)
    U = Xc / np.linalg.norm(Xc, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    top = np.flatnonzero(counts >= np.quantile(counts, 0.75))
    return _set_cosines(U, top, rng), _set_cosines(U, np.arange(len(X)), rng)


def _measure(X: np.ndarray, symbols: list[str], counts: np.ndarray) -> dict[str, float]:
    row = geometry_summary(X, k=10, seed=0, symbols=symbols)
    top, rand = _cohesion(X, counts)
    return {**row, "top_quartile_cos": float(top.mean()), "random_set_cos": float(rand.mean())}


def _print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'layer':<6}" + "".join(f"{c:>20}" for c in COLUMNS))
    for name, row in rows.items():
        print(f"{name:<6}" + "".join(f"{row[c]:>20.3f}" for c in COLUMNS))


@pytest.fixture(scope="module")
def minilm_rows(real_cache) -> dict[str, dict[str, float]]:
    symbols = list(real_cache.genes.symbols)
    counts, _ = annotation_counts(symbols)
    rows = {layer: _measure(np.asarray(real_cache.array(layer), dtype=np.float64), symbols,
                            counts) for layer in real_cache.layers}
    _print_table("MiniLM test bed (2000 genes x 384)", rows)
    return rows


@pytest.fixture(scope="module")
def synthetic_rows(real_cache) -> dict[str, dict[str, float]]:
    symbols = list(real_cache.genes.symbols)
    counts, _ = annotation_counts(symbols)
    layers = realistic_layers(symbols, n_layers=3, dim=real_cache.dim, seed=0)
    rows = {f"S{k}": _measure(X, symbols, counts) for k, X in enumerate(layers)}
    _print_table("realistic_layers (same genes, dim 384)", rows)
    return rows


# ------------------------------------------------------------------------------------------
# gene descriptions
# ------------------------------------------------------------------------------------------
def test_gene_texts_are_seeded_sorted_descriptions():
    symbols, texts = gene_texts(50, seed=3)
    assert gene_texts(50, seed=3) == (symbols, texts)
    assert gene_texts(50, seed=4)[0] != symbols
    assert symbols == sorted(symbols) and len(set(symbols)) == 50 and len(texts) == 50
    for sym, text in zip(symbols, texts):
        head, _, terms = text.partition(". ")
        assert head.startswith(f"{sym}: ") and len(head) > len(sym) + 2
        names = terms.split("; ")
        assert 1 <= len(names) <= 40 and names == sorted(names)
    counts, _ = annotation_counts(symbols)
    assert (counts >= 1).all()


# ------------------------------------------------------------------------------------------
# the MiniLM cache has real-embedding geometry
# ------------------------------------------------------------------------------------------
def test_minilm_cache_layout(real_cache):
    assert real_cache.layers == [f"L{k}" for k in range(7)]
    assert (real_cache.n_genes, real_cache.dim, real_cache.dtype) == (2000, 384, "float32")
    assert not real_cache.synthetic and int(real_cache.genes.zero.sum()) == 0
    meta = real_cache.manifest["metadata"]
    assert (meta["n_genes"], meta["max_length"]) == (2000, 128)
    assert len(meta["model_sha256"]) == 64 and meta["key"] in real_cache.path.name
    assert list(real_cache.genes.symbols) == gene_texts(2000)[0]


def test_minilm_is_anisotropic_low_rank_and_hubby(minilm_rows):
    dim = 384
    for layer in MIDDLE:
        row = minilm_rows[layer]
        assert 0.55 < row["mean_cos"] < 0.95, (layer, row)
        assert row["eff_rank"] < 0.25 * dim, (layer, row)
        assert row["participation_ratio"] < 0.1 * dim, (layer, row)
    # isotropic Gaussians of this shape have k-occurrence skewness about 0.35
    skews = [row["k_skew"] for row in minilm_rows.values()]
    assert min(skews) > 0.6 and np.median(skews) > 0.8, skews


def test_minilm_positions_depend_on_annotation(minilm_rows):
    for layer, row in minilm_rows.items():
        assert row["norm_vs_annotation"] < -0.3, (layer, row)
    for layer in MIDDLE:
        row = minilm_rows[layer]
        assert row["top_quartile_cos"] > row["random_set_cos"] + 0.1, (layer, row)


# ------------------------------------------------------------------------------------------
# the synthetic look-alike
# ------------------------------------------------------------------------------------------
def test_realistic_layers_match_minilm_geometry(synthetic_rows, minilm_rows):
    dim = 384
    real = {c: float(np.median([minilm_rows[layer][c] for layer in MIDDLE])) for c in COLUMNS}
    for name, row in synthetic_rows.items():
        assert 0.7 < row["mean_cos"] < 0.9, (name, row)
        assert 0.07 * dim < row["eff_rank"] < 0.2 * dim, (name, row)
        assert row["participation_ratio"] < 0.1 * dim, (name, row)
        assert row["k_skew"] > 0.8, (name, row)
        assert row["norm_vs_annotation"] < -0.3, (name, row)
        assert abs(row["mean_cos"] - real["mean_cos"]) < 0.1, (name, row, real)
        assert 0.5 < row["eff_rank"] / real["eff_rank"] < 2.0, (name, row, real)
        assert abs(row["top_quartile_cos"] - real["top_quartile_cos"]) < 0.15, (name, row, real)
    assert np.mean([row["k_skew"] for row in synthetic_rows.values()]) > 1.1, synthetic_rows


def test_well_studied_sets_defeat_a_naive_null():
    """Random top-quartile-annotated sets beat the random-set null almost every time."""
    symbols, _ = gene_texts(1000, seed=11)
    counts, _ = annotation_counts(symbols)
    X = realistic_layers(symbols, n_layers=1, dim=128, seed=5)[0]
    top, rand = _cohesion(X, counts, seed=1)
    assert stats.mannwhitneyu(top, rand, alternative="greater").pvalue < 1e-20
    assert np.mean(top > np.quantile(rand, 0.95)) > 0.9
    assert top.mean() > rand.mean() + 0.1


def test_realistic_layers_are_deterministic_and_independent():
    symbols, _ = gene_texts(300, seed=2)
    a = realistic_layers(symbols, n_layers=2, dim=32, seed=7)
    b = realistic_layers(symbols, n_layers=2, dim=32, seed=7)
    c = realistic_layers(symbols, n_layers=2, dim=32, seed=8)
    assert len(a) == 2 and all(x.shape == (300, 32) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], c[0]) and not np.allclose(a[0], a[1])
    assert all(np.isfinite(x).all() for x in a)


# ------------------------------------------------------------------------------------------
# building and reusing the cache
# ------------------------------------------------------------------------------------------
def _manifest_state(cache) -> tuple[int, str, float]:
    meta = cache.manifest["metadata"]
    return ((cache.path / "manifest.json").stat().st_mtime_ns, cache.manifest["created"],
            meta["build_seconds"])


def test_tiny_build_is_deterministic_reused_and_keyed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEOSCREEN_TESTBED_DIR", str(tmp_path / "a"))
    first = minilm_cache(n_genes=40, max_length=32)
    assert first.path.parent == (tmp_path / "a").resolve()
    assert (first.n_genes, first.dim, len(first.layers)) == (40, 384, 7)
    assert list(first.genes.symbols) == gene_texts(40)[0]
    again = minilm_cache(n_genes=40, max_length=32)
    assert again.path == first.path and _manifest_state(again) == _manifest_state(first)

    monkeypatch.setenv("GEOSCREEN_TESTBED_DIR", str(tmp_path / "b"))
    other = minilm_cache(n_genes=40, max_length=32)
    assert other.path.name == first.path.name and other.path != first.path
    for layer in first.layers:
        assert np.array_equal(np.asarray(first.array(layer)), np.asarray(other.array(layer)))

    # a folder built for another key is replaced, not reused
    stale = {layer: np.zeros((40, 384), np.float32) + 1 for layer in first.layers}
    write_cache(other.path, stale, list(other.genes.symbols), metadata={"key": "stale"},
                overwrite=True)
    rebuilt = minilm_cache(n_genes=40, max_length=32)
    assert rebuilt.manifest["metadata"]["key"] == first.manifest["metadata"]["key"]
    assert np.array_equal(np.asarray(rebuilt.array("L3")), np.asarray(first.array("L3")))
    assert sorted(os.listdir(tmp_path / "b")) == sorted([first.path.name,
                                                         first.path.name + ".lock"])
