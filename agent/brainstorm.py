"""Brainstormers propose hypotheses.  The interface, and the offline (no-model) brainstormer.

The offline brainstormer is deterministic given the campaign seed and the ledger snapshot: it
prefers untested families, then refinements of significant results (neighbouring axes, stricter
pair sets and nulls, layer ranges), and retires families whose tests keep coming back negative.
Every statement it proposes describes its own spec and names its null; gene-set and pair-set
claims are tested against set-level nulls (matched, degree-preserving), never feature_shuffle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, get_origin

import numpy as np

from geoscreen.agent.state import CampaignState, HypView
from geoscreen.agent.statements import NULL_SUFFIX, spec_statement, with_null
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.spec import SHAPE_TESTS, ResolvedSpec, min_shape_layers
from geoscreen.probes.context import derive_seed

RETIRE_AFTER = 5  # tested hypotheses in a family with no discovery before it is retired


class BrainstormerUnavailable(Exception):
    """The brainstormer cannot propose now (e.g. its service stays down): the campaign pauses."""


@dataclass
class Rejected:
    raw: dict[str, Any]
    reason: str


@dataclass
class ProposalBatch:
    accepted: list[ResolvedSpec] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    retire: dict[str, str] = field(default_factory=dict)  # family -> reason
    note: str = ""


class Brainstormer(Protocol):
    name: str

    def propose(self, state: CampaignState, k: int) -> ProposalBatch:
        """Up to `k` new specs (not already in `state`), plus rejected proposals and retirements."""


@functools.lru_cache(maxsize=4)
def _open_cache(path: str) -> Any:
    from geoscreen.store.cache import open_cache

    return open_cache(path)


def check_against_cache(resolved: ResolvedSpec, facts: dict[str, Any]) -> str:
    """Layers, axes and references against the campaign's cache (`preflight`), as known to the
    state: the cache itself when the state names its path, else its layer names only."""
    from geoscreen.hypotheses.preflight import check_layer_count, check_layers, preflight

    path = facts.get("path")
    if path:
        cache = _open_cache(str(path))
        if facts.get("split"):
            cache = cache.split_view(facts["split"])
        return preflight(resolved, cache=cache)
    names = [str(x) for x in facts.get("layers") or []]
    if err := check_layers(resolved.spec.layers, names) or check_layer_count(resolved, names):
        return err
    return preflight(resolved)


def _resolve(raw: dict[str, Any]) -> ResolvedSpec | None:
    from geoscreen.hypotheses.loader import parse_spec

    try:
        return parse_spec(raw, "offline proposal")
    except GeoscreenError:
        return None


def claim_key(r: ResolvedSpec) -> str:
    """The spec's hash with its permutation count left out: the same claim tested with more or
    fewer draws (`fit_resolution` raises the count at one online level and cannot at a later,
    lower one) has one key, so a campaign tests it once."""
    c = r.canonical()
    c["params"] = {k: v for k, v in c["params"].items() if k != "n_permutations"}
    blob = json.dumps(c, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fit_to_cache(raw: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any] | None:
    """An example adapted to this cache, or None if it cannot run here.

    Layer positions beyond the cache are dropped (a trend keeps at least 3 layers); examples
    that point at files or other caches that do not exist are skipped rather than proposed to
    fail.
    """
    from pathlib import Path

    n_layers = int(cache.get("n_layers", 0)) or None
    layers = raw.get("layers", "all")
    if isinstance(layers, list) and n_layers:
        from geoscreen.store.cache import layer_problem

        listed = list(cache.get("layers", []))  # names, positions and roles resolve on these
        kept = [x for x in layers if (isinstance(x, int) and -n_layers <= x < n_layers)
                or (isinstance(x, str) and bool(listed) and not layer_problem(x, listed))]
        across = raw.get("across_layers")
        need = min_shape_layers(across) if across in SHAPE_TESTS else 1
        if len(kept) < need:
            return None
        if len(kept) != len(layers):
            raw = {**raw, "layers": kept}
    for key, value in (raw.get("params") or {}).items():
        if not isinstance(value, str):
            continue
        if key.endswith("cache") and not (Path(value) / "manifest.json").exists():
            return None
        if key == "atlas":
            known = cache.get("atlas")
            if known and value.startswith("atlases/{layer}") and value != known["path"]:
                # a catalogue example: point it at this cache's atlases
                value = known["path"]
                raw = {**raw, "params": {**raw["params"], "atlas": value}}
            raw = _fit_atlas_layers(raw, value, list(cache.get("layers", [])))
            if raw is None:
                return None
        if value.startswith("file:") and not Path(value[5:]).expanduser().exists():
            return None
    return raw


def _fit_atlas_layers(raw: dict[str, Any], atlas: str, listed: list[str]
                      ) -> dict[str, Any] | None:
    """`raw` with only the layers that have an atlas at `atlas` ('{layer}': each layer's own;
    for cross-layer highways against the previous layer, that layer's too), or None if none
    has one."""
    from pathlib import Path

    from geoscreen.store.cache import resolve_layer

    def has(name: str) -> bool:
        return (Path(atlas.replace("{layer}", name)) / "atlas.json").exists()

    if not listed:
        return raw if has("") else None
    layers = raw.get("layers", "all")
    wanted = list(listed) if layers == "all" else list(layers)
    previous = (raw.get("probe") == "cross_layer_highways"
                and (raw.get("params") or {}).get("reference", "previous") == "previous")
    kept = []
    for x in wanted:
        pos = resolve_layer(x, listed)[0]
        if pos is None or not has(listed[pos]):
            continue
        if previous and (pos == 0 or not has(listed[pos - 1])):
            continue
        kept.append(x)
    if not kept:
        return None
    return raw if kept == wanted else {**raw, "layers": kept}


def _variant(raw: dict[str, Any], *, parent: int | None = None,
             layers: list[int] | None = None, **params: Any) -> dict[str, Any]:
    """`raw` with some parameters (or its layers) changed, and a statement rebuilt from the
    changed spec itself: an inherited statement would still describe the old axis or subspace."""
    out = {**raw, "params": {**raw.get("params", {}), **params}}
    if layers is not None:
        out["layers"] = layers
    out["statement"] = spec_statement(out, parent=parent)
    return out


# -- null models the offline brainstormer picks --------------------------------------------------
# A claim about a particular gene set (or pair set) is tested against a set-level null: random
# genes like the tested ones (matched), hubs paired at random (degree_preserving), or uniformly
# random genes.  A geometry-level null (feature_shuffle: "more structure than independent
# dimensions") calls any gene set on a real, correlated embedding significant, so it is never
# chosen for such a claim.
SET_NULL_ORDER = ("matched", "degree_preserving", "gene_shuffle")
PAIR_NULL_ORDER = ("degree_preserving", "matched", "gene_shuffle")
LOOSE_NULLS = ("gene_shuffle", "feature_shuffle", "pc_shuffle")  # worth a stricter re-test


def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [v for a in get_args(annotation) for v in _literals(a)]


def _null_choices(probe: str) -> tuple[tuple[str, ...], str]:
    """(the values a probe's `null` parameter takes, 'set' | 'pairs' | ''): what the claim is
    about, for probes that test a required gene set or pair set against a chosen null."""
    from geoscreen.probes.registry import get_probe

    try:
        fields = get_probe(probe).params.model_fields
    except GeoscreenError:
        return (), ""
    if "null" not in fields:
        return (), ""
    choices = tuple(str(v) for v in _literals(fields["null"].annotation))
    for key, kind in (("gene_set", "set"), ("genes", "set"), ("pairs", "pairs")):
        if key in fields and fields[key].is_required():
            return choices, kind
    return choices, ""


def preferred_null(probe: str) -> str | None:
    """The null the offline brainstormer uses for a gene-set or pair-set claim of `probe`:
    matched random genes for gene sets, degree-preserving rewiring for pair sets (when the probe
    offers them), never a geometry-level null; None for other probes."""
    from geoscreen.probes.nulls import describe

    choices, kind = _null_choices(probe)
    if not kind:
        return None
    for name in (SET_NULL_ORDER if kind == "set" else PAIR_NULL_ORDER):
        m = describe(name)
        if name in choices and (m is None or m.level != "geometry"):
            return name
    return None


def set_level_null(raw: dict[str, Any]) -> dict[str, Any] | None:
    """`raw` unchanged, unless it tests a gene-set or pair-set claim against a geometry-level
    null: then the same test against the preferred set-level null (its statement rebuilt, as the
    old one named the old null), or None when the probe offers no set-level null."""
    from geoscreen.probes.nulls import describe, spec_null

    probe = str(raw.get("probe", ""))
    choices, kind = _null_choices(probe)
    if not kind:
        return raw
    params = raw.get("params") or {}
    try:
        current = describe(spec_null(probe, params))
    except GeoscreenError:
        return raw
    if current is None or current.level != "geometry":
        return raw
    target = preferred_null(probe)
    if target is None:
        return None
    return _variant(raw, null=target)


_THRESH = re.compile(r"^(?P<name>\w+):>=(?P<t>\d+)$")


def _star_motif_on_one_null(probe: str, params: dict[str, Any], null: str) -> bool:
    """Whether a spec tests a star motif (fan-out, fan-in) against one of the two nulls that
    `regulatory_motifs`' degree_and_motif combines."""
    if probe != "regulatory_motifs":
        return False
    from geoscreen.probes.motifs import BOTH_NULLS, STAR_MOTIFS

    return params.get("motif") in STAR_MOTIFS and null in BOTH_NULLS


def refinements(h: HypView, n_layers: int) -> list[tuple[dict[str, Any], str]]:
    """Variants of a significant result: neighbouring axes, shifted subspaces, stricter pair sets
    and nulls, and the early / late halves of the layer stack.  Each variant's statement is
    built from its own spec (see `geoscreen.agent.statements`)."""
    from geoscreen.probes.nulls import label, spec_null

    base = {k: h.spec[k] for k in ("probe", "params", "layers", "across_layers",
                                   "alternative") if k in h.spec}
    base["probe"] = base.get("probe", h.probe)
    base["params"] = dict(base.get("params", {}))
    out: list[tuple[dict[str, Any], str]] = []

    def add(why: str, **changes: Any) -> None:
        out.append((_variant(base, parent=h.id, **changes), why))

    safe = set_level_null(base)
    if safe is None:  # a gene-set claim, and no set-level null to re-test it against
        return []
    if safe["params"] != base["params"]:  # every variant moves to a set-level null
        base["params"] = dict(safe["params"])
        add(f"re-test against a set-level null: {label(str(base['params']['null']))}")
    params = base["params"]

    if isinstance(params.get("axis"), int):
        for d in (1, -1):
            ax = params["axis"] + d
            if ax >= 1:
                add(f"neighbouring axis {ax}", axis=ax)
    sub = params.get("subspace")
    if isinstance(sub, list) and sub:
        add(f"shifted subspace {[a + 1 for a in sub]}", subspace=[a + 1 for a in sub])
        if min(sub) > 1:
            add(f"shifted subspace {[a - 1 for a in sub]}", subspace=[a - 1 for a in sub])
    for key in ("pairs", "positive", "gene_set"):
        ref = params.get(key)
        m = _THRESH.match(ref) if isinstance(ref, str) else None
        if m and int(m["t"]) < 900:
            stricter = f"{m['name']}:>={min(900, int(m['t']) + 200)}"
            add(f"stricter pair set {stricter}", **{key: stricter})
    target = preferred_null(base["probe"])
    try:
        current = spec_null(base["probe"], params)
    except GeoscreenError:
        current = ""
    if target and current in LOOSE_NULLS and target != current:
        add(f"stricter null: {label(target)}", null=target)
    if _star_motif_on_one_null(base["probe"], params, current):
        # neither null alone is exact for fan-outs and fan-ins on every network model; the
        # intersection-union test over both is valid wherever either is (docs/probes.md)
        add("both nulls: degree_and_motif (neither alone is exact for star motifs)",
            null="degree_and_motif")
    if base.get("layers", "all") == "all" and n_layers >= 4:
        half = n_layers // 2
        for name, rng in (("early layers", list(range(half))),
                          ("late layers", list(range(half, n_layers)))):
            add(name, layers=rng)
    return out


# -- resolution: a test whose best attainable p (e) cannot meet the online level -------------
# raised permutation counts: at most 5x the usual 999, as a probe's cost grows linearly with it
PERMUTATION_STEPS = (1999, 4999)


def _costly_draws(raw: dict[str, Any]) -> bool:
    """Whether each null draw costs a full ripser run (persistent homology in dimension >= 1,
    about 10 ms a draw and layer): raising its permutations tenfold would make one hypothesis
    take minutes, so such a test keeps its count and is tested for the offline family."""
    params = raw.get("params") or {}
    return raw.get("probe") == "persistent_homology" and any(
        int(d) > 0 for d in (params.get("dims") or [1]))


def spec_resolution(raw: dict[str, Any], n_layers: int) -> tuple[float, float, bool]:
    """(smallest attainable p, largest attainable e, whether more permutations would help) of a
    proposed spec, from its probe's parameters (defaults filled in) and `across_layers`.

    Mirrors `geoscreen.combine.resolution`, which reads the same bounds off stored results: a
    permutation test with m draws reaches p = 1 / (m + 1) and e = m + 1 at best; an exact trend
    over n layers p = 1 / n! (2 / n! two-sided), whatever the permutations; an asymptotic test
    (Mann-Whitney) has no floor.
    """
    import math

    from geoscreen.combine import (
        EXACT_TREND_MAX_LAYERS,
        TREND_PERMUTATIONS,
        _exact_trend_cap,
    )
    from geoscreen.probes.registry import get_probe

    try:
        info = get_probe(str(raw.get("probe", "")))
    except GeoscreenError:
        return 0.0, math.inf, False
    fields = info.params.model_fields
    params = raw.get("params") or {}

    def value(name: str) -> Any:
        return params.get(name, fields[name].default) if name in fields else None

    layers = raw.get("layers", "all")
    n = len(layers) if isinstance(layers, list) else int(n_layers)
    alternative = str(raw.get("alternative") or info.alternatives[0])
    descriptive = "n_permutations" not in fields or value("null") == "none"
    if raw.get("across_layers", "any") == "slope_change":  # null sets, or residual orders
        if not descriptive and value("null") in ("matched", "gene_shuffle") \
                and "genes" in fields and "anchor" in fields:
            m = int(value("n_permutations"))
            return 1.0 / (m + 1), float(m + 1), True
        floor = 2.0 / math.factorial(n) if n >= 1 else 1.0  # a reversed order: the same t
        if n <= EXACT_TREND_MAX_LAYERS:
            return floor, 1.0 / floor, False
        return max(floor, 1.0 / (TREND_PERMUTATIONS + 1)), float(TREND_PERMUTATIONS + 1), False
    if raw.get("across_layers", "any") in ("trend", "changepoint"):
        if not descriptive and value("null") in ("matched", "gene_shuffle") \
                and "genes" in fields and "anchor" in fields:  # set trend vs the null sets
            m = int(value("n_permutations"))
            return 1.0 / (m + 1), float(m + 1), True
        if n <= EXACT_TREND_MAX_LAYERS and n >= 3:
            floor = (2.0 if alternative == "two-sided" else 1.0) / math.factorial(n)
            return floor, _exact_trend_cap(n, alternative), False
        return 1.0 / (TREND_PERMUTATIONS + 1), float(TREND_PERMUTATIONS + 1), False
    if descriptive or value("test") == "mann_whitney":
        return 0.0, math.inf, False
    m = int(value("n_permutations"))
    return 1.0 / (m + 1), float(m + 1), True


def fit_resolution(raw: dict[str, Any], state: CampaignState,
                   ) -> tuple[dict[str, Any] | None, str]:
    """Fit a proposal to the level the primary online procedure gives the next hypothesis.

    Parameters
    ----------
    raw : dict
        The proposed spec.
    state : CampaignState
        `online_level` (None: no online stream, nothing to check) and `online_uses_e`.

    Returns
    -------
    (dict or None, str)
        * `raw` itself and "" when its best attainable p-value (e-value) can meet the level;
        * the same test with more permutations (the first of `PERMUTATION_STEPS` with
          m + 1 >= 2 / level, a factor 2 of room) and a note;
        * None and a note when no permutation count can help (an exact trend over few layers:
          the issue's 6-layer trend, p >= 1/720 > LORD++'s first level): not worth a test;
        * `raw` unchanged and a note when it would take more than 4999 permutations: it is
          still tested, for the offline family, and the note (its rationale) says it cannot
          win online.
    """
    level = state.online_level
    if level is None or level <= 0:
        return raw, ""
    floor, cap, fixable = spec_resolution(raw, int(state.cache.get("n_layers", 12)))
    reachable = cap * level >= 1.0 if state.online_uses_e else floor <= level
    if reachable:
        return raw, ""
    best = f"largest attainable e-value {cap:.3g} < 1/alpha_t = {1 / level:.3g}" \
        if state.online_uses_e else \
        f"smallest attainable p-value {floor:.3g} > alpha_t = {level:.3g}"
    if fixable and not _costly_draws(raw):
        from geoscreen.probes.registry import get_probe

        field = get_probe(str(raw["probe"])).params.model_fields["n_permutations"]
        top = min([int(x.le) for x in field.metadata if hasattr(x, "le")] or [100000])
        for m in PERMUTATION_STEPS:
            if (m + 1) * level >= 2.0 and m <= top:
                return ({**raw, "params": {**(raw.get("params") or {}), "n_permutations": m}},
                        f"n_permutations raised to {m}: with the default, {best}")
        return raw, f"cannot be rejected online ({best}); tested for the offline family only"
    if fixable:  # costly draws: keep the count
        return raw, (f"cannot be rejected online ({best}; more permutations would cost a ripser "
                     "run each); tested for the offline family only")
    return None, f"not proposed: it could not be rejected online ({best})"


def exploration(example: dict[str, Any], n_axes: int = 10) -> list[dict[str, Any]]:
    """Sweeps of an example over axes and subspace windows: the long tail of a campaign.  A
    pair-set sweep uses the preferred pair-set null (degree-preserving where offered)."""
    from geoscreen.probes.nulls import spec_null

    params = example.get("params", {})
    base = example
    target = preferred_null(str(example.get("probe", "")))
    if target and spec_null(str(example["probe"]), params) in LOOSE_NULLS:
        base = {**example, "params": {**params, "null": target}}
    out = []
    if isinstance(params.get("axis"), int):
        for ax in range(1, n_axes + 1):
            if ax != params["axis"]:
                out.append(_variant(base, axis=ax))
    sub = params.get("subspace")
    if isinstance(sub, list) and sub:
        w = len(sub)
        for start in range(1, n_axes - w + 2):
            window = list(range(start, start + w))
            if window != sorted(sub):
                out.append(_variant(base, subspace=window))
    return out


@dataclass
class OfflineBrainstormer:
    """Deterministic proposals from the probe registry's examples and the ledger so far."""

    name: str = "offline"
    retire_after: int = RETIRE_AFTER
    # spec hash -> claim_key of the ledger's hypotheses, so each spec is resolved once per
    # campaign rather than once per iteration (None: it no longer resolves, e.g. a probe since
    # removed; its hash still guards it)
    _claim_keys: dict[str, str | None] = field(default_factory=dict, repr=False)

    def _claims(self, history: list[HypView]) -> set[str]:
        """`claim_key` of every hypothesis in the campaign's ledger."""
        for h in history:
            if h.hash not in self._claim_keys:
                r = _resolve(dict(h.spec))
                self._claim_keys[h.hash] = claim_key(r) if r is not None else None
        return {k for h in history if (k := self._claim_keys[h.hash]) is not None}

    def _retire(self, state: CampaignState) -> dict[str, str]:
        tested = Counter(h.family for h in state.tested if h.status == "done")
        hits = Counter(h.family for h in state.discoveries)
        new = {}
        for fam, n in tested.items():
            if fam not in state.retired and n >= self.retire_after and hits[fam] == 0:
                new[fam] = f"{n} tests in family {fam!r} without a discovery"
        return new

    def propose(self, state: CampaignState, k: int) -> ProposalBatch:
        from geoscreen.probes.registry import list_probes

        rng = np.random.default_rng(derive_seed(state.seed, "offline", state.iteration))
        retire = self._retire(state)
        retired = set(state.retired) | set(retire)
        family_count = Counter(h.family for h in state.history)
        n_layers = int(state.cache.get("n_layers", 12))
        # Three pools, interleaved so a campaign neither tunnels into one refinement chain nor
        # ignores its discoveries: (A) seed examples of untested families, (B) refinements of
        # discoveries, strongest first, (C) everything else (seeds of tested families and
        # exploration sweeps), with retired families last.
        pools: dict[str, list[tuple[float, float, dict[str, Any], list[int], str]]] = {
            "A": [], "B": [], "C": []}
        for h in sorted(state.discoveries, key=lambda x: (x.p_value or 1.0, x.id)):
            claim = NULL_SUFFIX.sub("", h.statement)
            claim = claim if len(claim) <= 160 else claim[:159] + "…"
            for raw, why in refinements(h, n_layers):
                pools["B"].append((h.p_value or 1.0, float(rng.random()), raw, [h.id],
                                   f"refines #{h.id} (p={h.p_value:.2g}): {why}; "
                                   f"#{h.id} claimed: {claim}"))
        for info in list_probes():
            fam_pen = 100.0 if info.family in retired else 0.0
            untested = family_count[info.family] == 0 and info.family not in retired
            for ex in info.examples:
                raw = {"probe": info.name, **ex}
                pools["A" if untested else "C"].append(
                    (family_count[info.family] + fam_pen, float(rng.random()), raw, [],
                     f"seed example of {'untested ' if untested else ''}family {info.family}"))
                for var in exploration(raw):
                    pools["C"].append((1.0 + family_count[info.family] + fam_pen,
                                       float(rng.random()), var, [],
                                       f"exploration sweep in family {info.family}"))
        for pool in pools.values():
            pool.sort(key=lambda c: (c[0], c[1]))
        seen = set(state.hashes)
        claims = self._claims(state.history)
        batch = ProposalBatch(retire=retire)
        skipped: list[str] = []
        unrunnable: list[str] = []
        order = ["A", "B", "C"]
        turn = 0
        cursors = {name: 0 for name in pools}
        while len(batch.accepted) < k and any(cursors[n] < len(pools[n]) for n in pools):
            name = order[turn % len(order)]
            turn += 1
            pool = pools[name]
            while cursors[name] < len(pool):
                _prio, _tie, raw, parents, why = pool[cursors[name]]
                cursors[name] += 1
                fitted = _fit_to_cache(raw, state.cache)
                fitted = set_level_null(fitted) if fitted is not None else None
                if fitted is None:
                    continue
                statement = with_null(str(fitted.get("statement") or spec_statement(fitted)),
                                      str(fitted["probe"]), fitted.get("params") or {})
                raw = {**fitted, "statement": statement, "source": "offline",
                       "parents": parents, "rationale": why}
                testable, note = fit_resolution(raw, state)
                if testable is None:  # no permutation count lets it win at this level
                    r0 = _resolve(raw)
                    if r0 is not None and r0.hash not in seen:
                        seen.add(r0.hash)
                        skipped.append(f"{statement[:80]}: {note}")
                    continue
                if testable is not raw:
                    r0 = _resolve(raw)  # the same claim tested earlier with fewer draws
                    if r0 is None or r0.hash in seen:
                        continue
                    raw = {**testable, "rationale": f"{why}; {note}"}
                elif note:
                    raw = {**raw, "rationale": f"{why}; {note}"}
                r = _resolve(raw)
                if r is None or r.hash in seen or (key := claim_key(r)) in claims:
                    continue
                seen.add(r.hash)
                claims.add(key)
                if state.cache.get("path") and (why_not := check_against_cache(r, state.cache)):
                    unrunnable.append(f"{statement[:80]}: {why_not[:160]}")
                    continue  # a reference not in this cache or not installed: would only fail
                batch.accepted.append(r)
                break
        notes = []
        if skipped:
            notes.append(f"skipped {len(skipped)} proposal(s) that could not be rejected at the "
                         f"online level {state.online_level:.3g}: " + "; ".join(skipped[:3]))
        if unrunnable:
            notes.append(f"skipped {len(unrunnable)} proposal(s) this cache cannot run: "
                         + "; ".join(unrunnable[:3]))
        if len(batch.accepted) < k:
            notes.append("the offline brainstormer ran out of untested candidates")
        batch.note = " | ".join(notes)
        return batch


def make_brainstormer(name: str, **options: Any) -> Brainstormer | None:
    """`offline`, `none` (queue only) or `openai` (see geoscreen.agent.llm.brainstormer)."""
    if name == "offline":
        return OfflineBrainstormer()
    if name == "none":
        return None
    if name == "openai":
        from geoscreen.agent.llm.brainstormer import OpenAIBrainstormer  # type: ignore[import-not-found]

        return OpenAIBrainstormer.from_options(**options)
    from geoscreen.errors import did_you_mean

    raise GeoscreenError(f"unknown brainstormer {name!r}; "
                         f"{did_you_mean(name, ['offline', 'openai', 'none'])}",
                         field="--brainstormer")
