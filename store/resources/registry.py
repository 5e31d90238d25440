"""Resolve references (``go:GO:0005615``, ``string:>=700 - go-cooccurrence``) to gene / pair sets.

Every atom of an expression is resolved against one resource version (the newest available, or
the pinned one) and the result records each resource's name, version and checksum, plus, for
every atom, how many genes or pairs were requested and mapped.  Pair-set algebra is lazy where it
pays: in ``A - go-cooccurrence`` the co-occurrence pairs are never listed; membership of A's pairs
is tested against the GO term index instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.store.resources import api, backends, catalog
from geoscreen.store.resources.api import GeneSet, PairSet
from geoscreen.store.resources.grammar import BinOp, Node, Ref, parse, refs

_FIX_EMPTY = "check the selector with 'geoscreen resources show REF'"


# -- kinds ----------------------------------------------------------------------------------------
def _file_kind(ref: Ref) -> set[str]:
    """Sniff the first data line (through the file checks: a FIFO or /dev/zero never blocks)."""
    from geoscreen.store.userfiles import read_bytes

    try:
        head = read_bytes(ref.selector, peek=1 << 16).decode("utf-8", errors="replace")
    except GeoscreenError:  # missing, not regular, not allowed: resolving says so clearly
        return {"genes", "pairs"}
    for line in head.splitlines():
        if line.strip() and not line.startswith("#"):
            return {"pairs"} if "\t" in line.strip() else {"genes"}
    return {"genes", "pairs"}


def atom_kinds(ref: Ref) -> set[str]:
    """What an atom can resolve to: {'genes'}, {'pairs'} or both."""
    info = catalog.get(ref.name, ref.pos + 1)
    if info.name == "genes":
        return {"genes"}
    if info.name == "pairs":
        return {"pairs"}
    if info.name == "file":
        return _file_kind(ref)
    if info.backend == "regnet":
        sel = ref.selector.strip().lower()
        if sel in ("regulators", "targets"):
            return {"genes"}
        if sel.startswith(("tf=", "tf =", "target=", "target =")):
            return {"genes", "pairs"}
        return {"pairs"}
    if info.backend in ("go-cooccurrence", "string"):
        return {"pairs"}
    return {"genes"}


def kind_of(text: str) -> str:
    """'genes' or 'pairs': what `text` resolves to when the context does not say.

    An expression with any gene-set-only atom is a gene set; otherwise a pair set (so
    ``trrust:TF=PAX5`` is shown as signed pairs).  Mixed expressions fail when resolved.
    """
    node = parse(text)
    if any(atom_kinds(r) == {"genes"} for r in refs(node)):
        return "genes"
    return "pairs"


def _check_kind(ref: Ref, want: str) -> None:
    kinds = atom_kinds(ref)
    if want not in kinds:
        have = "a pair set" if want == "genes" else "a gene set"
        need = "a gene set" if want == "genes" else "a pair set"
        raise ref.error(f"{ref.source!r} is {have}, but {need} is expected here", at_name=True)


def _version(ref: Ref) -> catalog.ResourceVersion:
    return catalog.select_version(ref.name.lower(), ref.version, ref.pos + 1)


def _sources(info_name: str, v: catalog.ResourceVersion) -> list[dict[str, Any]]:
    from geoscreen.store.resources import symbols

    return [v.record(info_name), symbols.record()]


# -- gene sets ------------------------------------------------------------------------------------
def _atom_genes(ref: Ref) -> GeneSet:
    info = catalog.get(ref.name, ref.pos + 1)
    _check_kind(ref, "genes")
    if info.literal:
        if ref.options or ref.version:
            raise ref.error(f"literal '{info.name}:' references take no options or versions",
                            at_name=True)
        gs = api._literal_gene_set(f"{info.name}:{ref.selector}")
        assert gs is not None
        gs.canonical = gs.ref
        return gs
    v = _version(ref)
    idx = backends.load_index(info.name, info.backend, v)
    hit = idx.genes(ref)
    return GeneSet(ref=ref.source, genes=hit.genes, resource=info.name, version=v.label,
                   checksum=v.checksum, requested=hit.requested, unmapped=hit.unmapped,
                   ambiguous=hit.ambiguous, original=hit.original,
                   sources=_sources(info.name, v), canonical=hit.canonical, details=hit.extra)


def _merge_sources(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for g in groups:
        for s in g:
            out.setdefault((s["name"], s["version"], s["checksum"]), s)
    return list(out.values())


def _part(rec: dict[str, Any]) -> dict[str, Any]:
    """An atom's record inside a composite one (its sources are listed once, at the top)."""
    return {k: v for k, v in rec.items() if k != "sources"}


