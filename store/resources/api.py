"""Resolved gene sets and pair sets, and the entry points probes use to resolve references.

A reference is a string such as ``genes:BATF,BACH2``, ``go:GO:0005615`` or ``string:>=700``.
This module defines the resolved types and the two resolver functions; the resource registry
(`geoscreen.store.resources.registry`) supplies named resources.  Literal forms always work:

* ``genes:A,B,C``             an explicit gene list
* ``file:PATH``               a text file, one symbol per line (gene set) or a TSV with columns
                              ``a<TAB>b[<TAB>score][<TAB>sign]`` (pair set)
* ``pairs:A-B,C-D``           an explicit pair list
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.agent.errors import GeoscreenError


@dataclass
class GeneSet:
    """A named set of gene symbols plus where it came from.

    `genes` holds current official symbols; symbols that could not be mapped (unknown or
    ambiguous) are kept verbatim so that a cache using them can still match, and are listed in
    `unmapped` / `ambiguous`.  `original` maps a current symbol to the symbol the source used
    when they differ (e.g. SEPTIN7 -> SEPT7), for caches whose vocabulary predates a rename.
    """

    ref: str
    genes: list[str]
    resource: str = "literal"
    version: str = ""
    checksum: str = ""
    requested: int = 0
    unmapped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    original: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    canonical: str = ""

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def mapped(self) -> int:
        """Genes resolved to a current official symbol."""
        bad = set(self.unmapped) | set(self.ambiguous)
        return sum(1 for g in self.genes if g not in bad) if bad else len(self.genes)

    def record(self) -> dict[str, Any]:
        rec = {"ref": self.ref, "kind": "gene_set", "resource": self.resource,
               "version": self.version, "checksum": self.checksum,
               "requested": self.requested or len(self.genes), "mapped": self.mapped,
               "unmapped": len(self.unmapped), "ambiguous": len(self.ambiguous)}
        if self.canonical and self.canonical != self.ref:
            rec["canonical"] = self.canonical
        if self.sources:
            rec["sources"] = self.sources
        if self.parts:
            rec["parts"] = self.parts
        return rec


@dataclass
class PairSet:
    """Gene pairs (a[i], b[i]) with optional confidence score and sign (+1 activation, -1 repression).

    Directed sets (TF -> target) keep a as the source.  Like `GeneSet`, symbols are current
    official ones where possible; `unmapped` / `ambiguous` list the gene symbols that were not.
    """

    ref: str
    a: list[str]
    b: list[str]
    score: np.ndarray | None = None
    sign: np.ndarray | None = None
    directed: bool = False
    resource: str = "literal"
    version: str = ""
    checksum: str = ""
    requested: int = 0
    unmapped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    original: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    canonical: str = ""

    def __len__(self) -> int:
        return len(self.a)

    @property
    def mapped(self) -> int:
        """Pairs whose two genes both resolved to current official symbols."""
        bad = set(self.unmapped) | set(self.ambiguous)
        if not bad:
            return len(self.a)
        return sum(1 for x, y in zip(self.a, self.b) if x not in bad and y not in bad)

    def genes(self) -> list[str]:
        """Distinct genes in the pairs, sorted."""
        return sorted(set(self.a) | set(self.b))

    def record(self) -> dict[str, Any]:
        rec = {"ref": self.ref, "kind": "pair_set", "resource": self.resource,
               "version": self.version, "checksum": self.checksum,
               "requested": self.requested or len(self.a), "mapped": self.mapped,
               "unmapped": len(self.unmapped), "ambiguous": len(self.ambiguous),
               "directed": self.directed}
        if self.canonical and self.canonical != self.ref:
            rec["canonical"] = self.canonical
        if self.sources:
            rec["sources"] = self.sources
        if self.parts:
            rec["parts"] = self.parts
        return rec


def _literal_gene_set(ref: str) -> GeneSet | None:
    if ref.startswith("genes:"):
        genes = [g.strip() for g in ref[len("genes:"):].split(",") if g.strip()]
        if not genes:
            raise GeoscreenError(f"{ref!r} lists no genes", field="gene set",
                                 fix="write genes:SYMBOL1,SYMBOL2,...")
        return GeneSet(ref=ref, genes=list(dict.fromkeys(genes)), requested=len(genes))
    if ref.startswith("file:"):
        path = Path(ref[len("file:"):]).expanduser()
        if not path.exists():
            raise GeoscreenError("does not exist", path=str(path), field="gene set")
        from geoscreen.store.cache import sha256_file

        genes = [ln.split("\t")[0].strip() for ln in path.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        return GeneSet(ref=ref, genes=list(dict.fromkeys(genes)), resource="file",
                       checksum=sha256_file(path), requested=len(genes))
    return None


def _literal_pair_set(ref: str) -> PairSet | None:
    if ref.startswith("pairs:"):
        a, b = [], []
        for item in ref[len("pairs:"):].split(","):
            item = item.strip()
            if not item:
                continue
            if "-" not in item:
                raise GeoscreenError(f"pair {item!r} in {ref!r} is not A-B", field="pairs",
                                     fix="write pairs:GENE1-GENE2,GENE3-GENE4")
            x, y = item.split("-", 1)
            a.append(x.strip())
            b.append(y.strip())
        return PairSet(ref=ref, a=a, b=b, requested=len(a))
    if ref.startswith("file:"):
        path = Path(ref[len("file:"):]).expanduser()
        if not path.exists():
            raise GeoscreenError("does not exist", path=str(path), field="pairs")
        from geoscreen.store.cache import sha256_file

        a, b, score, sign = [], [], [], []
        for i, ln in enumerate(path.read_text().splitlines(), start=1):
            if not ln.strip() or ln.startswith("#"):
                continue
            cols = ln.split("\t")
            if len(cols) < 2:
                raise GeoscreenError(f"line {i} has {len(cols)} column(s); expected a<TAB>b",
                                     path=str(path), field="pairs")
            if i == 1 and cols[0].lower() in ("a", "gene_a", "symbol_a", "tf", "source"):
                continue
            a.append(cols[0].strip())
            b.append(cols[1].strip())
            if len(cols) > 2 and cols[2].strip():
                try:
                    score.append(float(cols[2]))
                except ValueError:
                    raise GeoscreenError(f"line {i}: score {cols[2]!r} is not a number",
                                         path=str(path), field="pairs") from None
            if len(cols) > 3 and cols[3].strip():
                sign.append(float(cols[3]))
        return PairSet(ref=ref, a=a, b=b,
                       score=np.array(score) if len(score) == len(a) and score else None,
                       sign=np.array(sign) if len(sign) == len(a) and sign else None,
                       resource="file", checksum=sha256_file(path), requested=len(a))
    return None


def resolve_gene_set(ref: str) -> GeneSet:
    """Resolve a gene-set reference (literal forms here, named resources via the registry)."""
    lit = _literal_gene_set(ref)
    if lit is not None:
        return lit
    from geoscreen.store.resources import registry

    return registry.resolve_gene_set(ref)


def resolve_pair_set(ref: str) -> PairSet:
    """Resolve a pair-set reference (literal forms here, named resources via the registry)."""
    lit = _literal_pair_set(ref)
    if lit is not None:
        return lit
    from geoscreen.store.resources import registry

    return registry.resolve_pair_set(ref)
