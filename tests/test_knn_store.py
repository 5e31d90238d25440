"""Stored k-NN neighbour lists (`geoscreen.probes.knn_store`): a layer's lists are computed by
the first k-NN hypothesis, read by the next (checked), and every probe's result is the same bit
for bit whichever way it got them; damage is computed again and replaced."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, genes_ref, run

from geoscreen.probes import knn_store
from geoscreen.probes.graph import knn_neighbours

N = 300


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    rng = np.random.default_rng(12)
    centres = rng.standard_normal((6, 12)) * 4
    lab = rng.integers(0, 6, N)
    X = centres[lab] + rng.standard_normal((N, 12))
    tmp = tmp_path_factory.mktemp("knn")
    gmt = tmp / "labels.gmt"
    gmt.write_text("\n".join(f"S{c}\tna\t" + "\t".join(f"G{g}" for g in np.flatnonzero(lab == c))
                             for c in range(6)) + "\n")
    score = tmp / "score.tsv"
    score.write_text("".join(f"G{g}\t{v:.5f}\n" for g, v in enumerate(rng.standard_normal(N))))
    cache = cache_from_layers(tmp / "c", [X, X + rng.standard_normal(X.shape)])
    return cache, f"file:{gmt}", f"file:{score}", genes_ref(np.flatnonzero(lab == 2)[:25])


def _specs(annotation, score, genes):
    return [
        ("knn_graph", {"k": 8}),
        ("knn_graph", {"k": 8, "statistic": "modularity"}),
        ("knn_graph", {"k": 8, "subspace": [1, 2, 3]}),
        ("knn_homophily", {"gene_set": genes, "k": 8, "n_permutations": 199}),
        ("knn_communities", {"annotation": annotation, "k": 8, "n_permutations": 199}),
        ("gene_score_association", {"quantity": "knn_degree", "score": score, "k": 8,
                                    "n_permutations": 199}),
    ]


def _same(a, b):
    assert a.statistic == b.statistic and a.p_value == b.p_value
    assert a.extra.get("null_mean") == b.extra.get("null_mean")


def _files(tmp):
    return sorted((tmp / "work" / "knn").rglob("*.npz"))


def test_a_second_hypothesis_reads_the_lists_and_gets_the_same_result(layers, tmp_path):
    """Each k-NN probe in a fresh context (a new hypothesis) on a layer another hypothesis
    already ran: the lists come from the store and every number is the same; the full-space
    lists are shared across probes (one file per layer, k and subspace)."""
    cache, annotation, score, genes = layers
    for name, prm in _specs(annotation, score, genes):
        first_ctx = context(cache, tmp_path, seed=1)
        first = run(name, prm, first_ctx, "L1")
        second_ctx = context(cache, tmp_path, seed=1)
        second = run(name, prm, second_ctx, "L1")
        assert second_ctx.knn_sources == {"store": 1}, name
        _same(first, second)
    assert len(_files(tmp_path)) == 2  # full space and SV1-3, k = 8
    nb, _ = knn_store.neighbours(None, None, "full", cache.matrix("L1")[1], 8)
    assert nb.shape == (N, 8)


def test_rows_alone_equal_the_whole_list(layers):
    cache, *_ = layers
    Z = cache.matrix("L0")[1]
    whole = knn_neighbours(Z, 7)
    rows = np.array([0, 5, 299, 17, 100])
    np.testing.assert_array_equal(np.sort(knn_neighbours(Z, 7, rows=rows), axis=1),
                                  np.sort(whole[rows], axis=1))
    assert knn_store.spot_check(whole, Z, 7, checks=N)
    assert not knn_store.spot_check(np.roll(whole, 1, axis=0), Z, 7)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "encrypted", "plain_npy",
                                    "other_key", "self", "duplicate", "out_of_range",
                                    "other_data", "narrow", "float"])
def test_a_damaged_list_is_computed_again_and_replaced(layers, tmp_path, damage):
    cache, annotation, score, genes = layers
    prm = {"gene_set": genes, "k": 8, "n_permutations": 199}
    clean = run("knn_homophily", prm, context(cache, tmp_path, seed=1), "L0")
    path = _files(tmp_path)[0]
    with np.load(path) as z:
        key, nb = z["key"].item(), z["nb"].copy()
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "encrypted":  # one flag bit of the zip's central directory: zipfile raises
        at = raw.index(b"PK\x01\x02")  # RuntimeError, not BadZipFile
        flipped = bytearray(raw)
        flipped[at + 8] |= 1
        path.write_bytes(bytes(flipped))
    elif damage == "plain_npy":  # np.load returns an array, not an archive
        with path.open("wb") as fh:
            np.save(fh, nb)
    else:
        bad = nb.copy()
        if damage == "self":
            bad[3, 0] = 3
        elif damage == "duplicate":
            bad[4, 1] = bad[4, 0]
        elif damage == "out_of_range":
            bad[5, 2] = N
        elif damage == "other_data":  # well formed, but the lists of other coordinates
            bad = knn_neighbours(np.random.default_rng(0).standard_normal((N, 12)), 8)
        elif damage == "narrow":
            bad = bad[:, :7]
        elif damage == "float":
            bad = bad.astype(np.float64)
        np.savez(path, key=np.array("0" * 64 if damage == "other_key" else key), nb=bad)
    ctx = context(cache, tmp_path, seed=1)
    again = run("knn_homophily", prm, ctx, "L0")
    assert ctx.knn_sources == {"computed": 1}
    _same(clean, again)
    np.testing.assert_array_equal(knn_store.read(path, key, N, 8), nb)  # replaced
    third_ctx = context(cache, tmp_path, seed=1)
    _same(clean, run("knn_homophily", prm, third_ctx, "L0"))
    assert third_ctx.knn_sources == {"store": 1}


def test_a_folder_where_the_list_should_be_costs_time_only(layers, tmp_path):
    cache, _, _, genes = layers
    prm = {"gene_set": genes, "k": 8, "n_permutations": 199}
    good = run("knn_homophily", prm, context(cache, tmp_path / "a", seed=1), "L0")
    path = _files(tmp_path / "a")[0]
    other = tmp_path / "b" / path.relative_to(tmp_path / "a")
    other.mkdir(parents=True)  # a folder named like the stored list
    for _ in range(2):
        ctx = context(cache, tmp_path / "b", seed=1)
        _same(good, run("knn_homophily", prm, ctx, "L0"))
        assert ctx.knn_sources == {"computed": 1}
    assert other.is_dir()


def test_an_unwritable_store_costs_time_only(layers, tmp_path):
    """`knn` is a file, so no folder can be made under it (chmod does not stop root)."""
    cache, _, _, genes = layers
    prm = {"gene_set": genes, "k": 8, "n_permutations": 199}
    good = run("knn_homophily", prm, context(cache, tmp_path / "a", seed=1), "L0")
    (tmp_path / "b" / "work").mkdir(parents=True)
    (tmp_path / "b" / "work" / "knn").write_text("in the way")
    for _ in range(2):
        ctx = context(cache, tmp_path / "b", seed=1)
        _same(good, run("knn_homophily", prm, ctx, "L0"))
        assert ctx.knn_sources == {"computed": 1}
    assert (tmp_path / "b" / "work" / "knn").read_text() == "in the way"


def test_a_campaign_records_where_its_lists_came_from(small_cache, tmp_path):
    """Two k-NN hypotheses in one campaign: the first computes each layer's list, the second
    reads them; the provenance says so."""
    from test_executor import _queue

    from geoscreen.agent.campaign import CampaignConfig, run_campaign
    from geoscreen.store.query import show_hypothesis

    raws = [{"statement": f"kNN {s}", "probe": "knn_graph", "params": {"k": 6, "statistic": s},
             "across_layers": "trend"} for s in ("clustering", "transitivity")]
    ledger = tmp_path / "l.sqlite"
    _queue(ledger, raws)
    run_campaign(small_cache.path, ledger, CampaignConfig(
        iterations=1, per_iteration=2, brainstormer="none", seed=7, workers=1,
        work_dir=str(tmp_path / "work")))
    first, second = (show_hypothesis(str(ledger), h) for h in (1, 2))
    assert first["status"] == second["status"] == "done"
    n_layers = len(first["layers_detail"])
    assert first["provenance"]["knn_sources"] == {"computed": n_layers}
    assert second["provenance"]["knn_sources"] == {"store": n_layers}


def test_near_duplicate_genes_get_the_same_neighbours_in_any_block():
    """Genes with no signal (all-zero rows, kept with include_zero_genes) centre to nearly the
    same row: their float64 similarities tie to rounding, and which of them a row ranks first
    depended on the BLAS kernel (one row alone is a matrix-vector product).  Ties within the
    float64 error bound are broken by column, so a row's neighbours are the same alone, in
    any block and in the whole list, and an intact stored list always passes its spot check."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 256))
    X[:200] = 0.0
    U, S, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    Z = U * S
    assert not np.all(Z[:200] == Z[0])  # near-duplicates, not bit-identical
    full = np.sort(knn_neighbours(Z, 10), axis=1)
    alone = np.sort(np.concatenate([knn_neighbours(Z, 10, rows=np.array([i]))
                                    for i in range(200)]), axis=1)
    np.testing.assert_array_equal(alone, full[:200])
    np.testing.assert_array_equal(np.sort(knn_neighbours(Z, 10, block=7), axis=1), full)
    assert all(knn_store.spot_check(full, Z, 10) for _ in range(50))
    # the tie rule itself: within tol the lowest columns, above it every larger entry
    from geoscreen.probes.graph import top_k_ties_by_column

    row = np.array([[0.5, 0.9, 0.5 + 1e-15, 0.2, 0.5 - 1e-15, 0.95]])
    assert sorted(top_k_ties_by_column(row, 3, 1e-12)[0]) == [0, 1, 5]
    assert sorted(top_k_ties_by_column(row, 4, 1e-12)[0]) == [0, 1, 2, 5]


