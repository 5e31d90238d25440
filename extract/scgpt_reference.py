"""scGPT's own ``embed_data``, runnable on modern torch, as the reference for tests and benchmarks.

``scgpt/tasks/cell_emb.py`` is loaded from the installed wheel and run unchanged: its vocabulary
matching, ``load_pretrained`` (from ``scgpt/utils/util.py``), ``TransformerModel``,
``DataCollator`` (binning, sampling, padding) and ``get_batch_cell_embeddings`` DataLoader are
scGPT's code.  Two things are substituted because they cannot load: ``GeneVocab`` (a torchtext
``Vocab`` subclass; torchtext does not load on torch 2.x) by a dict with the six methods
``embed_data`` calls, and, only while the files are imported, module stubs for scanpy,
matplotlib and IPython, which those files import at the top but ``embed_data`` never calls when
handed an AnnData.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .scgpt_import import _stub_package, ensure_scgpt_root, load_model_module, scgpt_dir


class DictGeneVocab:
    """Stand-in for scGPT's torchtext-based ``GeneVocab`` with the methods embed_data uses."""

    def __init__(self, token2idx: dict[str, int]) -> None:
        self._index = dict(token2idx)
        self._default: int | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> DictGeneVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def __getitem__(self, token: str) -> int:
        if token in self._index:
            return self._index[token]
        if self._default is None:
            raise KeyError(token)
        return self._default

    def __len__(self) -> int:
        return len(self._index)

    def append_token(self, token: str) -> None:
        self._index.setdefault(token, len(self._index))

    def set_default_index(self, index: int) -> None:
        self._default = index

    def __call__(self, tokens: list[str]) -> list[int]:
        return [self[t] for t in tokens]


class _AnyAttr(types.ModuleType):
    """A module whose every attribute is a harmless placeholder class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


@contextlib.contextmanager
def _temporary_modules(names: list[str]) -> Iterator[None]:
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            if saved[n] is None:
                sys.modules[n] = _AnyAttr(n)
        for n in names:  # wire submodules as attributes of their parents
            parent, _, child = n.rpartition(".")
            if parent and isinstance(sys.modules.get(parent), _AnyAttr):
                setattr(sys.modules[parent], child, sys.modules[n])
        yield
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)


def load_cell_emb() -> types.ModuleType:
    """The ``scgpt.tasks.cell_emb`` module from the installed wheel."""
    if "scgpt.tasks.cell_emb" in sys.modules:
        return sys.modules["scgpt.tasks.cell_emb"]
    ensure_scgpt_root()
    load_model_module()
    root = scgpt_dir()
    tokenizer = _stub_package("scgpt.tokenizer", root / "tokenizer")
    tokenizer.GeneVocab = DictGeneVocab
    _stub_package("scgpt.tasks", root / "tasks")
    stubs = ["scanpy", "scanpy.get", "matplotlib", "matplotlib.pyplot", "matplotlib.axes",
             "IPython"]
    with _temporary_modules(stubs), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module("scgpt.utils")
        importlib.import_module("scgpt.data_collator")
        return importlib.import_module("scgpt.tasks.cell_emb")


def embed_data() -> Callable[..., Any]:
    """scGPT's ``embed_data(adata, model_dir, gene_col=..., max_length=..., batch_size=...,
    device=..., use_fast_transformer=...)``; returns the AnnData with ``obsm['X_scGPT']``."""
    return load_cell_emb().embed_data


def scgpt_binning() -> Callable[..., Any]:
    """scGPT's ``preprocess.binning`` (uses ``np.random.rand`` to break ties)."""
    load_cell_emb()
    return sys.modules["scgpt.preprocess"].binning
