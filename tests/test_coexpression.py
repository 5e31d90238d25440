"""`geoscreen cache coexpression`: the matrix against numpy and scipy on the same normalised
cells, in the cache's gene order (genes the data lacks: 0), refusals, and its use as a probe's
co-expression control."""

from __future__ import annotations

import numpy as np
from scipy import stats

import geoscreen
from geoscreen.extract.synthetic import write_counts_h5ad
from geoscreen.store.cache import write_cache


def data(tmp_path):
    rng = np.random.default_rng(0)
    n_cells, n_genes = 300, 200
    factor = rng.gamma(2.0, 1.0, n_cells)
    rate = rng.gamma(1.0, 1.0, (n_cells, n_genes))
    rate[:, :10] *= factor[:, None] * 3  # genes 0-9 share a factor
    counts = rng.poisson(rate)
    genes = [f"G{i}" for i in range(n_genes)]
    path = write_counts_h5ad(tmp_path / "cells.h5ad", counts, [f"c{i}" for i in range(n_cells)],
                             genes)
    return path, counts, genes


def test_matrix_equals_numpy_and_scipy_in_cache_order(tmp_path, cli):
    path, counts, genes = data(tmp_path)
    order = list(reversed(genes)) + ["NOT_IN_DATA"]
    cache = write_cache(tmp_path / "cache", {"L0": np.random.default_rng(1).normal(
        size=(len(order), 8))}, order)
    norm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    for method in ("pearson", "spearman"):
        out = tmp_path / f"{method}.npy"
        res = cli("cache", "coexpression", str(cache.path), "--data", str(path), "-o", str(out),
                  "--method", method, "--max-cells", "0")
        assert res.returncode == 0, res.stderr
        assert "200 genes found" in res.stdout
        C = np.load(out)
        assert C.shape == (201, 201) and C.dtype == np.float32
        ref = np.corrcoef(norm, rowvar=False) if method == "pearson" else \
            stats.spearmanr(norm).statistic
        idx = [genes.index(g) for g in order[:-1]]
        want = ref[np.ix_(idx, idx)]
        np.fill_diagonal(want, 0.0)
        np.testing.assert_allclose(C[:200, :200], want, atol=1e-5)
        assert not C[200].any() and not C[:, 200].any()
    module = C[190:200, 190:200]  # genes G9..G0 in the cache's reversed order
    rest = C[:190, :190]
    print(f"planted module: mean Spearman co-expression {module[module != 0].mean():.2f} vs "
          f"{rest[rest != 0].mean():.2f} among the others")
    assert module[module != 0].mean() > rest[rest != 0].mean() + 0.1


def test_refusals_and_use_as_a_control(tmp_path, cli):
    path, _, genes = data(tmp_path)
    cache = write_cache(tmp_path / "cache", {"L0": np.random.default_rng(2).normal(
        size=(200, 8))}, genes)
    out = tmp_path / "co.npy"
    assert cli("cache", "coexpression", str(cache.path), "--data", str(path), "-o",
               str(out)).returncode == 0
    again = cli("cache", "coexpression", str(cache.path), "--data", str(path), "-o", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert again.stderr.count("\n") == 1
    bad = cli("cache", "coexpression", str(cache.path), "--data", str(path), "-o",
              str(tmp_path / "x.npy"), "--method", "kendall")
    assert bad.returncode == 2 and "expected pearson or spearman" in bad.stderr
    other = cli("cache", "coexpression", str(cache.path), "--data", str(path), "-o",
                str(tmp_path / "y.npy"), "--gene-col", "nope")
    assert other.returncode == 2 and "var has no column 'nope'" in other.stderr
    pairs = ",".join(f"G{i}-G{j}" for i in range(10) for j in range(i + 1, 10))
    spec = {"statement": "module genes are closer beyond co-expression",
            "probe": "pair_proximity", "params": {"pairs": f"pairs:{pairs}",
                                                 "control": f"file:{out}",
                                                 "null": "gene_shuffle",
                                                 "n_permutations": 99},
            "layers": ["L0"], "alternative": "greater"}
    res = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w")
    assert res.provenance["resources"]["control"]["kind"] == "coexpression"
    assert 0 < res.layers[0].p_value <= 1