@pytest.mark.parametrize("axes", [None, list(range(1, 65)), [1, 2, 3], [2, 5]])
def test_rows_from_the_factors_equal_the_whole_list(axes):
    """A spot check reads a few rows' neighbours from the SVD's factors U and s without forming
    U * s (64 axes or more): the same neighbours as the whole list for every row, near-duplicate
    genes (all-zero rows centred) included, in the full space and in a 64-axis subspace;
    narrower subspaces form U * s, whose rows knn_neighbours computes (at 3 axes the
    near-duplicates' similarities spread 20 units in the last place, past the tie tolerance,
    and the factors' rounding ranked one row differently).  An intact list passes, a shifted
    one fails."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1500, 96)) * np.linspace(2.0, 0.1, 96)
    X[:100] = 0.0
    U, S, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    if axes is not None:
        U, S = U[:, np.array(axes) - 1], S[np.array(axes) - 1]
    whole = np.sort(knn_neighbours(U * S, 9), axis=1)
    rows = np.arange(1500)
    f = knn_store.Factored(U, S)
    np.testing.assert_array_equal(np.sort(knn_store.row_neighbours(f, rows, 9), axis=1), whole)
    np.testing.assert_array_equal(
        np.sort(knn_store.row_neighbours(U * S, rows, 9), axis=1), whole)
    assert all(knn_store.spot_check(whole, f, 9) for _ in range(20))
    assert not knn_store.spot_check(np.roll(whole, 1, axis=0), f, 9, checks=1500)
    bad = U.copy()  # either path refuses a NaN
    bad[7, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        knn_store.row_neighbours(knn_store.Factored(bad, S), np.array([0, 1]), 9)


def test_near_duplicates_at_float32_rounding_pass_the_check_from_factors():
    """500 genes that differ from one vector by a few float32 units in the last place: their
    similarities fill the tie band, and the factors' rounding alone put a value across its
    edge in 41 of 100 checks of a correct list (a reviewer's case); the rows that differ are
    computed again from U * s, as the check did before the factors (which is not perfect
    here either: rows alone are rounded differently from the whole list's blocks): a check of
    the correct list fails only where that one fails, and a damaged list still fails."""
    rng = np.random.default_rng(1)
    n, d, m, k = 2000, 64, 500, 10
    X = rng.standard_normal((n, d)).astype(np.float32)
    base = rng.standard_normal(d).astype(np.float32)
    X[:m] = base + rng.integers(-4, 5, (m, d)) * np.spacing(np.abs(base))
    X = X.astype(np.float64)
    U, S, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    whole = knn_neighbours(U * S, k)
    f = knn_store.Factored(U, S)
    rows = np.arange(n)
    differ = (np.sort(knn_store.row_neighbours(f, rows, k), axis=1)
              != np.sort(whole, axis=1)).any(axis=1)
    assert differ.sum() > 0  # the case the recheck is for
    for at in (rows, rows[::7], np.flatnonzero(differ)[:8], np.arange(8)):
        agree = knn_store.rows_agree(whole, f, at, k)
        np.testing.assert_array_equal(agree, knn_store.rows_agree(whole, U * S, at, k))
    assert knn_store.rows_agree(whole, f, rows, k).mean() > 0.99
    assert not knn_store.rows_agree(np.roll(whole, 1, axis=0), f, rows, k).any()
