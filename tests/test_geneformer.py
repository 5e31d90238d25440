"""Geneformer extraction: rank-value tokens as Geneformer's tokenizer makes them, hidden states
equal to a direct transformers forward pass, the real V2-316M configuration, Ensembl ids and
symbols, safe dictionaries, and one-line refusals that write nothing.

Models are random-weight ``BertForMaskedLM``s saved with ``save_pretrained`` (config.json +
model.safetensors) and dictionaries pickled as Geneformer ships them; cells are scanpy's
pbmc68k_reduced (counts reconstructed from raw.X), genes named by symbol as in the file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import typer
from typer.testing import CliRunner

from geoscreen.agent.cli import main
from geoscreen.agent.cli.extract import register
from geoscreen.errors import GeoscreenError
from geoscreen.extract.dictionaries import read_dictionary, write_json_dictionary
from geoscreen.extract.genes import symbol_to_ensembl
from geoscreen.extract.runner import ExtractOptions, extract
from geoscreen.extract.synthetic import (
    SMALL_ARGS,
    distinct_counts,
    pbmc68k_counts,
    small_vocab,
    write_counts_h5ad,
    write_random_checkpoint,
)
from geoscreen.extract.synthetic_geneformer import (
    SMALL_CONFIG,
    V2_316M_CONFIG,
    token_dictionary,
    write_pickle,
    write_random_geneformer,
)
from geoscreen.store.cache import open_cache
from geoscreen.store.resources.symbols import current_symbols

QUIET = {"progress": False, "model": "geneformer"}


@pytest.fixture(scope="module")
def pbmc():
    counts, cells, genes = pbmc68k_counts()
    return distinct_counts(counts, seed=3), cells, genes


@pytest.fixture(scope="module")
def vocab(pbmc):
    _, _, genes = pbmc
    return token_dictionary(3000, first_symbols=genes)


@pytest.fixture(scope="module")
def small(tmp_path_factory, vocab) -> Path:
    return write_random_geneformer(tmp_path_factory.mktemp("gf_small"), SMALL_CONFIG, vocab,
                                   seed=4)


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory, pbmc) -> Path:
    counts, cells, genes = pbmc
    return write_counts_h5ad(tmp_path_factory.mktemp("data") / "pbmc.h5ad", counts, cells, genes)


# -- a re-typed reference of Geneformer's TranscriptomeTokenizer.tokenize_anndata ------------

def reference_tokens(counts: sp.csr_matrix, genes: list[str], token_dict: dict[str, int],
                     medians: dict[str, float], input_size: int) -> list[np.ndarray]:
    """What Geneformer's tokenizer does with an .h5ad whose genes carry Ensembl ids: keep the
    dictionary's genes, X / n_counts * 10,000 / median, rank nonzero genes, <cls> ... <eos>."""
    ens = [symbol_to_ensembl(g, token_dict) for g in genes]
    loc = np.array([i for i, e in enumerate(ens) if e is not None and e in medians])
    norm = np.array([medians[ens[i]] for i in loc])
    tokens = np.array([token_dict[ens[i]] for i in loc])
    counts = sp.csr_matrix(counts, dtype=np.float64)  # float64 throughout, as ours
    n_counts = np.asarray(counts.sum(axis=1)).ravel()[:, None]
    X = counts[:, loc].toarray() / n_counts * 10_000 / norm
    out = []
    for row in X:
        nz = np.nonzero(row)[0]
        ranked = tokens[nz][np.argsort(-row[nz])][: input_size - 2]
        out.append(np.concatenate([[token_dict["<cls>"]], ranked, [token_dict["<eos>"]]]))
    return out


