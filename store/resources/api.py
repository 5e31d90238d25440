"""Resolved gene sets and pair sets, and the entry points probes use to resolve references.

A reference is a string such as ``genes:BATF,BACH2``, ``go:GO:0005615``, ``string:>=700`` or an
expression over them (``string:>=700 - go-cooccurrence``); the grammar and the named resources
live in `grammar`, `catalog` and `registry` (see docs/resources.md).  This module defines the
resolved types, the literal forms, and the two resolver functions:

* ``genes:A,B,C``             an explicit gene list
* ``file:PATH``               a text file, one symbol per line (gene set) or a TSV with columns
                              ``a<TAB>b[<TAB>score][<TAB>sign]`` (pair set)
* ``pairs:A-B,C-D``           an explicit pair list

Every symbol is normalised to its current official symbol (`symbols.normalise_symbols`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError


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
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the GO term's name

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
        if self.details:
            rec["details"] = self.details
        if self.sources:
            rec["sources"] = self.sources
        if self.parts:
            rec["parts"] = self.parts
        return rec


@dataclass
class GeneFamily:
    """A family of gene sets from one resource (``go:*?aspect=CC``, ``reactome:*``,
    ``trrust:TF=*``): set j is named `set_ids[j]` / `set_names[j]` and holds the genes
    ``genes[member_gene[member_set == j]]`` (current official symbols, as in `GeneSet`)."""

    ref: str
    set_ids: list[str]
    set_names: list[str]
    member_set: np.ndarray
    member_gene: np.ndarray
    genes: list[str]
    resource: str = ""
    version: str = ""
    checksum: str = ""
    unmapped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    original: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    canonical: str = ""

    def __len__(self) -> int:
        return len(self.set_ids)

    def members(self, j: int) -> list[str]:
        """The genes of set j."""
        return [self.genes[g] for g in self.member_gene[self.member_set == j].tolist()]

    def record(self) -> dict[str, Any]:
        rec = {"ref": self.ref, "kind": "gene_family", "resource": self.resource,
               "version": self.version, "checksum": self.checksum, "sets": len(self.set_ids),
               "genes": len(self.genes), "memberships": int(self.member_set.size)}
        if self.canonical and self.canonical != self.ref:
            rec["canonical"] = self.canonical
        if self.sources:
            rec["sources"] = self.sources
        return rec


@dataclass
class PairSet:
    """Gene pairs (a[i], b[i]) with optional score and sign (+1 activation, -1 repression).

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
    details: dict[str, Any] = field(default_factory=dict)  # e.g. STRING quintile cut points

    def __len__(self) -> int:
        return len(self.a)

    @property
    def mapped(self) -> int:
        """Pairs whose two genes both resolved to current official symbols."""
        bad = set(self.unmapped) | set(self.ambiguous)
        if not bad:
            return len(self.a)
        # kept: every probe layer records its pair set (a pass over 130,000 pairs: 40 ms)
        key = (id(self.a), id(self.b), id(self.unmapped), id(self.ambiguous), len(self.a),
               len(self.unmapped), len(self.ambiguous))
        memo = self.__dict__.get("_mapped_memo")
        if memo is None or memo[0] != key:
            memo = (key, sum(1 for x, y in zip(self.a, self.b) if x not in bad and y not in bad))
            self.__dict__["_mapped_memo"] = memo
        return int(memo[1])

    def distinct_genes(self) -> list[str]:
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
        if self.details:
            rec["details"] = self.details
        if self.sources:
            rec["sources"] = self.sources
        if self.parts:
            rec["parts"] = self.parts
        return rec


def _normalise_list(symbols: list[str]) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """(genes, unmapped, ambiguous, original): current symbols in input order, bad ones verbatim."""
    from geoscreen.store.resources.symbols import AMBIGUOUS, UNKNOWN, symbol_map

    sm = symbol_map()
    genes: dict[str, None] = {}
    unmapped: dict[str, None] = {}
    ambiguous: dict[str, None] = {}
    original: dict[str, str] = {}
    for raw in symbols:
        s = raw.strip()
        if not s:
            continue
        cur, status = sm.lookup(s)
        genes[cur] = None
        if status == UNKNOWN:
            unmapped[s] = None
        elif status == AMBIGUOUS:
            ambiguous[s] = None
        elif cur != s:
            original.setdefault(cur, s)
    return list(genes), list(unmapped), list(ambiguous), original


