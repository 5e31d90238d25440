"""Caches to and from AnnData: lossless round trips, gene embeddings from varm, cell embeddings
from obsm, and one-line refusals (exit code 2) that write nothing."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from geoscreen.agent.cli import main
from geoscreen.store.anndata_io import export_h5ad, import_h5ad
from geoscreen.store.cache import open_cache, write_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(60)]
    layers = {n: rng.normal(size=(60, 8)).astype(np.float32) for n in ("emb", "L1", "L2")}
    layers["L2"][5] = 0  # a zero row, flagged
    return write_cache(tmp_path_factory.mktemp("c") / "cache", layers, genes, model="toy")


def run(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(args)
    got = capsys.readouterr()
    return rc, got.out, got.err


def test_all_layers_round_trip_losslessly(cache, tmp_path, capsys):
    f = tmp_path / "all.h5ad"
    rc, out, _ = run(["cache", "export", str(cache.path), "-o", str(f), "--layer", "all"], capsys)
    assert rc == 0 and "layers emb, L1, L2" in out
    ad = anndata.read_h5ad(f)  # what scanpy reads: genes as observations
    assert list(ad.obs_names) == list(cache.genes.symbols) and ad.shape == (60, 8)
    assert bool(ad.obs["zero"].iloc[5]) and not bool(ad.obs["zero"].iloc[4])
    np.testing.assert_array_equal(ad.X, cache.array("emb"))
    rc, _, _ = run(["cache", "import", str(f), "-o", str(tmp_path / "back")], capsys)
    assert rc == 0
    back = open_cache(tmp_path / "back")
    assert back.layers == cache.layers and back.model == "toy"
    assert list(back.genes.symbols) == list(cache.genes.symbols)
    for layer in cache.layers:
        np.testing.assert_array_equal(back.array(layer), cache.array(layer))
    meta = back.manifest["metadata"]
    assert meta["exported_from_cache"] == cache.checksum and meta["row_kind"] == "genes"


def test_one_layer_keeps_its_name(cache, tmp_path):
    f = export_h5ad(cache, tmp_path / "one.h5ad", layers=["L1"])
    back = import_h5ad(f, tmp_path / "back")
    assert back.layers == ["L1"]
    np.testing.assert_array_equal(back.array("L1"), cache.array("L1"))


def test_layer_roles_and_lists(cache, tmp_path, capsys):
    f = tmp_path / "two.h5ad"
    rc, out, _ = run(["cache", "export", str(cache.path), "-o", str(f), "--layer",
                      "first,last"], capsys)
    assert rc == 0 and "layers L1, L2" in out
    assert import_h5ad(f, tmp_path / "b").layers == ["L1", "L2"]


def test_gene_embeddings_from_varm(tmp_path):
    """A scanpy object of cells x genes carrying per-layer gene embeddings in varm."""
    rng = np.random.default_rng(1)
    var = pd.DataFrame({"symbol": [f"S{i}" for i in range(30)]},
                       index=[f"ENSG{i:011d}" for i in range(30)])
    ad = anndata.AnnData(X=rng.poisson(1, size=(12, 30)).astype(np.float32), var=var)
    ad.varm["layer_1"] = rng.normal(size=(30, 4))
    ad.varm["layer_2"] = rng.normal(size=(30, 4))
    f = tmp_path / "varm.h5ad"
    ad.write_h5ad(f)
    c = import_h5ad(f, tmp_path / "c", gene_col="symbol", keys=["layer_2", "layer_1"],
                    model="external")
    assert c.layers == ["layer_2", "layer_1"] and c.genes.symbols[0] == "S0"
    np.testing.assert_allclose(c.array("layer_1"), ad.varm["layer_1"], rtol=1e-6)
    assert c.manifest["metadata"]["h5ad_source"] == "varm"


def test_cell_embeddings_from_obsm(tmp_path, capsys):
    rng = np.random.default_rng(2)
    ad = anndata.AnnData(X=np.zeros((15, 3), dtype=np.float32),
                         obs=pd.DataFrame(index=[f"cell{i}" for i in range(15)]))
    ad.obsm["X_scgpt"] = rng.normal(size=(15, 6))
    ad.obsm["X_geneformer"] = rng.normal(size=(15, 6))
    ad.obsm["X_umap"] = rng.normal(size=(15, 2))
    f = tmp_path / "cells.h5ad"
    ad.write_h5ad(f)
    out = tmp_path / "c"
    rc, _, err = run(["cache", "import", str(f), "-o", str(out), "--from", "obsm"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "different widths" in err and "--keys" in err
    assert not out.exists()
    rc, _, _ = run(["cache", "import", str(f), "-o", str(out), "--from", "obsm", "--keys",
                    "X_scgpt,X_geneformer"], capsys)
    assert rc == 0
    c = open_cache(out)
    assert c.manifest["metadata"]["row_kind"] == "cells" and c.genes.symbols[3] == "cell3"


@pytest.mark.parametrize("args,match", [
    (["--keys", "emd"], "has no .layers['emd']; did you mean 'emb'?"),
    (["--from", "varm"], "has no matrices in .varm"),
    (["--from", "nowhere"], "field '--from': is 'nowhere'"),
    (["--gene-col", "sym"], "obs has no column 'sym'"),
    (["--genes", "g.txt"], "is for .npy imports"),
])
def test_bad_import_options(cache, tmp_path, capsys, args, match):
    f = export_h5ad(cache, tmp_path / "all.h5ad", layers=list(cache.layers))
    out = tmp_path / "c"
    rc, _, err = run(["cache", "import", str(f), "-o", str(out), *args], capsys)
    assert rc == 2 and err.count("\n") == 1 and match in err, err
    assert not out.exists()


def test_not_an_h5ad_and_existing_outputs(cache, tmp_path, capsys):
    bad = tmp_path / "x.h5ad"
    bad.write_text("not hdf5")
    rc, _, err = run(["cache", "import", str(bad), "-o", str(tmp_path / "c")], capsys)
    assert rc == 2 and "cannot be read as an AnnData .h5ad file" in err
    f = tmp_path / "e.h5ad"
    f.write_bytes(b"keep me")
    rc, _, err = run(["cache", "export", str(cache.path), "-o", str(f)], capsys)
    assert rc == 2 and "already exists" in err and f.read_bytes() == b"keep me"
    rc, _, err = run(["cache", "export", str(cache.path), "-o", str(tmp_path / "n.h5ad"),
                      "--layer", "L9"], capsys)
    assert rc == 2 and "unknown layer 'L9'" in err and not (tmp_path / "n.h5ad").exists()
    rc, _, err = run(["cache", "export", str(cache.path), "-o", str(tmp_path / "n.h5ad"),
                      "--format", "loom"], capsys)
    assert rc == 2 and "expected h5ad" in err
    f2 = export_h5ad(cache, tmp_path / "ok.h5ad", layers=["L1"])
    rc, _, err = run(["cache", "import", str(f2), "-o", str(cache.path)], capsys)
    assert rc == 2 and "already exists" in err
    assert open_cache(cache.path).layers == ["emb", "L1", "L2"]  # untouched
    assert list(Path(tmp_path).glob(".*")) == []  # no temporary file left behind