def test_tokens_equal_geneformer_rank_value_encoding(small, pbmc, vocab):
    from geoscreen.extract.data import map_genes, open_cells
    from geoscreen.extract.geneformer import GeneformerAdapter

    counts, cells, genes = pbmc
    medians = pickle.loads((small / "gene_median_dictionary_gc104M.pkl").read_bytes())
    adapter = GeneformerAdapter(small)
    adapter.check()
    adapter.set_max_length(256)
    adapter.load("cpu", "float32")
    path = write_counts_h5ad(small.parent / "tok.h5ad", counts[:60], cells[:60], genes)
    cm = open_cells(path)
    try:
        gm = map_genes(cm, adapter.vocab, min_overlap=0.5, key_of=adapter.vocab_key)
        idx = np.arange(60)
        full = cm.rows(idx)
        block = full[:, gm.columns]
        block.eliminate_zeros()
        block.sort_indices()
        ours = adapter.tokenize(block, gm.token_ids, idx,
                                np.asarray(full.sum(axis=1)).ravel(), seed=0)
    finally:
        cm.close()
    ref = reference_tokens(sp.csr_matrix(counts[:60]), genes, vocab, medians, 256)
    assert len(ours) == 60
    truncated = 0
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a.ids, b)
        truncated += b.size == 256
    assert truncated > 0  # some cells are longer than 254 genes: truncation was exercised
    assert all(c.values is None for c in ours)


def direct_hidden_states(model_dir: Path, token_lists: list[np.ndarray]) -> list[tuple]:
    """transformers' own forward, one cell at a time, no padding: all hidden states."""
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(model_dir)
    model.eval()
    out = []
    with torch.inference_mode():
        for ids in token_lists:
            res = model(input_ids=torch.as_tensor(ids)[None], output_hidden_states=True)
            out.append(tuple(h[0].numpy() for h in res.hidden_states))
    return out


def test_hidden_states_equal_a_direct_transformers_forward(small, counts_file, pbmc, vocab,
                                                           tmp_path):
    """Per-gene means and <cls> vectors of every layer equal those computed from transformers'
    output_hidden_states, cell by cell without padding (ours: batches of 7, padded)."""
    counts, cells, genes = pbmc
    n = 24
    cache, stats = extract(small, counts_file, tmp_path / "c",
                           ExtractOptions(max_cells=n, batch_size=7, max_length=200, **QUIET))
    medians = pickle.loads((small / "gene_median_dictionary_gc104M.pkl").read_bytes())
    meta = cache.manifest["metadata"]
    chosen = np.asarray(open_cache(cache.path).extra("cell_index"))  # embedded, in file order
    toks = reference_tokens(sp.csr_matrix(counts[chosen]), genes, vocab, medians, 200)
    hidden = direct_hidden_states(small, toks)
    n_layers = SMALL_CONFIG["num_hidden_layers"] + 1
    assert len(hidden[0]) == n_layers == len(cache.layers)
    row_of = {}
    for i, g in enumerate(cache.genes.symbols):
        row_of[vocab[symbol_to_ensembl(g, vocab)]] = i
    for layer in range(n_layers):
        sums = np.zeros((cache.n_genes, cache.dim))
        cnt = np.zeros(cache.n_genes)
        for t, h in zip(toks, hidden):
            for pos, tok in enumerate(t[1:-1], start=1):
                sums[row_of[int(tok)]] += h[layer][pos]
                cnt[row_of[int(tok)]] += 1
        ref = sums / np.maximum(cnt, 1)[:, None]
        ours = np.asarray(cache.array(cache.layers[layer]))
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)
        cls = np.asarray(open_cache(cache.path).extra(f"cls_{cache.layers[layer]}"))
        np.testing.assert_allclose(cls, np.stack([h[layer][0] for h in hidden]), atol=2e-4,
                                   rtol=1e-4)
    assert meta["model"] == "geneformer"
    assert stats.n_tokens == sum(t.size for t in toks)


def test_real_v2_316m_configuration(tmp_path_factory, pbmc, counts_file):
    """The published V2-316M shapes (18 layers, 1,152-d, 20,275 tokens) load and extract."""
    _, _, genes = pbmc
    vocab = token_dictionary(V2_316M_CONFIG["vocab_size"], first_symbols=genes)
    model_dir = write_random_geneformer(tmp_path_factory.mktemp("v2_316m"), V2_316M_CONFIG,
                                        vocab, seed=5)
    cache, stats = extract(model_dir, counts_file, tmp_path_factory.mktemp("o") / "c",
                           ExtractOptions(max_cells=2, batch_size=2, max_length=48, **QUIET))
    meta = cache.manifest["metadata"]
    assert cache.layers == ["emb"] + [f"L{i}" for i in range(1, 19)]
    assert cache.dim == 1152
    report = meta["checkpoint"]["load_report"]
    assert 314e6 < report["n_trunk_parameters"] < 317e6  # the "316M" trunk
    assert any(h.startswith("cls.predictions") for h in report["heads"])
    assert meta["checkpoint"]["config"]["num_hidden_layers"] == 18
    assert meta["checkpoint"]["vocab_size"] == 20275
    assert stats.n_tokens == 2 * 48
    shutil.rmtree(model_dir)