def _symbols_source() -> dict[str, Any]:
    from geoscreen.store.resources import symbols

    return symbols.record()


def _literal_gene_set(ref: str) -> GeneSet | None:
    """`genes:A,B` or `file:PATH` (one symbol per line), normalised with the alias map."""
    if ref.startswith("genes:"):
        raw = [g.strip() for g in ref[len("genes:"):].split(",") if g.strip()]
        if not raw:
            raise GeoscreenError(f"{ref!r} lists no genes", field="gene set",
                                 fix="write genes:SYMBOL1,SYMBOL2,...")
        genes, unmapped, ambiguous, original = _normalise_list(raw)
        return GeneSet(ref=ref, genes=genes, requested=len(dict.fromkeys(raw)),
                       unmapped=unmapped, ambiguous=ambiguous, original=original,
                       sources=[_symbols_source()])
    if ref.startswith("file:"):
        path = Path(ref[len("file:"):]).expanduser()
        from geoscreen.store.userfiles import read_text

        data = read_text(path, field="gene set", what="gene list")
        raw = [ln.split("\t")[0].strip() for ln in data.splitlines()
               if ln.strip() and not ln.startswith("#")]
        if not raw:
            raise GeoscreenError("lists no genes", path=str(path), field="gene set",
                                 fix="write one gene symbol per line")
        genes, unmapped, ambiguous, original = _normalise_list(raw)
        checksum = hashlib.sha256(data.encode("utf-8")).hexdigest()
        return GeneSet(ref=ref, genes=genes, resource="file", checksum=checksum,
                       requested=len(dict.fromkeys(raw)), unmapped=unmapped,
                       ambiguous=ambiguous, original=original,
                       sources=[{"name": "file", "version": str(path), "checksum": checksum,
                                 "origin": "file"}, _symbols_source()])
    return None


def _finish_pairs(ref: str, a: list[str], b: list[str], score: list[float], sign: list[float],
                  **kw: Any) -> PairSet:
    """Normalise both columns; keep scores/signs only when every row has one."""
    from geoscreen.store.resources.symbols import AMBIGUOUS, UNKNOWN, symbol_map

    sm = symbol_map()
    unmapped: dict[str, None] = {}
    ambiguous: dict[str, None] = {}
    original: dict[str, str] = {}

    def norm(s: str) -> str:
        cur, status = sm.lookup(s)
        if status == UNKNOWN:
            unmapped[s] = None
        elif status == AMBIGUOUS:
            ambiguous[s] = None
        elif cur != s:
            original.setdefault(cur, s)
        return cur

    na, nb = [norm(x) for x in a], [norm(y) for y in b]
    return PairSet(ref=ref, a=na, b=nb,
                   score=np.array(score, dtype=float) if score and len(score) == len(a) else None,
                   sign=np.array(sign, dtype=float) if sign and len(sign) == len(a) else None,
                   requested=len(a), unmapped=list(unmapped), ambiguous=list(ambiguous),
                   original=original, **kw)


def _split_pair(item: str) -> tuple[str, str]:
    """Split 'A-B' at the dash that leaves two known symbols (HLA-A-B2M -> HLA-A, B2M)."""
    from geoscreen.store.resources.symbols import UNKNOWN, symbol_map

    cuts = [i for i, c in enumerate(item) if c == "-"]
    if len(cuts) > 1:
        sm = symbol_map()
        for i in cuts:
            x, y = item[:i].strip(), item[i + 1:].strip()
            if x and y and sm.lookup(x)[1] != UNKNOWN and sm.lookup(y)[1] != UNKNOWN:
                return x, y
    x, y = item.split("-", 1)
    return x.strip(), y.strip()


