"""Random-weight Geneformer models in the published file formats (tests, benchmarks, docs).

No model hub is reachable from CI, so the tests build what ``ctheodoris/Geneformer`` ships:

- a model folder written by transformers' ``BertForMaskedLM.save_pretrained`` (``config.json``
  + ``model.safetensors``; ``pytorch_model.bin`` on request), with the real V2-316M
  configuration (18 layers, 1,152-d, 18 heads, 4,608 feed-forward, 4,096 positions, 20,275
  tokens, ReLU) or a small one;
- the tokenizer's dictionaries as plain pickles, as Geneformer writes them: a token dictionary
  (``<pad>`` 0, ``<mask>`` 1, ``<cls>`` 2, ``<eos>`` 3, then Ensembl ids) and a gene-median
  dictionary (Ensembl id -> positive float; optionally NumPy float64 values).

Gene ids are real: Ensembl ids of protein-coding genes from the bundled NCBI id map, so that
real cells (pbmc68k, named by symbol) map onto the vocabulary as they would onto Geneformer's.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: config.json of Geneformer-V2-316M (architecture fields as published).
V2_316M_CONFIG: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"], "model_type": "bert",
    "hidden_size": 1152, "num_hidden_layers": 18, "num_attention_heads": 18,
    "intermediate_size": 4608, "max_position_embeddings": 4096, "vocab_size": 20275,
    "hidden_act": "relu", "hidden_dropout_prob": 0.02, "attention_probs_dropout_prob": 0.02,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    "type_vocab_size": 2, "position_embedding_type": "absolute", "classifier_dropout": None,
}
#: a small model of the same family (fast tests); vocab_size follows the token dictionary.
SMALL_CONFIG: dict[str, Any] = {**V2_316M_CONFIG, "hidden_size": 48, "num_hidden_layers": 3,
                                "num_attention_heads": 4, "intermediate_size": 96,
                                "max_position_embeddings": 512, "vocab_size": None}
SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")


def protein_coding_ensembl(first: Iterable[str] = ()) -> list[str]:
    """Ensembl ids of the bundled id map's protein-coding then ncRNA genes (one per gene), with
    the ids of the symbols in `first` placed first."""
    from geoscreen.store.resources import _util
    from geoscreen.store.resources.symbols import ID_MAP, symbol_map

    head, rows = _util.read_tsv(_util.BUNDLED_DIR / ID_MAP)
    ens, kind = _util.columns(head, rows, ["ensembl_gene_ids", "gene_type"], ID_MAP)
    sm = symbol_map()
    out: dict[str, None] = {}
    for s in first:
        ids = sm.ensembl_ids(s)
        if ids:
            out.setdefault(ids[0], None)
    for e, k in zip(ens, kind):
        if k == "protein-coding" and e:
            out.setdefault(e.split(";")[0], None)
    for e, k in zip(ens, kind):  # then ncRNA genes (Geneformer's vocabulary holds miRNAs too)
        if k == "ncRNA" and e:
            out.setdefault(e.split(";")[0], None)
    return list(out)


def token_dictionary(n_tokens: int, first_symbols: Iterable[str] = ()) -> dict[str, int]:
    """``<pad>``, ``<mask>``, ``<cls>``, ``<eos>`` then Ensembl ids: `n_tokens` entries."""
    genes = protein_coding_ensembl(first_symbols)
    if len(genes) < n_tokens - len(SPECIALS):
        raise ValueError(f"only {len(genes)} Ensembl ids for {n_tokens} tokens")
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for g in genes[: n_tokens - len(SPECIALS)]:
        vocab[g] = len(vocab)
    return vocab


def median_dictionary(genes: Iterable[str], seed: int = 0) -> dict[str, float]:
    """Positive medians (log-normal around 1, as Genecorpus medians of normalised counts)."""
    genes = [g for g in genes if g not in SPECIALS]
    rng = np.random.default_rng(seed)
    vals = np.exp(rng.normal(0.0, 0.6, size=len(genes)))
    return {g: float(v) for g, v in zip(genes, vals)}


def write_pickle(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


def write_random_geneformer(out_dir: str | Path, config: Mapping[str, Any],
                            vocab: Mapping[str, int], *, seed: int = 0,
                            weights: str = "safetensors", numpy_medians: bool = False,
                            dictionaries: bool = True) -> Path:
    """Save a random-weight ``BertForMaskedLM`` with `config` and its dictionaries
    (``token_dictionary_gc104M.pkl``, ``gene_median_dictionary_gc104M.pkl``) into `out_dir`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = {**config, "vocab_size": config.get("vocab_size") or len(vocab)}
    cfg = BertConfig(**{k: v for k, v in config.items() if k != "architectures"})
    model = BertForMaskedLM(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make LayerNorms non-trivial, as trained ones are
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out, safe_serialization=(weights == "safetensors"))
    if weights == "bin" and not (out / "pytorch_model.bin").is_file():
        torch.save(model.state_dict(), out / "pytorch_model.bin")
        for f in out.glob("model*.safetensors"):
            f.unlink()
    if dictionaries:
        write_pickle(out / "token_dictionary_gc104M.pkl", dict(vocab))
        med = median_dictionary(vocab, seed)
        if numpy_medians:
            med = {k: np.float64(v) for k, v in med.items()}  # type: ignore[misc]
        write_pickle(out / "gene_median_dictionary_gc104M.pkl", med)
    return out


__all__ = ["SMALL_CONFIG", "V2_316M_CONFIG", "median_dictionary", "protein_coding_ensembl",
           "token_dictionary", "write_pickle", "write_random_geneformer"]