def test_ensembl_ids_and_symbols_give_the_same_cache(small, pbmc, vocab, tmp_path):
    """A file naming genes by Ensembl id (versioned) gives the cache a file naming them by
    symbol gives; cache rows are named by symbol either way."""
    counts, cells, genes = pbmc
    ens = [symbol_to_ensembl(g, vocab) or f"UNMAPPED_{g}" for g in genes]
    versioned = [f"{e}.7" if e.startswith("ENSG") else e for e in ens]
    by_sym = write_counts_h5ad(tmp_path / "sym.h5ad", counts[:30], cells[:30], genes)
    by_ens = write_counts_h5ad(tmp_path / "ens.h5ad", counts[:30], cells[:30], versioned)
    a, _ = extract(small, by_sym, tmp_path / "a", ExtractOptions(max_length=128, **QUIET))
    b, _ = extract(small, by_ens, tmp_path / "b", ExtractOptions(max_length=128, **QUIET))
    # an Ensembl id gets its current official symbol (ATPIF1 in the file is ATP5IF1 now)
    assert current_symbols(a.genes.symbols) == list(b.genes.symbols)
    assert not any(s.startswith("ENSG") for s in b.genes.symbols)
    for layer in a.layers:
        np.testing.assert_array_equal(np.asarray(a.array(layer)), np.asarray(b.array(layer)))
    meta = a.manifest["metadata"]["data"]
    assert meta["n_genes_mapped_by_id"] == meta["n_genes_in_vocab"] > 700


def test_duplicate_ensembl_columns_are_summed(small, pbmc, vocab, tmp_path):
    """Two columns naming one gene are summed before ranking (Geneformer's collapse_gene_ids):
    splitting a gene's counts over two columns leaves the cache unchanged."""
    counts, cells, genes = pbmc
    counts = sp.csr_matrix(counts[:20], dtype=np.float64)
    j = next(i for i, g in enumerate(genes) if symbol_to_ensembl(g, vocab))
    col = counts[:, j].toarray().ravel()
    half = np.floor(col / 2)
    split = sp.hstack([counts, sp.csr_matrix(half[:, None])]).tocsr().toarray()
    split[:, j] -= half
    ens = symbol_to_ensembl(genes[j], vocab)
    f1 = write_counts_h5ad(tmp_path / "one.h5ad", counts, cells[:20], genes)
    f2 = write_counts_h5ad(tmp_path / "two.h5ad", sp.csr_matrix(split), cells[:20],
                           [*genes, ens])
    a, _ = extract(small, f1, tmp_path / "a", ExtractOptions(max_length=128, **QUIET))
    b, _ = extract(small, f2, tmp_path / "b", ExtractOptions(max_length=128, **QUIET))
    assert a.genes.symbols == b.genes.symbols
    np.testing.assert_allclose(np.asarray(a.array("L3")), np.asarray(b.array("L3")), atol=1e-6)


def test_numpy_medians_and_json_dictionaries_are_read(small, counts_file, vocab, tmp_path):
    """Medians pickled as np.float64 (data-only unpickler) and a JSON conversion give the same
    cache as plain floats."""
    d = tmp_path / "np"
    shutil.copytree(small, d)
    med = pickle.loads((small / "gene_median_dictionary_gc104M.pkl").read_bytes())
    write_pickle(d / "gene_median_dictionary_gc104M.pkl",
                 {k: np.float64(v) for k, v in med.items()})
    js = tmp_path / "medians.json"
    assert write_json_dictionary(d / "gene_median_dictionary_gc104M.pkl", js) == len(med)
    assert read_dictionary(js, field="x") == med
    opts = {"max_cells": 10, "max_length": 64, **QUIET}
    a, _ = extract(small, counts_file, tmp_path / "a", ExtractOptions(**opts))
    b, _ = extract(d, counts_file, tmp_path / "b", ExtractOptions(**opts))
    c, _ = extract(d, counts_file, tmp_path / "c", ExtractOptions(gene_median=str(js), **opts))
    for other in (b, c):
        np.testing.assert_array_equal(np.asarray(a.array("L2")), np.asarray(other.array("L2")))


