"""Gene identifiers: Ensembl gene ids <-> symbols with the bundled NCBI id map.

Models key their vocabularies differently (scGPT by symbol, Geneformer by Ensembl id) and
AnnData files name genes either way.  The bundled map (org.Hs.eg.db 3.16) translates, through
the same symbol normalisation the references use (`geoscreen.store.resources.symbols`).
"""

from __future__ import annotations

from collections.abc import Container

from geoscreen.store.resources.symbols import AMBIGUOUS, UNKNOWN, symbol_map


def is_ensembl(gene: str) -> bool:
    """True for a human Ensembl gene id (``ENSG...``, with or without a version suffix)."""
    return gene.startswith("ENSG")


def strip_version(gene: str) -> str:
    """``ENSG00000141510.17`` -> ``ENSG00000141510``."""
    return gene.split(".")[0] if is_ensembl(gene) else gene


def ensembl_to_symbol(gene: str) -> str | None:
    """The current official symbol of an Ensembl id, or None if the map does not know it (or
    it belongs to several genes)."""
    sym, status = symbol_map().lookup(strip_version(gene))
    return None if status in (UNKNOWN, AMBIGUOUS) else sym


def symbol_to_ensembl(symbol: str, vocab: Container[str]) -> str | None:
    """The first Ensembl id of `symbol` that `vocab` holds, or None."""
    for e in symbol_map().ensembl_ids(symbol):
        if e in vocab:
            return e
    return None


__all__ = ["ensembl_to_symbol", "is_ensembl", "strip_version", "symbol_to_ensembl"]
