"""Geneformer (V1 and V2) behind the model-adapter interface.

**Files.** A Geneformer model folder (``Geneformer-V2-316M/`` on the Hugging Face hub) holds
``config.json`` (a BERT configuration) and ``model.safetensors`` (or ``pytorch_model.bin``).
The tokenizer's two dictionaries live in the ``geneformer/`` package folder:
``token_dictionary_gc104M.pkl`` (Ensembl id -> token id, with ``<pad>``, ``<mask>``, ``<cls>``,
``<eos>``) and ``gene_median_dictionary_gc104M.pkl`` (Ensembl id -> nonzero median expression
over Genecorpus).  Both are read data-only (`dictionaries`); the weights from safetensors, or
from a ``.bin`` with ``torch.load(weights_only=True)``.

**Tokenization** (rank-value encoding, as Geneformer's ``TranscriptomeTokenizer``): each cell's
counts at the dictionary's genes (columns naming the same Ensembl id summed) are divided by the
cell's total count, scaled to 10,000 and divided by each gene's median; the nonzero genes are
ranked by that value, highest first (ties keep column order), and truncated to the model's input
size.  V2 dictionaries hold ``<cls>`` and ``<eos>``: the sequence is ``<cls>``, at most
``max_length - 2`` genes, ``<eos>``.  V1 dictionaries hold neither: at most ``max_length``
genes.  No randomness is involved.

**Forward.** transformers' ``BertModel`` (the ``bert.`` trunk of ``BertForMaskedLM``) with an
attention mask over padding; hooks take the embedding output (layer 0, what
``output_hidden_states`` reports first) and each ``BertLayer``'s output.

**Verified load** (as for scGPT): every trunk tensor must come from the file with its exact
shape and finite values, every ``bert.`` tensor in the file must land in the model; the
masked-LM head (``cls.*``) and pooler are accounted for in the load report.

References
----------
Theodoris et al., "Transfer learning enables predictions in network biology", Nature 618 (2023).
Chen et al., "Quantized multi-task learning for context-specific representations of gene
network dynamics" (Geneformer V2), bioRxiv 2024.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import sha256_file

from .adapter import ModelAdapter, TakeLayer, TokenizedCell, transformer_flops
from .dictionaries import median_dictionary, token_dictionary
from .genes import ensembl_to_symbol, is_ensembl, strip_version, symbol_to_ensembl

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")
TARGET_SUM = 10_000
TOKEN_DICT_GLOBS = ("token_dictionary*.pkl", "token_dictionary*.json")
MEDIAN_DICT_GLOBS = ("gene_median_dictionary*.pkl", "gene_median_dictionary*.json")
#: tensors of BertForMaskedLM outside the trunk: never feed the representations
HEAD_PREFIXES = ("cls.", "bert.pooler.")
#: buffers older checkpoints carry; rebuilt by the model, not loaded
BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_FIX_CONFIG = "use the config.json saved with this model's weights"


@dataclass(frozen=True)
class BertShape:
    """The architecture fields of a Geneformer ``config.json``."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    hidden_act: str
    pad_token_id: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(cfg: Mapping[str, Any], key: str, path: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise GeoscreenError(f"is {v!r}; expected a whole number >= 1", path=path, field=key,
                             fix=_FIX_CONFIG)
    return v


def read_bert_config(path: Path) -> tuple[BertShape, dict[str, Any]]:
    p = str(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeoscreenError(f"is not valid JSON ({type(exc).__name__})", path=p) from None
    if not isinstance(cfg, dict):
        raise GeoscreenError("must be a JSON object", path=p)
    if cfg.get("model_type") != "bert":
        raise GeoscreenError(f"is {cfg.get('model_type')!r}; Geneformer is a BERT model",
                             path=p, field="model_type",
                             fix="point --checkpoint at a Geneformer model folder")
    shape = BertShape(
        hidden_size=_int(cfg, "hidden_size", p),
        num_hidden_layers=_int(cfg, "num_hidden_layers", p),
        num_attention_heads=_int(cfg, "num_attention_heads", p),
        intermediate_size=_int(cfg, "intermediate_size", p),
        max_position_embeddings=_int(cfg, "max_position_embeddings", p),
        vocab_size=_int(cfg, "vocab_size", p),
        hidden_act=str(cfg.get("hidden_act", "gelu")),
        pad_token_id=int(cfg.get("pad_token_id", 0) or 0))
    if shape.hidden_size % shape.num_attention_heads:
        raise GeoscreenError(f"hidden_size {shape.hidden_size} is not divisible by "
                             f"num_attention_heads {shape.num_attention_heads}", path=p,
                             field="num_attention_heads", fix=_FIX_CONFIG)
    return shape, cfg


def find_weights(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise GeoscreenError(f"has no {' or '.join(WEIGHT_FILES)}", path=str(directory),
                         field="--checkpoint",
                         fix="a Geneformer model folder holds config.json and model.safetensors")


def check_safetensors(path: Path) -> list[str]:
    """Read only the header of a safetensors file and check every tensor lies inside it."""
    size = path.stat().st_size
    fix = "the file looks truncated or damaged; download model.safetensors again"
    if size < 8:
        raise GeoscreenError(f"is {size} bytes, too short for a safetensors file",
                             path=str(path), field="--checkpoint", fix=fix)
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > min(size - 8, 100 * 2**20):
            raise GeoscreenError("has a header length beyond the file", path=str(path),
                                 field="--checkpoint", fix=fix)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GeoscreenError("has a header that is not JSON", path=str(path),
                                 field="--checkpoint", fix=fix) from None
    if not isinstance(header, dict):
        raise GeoscreenError("has a header that is not a JSON object", path=str(path), fix=fix)
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v),
              default=0)
    if 8 + n + end > size:
        raise GeoscreenError(f"is {size:,} bytes but its header lists data up to byte "
                             f"{8 + n + end:,}", path=str(path), field="--checkpoint", fix=fix)
    return [k for k in header if k != "__metadata__"]


def read_weights(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors, without running code from the file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error type
            raise GeoscreenError(f"cannot be read as safetensors ({type(exc).__name__}: "
                                 f"{str(exc)[:160]})", path=str(path), field="--checkpoint",
                                 fix="download model.safetensors again") from None
    from .checkpoint import read_state_dict

    return read_state_dict(path)


@dataclass
class BertLoadReport:
    n_tensors: int
    n_trunk_tensors: int = 0
    n_trunk_parameters: int = 0
    heads: list[str] = field(default_factory=list)
    buffers_skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_and_load(model: Any, state: Mapping[str, Any], path: str) -> BertLoadReport:
    """Load the ``bert.`` trunk of `state` into `model` (a BertModel), exactly."""
    import torch

    fix = "check that config.json and the token dictionary belong to these weights"
    trunk: dict[str, Any] = {}
    report = BertLoadReport(n_tensors=len(state))
    for key, value in state.items():
        if key.startswith(HEAD_PREFIXES):
            report.heads.append(key)
            continue
        name = key[5:] if key.startswith("bert.") else key
        if name.endswith(BUFFER_SUFFIXES):
            report.buffers_skipped.append(key)
            continue
        trunk[name] = value
    model_state = model.state_dict()
    wanted = [k for k in model_state if not k.endswith(BUFFER_SUFFIXES)]
    missing = [k for k in wanted if k not in trunk]
    unknown = [k for k in trunk if k not in model_state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise GeoscreenError(f"is missing tensor bert.{', bert.'.join(missing[:3])}{more} that "
                             "the model needs", path=path, fix=fix)
    if unknown:
        raise GeoscreenError(f"has tensor {', '.join(unknown[:3])} that this BERT architecture "
                             "does not have", path=path, fix=fix)
    for k, v in trunk.items():
        want, got = tuple(model_state[k].shape), tuple(v.shape)
        if want != got:
            raise GeoscreenError(f"tensor 'bert.{k}' has shape {list(got)} but the model built "
                                 f"from config.json needs {list(want)}", path=path, fix=fix)
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise GeoscreenError(f"tensor 'bert.{k}' has NaN or Inf values", path=path)
        report.n_trunk_tensors += 1
        report.n_trunk_parameters += math.prod(got)
    result = model.load_state_dict(trunk, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith(BUFFER_SUFFIXES)]
    if leftover or result.unexpected_keys:
        raise GeoscreenError(f"could not be loaded exactly (missing {leftover[:3]}, unexpected "
                             f"{list(result.unexpected_keys)[:3]})", path=path)
    return report


def _find_one(directory: Path, globs: tuple[str, ...], given: Path | None, option: str,
              what: str) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise GeoscreenError("does not exist", path=str(given), field=option)
        return Path(given)
    found = sorted(p for g in globs for p in directory.glob(g))
    if len(found) == 1:
        return found[0]
    if not found:
        raise GeoscreenError(f"names no {what}, and the checkpoint folder holds none",
                             path=str(directory), field=option,
                             fix=f"pass {option} PATH (Geneformer ships it in its geneformer/ "
                                 f"package folder as {globs[0].replace('*', '_gc104M')})")
    raise GeoscreenError(f"holds {len(found)} {what} files ({', '.join(p.name for p in found)})",
                         path=str(directory), field=option, fix=f"choose one with {option} PATH")


def rank_value_tokens(counts: np.ndarray, tokens: np.ndarray, medians: np.ndarray,
                      total: float, n_genes: int) -> np.ndarray:
    """One cell's rank-value encoding: the tokens of its nonzero genes ordered by
    counts / total * 10,000 / median, highest first (ties keep input order), at most `n_genes`.
    """
    norm = counts / total * TARGET_SUM / medians
    keep = norm > 0
    order = np.argsort(-norm[keep], kind="stable")
    return tokens[keep][order][:n_genes]


class GeneformerAdapter(ModelAdapter):
    """Geneformer V1/V2 (transformers ``BertForMaskedLM`` checkpoints)."""

    name = "geneformer"
    label = "Geneformer"
    cls_position: int | None = 0

    def check(self) -> None:
        d = self.directory
        if not d.is_dir():
            raise GeoscreenError("is not a directory", path=str(d), field="--checkpoint",
                                 fix="pass the Geneformer model folder (config.json and "
                                     "model.safetensors)")
        if not (d / CONFIG_FILE).is_file():
            raise GeoscreenError("is missing config.json", path=str(d), field="--checkpoint",
                                 fix="a Geneformer model folder holds config.json and "
                                     "model.safetensors")
        self.weights = find_weights(d)
        if self.weights.suffix == ".safetensors":
            check_safetensors(self.weights)
        else:
            from .checkpoint import check_weights_file

            check_weights_file(self.weights)
        self.shape, self.raw_config = read_bert_config(d / CONFIG_FILE)
        self.token_path = _find_one(d, TOKEN_DICT_GLOBS, self.files.get("token_dictionary"),
                                    "--token-dictionary", "token dictionary")
        self.median_path = _find_one(d, MEDIAN_DICT_GLOBS, self.files.get("gene_median"),
                                     "--gene-median", "gene median dictionary")
        vocab = token_dictionary(self.token_path)
        if len(vocab) != self.shape.vocab_size:
            raise GeoscreenError(
                f"holds {len(vocab):,} tokens but config.json says vocab_size "
                f"{self.shape.vocab_size:,}", path=str(self.token_path),
                field="--token-dictionary",
                fix="pass the token dictionary of this model version (V1: gc30M, V2: gc104M)")
        self.medians = median_dictionary(self.median_path)
        self.vocab = vocab
        self.special = "<cls>" in vocab and "<eos>" in vocab
        self.cls_position = 0 if self.special else None
        self.special_tokens = tuple(t for t in SPECIALS if t in vocab)
        genes = [k for k in vocab if k not in SPECIALS]
        self.n_without_median = sum(g not in self.medians for g in genes)
        if self.n_without_median == len(genes):
            raise GeoscreenError("has a median for none of the token dictionary's genes",
                                 path=str(self.median_path), field="--gene-median",
                                 fix="pass the median dictionary of the same model version")
        self.pad_id = vocab.get("<pad>", self.shape.pad_token_id)
        self.n_layers = self.shape.num_hidden_layers
        self.dim = self.shape.hidden_size
        self.default_max_length = self.shape.max_position_embeddings
        self.n_from_symbols = 0

    def min_length(self) -> int:
        return 3 if self.special else 1

    def set_max_length(self, max_length: int | None) -> None:
        super().set_max_length(max_length)
        if self.max_length > self.shape.max_position_embeddings:
            raise GeoscreenError(f"is {self.max_length}; the model has "
                                 f"{self.shape.max_position_embeddings} positions",
                                 field="--max-length")

    def vocab_key(self, gene: str) -> str | None:
        if is_ensembl(gene):
            key: str | None = strip_version(gene)
        else:
            key = symbol_to_ensembl(gene, self.vocab)
            self.n_from_symbols += key is not None
        if key is None or key not in self.vocab or key in SPECIALS or key not in self.medians:
            return None
        return key

    def cache_symbol(self, gene: str, key: str) -> str:
        if is_ensembl(gene):
            return ensembl_to_symbol(gene) or strip_version(gene)
        return gene

    def load(self, device: str, dtype: str) -> None:
        import torch
        from transformers import BertConfig, BertModel

        config = BertConfig(**{k: v for k, v in self.raw_config.items()
                               if k not in ("architectures", "transformers_version",
                                            "torch_dtype", "dtype")})
        model = BertModel(config, add_pooling_layer=False)
        state = read_weights(self.weights)
        self.report = verify_and_load(model, state, str(self.weights))
        del state
        model.eval()
        model.to(device=torch.device(device), dtype=getattr(torch, dtype))
        self.model = model
        self.checksums = {p.name: sha256_file(p) for p in
                          (self.directory / CONFIG_FILE, self.weights, self.token_path,
                           self.median_path)}
        self.median_of_token = np.zeros(len(self.vocab), dtype=np.float64)
        for k, t in self.vocab.items():
            if k in self.medians:
                self.median_of_token[t] = self.medians[k]

    def tokenize(self, block: sp.csr_matrix, token_ids: np.ndarray, cells: np.ndarray,
                 totals: np.ndarray, seed: int) -> list[TokenizedCell]:
        # columns naming the same Ensembl id are summed (Geneformer's collapse_gene_ids)
        uniq, inverse = np.unique(token_ids, return_inverse=True)
        if uniq.size != token_ids.size:
            agg = sp.csr_matrix((np.ones(token_ids.size), (np.arange(token_ids.size), inverse)),
                                shape=(token_ids.size, uniq.size))
            block = sp.csr_matrix(block @ agg)
            block.sort_indices()
            col_tokens = uniq
        else:
            col_tokens = token_ids
        n_genes = self.max_length - 2 if self.special else self.max_length
        out = []
        for r in range(block.shape[0]):
            lo, hi = block.indptr[r], block.indptr[r + 1]
            toks = col_tokens[block.indices[lo:hi]]
            genes = rank_value_tokens(block.data[lo:hi].astype(np.float64), toks,
                                      self.median_of_token[toks], float(totals[r]), n_genes)
            if self.special:
                genes = np.concatenate([[self.vocab["<cls>"]], genes, [self.vocab["<eos>"]]])
            out.append(TokenizedCell(np.asarray(genes, dtype=np.int64)))
        return out

    def attach(self, take: TakeLayer) -> list[Any]:
        handles = [self.model.embeddings.register_forward_hook(
            lambda _m, _a, out: take(0, out[0] if isinstance(out, tuple) else out))]
        for i, layer in enumerate(self.model.encoder.layer, start=1):
            handles.append(layer.register_forward_hook(
                lambda _m, _a, out, i=i: take(i, out[0] if isinstance(out, tuple) else out)))
        return handles

    def forward(self, batch: list[TokenizedCell], device: Any,
                begin: Callable[[Any], None]) -> None:
        import torch

        width = max(c.ids.size for c in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        for i, c in enumerate(batch):
            ids[i, : c.ids.size] = c.ids
        src = torch.from_numpy(ids).to(device)
        mask = torch.from_numpy((np.arange(width)[None, :]
                                 < np.array([c.ids.size for c in batch])[:, None])
                                .astype(np.int64)).to(device)
        begin(src)
        self.model(input_ids=src, attention_mask=mask)

    def flops(self, n_tokens: int) -> float:
        s = self.shape
        return transformer_flops(n_tokens, s.num_hidden_layers, s.hidden_size,
                                 s.intermediate_size)

    def metadata(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory.resolve()),
            "weights": self.weights.name,
            "sha256": self.checksums,
            "config": self.shape.as_dict(),
            "vocab_size": len(self.vocab),
            "load_report": self.report.as_dict(),
            "token_dictionary": str(self.token_path.resolve()),
            "gene_median_dictionary": str(self.median_path.resolve()),
            "genes_without_median": self.n_without_median,
            "special_tokens": "<cls> ... <eos> (V2)" if self.special else "none (V1)",
        }

    def software(self) -> dict[str, str]:
        import transformers

        return {"transformers": transformers.__version__}

    def params(self) -> dict[str, Any]:
        return {"target_sum": TARGET_SUM, "special_tokens": self.special}

    def tokenization_note(self) -> str:
        return ("rank-value encoding: counts / cell total * 10,000 / gene median, nonzero genes "
                "ranked highest first (ties in column order), truncated to max_length"
                + (" with <cls> first and <eos> last" if self.special else ""))


__all__ = ["BertShape", "GeneformerAdapter", "check_safetensors", "rank_value_tokens",
           "read_bert_config", "verify_and_load"]