def _parts(x: GeneSet | PairSet) -> list[dict[str, Any]]:
    return x.parts if x.parts else [_part(x.record())]


def _eval_genes(node: Node) -> GeneSet:
    if isinstance(node, Ref):
        return _atom_genes(node)
    left, right = _eval_genes(node.left), _eval_genes(node.right)
    rset = set(right.genes)
    if node.op == "|":
        genes = sorted(set(left.genes) | rset)
    elif node.op == "&":
        genes = sorted(g for g in left.genes if g in rset)
    else:
        genes = sorted(g for g in left.genes if g not in rset)
    keep = set(genes)

    def canon(n: Node, x: GeneSet) -> str:
        text = x.canonical or x.ref
        return f"({text})" if isinstance(n, BinOp) else text

    return GeneSet(
        ref="", genes=genes, requested=len(genes),
        unmapped=sorted({g for g in left.unmapped + right.unmapped if g in keep}),
        ambiguous=sorted({g for g in left.ambiguous + right.ambiguous if g in keep}),
        original={k: v for k, v in {**right.original, **left.original}.items() if k in keep},
        sources=_merge_sources(left.sources, right.sources),
        parts=_parts(left) + _parts(right),
        canonical=f"{canon(node.left, left)} {node.op} {canon(node.right, right)}")


def _label(sources: list[dict[str, Any]], key: str) -> str:
    main = [s for s in sources if s["name"] not in ("symbols", "file")] or \
        [s for s in sources if s["name"] == "file"]
    return ";".join(str(s[key]) for s in main)


def _finish(x: GeneSet | PairSet, text: str, atom: bool) -> None:
    """Top-level bookkeeping: the reference text and the resources every part used."""
    x.ref = text.strip()
    if not atom:
        x.resource = _label(x.sources, "name") or "literal"
        x.version = _label(x.sources, "version")
        x.checksum = _label(x.sources, "checksum")


def resolve_gene_set(ref: str) -> GeneSet:
    """A gene set from a reference (resource, literal or set algebra over gene sets)."""
    node = parse(ref)
    for r in refs(node):
        _check_kind(r, "genes")
    gs = _eval_genes(node)
    _finish(gs, ref, isinstance(node, Ref))
    if not gs.genes:
        raise GeoscreenError(f"gene set {ref!r} resolves to 0 genes", field="gene set",
                             fix=_FIX_EMPTY)
    return gs


# -- families of gene sets -----------------------------------------------------------------------
def resolve_gene_family(text: str, field: str = "family") -> api.GeneFamily:
    """A family of gene sets from one resource: ``go:*`` (options aspect, evidence, propagate),
    ``NAME:*`` for a named-set resource (reactome, hpa, panglaodb, ...), ``NAME:TF=*`` or
    ``NAME:target=*`` for a regulatory network (trrust, dorothea)."""
    node = parse(text)
    fix = ("write one reference with a wildcard: go:*?aspect=CC, reactome:*, trrust:TF=*")
    if not isinstance(node, Ref):
        raise GeoscreenError(f"{text!r} combines references; a family is one resource",
                             field=field, fix=fix)
    info = catalog.get(node.name, node.pos + 1)
    if info.name == "file":
        return _gmt_family(node, text)
    v = None if info.literal else _version(node)
    idx = None if v is None else backends.load_index(info.name, info.backend, v)
    if idx is None or not hasattr(idx, "family") or "*" not in node.selector:
        raise GeoscreenError(f"{text!r} is not a family of gene sets", field=field, fix=fix)
    assert v is not None
    hit = idx.family(node)
    if not hit.set_ids:
        raise GeoscreenError(f"family {text!r} has no gene sets", field=field,
                             fix=_FIX_EMPTY)
    return api.GeneFamily(ref=text.strip(), set_ids=hit.set_ids, set_names=hit.set_names,
                          member_set=hit.member_set, member_gene=hit.member_gene,
                          genes=hit.genes, resource=info.name, version=v.label,
                          checksum=v.checksum, unmapped=hit.unmapped, ambiguous=hit.ambiguous,
                          original=hit.original, sources=_sources(info.name, v),
                          canonical=hit.canonical)


