"""Token-level activations written during extraction (both model adapters): they average to the
cache's per-gene means, the --max-positions sample is seeded, exact and independent of batch
size, and bad options are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.extract.activations import open_activations
from geoscreen.extract.example_models import write_example_models
from geoscreen.extract.runner import ExtractOptions, extract


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models")
    write_example_models(out)
    return out


def run(models: Path, tmp: Path, model: str, tag: str, **kw):
    opts = {"max_cells": 30, "progress": False, "max_length": 200, "model": model, **kw}
    cache, stats = extract(models / model, models / "pbmc68k.h5ad", tmp / f"c_{tag}",
                           ExtractOptions(activations=str(tmp / f"a_{tag}"), **opts))
    return cache, open_activations(tmp / f"a_{tag}")


@pytest.mark.parametrize("model", ["scgpt", "geneformer"])
def test_activations_average_to_the_cache_means(models, tmp_path, model):
    cache, acts = run(models, tmp_path, model, "all", batch_size=7)
    assert acts.layers == cache.layers and acts.dim == cache.dim
    assert acts.genes() == list(cache.genes.symbols)
    rows = np.asarray(acts.index("gene_row"))
    counts = np.bincount(rows, minlength=cache.n_genes)
    np.testing.assert_array_equal(counts, cache.extra("gene_token_counts"))
    for layer in cache.layers:
        X = np.concatenate(acts.shards(layer)).astype(np.float64)
        sums = np.zeros((cache.n_genes, cache.dim))
        np.add.at(sums, rows, X)
        means = sums / np.maximum(counts, 1)[:, None]
        np.testing.assert_allclose(means, cache.array(layer), atol=1e-5, rtol=1e-5)
    assert set(np.asarray(acts.index("cell_index"))) == set(cache.extra("cell_index"))
    assert (np.asarray(acts.index("token_pos")) >= 1).all()  # position 0 is <cls>
    assert acts.verify() == []
    assert acts.manifest["cache_checksum"] == cache.checksum


def test_the_position_sample_is_seeded_exact_and_batch_independent(models, tmp_path):
    _, full = run(models, tmp_path, "scgpt", "full", batch_size=8)
    _, a = run(models, tmp_path, "scgpt", "a", batch_size=8, max_positions=1000)
    _, b = run(models, tmp_path, "scgpt", "b", batch_size=3, max_positions=1000)
    _, c = run(models, tmp_path, "scgpt", "c", batch_size=8, max_positions=1000, seed=1)

    def keyed(store, layer="L2"):
        key = np.asarray(store.index("cell_index")) * 10_000 + np.asarray(
            store.index("token_pos"))
        order = np.argsort(key)
        return key[order], np.concatenate(store.shards(layer))[order]

    ka, va = keyed(a)
    kb, vb = keyed(b)
    assert a.n_positions == 1000 and ka.size == 1000
    np.testing.assert_array_equal(ka, kb)
    np.testing.assert_allclose(va, vb, atol=1e-5)
    kc, _ = keyed(c)
    assert not np.array_equal(ka, kc)  # another seed, another sample
    kf, vf = keyed(full)
    at = np.searchsorted(kf, ka)
    np.testing.assert_array_equal(kf[at], ka)  # a subset of all positions ...
    np.testing.assert_allclose(vf[at], va, atol=1e-5)  # ... with the same vectors
    assert a.manifest["sampling"]["n_gene_tokens"] == full.n_positions


def test_float16_and_a_layer_subset(models, tmp_path):
    cache, acts = run(models, tmp_path, "geneformer", "h", activation_dtype="float16",
                      activation_layers="first,last", max_positions=500)
    assert acts.layers == ["L1", "L3"] and acts.manifest["dtype"] == "float16"
    assert acts.shards("last")[0].dtype == np.float16 and acts.n_positions == 500


@pytest.mark.parametrize("kw,match", [
    ({"activation_dtype": "int8"}, "field '--activation-dtype': is 'int8'"),
    ({"max_positions": 0}, "field '--max-positions': is 0"),
    ({"activation_layers": "L9"}, "unknown layer 'L9'"),
])
def test_bad_activation_options_write_nothing(models, tmp_path, kw, match):
    with pytest.raises(GeoscreenError, match=match):
        run(models, tmp_path, "scgpt", "bad", **kw)
    assert not (tmp_path / "a_bad").exists() and not (tmp_path / "c_bad").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_an_existing_activation_folder_is_kept(models, tmp_path):
    (tmp_path / "a_x").mkdir()
    (tmp_path / "a_x" / "mine.txt").write_text("keep")
    with pytest.raises(GeoscreenError, match="field '--activations': already exists"):
        run(models, tmp_path, "scgpt", "x")
    assert (tmp_path / "a_x" / "mine.txt").read_text() == "keep"
    assert not (tmp_path / "c_x").exists()
    with pytest.raises(GeoscreenError, match="is the cache folder itself"):
        extract(models / "scgpt", models / "pbmc68k.h5ad", tmp_path / "same",
                ExtractOptions(activations=str(tmp_path / "same"), progress=False))