def test_pytorch_bin_weights_load_with_weights_only(tmp_path, vocab, counts_file, small):
    d = write_random_geneformer(tmp_path / "bin", SMALL_CONFIG, vocab, seed=4, weights="bin")
    assert (d / "pytorch_model.bin").is_file() and not (d / "model.safetensors").exists()
    opts = {"max_cells": 6, "max_length": 64, **QUIET}
    a, _ = extract(d, counts_file, tmp_path / "a", ExtractOptions(**opts))
    b, _ = extract(small, counts_file, tmp_path / "b", ExtractOptions(**opts))
    np.testing.assert_allclose(np.asarray(a.array("L3")), np.asarray(b.array("L3")), atol=1e-6)


# -- bad input: one line, nothing written ------------------------------------------------------

def refused(ckpt, data, tmp_path: Path, match: str, **opts) -> GeoscreenError:
    out = tmp_path / "out" / "cache"
    with pytest.raises(GeoscreenError, match=match) as info:
        extract(ckpt, data, out, ExtractOptions(**{"max_cells": 4, **QUIET, **opts}))
    assert "\n" not in str(info.value)
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []
    return info.value


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_dictionary_pickle_with_code_is_refused_and_never_run(small, counts_file, tmp_path):
    d = copy_model(small, tmp_path / "evil")
    marker = tmp_path / "pwned"
    write_pickle(d / "token_dictionary_gc104M.pkl", {"<pad>": 0, "x": _RunsCode(str(marker))})
    err = refused(d, counts_file, tmp_path, r"needs code to load \((posix|os|nt)\.system\)")
    assert "token_dictionary_gc104M.pkl" in str(err)
    assert not marker.exists()


def test_missing_dictionary_names_the_option(small, counts_file, tmp_path):
    d = copy_model(small, tmp_path / "nodict")
    (d / "gene_median_dictionary_gc104M.pkl").unlink()
    err = refused(d, counts_file, tmp_path, "field '--gene-median': names no gene median")
    assert "pass --gene-median PATH" in str(err)
    refused(d, counts_file, tmp_path, "does not exist", gene_median=str(tmp_path / "none.pkl"))


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(model_type="gpt2"), "field 'model_type': is 'gpt2'"),
    (lambda c: c.pop("hidden_size"), "field 'hidden_size': is None"),
    (lambda c: c.update(num_attention_heads=5), "hidden_size 48 is not divisible"),
    (lambda c: c.update(vocab_size=20275), "holds 3,000 tokens but config.json says vocab_size"),
    (lambda c: c.update(num_hidden_layers=4), "is missing tensor bert.encoder.layer.3"),
    (lambda c: c.update(intermediate_size=64), "has shape .* but the model built from config"),
])
def test_wrong_config_is_refused(small, counts_file, tmp_path, edit, match):
    d = copy_model(small, tmp_path / "cfg")
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    refused(d, counts_file, tmp_path, match)


def test_truncated_safetensors_is_refused_before_the_data_is_read(small, tmp_path):
    d = copy_model(small, tmp_path / "cut")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    refused(d, tmp_path / "no_such_data.h5ad", tmp_path, "header lists data up to byte")


def test_a_bin_that_needs_code_is_refused(small, counts_file, tmp_path):
    d = copy_model(small, tmp_path / "binevil")
    (d / "model.safetensors").unlink()
    torch.save({"bert.x": _RunsCode(str(tmp_path / "pwned"))}, d / "pytorch_model.bin")
    refused(d, counts_file, tmp_path, "needs code to load")
    assert not (tmp_path / "pwned").exists()