def _gmt_family(ref: Ref, text: str) -> api.GeneFamily:
    """A family from a GMT file (``file:PATH.gmt``): one set per line, ``name<TAB>description
    <TAB>gene<TAB>gene...`` (the MSigDB format).  Symbols are normalised as in ``genes:``."""
    import hashlib

    from geoscreen.store.userfiles import read_text

    path = ref.selector.strip().strip('"')
    body = read_text(path, field="family", what="GMT file")
    ids: list[str] = []
    names: list[str] = []
    lists: list[list[str]] = []
    for no, line in enumerate(body.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.rstrip("\r\n").split("\t")
        if len(cells) < 3:
            raise GeoscreenError(f"line {no} has {len(cells)} tab-separated fields; a GMT line "
                                 "is name, description, then genes", path=path, field="family",
                                 fix="write name<TAB>description<TAB>gene<TAB>gene...")
        ids.append(cells[0].strip())
        names.append(cells[1].strip() or cells[0].strip())
        lists.append([c for c in cells[2:] if c.strip()])
    if not ids:
        raise GeoscreenError("lists no gene sets", path=path, field="family",
                             fix="write one set per line: name<TAB>description<TAB>genes...")
    flat = [g for gs in lists for g in gs]
    genes, unmapped, ambiguous, original = api._normalise_list(flat)
    from geoscreen.store.resources.symbols import symbol_map

    sm = symbol_map()
    pos = {g: i for i, g in enumerate(genes)}
    mset = np.fromiter((j for j, gs in enumerate(lists) for _ in gs), dtype=np.int64,
                       count=len(flat))
    mgene = np.fromiter((pos[sm.lookup(g.strip())[0]] for g in flat), dtype=np.int64,
                        count=len(flat))
    key = unique_sorted(mset * (len(genes) + 1) + mgene)
    checksum = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return api.GeneFamily(ref=text.strip(), set_ids=ids, set_names=names,
                          member_set=(key // (len(genes) + 1)).astype(np.int32),
                          member_gene=(key % (len(genes) + 1)).astype(np.int32), genes=genes,
                          resource="file", version=path, checksum=checksum, unmapped=unmapped,
                          ambiguous=ambiguous, original=original,
                          sources=[{"name": "file", "version": path, "checksum": checksum,
                                    "origin": "file"}, api._symbols_source()],
                          canonical=f"file:{path}")


# -- pair sets ------------------------------------------------------------------------------------
def _undirected(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    return [(x, y) if x <= y else (y, x) for x, y in zip(a, b)]


def _subset(ps: PairSet, mask: np.ndarray) -> PairSet:
    idx = np.flatnonzero(mask)
    a = [ps.a[i] for i in idx]
    b = [ps.b[i] for i in idx]
    genes = set(a) | set(b)
    return replace(ps, a=a, b=b,
                   score=None if ps.score is None else np.asarray(ps.score)[idx],
                   sign=None if ps.sign is None else np.asarray(ps.sign)[idx],
                   requested=len(a), unmapped=[g for g in ps.unmapped if g in genes],
                   ambiguous=[g for g in ps.ambiguous if g in genes],
                   original={k: v for k, v in ps.original.items() if k in genes})


class _Eval:
    """One evaluation of a pair-set expression: collects atom records in order."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any] | PairSet] = []
        self.sources: list[dict[str, Any]] = []

    def records(self) -> list[dict[str, Any]]:
        return [_part(p.record()) if isinstance(p, PairSet) else p for p in self.parts]

    def node(self, node: Node) -> _PNode:
        if isinstance(node, Ref):
            return self.atom(node)
        return _Bin(self, node.op, self.node(node.left), self.node(node.right))

    def atom(self, ref: Ref) -> _PNode:
        info = catalog.get(ref.name, ref.pos + 1)
        _check_kind(ref, "pairs")
        if info.literal:
            if ref.options or ref.version:
                raise ref.error(f"literal '{info.name}:' references take no options or "
                                "versions", at_name=True)
            ps = api._literal_pair_set(f"{info.name}:{ref.selector}")
            assert ps is not None
            ps.canonical = ps.ref
            return _Concrete(self, ps)
        v = _version(ref)
        if info.backend == "go-cooccurrence":
            idx = backends.load_index("go", "go", v)
            aspect, n = idx.cooccurrence_spec(ref)
            return _Cooc(self, ref, idx, aspect, n, v)
        idx = backends.load_index(info.name, info.backend, v)
        hit = idx.pairs(ref)
        ps = PairSet(ref=ref.source, a=hit.a, b=hit.b, score=hit.score, sign=hit.sign,
                     directed=hit.directed, resource=info.name, version=v.label,
                     checksum=v.checksum, requested=hit.requested, unmapped=hit.unmapped,
                     ambiguous=hit.ambiguous, original=hit.original,
                     sources=_sources(info.name, v), canonical=hit.canonical, details=hit.extra)
        return _Concrete(self, ps)


class _PNode:
    lazy = False
    directed = False

    def materialise(self) -> PairSet:
        raise NotImplementedError

    def contains(self, a: list[str], b: list[str], directed: bool) -> np.ndarray:
        raise NotImplementedError


class _Concrete(_PNode):
    def __init__(self, ev: _Eval, ps: PairSet) -> None:
        self.ps = ps
        self.directed = ps.directed
        self._keys: dict[bool, set[tuple[str, str]]] = {}
        ev.parts.append(ps)  # recorded only if the expression is composite
        ev.sources.extend(ps.sources)

    def materialise(self) -> PairSet:
        return self.ps

    def contains(self, a: list[str], b: list[str], directed: bool) -> np.ndarray:
        use_dir = directed and self.directed
        keys = self._keys.get(use_dir)
        if keys is None:
            keys = set(zip(self.ps.a, self.ps.b)) if use_dir else \
                set(_undirected(self.ps.a, self.ps.b))
            self._keys[use_dir] = keys
        q = list(zip(a, b)) if use_dir else _undirected(a, b)
        return np.fromiter((k in keys for k in q), dtype=bool, count=len(q))


class _Cooc(_PNode):
    lazy = True

    def __init__(self, ev: _Eval, ref: Ref, idx: Any, aspect: str, n: int,
                 v: catalog.ResourceVersion) -> None:
        self.ev, self.ref, self.idx, self.aspect, self.n, self.v = ev, ref, idx, aspect, n, v
        self.canonical = f"go-cooccurrence:{aspect}<={n}"
        # noted now so that parts keep the expression's left-to-right order; filled on use
        self.rec: dict[str, Any] = {"ref": ref.source, "kind": "pair_set", "resource": "go",
                                    "version": v.label, "checksum": v.checksum,
                                    "canonical": self.canonical, "directed": False}
        ev.parts.append(self.rec)
        ev.sources.extend(_sources("go", v))

    def contains(self, a: list[str], b: list[str], directed: bool) -> np.ndarray:
        if "lazy" not in self.rec:
            info = self.idx.cooccurrence_info(self.aspect, self.n)
            self.rec.update(lazy=True, terms=info["terms"], genes=info["genes"])
        return self.idx.cooccur_contains(a, b, self.aspect, self.n)

    def materialise(self) -> PairSet:
        hit = self.idx.cooccur_pairs(self.ref, self.aspect, self.n)
        ps = PairSet(ref=self.ref.source, a=hit.a, b=hit.b, score=hit.score, directed=False,
                     resource="go", version=self.v.label, checksum=self.v.checksum,
                     requested=hit.requested, unmapped=hit.unmapped, ambiguous=hit.ambiguous,
                     original=hit.original, sources=_sources("go", self.v),
                     canonical=self.canonical)
        self.rec.clear()
        self.rec.update(ps.record())
        return ps


class _Bin(_PNode):
    def __init__(self, ev: _Eval, op: str, left: _PNode, right: _PNode) -> None:
        self.op, self.left, self.right = op, left, right
        if op == "|":
            self.lazy = left.lazy or right.lazy
            self.directed = left.directed and right.directed
        elif op == "&":
            self.lazy = left.lazy and right.lazy
            self.directed = right.directed if left.lazy and not right.lazy else left.directed
        else:
            self.lazy = left.lazy
            self.directed = left.directed

    def contains(self, a: list[str], b: list[str], directed: bool) -> np.ndarray:
        x = self.left.contains(a, b, directed)
        y = self.right.contains(a, b, directed)
        return x | y if self.op == "|" else x & y if self.op == "&" else x & ~y

    def materialise(self) -> PairSet:
        if self.op == "&" and self.left.lazy and not self.right.lazy:
            r = self.right.materialise()
            return _subset(r, self.left.contains(r.a, r.b, r.directed))
        left = self.left.materialise()
        if self.op == "-":
            return _subset(left, ~self.right.contains(left.a, left.b, left.directed))
        if self.op == "&":
            return _subset(left, self.right.contains(left.a, left.b, left.directed))
        right = self.right.materialise()
        new = _subset(right, ~_Concrete(_Eval(), left).contains(right.a, right.b,
                                                                right.directed))

        def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
            return None if x is None or y is None else np.concatenate([x, y])

        genes = set(left.a) | set(left.b) | set(new.a) | set(new.b)
        return PairSet(
            ref="", a=left.a + new.a, b=left.b + new.b, score=cat(left.score, new.score),
            sign=cat(left.sign, new.sign), directed=left.directed and right.directed,
            requested=len(left.a) + len(new.a),
            unmapped=sorted({g for g in left.unmapped + right.unmapped if g in genes}),
            ambiguous=sorted({g for g in left.ambiguous + right.ambiguous if g in genes}),
            original={k: v for k, v in {**right.original, **left.original}.items()
                      if k in genes})


def resolve_pair_set(ref: str) -> PairSet:
    """A pair set from a reference (resource, literal or set algebra over pair sets)."""
    node = parse(ref)
    for r in refs(node):
        _check_kind(r, "pairs")
    ev = _Eval()
    root = ev.node(node)
    ps = root.materialise()
    atom = isinstance(node, Ref)
    if not atom:
        recs = ev.records()
        ps = replace(ps, requested=len(ps.a), parts=recs, sources=_merge_sources(ev.sources),
                     canonical=_canonical(node, recs), details={})  # details stay in parts
    _finish(ps, ref, atom)
    if not ps.a:
        raise GeoscreenError(f"pair set {ref!r} resolves to 0 pairs", field="pairs",
                             fix=_FIX_EMPTY)
    return ps


def _canonical(node: Node, recs: list[dict[str, Any]]) -> str:
    """The expression with each atom replaced by its canonical form (defaults made explicit)."""
    atoms = iter([p.get("canonical") or p["ref"] for p in recs])

    def walk(n: Node) -> str:
        if isinstance(n, Ref):
            return next(atoms, n.source)
        left, right = walk(n.left), walk(n.right)
        left = f"({left})" if isinstance(n.left, BinOp) else left
        right = f"({right})" if isinstance(n.right, BinOp) else right
        return f"{left} {n.op} {right}"

    return walk(node)


def resolve(ref: str) -> GeneSet | PairSet:
    """Resolve to whichever kind the reference denotes (used by `resources show`)."""
    return resolve_pair_set(ref) if kind_of(ref) == "pairs" else resolve_gene_set(ref)


# -- listing --------------------------------------------------------------------------------------
def describe_resources() -> list[dict[str, Any]]:
    """Every resource with its licence, selectors, examples and available versions."""
    out = []
    for info in catalog.RESOURCES.values():
        vs = [] if info.literal else catalog.versions(info.name)
        out.append({
            "name": info.name, "title": info.title, "provides": info.provides,
            "license": info.license, "homepage": info.homepage, "citation": info.citation,
            "selectors": list(info.selectors), "examples": list(info.examples),
            "bundled": info.bundled or bool(info.base and catalog.RESOURCES[info.base].bundled),
            "fetchable": info.fetchable, "fetch_note": info.fetch_note, "literal": info.literal,
            "in_use": vs[0].id if vs else None,
            "versions": [{"id": v.id, "version": v.label, "origin": v.origin,
                          "checksum": v.checksum, "fetched_at": v.fetched_at} for v in vs],
        })
    return out


def presence(x: GeneSet | PairSet, cache: Any) -> tuple[list[bool], dict[str, int]]:
    """Per item (gene or pair) whether it is present (non-zero) in `cache`, plus counts."""
    from geoscreen.store.resources.symbols import cache_symbol_index

    index = cache_symbol_index(cache.genes.symbols)
    present = cache.genes.present

    def ok(g: str) -> bool:
        i = index.get(g)
        return i is not None and bool(present[i])

    if isinstance(x, GeneSet):
        flags = [ok(g) for g in x.genes]
        return flags, {"present": sum(flags), "in_cache": sum(g in index for g in x.genes),
                       "total": len(flags)}
    flags = [ok(a) and ok(b) and a != b for a, b in zip(x.a, x.b)]
    return flags, {"present": sum(flags), "total": len(flags)}


# -- loading ahead --------------------------------------------------------------------------------
def warm_indexes(text: str) -> list[str]:
    """Load the query indexes (and the symbol map) of the named resources a reference uses,
    resolving nothing: a persistent worker's warden does this once so that every worker it forks
    starts with them.  Literal and ``file:`` atoms are skipped (a user file is read by the
    worker, under its file policy).  Returns the resources loaded."""
    from geoscreen.store.resources import symbols

    out = []
    for r in refs(parse(text)):
        info = catalog.get(r.name, r.pos + 1)
        if info.literal or info.name == "file":
            continue
        backends.load_index(info.name, info.backend, _version(r))
        out.append(info.name)
    if out:
        symbols.symbol_map()
    return out
