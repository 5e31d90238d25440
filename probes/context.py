"""What a probe sees: the opened cache, the hypothesis seed, resolved resources and shared SVDs.

Probes stay pure functions of (cache, resources, params, seed) by getting everything through a
`ProbeContext`.  The context also keeps the bookkeeping every result must carry: which resources
were used (name, version, checksum, requested / mapped / present counts) and which seeds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import Cache


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (campaign seed, hypothesis hash, layer...); stable."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def default_work_dir() -> Path:
    """Where derived per-cache artefacts (SVDs) are kept; override with GEOSCREEN_WORK_DIR."""
    env = os.environ.get("GEOSCREEN_WORK_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("geoscreen"))


@dataclass
class SVD:
    """Thin SVD of the mean-centred gene matrix of one layer (present genes only)."""

    rows: np.ndarray  # cache row index of each row of U
    U: np.ndarray  # (genes, r)
    S: np.ndarray  # (r,)
    Vt: np.ndarray  # (r, dim)
    mean: np.ndarray  # (dim,)
    key: str | None = None  # the store's content key (`svd_store.content_key`)

    def local(self, cache_rows: np.ndarray) -> np.ndarray:
        """Positions in this SVD's row order of the given cache rows (all must be present)."""
        pos = np.full(int(self.rows.max()) + 1 if self.rows.size else 0, -1, dtype=int)
        pos[self.rows] = np.arange(self.rows.size)
        cache_rows = np.asarray(cache_rows, dtype=int)
        out = pos[cache_rows] if cache_rows.size else cache_rows
        if (out < 0).any():
            raise ValueError("some rows are not part of this SVD (all-zero genes?)")
        return out

    def positions(self, cache_rows: np.ndarray) -> np.ndarray:
        """Positions in this SVD's row order of the given cache rows, -1 for a row this SVD
        does not hold (an all-zero gene, a gene outside the universe)."""
        cache_rows = np.asarray(cache_rows, dtype=np.int64)
        size = int(max(self.rows.max(initial=-1), cache_rows.max(initial=-1))) + 1
        pos = np.full(size, -1, dtype=np.int64)
        pos[self.rows] = np.arange(self.rows.size)
        return pos[cache_rows]

    def factors(self, axes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(U, S) restricted to the given 1-based axes (all axes if None): `scores` unmultiplied."""
        if axes is None:
            return self.U, self.S
        idx = np.asarray(axes, dtype=int) - 1
        if idx.min() < 0 or idx.max() >= self.S.size:
            raise GeoscreenError(f"axes {axes} out of range 1..{self.S.size}", field="params.axis")
        return self.U[:, idx], self.S[idx]

    def scores(self, axes: list[int] | None = None) -> np.ndarray:
        """Gene coordinates U*S on the given 1-based axes (all axes if None)."""
        U, S = self.factors(axes)
        return U * S


@dataclass
class ProbeContext:
    """Everything one hypothesis may read, plus the record of what it did read."""

    cache: Cache
    seed: int
    alternative: str = "greater"
    work_dir: Path | None = None
    # Besag-Clifford stopping of Monte Carlo nulls that support it: stop at this many draws as
    # extreme as the observed statistic (None: always all draws; geoscreen.probes.sequential)
    sequential_h: int | None = None
    # the caller reads only the statistic, the effect and the null mean (a layer profile's
    # replicates): probes may skip descriptive extras that cost work of their own
    statistic_only: bool = False
    # seed of the nulls every hypothesis of a campaign shares on a layer (`shared_null_seed`);
    # None: the hypothesis seed (a context of its own shares with nobody)
    null_seed: int | None = None
    other_caches: dict[str, Cache] = field(default_factory=dict)
    resources_used: dict[str, dict[str, Any]] = field(default_factory=dict)
    _svds: dict[tuple[str, bool], SVD] = field(default_factory=dict, repr=False)
    _index: dict[str, int] | None = field(default=None, repr=False)
    _resolved: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    # where each layer's SVD came from: 'memory' (a warden loaded it ahead), 'store' (read and
    # verified here) or 'computed'; recorded in the worker's provenance
    svd_sources: dict[str, int] = field(default_factory=dict, repr=False)
    # where each k-NN neighbour list came from: 'store' (read and spot-checked) or 'computed'
    # (`geoscreen.probes.knn_store`); recorded in the worker's provenance when a probe used one
    knn_sources: dict[str, int] = field(default_factory=dict, repr=False)

    # -- seeds --------------------------------------------------------------------------------
    def reference_layer(self, layer: str, reference: int | str) -> str:
        """The layer a cross-layer probe compares `layer` with: 'previous' (the stored layer
        before it), or a layer name, position or role.  A layer is never its own reference."""
        pos = self.cache.layer_index(layer)
        if reference == "previous":
            if pos == 0:
                raise GeoscreenError(
                    f"layer {layer} is the first stored layer: it has no previous layer",
                    field="layers", fix="list layers from the second one (e.g. block:2 ... last, "
                                        "or positions 1 ... -1), or give params.reference")
            return self.cache.layers[pos - 1]
        ref = self.cache.layer_name(reference)
        if ref == layer:
            raise GeoscreenError(f"layer {layer} is its own reference", field="params.reference",
                                 fix="leave the reference layer out of layers")
        return ref

    def shared_null_seed(self, layer: str, stream: str) -> int:
        """Seed of a null drawn once per layer and shared by every hypothesis that uses it
        (`geoscreen.probes.null_store`): from the campaign's null seed (the hypothesis seed when
        the context has none), the layer and the null's name; never from the data."""
        base = self.null_seed if self.null_seed is not None else self.seed
        return derive_seed(base, "<shared null>", layer, stream)

    def store_base(self) -> Path:
        """The folder of stored SVDs and shared nulls."""
        return Path(self.work_dir) if self.work_dir else default_work_dir()

    def shared_null(self, svd: SVD, name: str, seed: int, make: Any, step: int,
                    invariant: Any = None) -> Any:
        """The `geoscreen.probes.null_store.SharedNull` of null `name` with `seed` on the layer
        whose SVD is `svd`: its stored draws (checked), then new ones from `make`."""
        from geoscreen.probes import null_store

        key = null_store.null_key(svd.key or "", name, seed)
        path = null_store.null_path(self.store_base(), key) \
            if self.null_seed is not None and svd.key else None  # only a campaign shares
        return null_store.SharedNull(path, key, make, step, memo=self.memo, invariant=invariant)

    def layer_seed(self, layer: str) -> int:
        return derive_seed(self.seed, layer)

    def rng(self, layer: str, stream: str = "") -> np.random.Generator:
        """A generator seeded from (hypothesis seed, layer, stream): bit-identical reruns."""
        return np.random.default_rng(derive_seed(self.seed, layer, stream))

    def shared_rng(self, stream: str) -> np.random.Generator:
        """A generator that gives the same draws in every layer (hypothesis seed, stream): null
        sets that are the same genes in every layer, so trends across layers can be tested."""
        return np.random.default_rng(derive_seed(self.seed, "<all layers>", stream))

    # -- matrices -----------------------------------------------------------------------------
    def matrix(self, layer: str, include_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.matrix(layer, include_zero=include_zero)

    def svd(self, layer: str, include_zero: bool = False) -> SVD:
        """Centred SVD of one layer, computed once per layer content and shared on disk.

        The store is keyed by the layer's content hash and everything loaded from it is checked
        against this cache's rows (`geoscreen.probes.svd_store`); a mismatch is recomputed.
        """
        from geoscreen.probes import svd_store

        key = (layer, include_zero)
        if key in self._svds:
            return self._svds[key]
        stored = self.cache.layer_name(layer)
        name = svd_store.content_key(self.cache, stored, include_zero)
        rows = self.cache.usable_rows(include_zero)
        source = "memory"  # loaded ahead by a warden: no copy of the layer is read here
        arrays = svd_store.warm_get(self.cache, stored, name, rows) \
            if not self.cache.view else None
        if arrays is None:
            rows, X = self.matrix(layer, include_zero)
            path = svd_store.store_path(self.store_base(), name)
            source, arrays = "store", svd_store.load(path, name, rows, X)
            if arrays is None:
                source, arrays = "computed", svd_store.compute(X)
                svd_store.save(path, name, rows, arrays)
        self.svd_sources[source] = self.svd_sources.get(source, 0) + 1
        svd = SVD(rows, *arrays, key=name)
        self._svds[key] = svd
        return svd

    def keep_last(self, slot: str, key: Any, build: Any) -> Any:
        """`build()`, kept in `memo[(slot,)]` with its `key` and reused while calls ask for the
        same key; one value per slot (for genes-sized or genes²-sized values of one layer)."""
        last = self.memo.get((slot,))
        if last is not None and last[0] == key:
            return last[1]
        out = build()
        self.memo[(slot,)] = (key, out)
        return out

    # -- resources ------------------------------------------------------------------------------
    def _symbol_index(self) -> dict[str, int]:
        """Cache rows by symbol: exact cache symbols first, then their current (normalised)
        symbols, so a set written with today's names finds a cache built with older ones."""
        if self._index is None:
            index = dict(self.cache.genes.index)
            try:
                from geoscreen.store.resources.symbols import symbol_map

                sm = symbol_map()
                for sym, row in self.cache.genes.index.items():
                    cur, _status = sm.lookup(sym)
                    if cur and cur not in index:
                        index[cur] = row
            except (ImportError, GeoscreenError):  # no alias map: exact symbols only
                pass
            self._index = index
        return self._index

    def _row(self, symbol: str, original: dict[str, str]) -> int | None:
        exact = self.cache.genes.index
        if symbol in exact:
            return exact[symbol]
        src = original.get(symbol)
        if src is not None and src in exact:
            return exact[src]
        return self._symbol_index().get(symbol)

    def _note(self, param: str, record: dict[str, Any]) -> None:
        self.resources_used[param] = record

    def gene_rows(self, ref: str, *, param: str, min_size: int = 1,
                  include_zero: bool = False) -> np.ndarray:
        """Cache rows of a gene-set reference's genes that are present (non-zero) in this cache."""
        from geoscreen.store.resources.api import resolve_gene_set

        key = ("genes", ref)
        if key not in self._resolved:
            gs = resolve_gene_set(ref)
            original = getattr(gs, "original", {}) or {}
            self._resolved[key] = (gs, [r for r in (self._row(g, original) for g in gs.genes)
                                        if r is not None])
        gs, found = self._resolved[key]
        usable = self.cache.genes.usable(include_zero)
        rows = sorted({r for r in found if usable[r]})
        rec = gs.record()
        rec["present"] = len(rows)
        rec["in_cache"] = len(set(found))
        self._note(param, rec)
        if len(rows) < min_size:
            raise GeoscreenError(
                f"gene set {ref!r} has {len(rows)} genes present in the cache "
                f"({rec['requested']} requested, {rec['mapped']} mapped); this test needs at least "
                f"{min_size}", field=f"params.{param}", fix="choose a larger set or another cache")
        return np.asarray(rows, dtype=int)

    def family_rows(self, ref: str, *, param: str, min_size: int, max_size: int,
                    max_sets: int, include_zero: bool = False,
                    ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """(set ids, set names, member_set, member_row) of a family's sets that keep between
        `min_size` and `max_size` genes present in this cache; member rows are cache rows.

        Raises a GeoscreenError when no set is left, or more than `max_sets` are."""
        from geoscreen.store.resources.api import resolve_gene_family

        key = ("family", ref)
        if key not in self._resolved:
            fam = resolve_gene_family(ref, field=f"params.{param}")
            rows = np.array([-1 if (r := self._row(g, fam.original)) is None else r
                             for g in fam.genes], dtype=np.int64)
            self._resolved[key] = (fam, rows)
        fam, gene_rows = self._resolved[key]
        usable = self.cache.genes.usable(include_zero)
        mrow = gene_rows[fam.member_gene]
        ok = mrow >= 0
        ok[ok] &= usable[mrow[ok]]
        mset, mrow = fam.member_set[ok], mrow[ok]
        pair = unique_sorted(mset.astype(np.int64) * (int(usable.size) + 1) + mrow)
        mset, mrow = pair // (int(usable.size) + 1), pair % (int(usable.size) + 1)
        size = np.bincount(mset, minlength=len(fam.set_ids))
        keep = np.flatnonzero((size >= min_size) & (size <= max_size))
        rec = fam.record()
        rec.update(sets_in_size_range=int(keep.size), size_range=[min_size, max_size])
        self._note(param, rec)
        if keep.size == 0:
            raise GeoscreenError(
                f"family {ref!r} has no set with {min_size}-{max_size} genes present in the "
                f"cache ({len(fam.set_ids)} sets in the resource)", field=f"params.{param}",
                fix="widen min_set_size / max_set_size, or choose another family")
        if keep.size > max_sets:
            raise GeoscreenError(
                f"family {ref!r} has {keep.size} sets with {min_size}-{max_size} genes present, "
                f"more than max_sets={max_sets}", field=f"params.{param}",
                fix="narrow the family (an aspect, a smaller max_set_size) or raise max_sets")
        new = np.full(len(fam.set_ids), -1, dtype=np.int64)
        new[keep] = np.arange(keep.size)
        sel = new[mset] >= 0
        return ([fam.set_ids[i] for i in keep.tolist()], [fam.set_names[i] for i in keep.tolist()],
                new[mset[sel]], mrow[sel])

    def pair_rows(self, ref: str, *, param: str, min_size: int = 1, include_zero: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
        """(i, j, extras): cache rows of each pair whose genes are both present; self-pairs dropped.

        `extras` holds the matching `score` and `sign` arrays (or None) of the kept pairs.
        """
        from geoscreen.store.resources.api import resolve_pair_set

        key = ("pairs", ref, include_zero)
        if key not in self._resolved:
            ps = resolve_pair_set(ref)
            usable = self.cache.genes.usable(include_zero)
            original = getattr(ps, "original", {}) or {}
            # map each distinct symbol once (a pair set can list 10^5 pairs over 10^4 genes),
            # numbered by a dict in order of appearance (sorting the symbols as Python objects
            # cost 0.1-0.2 s per pair set)
            code: dict[str, int] = {}
            inv = np.fromiter((code.setdefault(g, len(code)) for g in chain(ps.a, ps.b)),
                              dtype=np.int64, count=len(ps.a) + len(ps.b))
            rows = np.array([-1 if (r := self._row(str(g), original)) is None else r
                             for g in code], dtype=int)[inv]
            ri, rj = rows[:len(ps.a)], rows[len(ps.a):]
            ok = (ri >= 0) & (rj >= 0) & (ri != rj)
            ok &= usable[np.maximum(ri, 0)] & usable[np.maximum(rj, 0)]
            kk = np.flatnonzero(ok)
            self._resolved[key] = (ps, ri[kk], rj[kk], kk)
        ps, keep_i, keep_j, kk = self._resolved[key]
        rec = ps.record()
        rec["present"] = len(keep_i)
        self._note(param, rec)
        if len(keep_i) < min_size:
            raise GeoscreenError(
                f"pair set {ref!r} has {len(keep_i)} pairs with both genes present in the cache "
                f"({rec['requested']} requested); this test needs at least {min_size}",
                field=f"params.{param}", fix="choose a larger pair set or another cache")
        extras = {
            "score": None if ps.score is None else np.asarray(ps.score, dtype=float)[kk],
            "sign": None if ps.sign is None else np.asarray(ps.sign, dtype=float)[kk],
        }
        return keep_i.copy(), keep_j.copy(), extras

    def atlas(self, path: str, layer: str) -> Any:
        """The SAE feature atlas for `layer` (`path` may hold '{layer}'), opened once; its genes
        must be this cache's genes (the atlas was built from this extraction)."""
        from geoscreen.store.atlas import open_atlas

        target = path.replace("{layer}", layer)
        key = ("atlas", target)
        if key not in self._resolved:
            from pathlib import Path

            if not (Path(target) / "atlas.json").is_file():
                raise GeoscreenError("is not an atlas folder (no atlas.json)", path=target,
                                     field="params.atlas",
                                     fix="build it with geoscreen sae atlas, or use '{layer}' "
                                         "in the path to pick one atlas per layer")
            atlas = open_atlas(target)
            if atlas.layer and "{layer}" not in path and atlas.layer != layer:
                raise GeoscreenError(f"holds layer {atlas.layer}, not {layer}", path=target,
                                     field="params.atlas",
                                     fix=f"list layers: [{atlas.layer}] in the spec, or use "
                                         "'{layer}' in the path")
            if list(atlas.genes) != list(self.cache.genes.symbols):
                raise GeoscreenError("has another gene table than this cache", path=target,
                                     field="params.atlas",
                                     fix="screen the cache the atlas's activations came from")
            self._resolved[key] = atlas
            self._note(f"atlas:{target}", {"kind": "atlas", "path": target,
                                           "checksum": atlas.checksum})
        return self._resolved[key]

    def other_cache(self, path: str) -> Cache:
        """Another cache (cross-model alignment, replication), opened read-only once."""
        if path not in self.other_caches:
            from geoscreen.store.cache import open_cache

            self.other_caches[path] = open_cache(path)
            self._note(f"cache:{path}", {"kind": "cache", "path": path,
                                         "checksum": self.other_caches[path].checksum})
        return self.other_caches[path]
