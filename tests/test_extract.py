"""scGPT extraction end to end: verified load, equivalence with scGPT's own embed_data, exact
per-gene means against a slow direct reference, and a cache the screening code can open.

Checkpoints are random-weight TransformerModels in the published file format (flash-attn names,
pretraining flag embedding, no classifier): one with the whole-human shapes (60,697 tokens,
512-d, 8 heads, 12 layers) and a small one.  Cells are scanpy's pbmc68k_reduced, read from the
installed wheel with anndata.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import typer
from typer.testing import CliRunner

from geoscreen.agent.cli.extract import register
from geoscreen.errors import GeoscreenError
from geoscreen.extract.checkpoint import (
    ENCODER_PREFIXES,
    WEIGHTS_FILE,
    load_checkpoint,
    to_pytorch_names,
)
from geoscreen.extract.runner import ExtractOptions, extract, layer_names
from geoscreen.extract.scgpt_reference import embed_data
from geoscreen.extract.synthetic import (
    SMALL_ARGS,
    WHOLE_HUMAN_ARGS,
    WHOLE_HUMAN_VOCAB_SIZE,
    census_vocab,
    distinct_counts,
    pbmc68k_counts,
    small_vocab,
    with_special_tokens,
    write_counts_h5ad,
    write_random_checkpoint,
)
from geoscreen.extract.tokens import TokenizerConfig, tokenize_cell
from geoscreen.store.cache import open_cache, sha256_file

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def pbmc():
    return pbmc68k_counts()


@pytest.fixture(scope="module")
def whole_human(tmp_path_factory) -> Path:
    vocab = with_special_tokens(census_vocab())
    return write_random_checkpoint(tmp_path_factory.mktemp("whole_human"), vocab,
                                   WHOLE_HUMAN_ARGS, seed=1)


@pytest.fixture(scope="module")
def whole_human_loaded(whole_human):
    return load_checkpoint(whole_human)


@pytest.fixture(scope="module")
def small(tmp_path_factory, pbmc) -> Path:
    _, _, genes = pbmc
    return write_random_checkpoint(tmp_path_factory.mktemp("small"), small_vocab(genes[:700]),
                                   SMALL_ARGS, seed=2)


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory, pbmc) -> Path:
    counts, cells, genes = pbmc
    return write_counts_h5ad(tmp_path_factory.mktemp("data") / "pbmc_counts.h5ad", counts,
                             cells, genes)


@pytest.fixture(scope="module")
def distinct_file(tmp_path_factory, pbmc) -> Path:
    counts, cells, genes = pbmc
    return write_counts_h5ad(tmp_path_factory.mktemp("data") / "pbmc_distinct.h5ad",
                             distinct_counts(counts), cells, genes)


# -- loading ------------------------------------------------------------------------------------
def test_whole_human_load_uses_every_tensor(whole_human, whole_human_loaded):
    loaded = whole_human_loaded
    state = torch.load(whole_human / WEIGHTS_FILE, weights_only=True)
    report = loaded.report
    assert len(loaded.vocab) == WHOLE_HUMAN_VOCAB_SIZE
    cfg = loaded.config
    assert (cfg.embsize, cfg.nheads, cfg.d_hid, cfg.nlayers, cfg.n_bins, cfg.pad_value,
            cfg.max_seq_len) == (512, 8, 512, 12, 51, -2.0, 1200)
    assert report.accounted == report.n_tensors == len(state)
    assert report.flash_names_mapped == 2 * 12
    assert report.heads_not_in_model == {
        "flag_encoder.weight": "pretraining-only head, not in TransformerModel"}
    # Every tensor on the representation path is in the model, bit for bit.
    model_state = loaded.model.state_dict()
    mapped, _ = to_pytorch_names(state)
    encoder_keys = [k for k in model_state if k.startswith(ENCODER_PREFIXES)]
    assert report.n_encoder_tensors == len(encoder_keys)
    assert len(encoder_keys) == 3 + 6 + 12 * 12  # gene enc, value enc, 12 per layer
    for key in encoder_keys:
        assert torch.equal(model_state[key], mapped[key]), key
    for key in report.heads_loaded:
        assert torch.equal(model_state[key], mapped[key]), key
    assert not loaded.model.transformer_encoder.use_nested_tensor
    assert loaded.checksums[WEIGHTS_FILE] == sha256_file(whole_human / WEIGHTS_FILE)


def _variant(src: Path, dst: Path, edit) -> Path:
    dst.mkdir()
    for name in ("args.json", "vocab.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    state = torch.load(src / WEIGHTS_FILE, weights_only=True)
    edit(state)
    torch.save(state, dst / WEIGHTS_FILE)
    return dst


def test_missing_tensor_is_refused(small, tmp_path):
    ck = _variant(small, tmp_path / "ck", lambda s: s.pop(
        "transformer_encoder.layers.1.norm2.bias"))
    with pytest.raises(GeoscreenError, match=r"missing tensor transformer_encoder\.layers\.1\."
                                             r"norm2\.bias"):
        load_checkpoint(ck)


def test_misshapen_tensor_is_refused(small, tmp_path):
    key = "transformer_encoder.layers.2.linear1.weight"

    def transpose(s):
        s[key] = s[key].t().contiguous()

    ck = _variant(small, tmp_path / "ck", transpose)
    with pytest.raises(GeoscreenError, match=r"linear1\.weight' has shape \[64, 96\] but the "
                                             r"model built from args\.json/vocab\.json needs "
                                             r"\[96, 64\]"):
        load_checkpoint(ck)


def test_unknown_tensor_is_refused(small, tmp_path):
    def add(s):
        s["transformer_encoder.layers.3.linear1.weight"] = torch.zeros(96, 64)

    ck = _variant(small, tmp_path / "ck", add)
    with pytest.raises(GeoscreenError, match="layers.3.linear1.weight that this scGPT "
                                             "architecture does not have"):
        load_checkpoint(ck)


def test_args_json_disagreeing_with_weights_is_refused(small, tmp_path):
    ck = _variant(small, tmp_path / "ck", lambda s: None)
    args = json.loads((ck / "args.json").read_text())
    (ck / "args.json").write_text(json.dumps({**args, "d_hid": 128}))
    with pytest.raises(GeoscreenError, match=r"needs \[128, 64\]"):
        load_checkpoint(ck)


class NotATensor:
    """Pickled by reference: loading it would need this module's code."""


