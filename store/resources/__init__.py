"""Reference knowledge: named gene sets and pair sets (GO, STRING, TRRUST, Reactome, ...).

Probes call `api.resolve_gene_set(ref)` / `api.resolve_pair_set(ref)`; references follow the
grammar in `grammar.py` (see docs/resources.md).  Kept import-light on purpose: submodules are
loaded only when used, because worker processes import this package for every hypothesis.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GeneSet", "PairSet", "normalise_symbols", "resolve_gene_set", "resolve_pair_set"]


def __getattr__(name: str) -> Any:
    if name in ("GeneSet", "PairSet", "resolve_gene_set", "resolve_pair_set"):
        from geoscreen.store.resources import api

        return getattr(api, name)
    if name == "normalise_symbols":
        from geoscreen.store.resources.symbols import normalise_symbols

        return normalise_symbols
    raise AttributeError(name)
