"""scGPT behind the model-adapter interface.

The checkpoint handling (`checkpoint`), tokenization (`tokens`) and model code (scGPT's own
``TransformerModel``) are unchanged; this module only connects them to the shared runner.
Genes are matched to the vocabulary by symbol; a file whose genes are Ensembl ids is mapped to
symbols with the bundled NCBI id map (only for genes not already in the vocabulary as written).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from .adapter import ModelAdapter, TakeLayer, TokenizedCell, transformer_flops
from .checkpoint import (
    ARGS_FILE,
    SPECIAL_TOKENS,
    VOCAB_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    check_checkpoint_dir,
    check_weights_file,
    load_checkpoint,
    read_model_config,
    read_vocab,
)
from .tokens import TokenizerConfig, collate, tokenize_cell


class ScGPTAdapter(ModelAdapter):
    """scGPT (whole-human and other continuous-value checkpoints): ``<cls>`` + nonzero genes,
    per-cell quantile bins, hidden states from ``TransformerModel._encode``."""

    name = "scgpt"
    label = "scGPT"
    cls_position = 0

    def check(self) -> None:
        check_checkpoint_dir(self.directory)
        check_weights_file(self.directory / WEIGHTS_FILE)
        self.config = read_model_config(self.directory / ARGS_FILE)
        self.vocab = read_vocab(self.directory / VOCAB_FILE, self.config.pad_token)
        self.special_tokens = (*SPECIAL_TOKENS, self.config.pad_token)
        self.n_layers = self.config.nlayers
        self.dim = self.config.embsize
        self.default_max_length = self.config.max_seq_len
        self.loaded: LoadedModel | None = None

    def vocab_key(self, gene: str) -> str | None:
        key = super().vocab_key(gene)
        if key is None and gene.startswith("ENSG"):
            from .genes import ensembl_to_symbol

            sym = ensembl_to_symbol(gene)
            if sym is not None:
                key = super().vocab_key(sym)
        return key

    def cache_symbol(self, gene: str, key: str) -> str:
        return key if gene.startswith("ENSG") else gene

    def load(self, device: str, dtype: str) -> None:
        self.loaded = load_checkpoint(self.directory, device=device, dtype=dtype)
        self.model = self.loaded.model
        cfg = self.config
        self.tok = TokenizerConfig(cls_id=self.vocab["<cls>"], pad_id=self.vocab[cfg.pad_token],
                                   pad_value=cfg.pad_value, n_bins=cfg.n_bins,
                                   max_len=self.max_length, seed=0)
        self._dtype = next(self.model.parameters()).dtype

    def model_dtype(self) -> Any:
        return self._dtype

    def tokenize(self, block: sp.csr_matrix, token_ids: np.ndarray, cells: np.ndarray,
                 totals: np.ndarray, seed: int) -> list[TokenizedCell]:
        if self.tok.seed != seed:
            self.tok = dataclasses.replace(self.tok, seed=seed)
        tok = self.tok
        out = []
        for r, cell in enumerate(cells):
            lo, hi = block.indptr[r], block.indptr[r + 1]
            ids, vals = tokenize_cell(token_ids[block.indices[lo:hi]], block.data[lo:hi], tok,
                                      int(cell))
            out.append(TokenizedCell(ids, vals))
        return out

    def attach(self, take: TakeLayer) -> list[Any]:
        enc = self.model.transformer_encoder
        handles = [enc.register_forward_pre_hook(lambda _m, args: take(0, args[0]))]
        for i, layer in enumerate(enc.layers, start=1):
            handles.append(layer.register_forward_hook(
                lambda _m, _a, out, i=i: take(i, out)))
        return handles

    def forward(self, batch: list[TokenizedCell], device: Any,
                begin: Callable[[Any], None]) -> None:
        import torch

        ids, vals = collate([(c.ids, c.values) for c in batch], self.tok)
        src = torch.from_numpy(ids).to(device)
        values = torch.from_numpy(vals).to(device=device, dtype=self._dtype)
        begin(src)
        self.model._encode(src, values, src_key_padding_mask=src.eq(self.tok.pad_id))

    def flops(self, n_tokens: int) -> float:
        c = self.config
        return transformer_flops(n_tokens, c.nlayers, c.embsize, c.d_hid)

    def metadata(self) -> dict[str, Any]:
        assert self.loaded is not None
        return {
            "directory": str(self.directory.resolve()),
            "sha256": self.loaded.checksums,
            "config": self.config.as_dict(),
            "vocab_size": len(self.vocab),
            "load_report": self.loaded.report.as_dict(),
        }

    def software(self) -> dict[str, str]:
        from .scgpt_import import scgpt_version

        return {"scgpt": scgpt_version()}

    def params(self) -> dict[str, Any]:
        return {"n_bins": self.config.n_bins, "pad_value": self.config.pad_value}

    def tokenization_note(self) -> str:
        return ("<cls> + nonzero vocabulary genes, per-cell quantile bins, random subsample "
                "above max_length, seeded by (seed, cell index)")


__all__ = ["ScGPTAdapter"]