def test_file_that_needs_code_is_refused(small, tmp_path):
    ck = _variant(small, tmp_path / "ck", lambda s: None)
    state = torch.load(ck / WEIGHTS_FILE, weights_only=True)
    state["payload"] = NotATensor()
    torch.save(state, ck / WEIGHTS_FILE)
    with pytest.raises(GeoscreenError, match=r"needs code to load \(test_extract\.NotATensor\), "
                                             r"so it was refused"):
        load_checkpoint(ck)
    (ck / WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(GeoscreenError, match="cannot be read safely as a PyTorch checkpoint"):
        load_checkpoint(ck)


def test_pytorch_names_are_accepted(tmp_path, pbmc):
    _, _, genes = pbmc
    ck = write_random_checkpoint(tmp_path / "ck", small_vocab(genes[:700]), SMALL_ARGS,
                                 flash_names=False)
    loaded = load_checkpoint(ck)
    assert loaded.report.flash_names_mapped == 0
    assert loaded.report.accounted == loaded.report.n_tensors


# -- equivalence with scGPT's own pipeline ------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _scgpt_cls(ckpt: Path, data: Path, n_cells: int, batch_size: int) -> np.ndarray:
    adata = anndata.read_h5ad(data)[:n_cells].copy()
    with pytest.warns(UserWarning):  # scGPT warns that flash-attn is absent and falls back
        result = embed_data()(adata, ckpt, gene_col="index", max_length=1200,
                              batch_size=batch_size, device="cpu", use_fast_transformer=True)
    return np.asarray(result.obsm["X_scGPT"])


@pytest.mark.parametrize("which,n_cells,batch", [("whole_human", 8, 8), ("small", 40, 6)])
def test_final_cls_matches_scgpt_embed_data(request, distinct_file, tmp_path, which, n_cells,
                                            batch):
    """Same cells through scGPT's embed_data and through our hooks: the <cls> vectors agree.

    Each cell's values are distinct whole numbers (pbmc68k's sparsity pattern), so scGPT's
    binning has no random tie-breaks, and no cell exceeds 1,200 tokens, so nothing is
    subsampled: the two pipelines see identical tokens.
    """
    ckpt = request.getfixturevalue(which)
    data = write_counts_h5ad(tmp_path / "cells.h5ad",
                             *_first_cells(anndata.read_h5ad(distinct_file), n_cells))
    cache, _ = extract(ckpt, data, tmp_path / "cache",
                       ExtractOptions(batch_size=batch - 1, **QUIET))
    ours = _normalise(cache.extra(f"cls_{cache.layers[-1]}"))
    theirs = _normalise(_scgpt_cls(ckpt, data, n_cells, batch))
    assert list(cache.extra("cell_ids")) == [str(c) for c in anndata.read_h5ad(data).obs_names]
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


def _first_cells(adata, n):
    sub = adata[:n]
    return sp.csr_matrix(sub.X), [str(c) for c in sub.obs_names], [str(g) for g in sub.var_names]


# -- exact per-gene means -----------------------------------------------------------------------
def _direct_reference(loaded, counts: sp.csr_matrix, genes: list[str], cells: np.ndarray,
                      seed: int, max_len: int):
    """One cell at a time, no padding, no hooks, layer modules called directly; float64 sums."""
    model, vocab = loaded.model, loaded.vocab
    tok = TokenizerConfig(cls_id=vocab["<cls>"], pad_id=vocab["<pad>"], pad_value=-2.0,
                          max_len=max_len, seed=seed)
    n_layers = loaded.config.nlayers + 1
    sums: dict[int, np.ndarray] = defaultdict(lambda: np.zeros((n_layers, model.d_model)))
    n: dict[int, int] = defaultdict(int)
    cls = np.zeros((n_layers, len(cells), model.d_model))
    with torch.inference_mode():
        for k, cell in enumerate(cells):
            row = counts[int(cell)].toarray().ravel()
            cols = [c for c in np.flatnonzero(row) if genes[c] in vocab]
            ids, vals = tokenize_cell(np.array([vocab[genes[c]] for c in cols]), row[cols], tok,
                                      int(cell))
            x = model.encoder(torch.from_numpy(ids)[None]) + \
                model.value_encoder(torch.from_numpy(vals)[None])
            states = [x]
            for layer in model.transformer_encoder.layers:
                x = layer(x)
                states.append(x)
            h = torch.stack(states)[:, 0].double().numpy()  # (layers, tokens, dim)
            cls[:, k] = h[:, 0]
            for pos in range(1, ids.size):
                sums[int(ids[pos])] += h[:, pos]
                n[int(ids[pos])] += 1
    return sums, n, cls


PER_GENE_OPTS = {"max_cells": 5, "batch_size": 2, "seed": 7}


@pytest.fixture(scope="module")
def whole_cache(whole_human, counts_file, tmp_path_factory):
    """One whole-human-shape extraction shared by the per-gene and cache tests."""
    out = tmp_path_factory.mktemp("whole_cache") / "cache"
    return extract(whole_human, counts_file, out, ExtractOptions(**PER_GENE_OPTS, **QUIET))


def _check_against_reference(cache, loaded, pbmc, max_len: int) -> None:
    counts, _, genes = pbmc
    cells = np.asarray(cache.extra("cell_index"))
    assert cells.size == PER_GENE_OPTS["max_cells"]
    sums, n, cls = _direct_reference(loaded, counts, genes, cells, seed=PER_GENE_OPTS["seed"],
                                     max_len=max_len)
    token_counts = np.asarray(cache.extra("gene_token_counts"))
    seen = 0
    for row, symbol in enumerate(cache.genes.symbols):
        tid = loaded.vocab[symbol]
        assert token_counts[row] == n.get(tid, 0), symbol
        for li, layer in enumerate(cache.layers):
            got = np.asarray(cache.array(layer)[row], dtype=np.float64)
            want = sums[tid][li] / n[tid] if n.get(tid) else np.zeros_like(got)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=symbol)
        seen += tid in n
    assert seen == len(n) > 0
    assert np.array_equal(cache.genes.zero, token_counts == 0)
    for li, layer in enumerate(cache.layers):
        np.testing.assert_allclose(cache.extra(f"cls_{layer}"), cls[li], rtol=1e-4, atol=2e-5)


