"""Derived indexes (one `.npz` per resource version) and the queries selectors run against them.

Parsing the 350k-row GO table or the 175k-row STRING table costs about a second; workers resolve
references for every hypothesis, so each version is parsed once into compact integer arrays,
stored under `_util.index_dir()` keyed by the version's checksum (written atomically, so
concurrent workers are safe), and memoised per process.  Symbols are normalised at build time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError, did_you_mean
from geoscreen.store.resources import _util
from geoscreen.store.resources.grammar import Option, Ref
from geoscreen.store.resources.symbols import AMBIGUOUS, RENAMED, UNKNOWN, lookup_statuses

if TYPE_CHECKING:
    from geoscreen.store.resources import formats

INDEX_FORMAT = 2
Arrays = Mapping[str, np.ndarray]
MAX_COOCCURRENCE_N = 1000
DEFAULT_COOCCURRENCE = ("BP", 50)
MAX_MATERIALISED_PAIRS = 5_000_000


@dataclass
class GeneHit:
    """Genes selected from an index, with what normalisation reported about them."""

    genes: list[str]
    unmapped: list[str]
    ambiguous: list[str]
    original: dict[str, str]
    requested: int
    canonical: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairHit:
    a: list[str]
    b: list[str]
    score: np.ndarray | None
    sign: np.ndarray | None
    directed: bool
    unmapped: list[str]
    ambiguous: list[str]
    original: dict[str, str]
    requested: int
    canonical: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FamilyHit:
    """A family of gene sets from one index: set j holds genes[member_gene[member_set == j]]."""

    set_ids: list[str]
    set_names: list[str]
    member_set: np.ndarray  # int32, index into set_ids
    member_gene: np.ndarray  # int32, index into genes
    genes: list[str]
    unmapped: list[str]
    ambiguous: list[str]
    original: dict[str, str]
    canonical: str
    extra: dict[str, Any] = field(default_factory=dict)


def _family_hit(vocab: Vocab, ids: list[str], names: list[str], mset: np.ndarray,
                mgene: np.ndarray, canonical: str, extra: dict[str, Any] | None = None,
                ) -> FamilyHit:
    """Compact a (set, vocabulary gene) membership list to the sets and genes it uses."""
    key = unique_sorted(mset.astype(np.int64) * (int(vocab.status.size) + 1) + mgene)
    mset = (key // (int(vocab.status.size) + 1)).astype(np.int64)
    mgene = (key % (int(vocab.status.size) + 1)).astype(np.int64)
    used_sets, set_idx = np.unique(mset, return_inverse=True)
    used_genes, gene_idx = np.unique(mgene, return_inverse=True)
    unm, amb, orig = vocab.report(used_genes)
    return FamilyHit([ids[i] for i in used_sets.tolist()], [names[i] for i in used_sets.tolist()],
                     set_idx.astype(np.int32), gene_idx.astype(np.int32),
                     vocab.genes[used_genes].tolist(), unm, amb, orig, canonical, extra or {})


# -- vocabularies ---------------------------------------------------------------------------------
def build_vocab(symbols: list[str], ensembl: list[str] | None = None,
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Normalise source symbols; return vocabulary arrays and each input's vocabulary id.

    The vocabulary is sorted, so sorted ids give alphabetically sorted symbols.
    """
    keys = list(zip(symbols, ensembl)) if ensembl else [(s, "") for s in symbols]
    uniq = list(dict.fromkeys(keys))
    cur, status = lookup_statuses([s for s, _ in uniq])
    if ensembl:  # an Ensembl id that maps to exactly one gene wins over the symbol
        ecur, est = lookup_statuses([e or "-" for _, e in uniq])
        for i, (s, e) in enumerate(uniq):
            if e and est[i] < UNKNOWN:
                cur[i], status[i] = ecur[i], (RENAMED if ecur[i] != s else 0)
    vocab = sorted(set(cur))
    pos = {g: i for i, g in enumerate(vocab)}
    best = np.full(len(vocab), 9, dtype=np.int8)
    orig = [""] * len(vocab)
    for (s, _), c, st in zip(uniq, cur, status.tolist()):
        j = pos[c]
        if st < best[j]:
            best[j] = st
        if st == RENAMED and not orig[j]:
            orig[j] = s
    key_id = {k: pos[c] for k, c in zip(uniq, cur)}
    ids = np.fromiter((key_id[k] for k in keys), dtype=np.int32, count=len(keys))
    genes = np.array(vocab, dtype=str) if vocab else np.zeros(0, dtype="<U1")
    return {"v_genes": genes, "v_status": best, "v_orig": _util.pack(orig)}, ids