def test_no_overlap_with_the_vocabulary(small, pbmc, tmp_path):
    counts, cells, genes = pbmc
    f = write_counts_h5ad(tmp_path / "x.h5ad", counts[:5], cells[:5],
                          [f"NOTAGENE{i}" for i in range(len(genes))])
    refused(small, f, tmp_path, r"only 0 of 765 genes \(0.0%\) are in the model vocabulary")


def test_options_of_the_other_model_are_refused(small, counts_file, tmp_path):
    refused(small, counts_file, tmp_path, "field '--model': is 'genformer'; did you mean "
            "'geneformer'", model="genformer")
    refused(small, counts_file, tmp_path, "field '--token-dictionary': is for --model "
            "geneformer, not scgpt", model="scgpt", token_dictionary="x.pkl")
    refused(small, counts_file, tmp_path, "is 5000; the model has 512 positions",
            max_length=5000)


def test_cli_extracts_geneformer_and_exits_2_on_bad_input(small, counts_file, tmp_path,
                                                          capsys):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    out = tmp_path / "cache"
    args = ["extract", "--model", "geneformer", "--checkpoint", str(small), "--data",
            str(counts_file), "-o", str(out), "--max-cells", "4", "--max-length", "64", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "from 4 cells" in result.output and "Geneformer" in open_cache(out).manifest["model"]
    # through the real entry point: exit code 2 and one line naming the file
    capsys.readouterr()
    rc = main(["extract", "--model", "geneformer", "--checkpoint", str(small), "--data",
               str(counts_file), "-o", str(tmp_path / "c2"), "--gene-median",
               str(tmp_path / "missing.pkl")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "missing.pkl" in err and "does not exist" in err
    assert not (tmp_path / "c2").exists()


# -- the caches screen with the same specs; cross-model alignment on shared genes -------------

def test_scgpt_and_geneformer_caches_screen_with_the_same_spec(small, pbmc, counts_file,
                                                               tmp_path):
    import geoscreen

    counts, cells, genes = pbmc
    scgpt = write_random_checkpoint(tmp_path / "scgpt", small_vocab(genes[:600]), SMALL_ARGS,
                                    seed=2)
    opts = {"max_cells": 40, "progress": False}
    sc, _ = extract(scgpt, counts_file, tmp_path / "c_scgpt", ExtractOptions(**opts))
    gf, _ = extract(small, counts_file, tmp_path / "c_gf",
                    ExtractOptions(model="geneformer", max_length=256, **opts))
    shared = sorted(set(sc.genes.symbols) & set(gf.genes.symbols))
    assert len(shared) >= 550
    spec = {"statement": "axis 1 separates these genes", "probe": "axis_separation",
            "params": {"positive": "genes:" + ",".join(shared[:25])}, "layers": ["last"]}
    for c in (sc, gf):
        out = geoscreen.run_spec(spec, c.path, work_dir=tmp_path / "w")
        assert len(out.layers) == 1 and 0 < out.combined.p_value <= 1
    align = {"statement": "scGPT and Geneformer gene geometries align",
             "probe": "cross_model_alignment",
             "params": {"other_cache": str(gf.path), "other_layer": "last", "method": "cca",
                        "n_components": 5, "n_permutations": 199},
             "layers": ["last"]}
    res = geoscreen.run_spec(align, sc.path, work_dir=tmp_path / "w")
    layer = res.layers[0]
    assert 0 < layer.p_value <= 1 and np.isfinite(layer.effect_size)
    assert len(shared) - 20 <= layer.n <= len(shared)  # genes no embedded cell expressed drop
    # positive control: Geneformer against itself aligns perfectly: Cantelli's bound decides
    # it below the draws' floor of 1/200 (1.1), and the draws alone give that floor
    self_align = geoscreen.run_spec(align, gf.path, work_dir=tmp_path / "w")
    assert self_align.layers[0].statistic > 0.999
    assert self_align.layers[0].p_value < 1 / 200
    assert self_align.layers[0].extra["p_method"] == "cantelli"
    drawn = {**align, "params": {**align["params"], "null_method": "draws"}}
    self_drawn = geoscreen.run_spec(drawn, gf.path, work_dir=tmp_path / "w")
    assert self_drawn.layers[0].p_value == pytest.approx(1 / 200)
    # the catalogue's cross-model specs run as written once other_cache points at the pair
    from geoscreen.hypotheses.loader import load_specs
    from geoscreen.probes.registry import get_probe

    catalogue = Path(__file__).resolve().parents[1] / "hypotheses" / "catalogue"
    specs = [r.spec.model_dump(mode="json", exclude_none=True)
             for r in load_specs(catalogue / "14_cross_model_alignment.yaml")]
    assert all(sp_["params"]["other_cache"] == "caches/geneformer" for sp_ in specs)
    for sp_ in specs:
        sp_["params"] = {**sp_["params"], "other_cache": str(gf.path), "n_permutations": 199}
        out = geoscreen.run_spec(sp_, sc.path, work_dir=tmp_path / "w")
        assert 0 < out.combined.p_value <= 1
        assert len(out.layers) == (len(sc.layers) if sp_["layers"] == "all" else 1)
    # the cross-cache catalogue (CKA, principal angles, another cache's axis as a score) runs
    # on the same pair, the second cache standing in for a second seed, last layer to last
    for r in load_specs(catalogue / "35_cross_cache.yaml"):
        sp_ = r.spec.model_dump(mode="json", exclude_none=True)
        prm = dict(sp_["params"])
        if "other_cache" in prm:
            prm.update(other_cache=str(gf.path), other_layer="last")
        else:  # axis:PATH:LAYER:AXIS
            prm["score"] = prm["score"].replace("caches/geneformer", str(gf.path))
        if "n_permutations" in get_probe(sp_["probe"]).params.model_fields:
            prm["n_permutations"] = 199
        out = geoscreen.run_spec({**sp_, "params": prm, "layers": ["last"],
                                  "across_layers": "any"}, sc.path, work_dir=tmp_path / "w")
        assert len(out.layers) == 1 and 0 < out.combined.p_value <= 1, sp_["probe"]
        assert str(gf.path) in str(out.layers[0].extra.get("reference_layer", "")) or \
            out.layers[0].statistic_name in ("spearman_rho", "partial_spearman_rho",
                                             "rho"), out.layers[0].statistic_name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bfloat16_matches_cpu(small, counts_file, tmp_path):
    opts = {"max_cells": 16, "batch_size": 8, "max_length": 256, **QUIET}
    cpu, _ = extract(small, counts_file, tmp_path / "cpu", ExtractOptions(**opts))
    gpu, _ = extract(small, counts_file, tmp_path / "gpu",
                     ExtractOptions(device="cuda", dtype="bfloat16", **opts))
    for layer in cpu.layers:
        a, b = np.asarray(cpu.extra(f"cls_{layer}")), np.asarray(gpu.extra(f"cls_{layer}"))
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        assert (a * b).sum(axis=1).min() > 0.99


def test_v1_dictionaries_without_special_tokens(tmp_path, pbmc, counts_file):
    """A V1 model (2,048 positions, no <cls>/<eos> in the dictionary): sequences are the ranked
    genes alone, and no cell-token arrays are written (V1 has no cell token)."""
    _, _, genes = pbmc
    v2 = token_dictionary(1000, first_symbols=genes)
    genes_only = [k for k in v2 if not k.startswith("<")]
    vocab = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes_only)}}
    config = {**SMALL_CONFIG, "max_position_embeddings": 2048}
    d = write_random_geneformer(tmp_path / "v1", config, vocab, seed=6)
    cache, stats = extract(d, counts_file, tmp_path / "c",
                           ExtractOptions(max_cells=12, max_length=100, **QUIET))
    meta = cache.manifest["metadata"]
    assert meta["checkpoint"]["special_tokens"] == "none (V1)"
    assert not any(name.startswith("cls_") for name in cache.manifest["extra_files"])
    n_tok = np.asarray(cache.extra("cell_n_tokens"))
    assert n_tok.max() == 100 and stats.n_tokens == int(n_tok.sum())
    assert int(np.asarray(cache.extra("gene_token_counts")).sum()) == stats.n_tokens
