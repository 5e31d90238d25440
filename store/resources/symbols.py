"""Gene-symbol normalisation with the bundled NCBI alias map (org.Hs.eg.db 3.16, 2022-09-12).

Resources and model vocabularies use symbols from different years (SEPT7 vs SEPTIN7).  Every
symbol is mapped to its current official symbol with the same rule that built the bundled
``*_symbol_2022`` columns, so a gene set and a cache agree on names:

1. an official symbol is kept;
2. an alias / previous symbol of exactly one gene becomes that gene's symbol;
3. ``CxORFn`` is retried as ``Cxorfn``; an Ensembl gene id (``ENSG...``) maps through the id map;
4. a unique case-insensitive match of an official symbol is accepted (``batf`` -> ``BATF``);
5. otherwise the symbol is *ambiguous* (an alias of several genes) or *unknown*.

The map is parsed once into an `.npz` index (see `_util.index_dir`) and memoised per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from geoscreen.store.resources import _util

ID_MAP = "gene_id_map_orgHsEgDb_3.16.tsv.gz"
ALIAS_MAP = "gene_alias_orgHsEgDb_3.16.tsv.gz"
VERSION = "org.Hs.eg.db 3.16 (NCBI Gene 2022-09-12)"
INDEX_FORMAT = 2

OFFICIAL, RENAMED, UNKNOWN, AMBIGUOUS = 0, 1, 2, 3
_ORF = re.compile(r"^(C(?:\d+|X|Y))ORF(\d+.*)$")


@dataclass
class Normalised:
    """Result of `normalise_symbols`; unpacks as ``mapped, unmapped, ambiguous``.

    `mapped` holds current symbols (deduplicated, input order); `renamed` maps each input symbol
    that changed to its current symbol.
    """

    mapped: list[str]
    unmapped: list[str]
    ambiguous: list[str]
    renamed: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[list[str]]:
        return iter((self.mapped, self.unmapped, self.ambiguous))


class SymbolMap:
    """Lookup tables: official symbols, unique aliases, Ensembl ids; built from the bundled map.

    Tables are decoded on first need, so mapping official symbols never builds the alias dict.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], checksum: str) -> None:
        self._arrays = arrays
        self.official: list[str] = arrays["official"].tolist()
        self._official_set = set(self.official)
        self._alias_d: dict[str, int] | None = None
        self._ensg: dict[str, int] | None = None
        self._upper: dict[str, int] | None = None
        self._ensg_of: dict[str, list[str]] | None = None
        self.checksum = checksum

    @property
    def _alias(self) -> dict[str, int]:
        if self._alias_d is None:
            self._alias_d = dict(zip(self._arrays["alias"].tolist(),
                                     self._arrays["alias_target"].tolist()))
        return self._alias_d

    def record(self) -> dict[str, str]:
        return record()

    def _exact(self, s: str) -> tuple[str, int] | None:
        if s in self._official_set:
            return s, OFFICIAL
        t = self._alias.get(s)
        if t is not None:
            return (self.official[t], RENAMED) if t >= 0 else (s, AMBIGUOUS)
        return None

    def lookup(self, symbol: str) -> tuple[str, int]:
        """(current symbol, status); unknown and ambiguous symbols come back unchanged."""
        s = symbol.strip()
        hit = self._exact(s)
        if hit is not None:
            return hit
        m = _ORF.match(s)
        if m:
            hit = self._exact(f"{m.group(1)}orf{m.group(2)}")
            if hit is not None:
                return hit[0], (RENAMED if hit[1] == OFFICIAL else hit[1])
        if s.startswith("ENSG"):
            if self._ensg is None:
                self._ensg = dict(zip(self._arrays["ensg"].tolist(),
                                      self._arrays["ensg_target"].tolist()))
            t = self._ensg.get(s.split(".")[0])
            if t is not None:
                return (self.official[t], RENAMED) if t >= 0 else (s, AMBIGUOUS)
        if self._upper is None:
            up: dict[str, int] = {}
            for i, o in enumerate(self.official):
                k = o.upper()
                up[k] = -1 if k in up else i
            self._upper = up
        t = self._upper.get(s.upper())
        if t is not None:
            return (self.official[t], RENAMED) if t >= 0 else (s, AMBIGUOUS)
        return s, UNKNOWN


    def ensembl_ids(self, symbol: str) -> list[str]:
        """The Ensembl gene ids of a symbol (its current official symbol's, in map order);
        empty for an unknown or ambiguous symbol."""
        if self._ensg_of is None:
            rev: dict[str, list[str]] = {}
            for e, t in zip(self._arrays["ensg"].tolist(), self._arrays["ensg_target"].tolist()):
                if t >= 0:
                    rev.setdefault(self.official[t], []).append(e)
            self._ensg_of = rev
        cur, status = self.lookup(symbol)
        if status in (UNKNOWN, AMBIGUOUS):
            return []
        return list(self._ensg_of.get(cur, []))


