"""A pre-registered gene split: the screen sees one part of the genes, confirmation the other.

An adaptive screen chooses what to test because of what it has seen, so its discoveries are
leads, not findings.  Holding out genes *before* the screen gives them an honest second test on
the same embeddings: every hypothesis of the screen runs on the screen part only (held-out genes
are invisible to probes, nulls and SVDs, like out-of-vocabulary rows), and `campaign confirm`
re-tests the discoveries on the held-out part as a fixed, pre-registered confirmatory family.

A gene's part depends only on the seed and its symbol (a SHA-256 of both, compared with the
held-out fraction), not on the cache's gene order, so the same seed splits the same genes in any
cache, and the split recorded with the campaign can be checked later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError

PARTS = ("screen", "holdout")


@dataclass(frozen=True)
class GeneSplit:
    """Genes whose seeded hash falls below `fraction` are held out."""

    seed: int
    fraction: float

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, int | float) and 0.05 <= self.fraction <= 0.95):
            raise GeoscreenError(f"the held-out fraction must be between 0.05 and 0.95, got "
                                 f"{self.fraction!r}", field="--holdout-genes",
                                 fix="e.g. --holdout-genes 0.3 holds out 30% of the genes")

    def holdout_mask(self, symbols: Sequence[str]) -> np.ndarray:
        """True for held-out genes, in the order of `symbols`."""
        cut = int(self.fraction * 2**64)
        return np.fromiter(
            (int.from_bytes(hashlib.sha256(f"geoscreen-split\x1f{self.seed}\x1f{s}".encode())
                            .digest()[:8], "big") < cut for s in symbols),
            dtype=bool, count=len(symbols))

    def hidden(self, symbols: Sequence[str], part: str) -> np.ndarray:
        """Rows a probe must not see when it runs on `part`."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}")
        held = self.holdout_mask(symbols)
        return held if part == "screen" else ~held

    def record(self, symbols: Sequence[str], present: np.ndarray | None = None) -> dict[str, Any]:
        """What the campaign stores when the split is registered (before any test runs)."""
        held = self.holdout_mask(symbols)
        digest = hashlib.sha256("\n".join(sorted(
            s for s, h in zip(symbols, held) if h)).encode()).hexdigest()
        out: dict[str, Any] = {"seed": int(self.seed), "fraction": float(self.fraction),
                               "n_genes": len(symbols), "n_holdout": int(held.sum()),
                               "holdout_sha256": digest}
        if present is not None:
            out["n_holdout_present"] = int((held & present).sum())
            out["n_screen_present"] = int((~held & present).sum())
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> GeneSplit:
        return cls(seed=int(rec["seed"]), fraction=float(rec["fraction"]))
