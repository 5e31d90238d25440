"""Bad input gets one clear line and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from geoscreen.errors import GeoscreenError
from geoscreen.extract.runner import ExtractOptions, extract
from geoscreen.extract.synthetic import (
    SMALL_ARGS,
    pbmc68k_counts,
    pbmc68k_path,
    small_vocab,
    write_counts_h5ad,
    write_random_checkpoint,
)

QUIET = {"progress": False, "max_cells": 4, "batch_size": 2}


@pytest.fixture(scope="module")
def pbmc():
    return pbmc68k_counts()


@pytest.fixture(scope="module")
def small(tmp_path_factory, pbmc) -> Path:
    _, _, genes = pbmc
    return write_random_checkpoint(tmp_path_factory.mktemp("small"), small_vocab(genes[:700]),
                                   SMALL_ARGS)


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory, pbmc) -> Path:
    counts, cells, genes = pbmc
    return write_counts_h5ad(tmp_path_factory.mktemp("data") / "counts.h5ad", counts[:20],
                             cells[:20], genes)


def refused(ckpt, data, tmp_path: Path, match: str, **opts) -> GeoscreenError:
    """Run extract expecting a GeoscreenError; check that nothing was written."""
    out = tmp_path / "out" / "cache"
    with pytest.raises(GeoscreenError, match=match) as info:
        extract(ckpt, data, out, ExtractOptions(**{**QUIET, **opts}))
    assert "\n" not in str(info.value)
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []  # no scratch or temporary cache left behind
    return info.value


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("missing", ["args.json", "vocab.json", "best_model.pt"])
def test_checkpoint_dir_missing_a_file(small, counts_file, tmp_path, missing):
    ck = copy_ckpt(small, tmp_path / "ck")
    (ck / missing).unlink()
    refused(ck, counts_file, tmp_path, f"is missing {missing}")


def test_checkpoint_dir_that_does_not_exist(counts_file, tmp_path):
    refused(tmp_path / "nope", counts_file, tmp_path, "is not a directory")


@pytest.mark.parametrize("edit,match", [
    (lambda a: a.pop("embsize"), "field 'embsize': is missing, so the model size is unknown"),
    (lambda a: a.update(nlayers="twelve"), "field 'nlayers': is 'twelve'; expected a whole"),
    (lambda a: a.update(nheads=5), "embsize 64 is not divisible by nheads 5"),
    (lambda a: a.update(d_hid=0), "field 'd_hid': is 0"),
    (lambda a: a.update(input_emb_style="category"), "only the continuous value encoder"),
    (lambda a: a.update(nlayers=2),
     r"has tensor transformer_encoder\.layers\.2\..* that this scGPT architecture does not"),
])
def test_args_json_with_unknown_sizes(small, counts_file, tmp_path, edit, match):
    ck = copy_ckpt(small, tmp_path / "ck")
    args = json.loads((ck / "args.json").read_text())
    edit(args)
    (ck / "args.json").write_text(json.dumps(args))
    refused(ck, counts_file, tmp_path, match)


def test_vocab_with_gaps(small, counts_file, tmp_path):
    ck = copy_ckpt(small, tmp_path / "ck")
    vocab = json.loads((ck / "vocab.json").read_text())
    vocab[next(iter(vocab))] = 10_000
    (ck / "vocab.json").write_text(json.dumps(vocab))
    refused(ck, counts_file, tmp_path, "no gaps or repeats")


def test_genes_that_barely_overlap_the_vocabulary(small, pbmc, tmp_path):
    counts, cells, genes = pbmc
    renamed = [g if i < 150 else f"ENSG{i:011d}" for i, g in enumerate(genes)]
    data = write_counts_h5ad(tmp_path / "ids.h5ad", counts[:20], cells[:20], renamed)
    err = refused(small, data, tmp_path,
                  r"only 150 of 765 genes \(19\.6%\) are in the model vocabulary; the minimum "
                  r"is 50%")
    assert "--min-overlap" in str(err)
    cache, _ = extract(small, data, tmp_path / "ok", ExtractOptions(**QUIET, min_overlap=0.15))
    assert cache.n_genes == 150
    assert cache.manifest["metadata"]["data"]["vocab_overlap"] == pytest.approx(150 / 765, abs=1e-6)


def test_no_overlap_points_at_a_better_gene_column(small, pbmc, tmp_path):
    import anndata

    counts, cells, genes = pbmc
    adata = anndata.AnnData(X=counts[:10])
    adata.obs_names = cells[:10]
    adata.var_names = [f"ENSG{i:011d}" for i in range(len(genes))]
    adata.var["feature_name"] = genes
    adata.write_h5ad(tmp_path / "ens.h5ad")
    refused(small, tmp_path / "ens.h5ad", tmp_path, r"0 of 765 genes.*--gene-col feature_name")
    cache, _ = extract(small, tmp_path / "ens.h5ad", tmp_path / "ok",
                       ExtractOptions(**QUIET, gene_col="feature_name"))
    assert cache.n_genes == 700


def test_scaled_values_are_refused(small, tmp_path):
    # pbmc68k_reduced's X is scaled (z-scored): negative values
    refused(small, pbmc68k_path(), tmp_path, r"has value -[\d.]+: negative, so this looks like "
                                             r"scaled data, not counts \(point at the raw counts")


def test_log_normalised_values_are_refused_unless_allowed(small, tmp_path):
    # pbmc68k_reduced's raw.X is log-normalised: non-negative but not whole numbers
    refused(small, pbmc68k_path(), tmp_path, "not a whole number, so these are not counts",
            use_raw=True)
    cache, _ = extract(small, pbmc68k_path(), tmp_path / "ok",
                       ExtractOptions(**QUIET, use_raw=True, allow_non_counts=True))
    assert cache.manifest["metadata"]["data"]["matrix"] == "raw.X"


def test_counts_in_a_layer(small, pbmc, tmp_path):
    counts, cells, genes = pbmc
    scaled = sp.csr_matrix(-np.ones((20, len(genes)), dtype=np.float32))
    data = write_counts_h5ad(tmp_path / "layer.h5ad", counts[:20], cells[:20], genes,
                             layer="counts", x=scaled)
    refused(small, data, tmp_path, "negative")
    refused(small, data, tmp_path, r"has no layer 'raw_counts' \(layers: counts\)",
            layer="raw_counts")
    cache, _ = extract(small, data, tmp_path / "ok", ExtractOptions(**QUIET, layer="counts"))
    assert cache.manifest["metadata"]["data"]["matrix"] == "layers/counts"


def test_not_an_h5ad_file(small, tmp_path):
    bad = tmp_path / "cells.h5ad"
    bad.write_text("not hdf5")
    refused(small, bad, tmp_path, "cannot be read as an AnnData .h5ad file")
    refused(small, tmp_path / "missing.h5ad", tmp_path, "does not exist")


def test_existing_output_is_kept(small, counts_file, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(GeoscreenError, match="already exists"):
        extract(small, counts_file, out, ExtractOptions(**QUIET))
    assert (out / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("opts,match", [
    ({"dtype": "float16"}, "field '--dtype': is 'float16'"),
    ({"device": "tpu"}, "field '--device'"),
    ({"batch_size": 0}, "field '--batch-size'"),
    ({"max_cells": 0}, "field '--max-cells'"),
])
def test_bad_options(small, counts_file, tmp_path, opts, match):
    refused(small, counts_file, tmp_path, match, **opts)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu(small, counts_file, tmp_path):
    refused(small, counts_file, tmp_path, "no CUDA GPU is available", device="cuda")


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_weights_are_refused_before_the_data_is_read(small, tmp_path, cut):
    """A truncated best_model.pt (an interrupted download) is named with the fix, in full,
    before any data work: the data path here does not even exist."""
    ckpt = copy_ckpt(small, tmp_path / "ckpt")
    weights = ckpt / "best_model.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[:int(len(data) * cut)])
    err = refused(ckpt, tmp_path / "never-read.h5ad", tmp_path,
                  "is not a complete PyTorch checkpoint")
    text = str(err)
    assert "best_model.pt" in text and text.endswith("compare its size with the source)")
    assert "download best_model.pt again" in text


def test_a_damaged_weights_file_gets_the_whole_message_and_a_fix(small, counts_file, tmp_path):
    """A complete archive whose pickle is garbage: the loader's message in full (its first
    line, not cut mid-word at 300 characters) and what to do."""
    import zipfile

    ckpt = copy_ckpt(small, tmp_path / "ckpt")
    weights = ckpt / "best_model.pt"
    with zipfile.ZipFile(small / "best_model.pt") as src, \
            zipfile.ZipFile(weights, "w", zipfile.ZIP_STORED) as dst:
        for m in src.infolist():
            data = src.read(m)
            dst.writestr(m, b"\x80\x02garbage" * 40 if m.filename.endswith("data.pkl") else data)
    err = refused(ckpt, counts_file, tmp_path, "cannot be read safely as a PyTorch checkpoint")
    text = str(err)
    assert "download best_model.pt again and compare its size with the source" in text
    assert text.endswith("save model.state_dict() with torch.save)")
    assert "field '--checkpoint'" in text and len(text) < 700


def test_use_raw_hint_does_not_suggest_use_raw_again(small, tmp_path):
    err = refused(small, pbmc68k_path(), tmp_path, "not a whole number", use_raw=True)
    assert "--use-raw" not in str(err).split("(", 1)[1]
    assert "--layer NAME" in str(err)
