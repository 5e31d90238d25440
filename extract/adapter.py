"""One interface for a single-cell foundation model, so extraction is shared code.

A model adapter knows four things about its model and nothing else:

1. **its files** (`check`): cheap validation of the checkpoint folder, configuration and
   vocabulary before any cell is read or any weight is loaded;
2. **its vocabulary** (`vocab`, `vocab_key`): which token each of the file's genes becomes
   (a symbol for scGPT, an Ensembl id for Geneformer);
3. **its tokenization** (`tokenize`): a block of cells' counts -> one token sequence per cell,
   deterministic per (seed, cell index);
4. **its forward pass** (`load`, `attach`, `forward`): verified weights, and a callback for
   each layer's hidden states (index 0 = the input embedding) while the batch is on the device.

Everything downstream - cell selection, count checks, per-gene means, ``<cls>`` cell
embeddings, progress, the cache and its manifest - lives in `runner` and is the same for every
model.  Adding a model (UCE, scFoundation, ...) means writing one adapter and registering it in
`ADAPTERS`; see docs/extraction.md ("Adding a model").
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from geoscreen.errors import GeoscreenError


@dataclass
class TokenizedCell:
    """One cell as the model reads it: token ids (special tokens included) and, for models that
    take a value per token (scGPT), those values."""

    ids: np.ndarray
    values: np.ndarray | None = None


#: the callback an adapter calls with (layer index, hidden states of shape batch x tokens x dim)
TakeLayer = Callable[[int, Any], None]


class ModelAdapter(ABC):
    """What the shared extraction runner needs from a model (see the module docstring).

    Subclasses set `name` (the ``--model`` value) and `label` (for people), and after `check`
    the attributes `vocab`, `special_tokens`, `n_layers` (transformer layers), `dim` and
    `default_max_length`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    #: position of the cell token (``<cls>``) in every sequence, or None if the model has none
    cls_position: int | None = 0

    def __init__(self, checkpoint: str | Path, **files: Path | None) -> None:
        self.directory = Path(checkpoint)
        self.files = files
        self.vocab: dict[str, int] = {}
        self.special_tokens: tuple[str, ...] = ()
        self.n_layers = 0
        self.dim = 0
        self.default_max_length = 0
        self.max_length = 0

    # -- cheap checks ----------------------------------------------------------------------
    @abstractmethod
    def check(self) -> None:
        """Validate files, configuration and vocabulary; read no weights. Raise
        `GeoscreenError` naming the file, field and fix."""

    def set_max_length(self, max_length: int | None) -> None:
        n = max_length or self.default_max_length
        if n < self.min_length():
            raise GeoscreenError(f"is {n}; expected at least {self.min_length()}",
                                 field="--max-length")
        self.max_length = n

    def min_length(self) -> int:
        return 2

    def vocab_key(self, gene: str) -> str | None:
        """The vocabulary key of one of the file's genes, or None if the model does not know it.
        The default is an exact match; adapters add id mapping (symbols <-> Ensembl ids)."""
        return gene if gene in self.vocab and gene not in self.special_tokens else None

    def cache_symbol(self, gene: str, key: str) -> str:
        """The gene name the cache row gets (probes and references use symbols)."""
        return gene

    # -- the model ---------------------------------------------------------------------------
    @abstractmethod
    def load(self, device: str, dtype: str) -> None:
        """Read and verify the weights; the model is in eval mode on `device`."""

    @abstractmethod
    def tokenize(self, block: sp.csr_matrix, token_ids: np.ndarray, cells: np.ndarray,
                 totals: np.ndarray, seed: int) -> list[TokenizedCell]:
        """Tokenize a block of cells.

        `block` holds the cells' counts at the in-vocabulary columns (cells x columns, CSR,
        zeros removed, indices sorted), `token_ids` the token of each column, `cells` the cells'
        row numbers in the file (seed material), `totals` each cell's total count over all the
        file's genes (what normalising models divide by).
        """

    @abstractmethod
    def attach(self, take: TakeLayer) -> list[Any]:
        """Register hooks that call ``take(i, hidden)`` for the input embedding (i = 0) and
        each transformer layer (i = 1..n_layers); return the handles."""

    @abstractmethod
    def forward(self, batch: list[TokenizedCell], device: Any,
                begin: Callable[[Any], None]) -> None:
        """Collate `batch`, call ``begin(ids)`` with the (cells x tokens) id tensor on `device`,
        then run the model (hooks fire during the run)."""

    @abstractmethod
    def flops(self, n_tokens: int) -> float:
        """Multiply-add FLOPs of the transformer layers for one cell of `n_tokens` tokens."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """What the cache manifest records about the checkpoint (checksums, config, load
        report, dictionaries)."""

    def software(self) -> dict[str, str]:
        return {}

    def tokenization_note(self) -> str:
        return ""

    def params(self) -> dict[str, Any]:
        """Model-specific parameters recorded with the extraction options."""
        return {}

    def model_dtype(self) -> Any:
        return None


def transformer_flops(n_tokens: int, n_layers: int, d: int, d_ff: int) -> float:
    """Multiply-add FLOPs of `n_layers` standard encoder layers (QKV + output projections,
    feed-forward, attention scores and mixing) on a sequence of `n_tokens`."""
    per_token = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_ff
    attention = 2 * 2 * n_tokens * n_tokens * d
    return float(n_layers * (n_tokens * per_token + attention))


def _scgpt() -> type[ModelAdapter]:
    from .scgpt_adapter import ScGPTAdapter

    return ScGPTAdapter


def _geneformer() -> type[ModelAdapter]:
    from .geneformer import GeneformerAdapter

    return GeneformerAdapter


#: ``--model`` name -> adapter class (imported on use, so torch loads only when needed)
ADAPTERS: Mapping[str, Callable[[], type[ModelAdapter]]] = {
    "scgpt": _scgpt,
    "geneformer": _geneformer,
}


def adapter_class(name: str) -> type[ModelAdapter]:
    """The adapter registered as `name`; an unknown name gets a did-you-mean error."""
    key = name.strip().lower()
    if key not in ADAPTERS:
        near = difflib.get_close_matches(key, list(ADAPTERS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise GeoscreenError(f"is {name!r}; {hint}known models: {', '.join(ADAPTERS)}",
                             field="--model")
    return ADAPTERS[key]()


__all__ = ["ADAPTERS", "ModelAdapter", "TakeLayer", "TokenizedCell", "adapter_class",
           "transformer_flops"]