def _build(id_map: str, alias_map: str) -> dict[str, np.ndarray]:
    head, rows = _util.read_tsv(_util.BUNDLED_DIR / id_map)
    symbol, ensembl = _util.columns(head, rows, ["symbol", "ensembl_gene_ids"], id_map)
    official = sorted(set(symbol))
    pos = {s: i for i, s in enumerate(official)}
    ensg: dict[str, int] = {}
    for s, ids in zip(symbol, ensembl):
        for e in filter(None, ids.split(";")):
            ensg[e] = -1 if (e in ensg and ensg[e] != pos[s]) else pos[s]
    head, rows = _util.read_tsv(_util.BUNDLED_DIR / alias_map)
    alias, target = _util.columns(head, rows, ["alias", "symbol"], alias_map)
    amap: dict[str, int] = {}
    for a, t in zip(alias, target):
        if a in pos or t not in pos:
            continue  # official symbols win; aliases of unlisted genes are ignored
        amap[a] = -1 if (a in amap and amap[a] != pos[t]) else pos[t]
    return {
        "official": np.array(official, dtype=str),
        "alias": np.array(list(amap), dtype=str),
        "alias_target": np.asarray(list(amap.values()), dtype=np.int32),
        "ensg": np.array(list(ensg), dtype=str),
        "ensg_target": np.asarray(list(ensg.values()), dtype=np.int32),
    }


def checksum() -> str:
    """Combined checksum of the id and alias maps (from the recorded sha256s; no file read)."""
    from geoscreen.store.resources.catalog import bundled_checksum

    return _util.combined_checksum({f: bundled_checksum(f) for f in (ID_MAP, ALIAS_MAP)})


def record() -> dict[str, str]:
    """What a result records about symbol normalisation."""
    return {"name": "symbols", "version": VERSION, "checksum": checksum(), "origin": "bundled"}


@lru_cache(maxsize=1)
def symbol_map() -> SymbolMap:
    """The process-wide symbol map (index built on first use, then loaded from disk)."""
    digest = checksum()
    path = _util.index_dir() / f"symbols-{digest[:20]}-v{INDEX_FORMAT}.npz"
    arrays: Mapping[str, np.ndarray] | None = None
    if path.exists():
        try:
            arrays = _util.load_npz(path, required=("official", "alias", "ensg"))
        except (OSError, ValueError):
            arrays = None
    if arrays is None:
        from geoscreen.store.resources.catalog import verify_bundled

        verify_bundled(ID_MAP)
        verify_bundled(ALIAS_MAP)
        arrays = _build(ID_MAP, ALIAS_MAP)
        try:
            _util.save_npz_atomic(path, dict(arrays))
        except OSError:
            pass  # a read-only cache dir only costs a rebuild next time
    return SymbolMap(arrays, digest)


def normalise_symbols(symbols: Iterable[str]) -> Normalised:
    """Map symbols to current official ones: ``mapped, unmapped, ambiguous = normalise_symbols(x)``.

    Unknown and ambiguous symbols are reported (not silently dropped); empty strings are skipped.
    """
    sm = symbol_map()
    mapped: dict[str, None] = {}
    unmapped: dict[str, None] = {}
    ambiguous: dict[str, None] = {}
    renamed: dict[str, str] = {}
    for raw in symbols:
        s = raw.strip()
        if not s:
            continue
        cur, status = sm.lookup(s)
        if status == UNKNOWN:
            unmapped[s] = None
        elif status == AMBIGUOUS:
            ambiguous[s] = None
        else:
            mapped[cur] = None
            if cur != s:
                renamed[s] = cur
    return Normalised(list(mapped), list(unmapped), list(ambiguous), renamed)


def current_symbols(symbols: Iterable[str]) -> list[str]:
    """Each symbol's current official symbol, aligned with the input (unchanged if not mappable).

    Use it on a cache's gene table so that cache rows and resolved sets share one naming.
    """
    sm = symbol_map()
    return [sm.lookup(s)[0] for s in symbols]


def lookup_statuses(symbols: list[str]) -> tuple[list[str], np.ndarray]:
    """(current symbols, status codes) for many symbols at once; used when building indexes."""
    sm = symbol_map()
    out, status = [], np.empty(len(symbols), dtype=np.int8)
    for i, s in enumerate(symbols):
        cur, st = sm.lookup(s)
        out.append(cur)
        status[i] = st
    return out, status


def cache_symbol_index(symbols: Iterable[str]) -> dict[str, int]:
    """symbol -> row for a cache's gene table, reachable by its own and its current symbol.

    A cache built from an older vocabulary (SEPT7) then still matches a resolved set that uses
    the current symbol (SEPTIN7); a symbol spelled exactly as in the cache always wins.
    """
    sm = symbol_map()
    raw = list(symbols)
    index = {s: i for i, s in enumerate(raw)}
    for i, s in enumerate(raw):
        index.setdefault(sm.lookup(s)[0], i)
    return index
