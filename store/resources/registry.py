"""Named reference resources (placeholder until the bundled snapshot lands; see issue 4)."""

from __future__ import annotations

from geoscreen.agent.errors import GeoscreenError
from geoscreen.store.resources.api import GeneSet, PairSet


def resolve_gene_set(ref: str) -> GeneSet:
    raise GeoscreenError(f"unknown gene-set reference {ref!r}", field="gene set",
                         fix="use genes:A,B,... or file:PATH")


def resolve_pair_set(ref: str) -> PairSet:
    raise GeoscreenError(f"unknown pair-set reference {ref!r}", field="pairs",
                         fix="use pairs:A-B,... or file:PATH")