def test_per_gene_means_match_direct_reference_whole_human(whole_cache, whole_human_loaded,
                                                           pbmc):
    cache, _ = whole_cache
    _check_against_reference(cache, whole_human_loaded, pbmc, max_len=1200)


def test_per_gene_means_match_direct_reference_with_subsampling(small, counts_file, pbmc,
                                                                tmp_path):
    cache, _ = extract(small, counts_file, tmp_path / "cache",
                       ExtractOptions(**PER_GENE_OPTS, max_length=64, **QUIET))
    assert np.asarray(cache.extra("cell_n_tokens")).max() == 64  # cells were subsampled
    _check_against_reference(cache, load_checkpoint(small), pbmc, max_len=64)


def test_results_do_not_depend_on_batch_size(small, counts_file, tmp_path):
    a, _ = extract(small, counts_file, tmp_path / "a",
                   ExtractOptions(max_cells=20, batch_size=3, seed=3, max_length=100, **QUIET))
    b, _ = extract(small, counts_file, tmp_path / "b",
                   ExtractOptions(max_cells=20, batch_size=16, seed=3, max_length=100, **QUIET))
    assert np.array_equal(a.extra("cell_ids"), b.extra("cell_ids"))
    for layer in a.layers:
        np.testing.assert_allclose(a.array(layer), b.array(layer), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.extra(f"cls_{layer}"), b.extra(f"cls_{layer}"), rtol=1e-4,
                                   atol=1e-5)
    c, _ = extract(small, counts_file, tmp_path / "c",
                   ExtractOptions(max_cells=20, batch_size=3, seed=4, max_length=100, **QUIET))
    assert not np.array_equal(a.extra("cell_ids"), c.extra("cell_ids"))