class Vocab:
    def __init__(self, arrays: Arrays) -> None:
        self.genes = arrays["v_genes"]  # fixed-width unicode: no decoding on load
        self.status = arrays["v_status"]
        self._orig_buf = arrays["v_orig"]
        self._orig: list[str] | None = None
        self._pos: dict[str, int] | None = None

    @property
    def orig(self) -> list[str]:
        if self._orig is None:
            self._orig = _util.unpack(self._orig_buf)
        return self._orig

    @property
    def pos(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = {g: i for i, g in enumerate(self.genes.tolist())}
        return self._pos

    def ids(self, symbols: list[str]) -> np.ndarray:
        """Vocabulary id of each symbol (-1 if absent)."""
        p = self.pos
        return np.fromiter((p.get(s, -1) for s in symbols), dtype=np.int64, count=len(symbols))

    def report(self, ids: np.ndarray) -> tuple[list[str], list[str], dict[str, str]]:
        """(unmapped, ambiguous, original) for the given vocabulary ids."""
        ids = unique_sorted(ids)
        st = self.status[ids]
        unm = self.genes[ids[st == UNKNOWN]].tolist()
        amb = self.genes[ids[st == AMBIGUOUS]].tolist()
        ren = ids[st == RENAMED]
        orig = self.orig
        return unm, amb, {self.genes[i]: orig[i] for i in ren.tolist() if orig[i]}

    def gene_hit(self, ids: np.ndarray, canonical: str) -> GeneHit:
        ids = unique_sorted(ids)
        unm, amb, orig = self.report(ids)
        return GeneHit(self.genes[ids].tolist(), unm, amb, orig, int(ids.size), canonical)


def _opts(ref: Ref, allowed: dict[str, str]) -> dict[str, Option]:
    """Options of a reference checked against `allowed` (name -> help)."""
    out = {}
    for o in ref.options:
        if o.key not in allowed:
            valid = list(allowed)
            hint = did_you_mean(o.key, valid) if valid else "this resource takes no options"
            raise ref.option_error(o, f"unknown option {o.key!r} for {ref.name!r}; {hint}")
        out[o.key] = o
    return out


def _yes(ref: Ref, o: Option) -> bool:
    v = (o.value or "yes").lower()
    if v in ("yes", "true", "1", "y"):
        return True
    if v in ("no", "false", "0", "n"):
        return False
    raise ref.option_error(o, f"option {o.key!r} expects yes or no, found {o.value!r}")


def _norm_name(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


# -- GO -------------------------------------------------------------------------------------------
EVIDENCE_GROUPS = {
    "experimental": ("EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "HTP", "HDA", "HMP", "HGI", "HEP"),
    "phylogenetic": ("IBA", "IBD", "IKR", "IRD"),
    "computational": ("ISS", "ISO", "ISA", "ISM", "IGC", "RCA"),
    "author": ("TAS", "NAS"),
    "curator": ("IC", "ND"),
    "electronic": ("IEA",),
}
EVIDENCE_CODES = tuple(c for g in EVIDENCE_GROUPS.values() for c in g)
_ASPECTS = ("BP", "CC", "MF")
_GO_ID = re.compile(r"^(?:GO:)?(\d{7})$", re.IGNORECASE)


def build_go(t: formats.GoTables) -> dict[str, np.ndarray]:
    import scipy.sparse as sp

    order = sorted(range(len(t.term_id)), key=lambda i: t.term_id[i])
    term_id = [t.term_id[i] for i in order]
    tpos = {x: i for i, x in enumerate(term_id)}
    n_terms = len(term_id)
    keep = [i for i, x in enumerate(t.ann_term) if x in tpos]  # unknown / obsolete terms
    vocab, gene_ids = build_vocab([t.ann_symbol[i] for i in keep])
    codes = sorted(set(t.ann_evidence[i] for i in keep))
    cpos = {c: i for i, c in enumerate(codes)}
    n_codes = max(len(codes), 1)
    key = (gene_ids.astype(np.int64) * n_terms
           + np.fromiter((tpos[t.ann_term[i]] for i in keep), dtype=np.int64)) * n_codes \
        + np.fromiter((cpos[t.ann_evidence[i]] for i in keep), dtype=np.int64)
    key = unique_sorted(key)
    ann = np.stack([key // (n_terms * n_codes), (key // n_codes) % n_terms, key % n_codes], axis=1)
    n_genes = int(vocab["v_status"].size)
    # ancestor-or-self closure over is_a / part_of
    ok = [(tpos[c], tpos[p]) for c, p in zip(t.edge_child, t.edge_parent)
          if c in tpos and p in tpos]
    ch = np.array([c for c, _ in ok], dtype=np.int64)
    pa = np.array([p for _, p in ok], dtype=np.int64)
    par = sp.csr_matrix((np.ones(ch.size, dtype=np.int8), (ch, pa)), shape=(n_terms, n_terms))
    clo = sp.identity(n_terms, dtype=np.int8, format="csr")
    for _ in range(100):
        nxt = clo + clo @ par
        nxt.data[:] = 1
        if nxt.nnz == clo.nnz:
            break
        clo = nxt.tocsr()
    desc = clo.tocsc()
    desc.sort_indices()
    direct = sp.csr_matrix((np.ones(len(ann), dtype=np.int8), (ann[:, 0], ann[:, 1])),
                           shape=(n_genes, n_terms))
    direct.data[:] = 1
    prop = (direct @ clo).tocsr()
    prop.data[:] = 1
    prop.sort_indices()
    size = np.diff(prop.tocsc().indptr).astype(np.int32)
    small = (size >= 2) & (size <= MAX_COOCCURRENCE_N)
    co = prop[:, np.flatnonzero(small)].tocsr()
    co.sort_indices()
    co_terms = np.flatnonzero(small)[co.indices].astype(np.int32)
    aspect = np.array([_ASPECTS.index(t.term_aspect[i]) for i in order], dtype=np.int8)
    return {
        **vocab,
        "term_num": np.array([int(x[3:]) for x in term_id], dtype=np.int32),
        "term_aspect": aspect,
        "term_name": _util.pack([t.term_name[i] for i in order]),
        "term_size": size,
        "desc_indptr": desc.indptr.astype(np.int64),
        "desc_indices": desc.indices.astype(np.int32),
        "ann_gene": ann[:, 0].astype(np.int32),
        "ann_term": ann[:, 1].astype(np.int32),
        "ann_ev": ann[:, 2].astype(np.int8),
        "ev_codes": _util.pack(codes),
        "co_indptr": co.indptr.astype(np.int64),
        "co_terms": co_terms,
    }


class GoIndex:
    """GO terms, their descendant closure and direct annotations with evidence codes."""

    options = {"evidence": "evidence codes or groups to keep, '-CODE' to drop",
               "propagate": "no = direct annotations only"}

    def __init__(self, arrays: Arrays) -> None:
        self.a = arrays
        self.vocab = Vocab(arrays)
        self.term_num = arrays["term_num"]
        self.codes = _util.unpack(arrays["ev_codes"])
        self._names: list[str] | None = None
        self._by_name: dict[str, int] | None = None

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = _util.unpack(self.a["term_name"])
        return self._names

    def term_id(self, t: int) -> str:
        return f"GO:{int(self.term_num[t]):07d}"

    def term(self, ref: Ref) -> int:
        sel = ref.selector.strip()
        if not sel:
            raise ref.error("expected a GO term id (GO:0005615) or a quoted term name after 'go:'")
        m = _GO_ID.match(sel)
        if m:
            num = int(m.group(1))
            t = int(np.searchsorted(self.term_num, num))
            if t < self.term_num.size and self.term_num[t] == num:
                return t
            raise ref.error(f"GO:{num:07d} is not a current GO term in this version")
        if self._by_name is None:
            self._by_name = {n.lower(): i for i, n in enumerate(self.names)}
        t = self._by_name.get(sel.lower())
        if t is None:
            import difflib

            close = difflib.get_close_matches(sel.lower(), list(self._by_name), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
                "use a GO id such as GO:0005615"
            raise ref.error(f"no GO term named {sel!r}; {hint}")
        return t

    def evidence_mask(self, ref: Ref, opt: Option | None) -> tuple[np.ndarray | None, str]:
        """Boolean mask over this index's evidence codes, and the canonical option text."""
        if opt is None:
            return None, ""
        if not opt.value:
            raise ref.option_error(opt, "expected evidence codes, e.g. evidence=-IEA or "
                                        "evidence=experimental")
        include: set[str] = set()
        exclude: set[str] = set()
        valid = list(EVIDENCE_CODES) + list(EVIDENCE_GROUPS)
        words = []
        for item in opt.value.split(","):
            neg = item.startswith("-")
            word = item[1:] if neg else item
            key = word.lower() if word.lower() in EVIDENCE_GROUPS else word.upper()
            words.append(("-" if neg else "") + key)
            if key in EVIDENCE_GROUPS:
                codes = set(EVIDENCE_GROUPS[key])
            elif key in EVIDENCE_CODES:
                codes = {key}
            else:
                raise ref.option_error(opt, f"unknown evidence code {word!r}; "
                                            f"{did_you_mean(word, valid)}")
            (exclude if neg else include).update(codes)
        keep = (include or set(EVIDENCE_CODES)) - exclude
        mask = np.array([c in keep for c in self.codes], dtype=bool)
        return mask, "evidence=" + ",".join(words)

    def genes(self, ref: Ref) -> GeneHit:
        opts = _opts(ref, self.options)
        t = self.term(ref)
        propagate = _yes(ref, opts["propagate"]) if "propagate" in opts else True
        evmask, evtext = self.evidence_mask(ref, opts.get("evidence"))
        if propagate:
            ptr = self.a["desc_indptr"]
            desc = self.a["desc_indices"][ptr[t]:ptr[t + 1]]
        else:
            desc = np.array([t])
        tmask = np.zeros(self.term_num.size, dtype=bool)
        tmask[desc] = True
        sel = tmask[self.a["ann_term"]]
        if evmask is not None:
            sel &= evmask[self.a["ann_ev"]]
        opts_txt = ";".join(x for x in (evtext, "" if propagate else "propagate=no") if x)
        canonical = f"go:{self.term_id(t)}" + (f"?{opts_txt}" if opts_txt else "")
        hit = self.vocab.gene_hit(self.a["ann_gene"][sel], canonical)
        hit.extra = {"term": self.term_id(t), "name": self.names[t],
                     "aspect": _ASPECTS[int(self.a["term_aspect"][t])]}
        return hit

    family_options = {**options, "aspect": "BP, CC or MF: terms of one GO aspect only"}

    def family(self, ref: Ref) -> FamilyHit:
        """Every GO term (``go:*``), or every term of one aspect (``go:*?aspect=CC``), with its
        genes (annotations propagated to ancestors unless ``propagate=no``)."""
        import scipy.sparse as sp

        if ref.selector.strip() != "*":
            raise ref.error("a GO family is written go:* (every term), with options such as "
                            "?aspect=CC")
        opts = _opts(ref, self.family_options)
        propagate = _yes(ref, opts["propagate"]) if "propagate" in opts else True
        evmask, evtext = self.evidence_mask(ref, opts.get("evidence"))
        n_terms = self.term_num.size
        terms = np.arange(n_terms)
        aspect = ""
        if "aspect" in opts:
            o = opts["aspect"]
            aspect = (o.value or "").upper()
            if aspect not in _ASPECTS:
                raise ref.option_error(o, f"aspect must be one of {', '.join(_ASPECTS)}; found "
                                          f"{o.value!r}")
            terms = np.flatnonzero(self.a["term_aspect"] == _ASPECTS.index(aspect))
        sel = np.ones(self.a["ann_term"].size, dtype=bool) if evmask is None else \
            evmask[self.a["ann_ev"]]
        n_genes = int(self.vocab.status.size)
        direct = sp.csr_matrix((np.ones(int(sel.sum()), dtype=np.int32),
                                (self.a["ann_gene"][sel], self.a["ann_term"][sel])),
                               shape=(n_genes, n_terms))
        if propagate:  # column t of the closure lists t's descendants (itself included)
            ptr, ind = self.a["desc_indptr"], self.a["desc_indices"]
            clo = sp.csc_matrix((np.ones(ind.size, dtype=np.int32), ind, ptr),
                                shape=(n_terms, n_terms))
            member = (direct @ clo[:, terms]).tocoo()
        else:
            member = direct[:, terms].tocoo()
        words = [x for x in (f"aspect={aspect}" if aspect else "", evtext,
                             "" if propagate else "propagate=no") if x]
        canonical = "go:*" + (f"?{';'.join(words)}" if words else "")
        ids = [self.term_id(int(t)) for t in terms]
        names = [self.names[int(t)] for t in terms]
        return _family_hit(self.vocab, ids, names, member.col.astype(np.int64),
                           member.row.astype(np.int64), canonical)

    # -- co-occurrence ------------------------------------------------------------------------
    def cooccurrence_spec(self, ref: Ref) -> tuple[str, int]:
        sel = ref.selector.strip()
        _opts(ref, {})
        if not sel:
            return DEFAULT_COOCCURRENCE
        m = re.fullmatch(r"(BP|CC|MF|ANY)\s*<=\s*(\d+)", sel, re.IGNORECASE)
        if not m:
            raise ref.error(f"expected ASPECT<=N (BP<=50, CC<=20, MF<=100, ANY<=50), found {sel!r}")
        n = int(m.group(2))
        if not 2 <= n <= MAX_COOCCURRENCE_N:
            raise ref.error(f"N must be between 2 and {MAX_COOCCURRENCE_N}, found {n}",
                            offset=m.start(2))
        return m.group(1).upper(), n

    def _small_terms(self, aspect: str, n: int) -> np.ndarray:
        size = self.a["term_size"]
        ok = (size >= 2) & (size <= n)
        if aspect != "ANY":
            ok &= self.a["term_aspect"] == _ASPECTS.index(aspect)
        return ok

    def _co_entries(self, aspect: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(gene, term) entries of terms with 2..n genes, sorted by gene then term."""
        ptr, terms = self.a["co_indptr"], self.a["co_terms"]
        genes = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
        keep = self._small_terms(aspect, n)[terms]
        return genes[keep], terms[keep].astype(np.int64)

    def cooccur_contains(self, a: list[str], b: list[str], aspect: str, n: int) -> np.ndarray:
        """For each pair, whether both genes share a term with 2..n genes (no materialisation)."""
        ia, ib = self.vocab.ids(a), self.vocab.ids(b)
        out = np.zeros(len(a), dtype=bool)
        g, t = self._co_entries(aspect, n)
        if not g.size or not len(a):
            return out
        n_terms = np.int64(self.term_num.size)
        ref_keys = g * n_terms + t  # sorted
        ptr = np.searchsorted(g, np.arange(self.vocab.status.size + 1))
        ok = np.flatnonzero((ia >= 0) & (ib >= 0) & (ia != ib))
        starts, ends = ptr[ia[ok]], ptr[ia[ok] + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return out
        owner = np.repeat(np.arange(ok.size), lens)
        offs = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        terms_a = t[np.repeat(starts, lens) + offs]
        q = ib[ok][owner] * n_terms + terms_a
        pos = np.searchsorted(ref_keys, q)
        pos[pos >= ref_keys.size] = 0
        hit = ref_keys[pos] == q
        out[ok[unique_sorted(owner[hit])]] = True
        return out

    def cooccur_pairs(self, ref: Ref, aspect: str, n: int) -> PairHit:
        g, t = self._co_entries(aspect, n)
        order = np.argsort(t, kind="stable")
        g, t = g[order], t[order]
        bounds = np.flatnonzero(np.diff(t)) + 1
        groups = np.split(g, bounds)
        total = sum(len(x) * (len(x) - 1) // 2 for x in groups)
        if total > MAX_MATERIALISED_PAIRS:
            raise ref.error(f"go-cooccurrence:{aspect}<={n} has {total:,} term-pairs; that is too "
                            f"many to list (limit {MAX_MATERIALISED_PAIRS:,}). Use it on the "
                            "right of '-' or '&', where membership is tested without listing, "
                            "or choose a smaller N", at_name=True)
        n_genes = np.int64(self.vocab.status.size)
        keys = []
        for grp in groups:
            if len(grp) < 2:
                continue
            i, j = np.triu_indices(len(grp), 1)
            keys.append(grp[i] * n_genes + grp[j])
        if not keys:
            raise ref.error(f"go-cooccurrence:{aspect}<={n} has no pairs", at_name=True)
        uk, counts = np.unique(np.concatenate(keys), return_counts=True)
        a, b = uk // n_genes, uk % n_genes
        unm, amb, orig = self.vocab.report(np.concatenate([a, b]))
        return PairHit(self.vocab.genes[a].tolist(), self.vocab.genes[b].tolist(),
                       counts.astype(float), None, False, unm, amb, orig, int(uk.size),
                       f"go-cooccurrence:{aspect}<={n}")

    def cooccurrence_info(self, aspect: str, n: int) -> dict[str, Any]:
        g, t = self._co_entries(aspect, n)
        return {"terms": int(unique_sorted(t).size), "genes": int(unique_sorted(g).size)}


# -- pair networks (STRING) -----------------------------------------------------------------------
def build_pairs(t: formats.PairTable) -> dict[str, np.ndarray]:
    vocab, ids = build_vocab(t.a + t.b)
    n = len(t.a)
    a, b = ids[:n].astype(np.int64), ids[n:].astype(np.int64)
    s = np.asarray(t.score, dtype=np.float64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    ok = lo != hi
    lo, hi, s = lo[ok], hi[ok], s[ok]
    g = np.int64(vocab["v_status"].size)
    keys = lo * g + hi
    order = np.lexsort((-s, keys))  # by key, highest score first
    keys, s = keys[order], s[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, s = keys[first], s[first]
    return {**vocab, "a": (keys // g).astype(np.int32), "b": (keys % g).astype(np.int32),
            "score": s.astype(np.float32)}


_SCORE = re.compile(r"^(>=|>|<=|<)\s*(\d+(?:\.\d+)?)$|^(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)$"
                    r"|^[qQ]([1-5])$|^(all)$")


class PairIndex:
    """Undirected scored pairs with threshold, range and quintile selectors."""

    def __init__(self, arrays: Arrays) -> None:
        self.a = arrays
        self.vocab = Vocab(arrays)
        self._cuts: np.ndarray | None = None

    @property
    def cuts(self) -> np.ndarray:
        """Quintile cut points (20/40/60/80th percentiles) of this version's scores."""
        if self._cuts is None:
            self._cuts = np.quantile(self.a["score"].astype(np.float64), [0.2, 0.4, 0.6, 0.8])
        return self._cuts

    def pairs(self, ref: Ref) -> PairHit:
        _opts(ref, {})
        sel = ref.selector.strip()
        s = self.a["score"]
        m = _SCORE.match(sel) if sel else _SCORE.match("all")
        if not m:
            raise ref.error(f"expected a score selector (>=700, >700, <=400, 400-699, q1..q5 or "
                            f"all), found {sel!r}")
        if m.group(1):
            x = float(m.group(2))
            mask = {">=": s >= x, ">": s > x, "<=": s <= x, "<": s < x}[m.group(1)]
            canonical = f"{m.group(1)}{m.group(2)}"
        elif m.group(3):
            lo, hi = float(m.group(3)), float(m.group(4))
            if lo > hi:
                raise ref.error(f"empty range {sel!r}: the lower bound is above the upper one")
            mask = (s >= lo) & (s <= hi)
            canonical = f"{m.group(3)}-{m.group(4)}"
        elif m.group(5):
            k = int(m.group(5))
            edges = np.concatenate([[-np.inf], self.cuts, [np.inf]])
            mask = (s >= edges[k - 1]) & (s < edges[k])
            canonical = f"q{k}"
        else:
            mask = np.ones(s.size, dtype=bool)
            canonical = "all"
        a, b = self.a["a"][mask], self.a["b"][mask]
        unm, amb, orig = self.vocab.report(np.concatenate([a, b]))
        extra = {"quintile_cuts": [round(float(c), 3) for c in self.cuts]} if m.group(5) else {}
        return PairHit(self.vocab.genes[a].tolist(), self.vocab.genes[b].tolist(),
                       s[mask].astype(np.float64), None, False, unm, amb, orig, int(mask.sum()),
                       f"{ref.name}:{canonical}", extra)


# -- regulatory networks --------------------------------------------------------------------------
_LEVELS = "ABCDE"


def build_regnet(t: formats.RegTable) -> dict[str, np.ndarray]:
    vocab, ids = build_vocab(t.tf + t.target)
    n = len(t.tf)
    tf, tg = ids[:n].astype(np.int64), ids[n:].astype(np.int64)
    mode = np.asarray(t.mode, dtype=np.int64)
    lev = (np.array([_LEVELS.index(x) if x in _LEVELS else 9 for x in t.level], dtype=np.int64)
           if t.level else np.zeros(n, dtype=np.int64))
    s = np.asarray(t.score, dtype=np.float64)
    rows = np.stack([tf, tg, mode, lev], axis=1)
    order = np.lexsort((-s, lev, mode, tg, tf))
    rows, s = rows[order], s[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    rows, s = rows[first], s[first]
    out = {**vocab, "tf": rows[:, 0].astype(np.int32), "target": rows[:, 1].astype(np.int32),
           "mode": rows[:, 2].astype(np.int8), "score": s.astype(np.float32)}
    if t.level:
        out["level"] = rows[:, 3].astype(np.int8)
    return out


class RegIndex:
    """Directed TF -> target edges with mode of regulation (and DoRothEA confidence levels)."""

    MODES = {"Activation": 1, "Repression": -1, "Unknown": 0}

    def __init__(self, arrays: Arrays) -> None:
        self.a = arrays
        self.vocab = Vocab(arrays)

    @property
    def options(self) -> dict[str, str]:
        return {"levels": "confidence levels to keep (default A,B,C)"} if "level" in self.a \
            else {}

    def selectors(self) -> list[str]:
        return ["all", "Activation", "Repression", "Unknown", "signed", "regulators", "targets",
                "TF=SYMBOL", "target=SYMBOL"]

    def _rows(self, ref: Ref) -> tuple[np.ndarray, str]:
        opts = _opts(ref, self.options)
        if "level" not in self.a:
            return np.ones(self.a["tf"].size, dtype=bool), ""
        o = opts.get("levels")
        want = "ABC" if o is None else (o.value or "").replace(",", "").upper()
        if o is not None and (not want or any(c not in _LEVELS for c in want)):
            raise ref.option_error(o, f"levels must be letters from A-E, e.g. levels=A,B,C; "
                                      f"found {o.value!r}")
        keep = np.isin(self.a["level"], [_LEVELS.index(c) for c in want])
        return keep, "levels=" + ",".join(sorted(set(want)))

    def _gene(self, ref: Ref, sym: str, col: str, offset: int) -> int:
        from geoscreen.store.resources.symbols import symbol_map

        cur = symbol_map().lookup(sym)[0]
        p = self.vocab.pos
        i = p.get(cur, p.get(sym, -1))
        present = unique_sorted(self.a[col])
        if i < 0 or not np.isin(i, present):
            role = "regulator" if col == "tf" else "target"
            names = self.vocab.genes[present].tolist()
            raise ref.error(f"{sym!r} is not a {role} in {ref.name}; {did_you_mean(sym, names)}",
                            offset)
        return i

    def _parse(self, ref: Ref) -> tuple[str, str | None, int]:
        sel = ref.selector.strip() or "all"
        m = re.fullmatch(r"(?i)(tf|target)\s*=\s*(\S+)", sel)
        if m:
            return ("TF" if m.group(1).lower() == "tf" else "target"), m.group(2), m.start(2)
        for s in self.selectors()[:7]:
            if sel.lower() == s.lower():
                return s, None, 0
        raise ref.error(f"unknown selector {sel!r} for {ref.name}; "
                        f"{did_you_mean(sel, self.selectors())}")

    def kind(self, ref: Ref) -> set[str]:
        what = self._parse(ref)[0]
        if what in ("regulators", "targets"):
            return {"genes"}
        if what in ("TF", "target"):
            return {"genes", "pairs"}
        return {"pairs"}

    def _select(self, ref: Ref) -> tuple[np.ndarray, str, str]:
        what, sym, off = self._parse(ref)
        keep, lev = self._rows(ref)
        label = what
        if what in self.MODES:
            keep = keep & (self.a["mode"] == self.MODES[what])
        elif what in ("TF", "target"):
            col = "tf" if what == "TF" else "target"
            i = self._gene(ref, sym or "", col, off)
            keep = keep & (self.a[col] == i)
            label = f"{what}={self.vocab.genes[i]}"
        return keep, label, lev

    def genes(self, ref: Ref) -> GeneHit:
        keep, label, lev = self._select(ref)
        what = label.split("=")[0]
        if what not in ("regulators", "targets", "TF", "target"):
            raise ref.error(f"{ref.name}:{label} is a pair set; gene sets from {ref.name} are "
                            "regulators, targets, TF=SYMBOL (its targets) or target=SYMBOL "
                            "(its regulators)")
        col = "tf" if what in ("regulators", "target") else "target"
        canonical = f"{ref.name}:{label}" + (f"?{lev}" if lev else "")
        return self.vocab.gene_hit(self.a[col][keep], canonical)

    def family(self, ref: Ref) -> FamilyHit:
        """The targets of each regulator (``NAME:TF=*``) or the regulators of each target
        (``NAME:target=*``): one gene set per gene."""
        m = re.fullmatch(r"(?i)(tf|target)\s*=\s*\*", ref.selector.strip())
        if not m:
            raise ref.error(f"a {ref.name} family is written {ref.name}:TF=* (each regulator's "
                            f"targets) or {ref.name}:target=* (each target's regulators)")
        keep, lev = self._rows(ref)
        by_tf = m.group(1).lower() == "tf"
        key, other = ("tf", "target") if by_tf else ("target", "tf")
        names = self.vocab.genes.tolist()
        label = "TF=*" if by_tf else "target=*"
        canonical = f"{ref.name}:{label}" + (f"?{lev}" if lev else "")
        hit = _family_hit(self.vocab, [f"{'TF' if by_tf else 'target'}={g}" for g in names],
                          names, self.a[key][keep].astype(np.int64),
                          self.a[other][keep].astype(np.int64), canonical)
        return hit

    def pairs(self, ref: Ref) -> PairHit:
        keep, label, lev = self._select(ref)
        if label in ("regulators", "targets"):
            raise ref.error(f"{ref.name}:{label} is a gene set; pair sets from {ref.name} are "
                            "all, Activation, Repression, Unknown, signed, TF=SYMBOL, "
                            "target=SYMBOL")
        tf, tg = self.a["tf"][keep].astype(np.int64), self.a["target"][keep].astype(np.int64)
        mode, s = self.a["mode"][keep], self.a["score"][keep].astype(np.float64)
        g = np.int64(self.vocab.status.size)
        keys = tf * g + tg
        uk, inv = np.unique(keys, return_inverse=True)
        act = np.zeros(uk.size, dtype=bool)
        rep = np.zeros(uk.size, dtype=bool)
        np.logical_or.at(act, inv, mode == 1)
        np.logical_or.at(rep, inv, mode == -1)
        score = np.zeros(uk.size)
        np.maximum.at(score, inv, s)
        sign = act.astype(float) - rep.astype(float)
        if label in self.MODES:
            sign = np.full(uk.size, float(self.MODES[label]))
        elif label == "signed":
            ok = sign != 0
            uk, score, sign = uk[ok], score[ok], sign[ok]
        a, b = uk // g, uk % g
        unm, amb, orig = self.vocab.report(np.concatenate([a, b]))
        canonical = f"{ref.name}:{label}" + (f"?{lev}" if lev else "")
        return PairHit(self.vocab.genes[a].tolist(), self.vocab.genes[b].tolist(), score, sign,
                       True, unm, amb, orig, int(uk.size), canonical)


# -- named gene-set collections -------------------------------------------------------------------
def build_sets(t: formats.SetTable) -> dict[str, np.ndarray]:
    vocab, gids = build_vocab(t.symbol, t.ensembl or None)
    names: dict[str, str] = {}
    for sid, nm in zip(t.set_id, t.set_name):
        names.setdefault(sid, nm)
    ids = sorted(names)
    spos = {s: i for i, s in enumerate(ids)}
    sidx = np.fromiter((spos[s] for s in t.set_id), dtype=np.int64, count=len(t.set_id))
    order = np.lexsort((gids, sidx))
    out = {**vocab, "set_ids": _util.pack(ids), "set_names": _util.pack([names[s] for s in ids]),
           "m_set": sidx[order].astype(np.int32), "m_gene": gids[order].astype(np.int32)}
    if t.reliability:
        out["m_reliability"] = np.asarray(t.reliability, dtype=np.int8)[order]
    if t.main:
        out["m_main"] = np.asarray(t.main, dtype=bool)[order]
    if t.canonical:
        out["m_canonical"] = np.asarray(t.canonical, dtype=bool)[order]
    return out


_RELIABILITY = ("Enhanced", "Supported", "Approved", "Uncertain")


class SetIndex:
    """Named gene sets (Reactome pathways, HPA locations, PanglaoDB cell types)."""

    def __init__(self, arrays: Arrays) -> None:
        self.a = arrays
        self.vocab = Vocab(arrays)
        self.ids = _util.unpack(arrays["set_ids"])
        self.names = _util.unpack(arrays["set_names"])
        self._lookup: dict[str, int] | None = None

    @property
    def options(self) -> dict[str, str]:
        out = {}
        if "m_reliability" in self.a:
            out["reliability"] = "reliability levels to keep, '-LEVEL' to drop"
        if "m_main" in self.a:
            out["main"] = "yes = main locations only"
        if "m_canonical" in self.a:
            out["canonical"] = "yes = canonical markers only"
        return out

    def find(self, ref: Ref) -> int:
        sel = ref.selector.strip()
        if self._lookup is None:
            lk: dict[str, int] = {}
            for i, nm in enumerate(self.names):
                lk.setdefault(_norm_name(nm), i)
            for i, sid in enumerate(self.ids):
                lk[_norm_name(sid)] = i
            self._lookup = lk
        if not sel:
            raise ref.error(f"expected a set name after '{ref.name}:' (e.g. "
                            f"{ref.name}:{self.ids[0]})")
        i = self._lookup.get(_norm_name(sel))
        if i is None:
            pool = self.names if len(self.ids) > 500 and self.ids[0].startswith("R-") else \
                self.ids
            raise ref.error(f"unknown {ref.name} set {sel!r}; {did_you_mean(sel, pool)}")
        return i

    def _mask(self, ref: Ref) -> tuple[np.ndarray, list[str]]:
        """Memberships kept by the reference's options, and the options' canonical text."""
        opts = _opts(ref, self.options)
        keep = np.ones(self.a["m_set"].size, dtype=bool)
        extra = []
        if "reliability" in opts:
            o = opts["reliability"]
            inc: set[int] = set()
            exc: set[int] = set()
            for item in (o.value or "").split(","):
                neg = item.startswith("-")
                word = item[1:] if neg else item
                lvl = {"validated": "Enhanced"}.get(word.lower(), word).capitalize()
                if lvl not in _RELIABILITY:
                    raise ref.option_error(o, f"unknown reliability {word!r}; "
                                              f"{did_you_mean(word, list(_RELIABILITY))}")
                (exc if neg else inc).add(_RELIABILITY.index(lvl))
            ok = (inc or set(range(4))) - exc
            keep &= np.isin(self.a["m_reliability"], sorted(ok))
            extra.append("reliability=" + ",".join(_RELIABILITY[k] for k in sorted(ok)))
        for key, col in (("main", "m_main"), ("canonical", "m_canonical")):
            if key in opts and _yes(ref, opts[key]):
                keep &= self.a[col]
                extra.append(f"{key}=yes")
        return keep, extra

    def genes(self, ref: Ref) -> GeneHit:
        keep, extra = self._mask(ref)
        i = self.find(ref)
        keep &= self.a["m_set"] == i
        canonical = f"{ref.name}:{self.ids[i]}" + (f"?{';'.join(extra)}" if extra else "")
        hit = self.vocab.gene_hit(self.a["m_gene"][keep], canonical)
        hit.extra = {"set": self.ids[i], "name": self.names[i]}
        return hit

    def family(self, ref: Ref) -> FamilyHit:
        """Every set of the resource (``NAME:*``), filtered by the same options as one set."""
        if ref.selector.strip() != "*":
            raise ref.error(f"a {ref.name} family is written {ref.name}:* (every set)")
        keep, extra = self._mask(ref)
        canonical = f"{ref.name}:*" + (f"?{';'.join(extra)}" if extra else "")
        return _family_hit(self.vocab, self.ids, self.names,
                           self.a["m_set"][keep].astype(np.int64),
                           self.a["m_gene"][keep].astype(np.int64), canonical)

    def listing(self) -> list[tuple[str, str, int]]:
        counts = np.bincount(self.a["m_set"], minlength=len(self.ids))
        return [(i, n, int(c)) for i, n, c in zip(self.ids, self.names, counts)]


# -- building and loading -------------------------------------------------------------------------
BUILDERS: dict[str, tuple[Callable[[Any], dict[str, np.ndarray]], type]] = {
    "go": (build_go, GoIndex), "string": (build_pairs, PairIndex),
    "regnet": (build_regnet, RegIndex), "sets": (build_sets, SetIndex),
}
_LOADED: dict[tuple[str, str], Any] = {}


def build_arrays(resource: str, backend: str, origin: str, files: dict[str, Any],
                 ) -> dict[str, np.ndarray]:
    """Parse source files and build the index arrays (raises GeoscreenError on bad input)."""
    from geoscreen.store.resources import formats

    parser = formats.PARSERS[(resource, origin)]
    tables = parser(files)
    return BUILDERS[backend][0](tables)


def load_index(resource: str, backend: str, version: Any) -> Any:
    """The query object of one resource version; built on first use, then read from disk."""
    key = (resource, version.checksum)
    hit = _LOADED.get(key)
    if hit is not None:
        return hit
    path = index_path(resource, version.checksum)
    arrays: Arrays | None = None
    if path.exists():
        try:
            arrays = _util.load_npz(path, required=("v_genes", "v_status"))
        except (OSError, ValueError):
            arrays = None  # a corrupt or partial index is rebuilt
    if arrays is None:
        if version.origin == "bundled":
            from geoscreen.store.resources.catalog import BUNDLED_FILES, verify_bundled

            for p in version.files.values():
                if p.name in BUNDLED_FILES:
                    verify_bundled(p.name)
        else:
            for role, p in version.files.items():
                if not p.exists():
                    raise GeoscreenError(f"file of {resource} version {version.id} is missing",
                                         path=str(p), fix=f"run 'geoscreen resources fetch "
                                                          f"{resource}' again")
                got = _util.sha256_file(p)
                if got != version.file_checksums[role]:
                    raise GeoscreenError(f"fetched file changed since download (sha256 "
                                         f"{got[:12]}...)", path=str(p),
                                         fix=f"run 'geoscreen resources fetch {resource}' again")
        arrays = build_arrays(resource, backend, version.origin, version.files)
        try:
            _util.save_npz_atomic(path, arrays)
        except OSError:
            pass
    obj = BUILDERS[backend][1](arrays)
    _LOADED[key] = obj
    return obj


def index_path(resource: str, checksum: str) -> Path:
    """Where the derived index of one resource version lives."""
    return _util.index_dir() / f"{resource}-{checksum[:24]}-v{INDEX_FORMAT}.npz"