def _literal_pair_set(ref: str) -> PairSet | None:
    """`pairs:A-B,C-D` or `file:PATH` (TSV a, b[, score[, sign]]), normalised like gene sets."""
    if ref.startswith("pairs:"):
        a, b = [], []
        for item in ref[len("pairs:"):].split(","):
            item = item.strip()
            if not item:
                continue
            if "-" not in item:
                raise GeoscreenError(f"pair {item!r} in {ref!r} is not A-B", field="pairs",
                                     fix="write pairs:GENE1-GENE2,GENE3-GENE4")
            x, y = _split_pair(item)
            a.append(x)
            b.append(y)
        if not a:
            raise GeoscreenError(f"{ref!r} lists no pairs", field="pairs",
                                 fix="write pairs:GENE1-GENE2,GENE3-GENE4")
        return _finish_pairs(ref, a, b, [], [], sources=[_symbols_source()])
    if ref.startswith("file:"):
        path = Path(ref[len("file:"):]).expanduser()
        from geoscreen.store.userfiles import read_text

        data = read_text(path, field="pairs", what="pair table")
        a, b, score, sign = [], [], [], []
        for i, ln in enumerate(data.splitlines(), start=1):
            if not ln.strip() or ln.startswith("#"):
                continue
            cols = ln.split("\t")
            if len(cols) < 2:
                raise GeoscreenError(f"line {i} has {len(cols)} column(s); expected a<TAB>b",
                                     path=str(path), field="pairs")
            if not a and cols[0].strip().lower() in ("a", "gene_a", "symbol_a", "tf", "source"):
                continue
            a.append(cols[0].strip())
            b.append(cols[1].strip())
            if len(cols) > 2 and cols[2].strip():
                try:
                    score.append(float(cols[2]))
                except ValueError:
                    raise GeoscreenError(f"line {i}: column 3 (score) is not a number",
                                         path=str(path), field="pairs") from None
            if len(cols) > 3 and cols[3].strip():
                try:
                    sign.append(float(cols[3]))
                except ValueError:
                    raise GeoscreenError(f"line {i}: column 4 (sign) is not a number",
                                         path=str(path), field="pairs") from None
        if not a:
            raise GeoscreenError("lists no pairs", path=str(path), field="pairs",
                                 fix="write one a<TAB>b pair per line")
        checksum = hashlib.sha256(data.encode("utf-8")).hexdigest()
        return _finish_pairs(ref, a, b, score, sign, resource="file", checksum=checksum,
                             sources=[{"name": "file", "version": str(path),
                                       "checksum": checksum, "origin": "file"},
                                      _symbols_source()])
    return None


def resolve_gene_set(ref: str) -> GeneSet:
    """Resolve a gene-set reference: literal forms, named resources and set algebra.

    Raises a GeoscreenError for unknown resources, bad syntax (with the position) and empty sets.
    """
    from geoscreen.store.resources import registry

    return registry.resolve_gene_set(ref)


def is_family_ref(ref: str) -> bool:
    """Whether a reference names a family of gene sets (a wildcard selector or a GMT file)."""
    text = ref.strip()
    return ("*" in text and not text.startswith(("genes:", "pairs:"))) or (
        text.startswith("file:") and text.lower().rstrip('"').endswith(".gmt"))


def resolve_gene_family(ref: str, field: str = "family") -> GeneFamily:
    """Resolve a family reference: one resource reference whose selector is a wildcard
    (``go:*?aspect=BP``, ``reactome:*``, ``trrust:TF=*``), one gene set per term, pathway or
    regulator."""
    from geoscreen.store.resources import registry

    return registry.resolve_gene_family(ref, field)


def warm_indexes(ref: str) -> list[str]:
    """Load the indexes of the named resources `ref` uses, resolving nothing (see
    `registry.warm_indexes`)."""
    from geoscreen.store.resources import registry

    return registry.warm_indexes(ref)


def resolve_pair_set(ref: str) -> PairSet:
    """Resolve a pair-set reference: literal forms, named resources and set algebra."""
    from geoscreen.store.resources import registry

    return registry.resolve_pair_set(ref)