# -- the cache ----------------------------------------------------------------------------------
def test_cache_round_trips_and_opens_for_screening(whole_human, whole_cache, counts_file):
    written, stats = whole_cache
    out = written.path
    cache = open_cache(out)
    assert cache.checksum == written.checksum and cache.verify() == []
    assert cache.layers == layer_names(12) == ["emb"] + [f"L{i}" for i in range(1, 13)]
    assert cache.dim == 512 and cache.dtype == "float32"
    assert cache.n_genes == 705  # pbmc68k genes in the census vocabulary
    for layer in cache.layers:
        rows, x = cache.matrix(layer)  # what probes read: present genes only
        assert x.shape == (int(cache.genes.present.sum()), 512) and np.isfinite(x).all()
        assert rows.size and np.abs(x).sum(axis=1).min() > 0
        assert cache.extra(f"cls_{layer}").shape == (5, 512)
    meta = cache.manifest["metadata"]
    assert meta["checkpoint"]["sha256"]["best_model.pt"] == sha256_file(
        whole_human / WEIGHTS_FILE)
    assert meta["data"]["sha256"] == sha256_file(counts_file)
    assert meta["data"]["n_genes_in_vocab"] == 705 and meta["data"]["n_genes_in_file"] == 765
    assert meta["cells"]["n_embedded"] == 5 == stats.n_cells_embedded
    params = meta["params"]
    assert {k: params[k] for k in ("max_cells", "batch_size", "device", "dtype", "seed",
                                   "max_length", "n_bins", "pad_value")} == {
        "max_cells": 5, "batch_size": 2, "device": "cpu", "dtype": "float32", "seed": 7,
        "max_length": 1200, "n_bins": 51, "pad_value": -2.0}
    assert meta["checkpoint"]["load_report"]["accounted"] == \
        meta["checkpoint"]["load_report"]["n_tensors"]
    obs = [str(c) for c in anndata.read_h5ad(counts_file).obs_names]
    idx = np.asarray(cache.extra("cell_index"))
    assert list(cache.extra("cell_ids")) == [obs[i] for i in idx]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no scratch left


def test_cli_writes_a_cache(small, counts_file, tmp_path):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["extract", "--checkpoint", str(small), "--data",
                                      str(counts_file), "-o", str(out), "--max-cells", "4",
                                      "--batch-size", "2", "--seed", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "from 4 cells" in result.output
    assert open_cache(out).manifest["metadata"]["params"]["seed"] == 5
    again = CliRunner().invoke(app, ["extract", "--checkpoint", str(small), "--data",
                                     str(counts_file), "-o", str(out), "--quiet"])
    assert isinstance(again.exception, GeoscreenError)
    assert "already exists" in str(again.exception)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bfloat16_matches_cpu(small, counts_file, tmp_path):
    opts = {"max_cells": 16, "batch_size": 8, **QUIET}
    cpu, _ = extract(small, counts_file, tmp_path / "cpu", ExtractOptions(**opts))
    gpu, _ = extract(small, counts_file, tmp_path / "gpu",
                     ExtractOptions(device="cuda", dtype="bfloat16", **opts))
    for layer in cpu.layers:
        a, b = _normalise(cpu.extra(f"cls_{layer}")), _normalise(gpu.extra(f"cls_{layer}"))
        assert (a * b).sum(axis=1).min() > 0.99
