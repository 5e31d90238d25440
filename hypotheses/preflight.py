"""Checks a spec can pass before it runs: what is known when it is queued is checked then.

`HypothesisSpec.resolved` checks a spec against the probe registry alone (parameter types and
ranges, a descriptive null only with a trend).  `preflight` adds what needs the campaign:

* layers: positions and names exist in the cache;
* singular axes (``axis``, ``subspace``) exist: at most the cache's width;
* resource references (every parameter marked with `probes.params.genes_ref_field` or
  `pairs_ref_field`) parse, resolve against the bundled resources, and leave at least one gene
  (or pair) present in the cache: a dry run of exactly what the probe will do first;
* ``parents`` name hypotheses in the ledger.

A hand-queued spec that would fail twenty minutes into a campaign fails at ``queue add`` instead,
with the same one-line error; a model's proposal fails in the same iteration, where it can still
be repaired.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from geoscreen.errors import GeoscreenError

if TYPE_CHECKING:
    from geoscreen.hypotheses.spec import ResolvedSpec
    from geoscreen.store.cache import Cache


def check_layers(layers: Any, names: list[str]) -> str:
    """'' or the problem with a spec's `layers` against a cache's layer names."""
    from geoscreen.store.cache import resolve_layer

    if not isinstance(layers, list) or not names:
        return ""
    seen: dict[int, Any] = {}
    for x in layers:
        pos, problem = resolve_layer(x, names)
        if pos is None:
            return f"field 'layers': {problem}"
        if pos in seen:
            return (f"field 'layers': {x!r} and {seen[pos]!r} are the same layer "
                    f"({names[pos]}) in this cache")
        seen[pos] = x
    return ""


def check_layer_count(resolved: Any, names: list[str]) -> str:
    """'' or why the cache has too few layers for the spec: a trend or change-point over all
    layers, or a whole-stack probe's profile over all layers, needs three; a change in slope
    five."""
    from geoscreen.hypotheses.spec import SHAPE_TESTS, min_shape_layers
    from geoscreen.probes.registry import get_probe

    spec = resolved.spec
    if not names or len(names) >= 5 or (len(names) >= 3 and spec.across_layers != "slope_change"):
        return ""
    if spec.layers == "all" and spec.across_layers in SHAPE_TESTS and \
            len(names) < min_shape_layers(spec.across_layers):
        return (f"field 'across_layers': a {spec.across_layers} across layers needs at least "
                f"{min_shape_layers(spec.across_layers)} layers; this cache has {len(names)}")
    if get_probe(spec.probe).whole_stack and resolved.params.get("curve_layers", "all") == "all":
        return (f"field 'params.curve_layers': a profile needs at least 3 layers; this cache "
                f"has {len(names)}")
    return ""


def check_axes(params: dict[str, Any], n_axes: int) -> str:
    """'' or the problem with singular axes beyond the `n_axes` a layer has."""
    for name in ("axis", "subspace", "axes"):
        v = params.get(name)
        axes = [v] if isinstance(v, int) else v if isinstance(v, list) else []
        over = [a for a in axes if isinstance(a, int) and a > n_axes]
        if over:
            return (f"field 'params.{name}': axis {over[0]} does not exist; a layer of this "
                    f"cache has {n_axes} singular axes")
    return ""


def reference_params(probe: str, params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(parameter, kind, reference) for every marked resource parameter the spec sets."""
    from geoscreen.probes.registry import get_probe
    from geoscreen.store.resources.api import is_family_ref

    out = []
    for name, f in get_probe(probe).params.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        kind = extra.get("resource")
        value = params.get(name)
        if isinstance(value, dict) and isinstance(value.get("probe"), str) \
                and isinstance(value.get("params"), dict):
            # a probe inside a probe (layer_profile's profile and versus): its references too
            try:
                inner = reference_params(value["probe"], value["params"])
            except GeoscreenError:
                continue  # an unknown inner probe is the params check's error, not this one's
            out += [(f"{name}.params.{n}", k, r) for n, k, r in inner]
            continue
        if kind == "pair_scores" and isinstance(value, list):
            # pair scores (pair_regression): a family behind jaccard:, else a pair set
            from geoscreen.probes.pair_regression import predictor_reference

            for ref in value:
                if isinstance(ref, str):
                    what, inner = predictor_reference(ref)
                    out.append((name, "family" if what == "family" else "pairs", inner))
            continue
        if kind not in ("genes", "pairs", "family") or value is None:
            continue
        for ref in value if isinstance(value, list) else [value]:
            if not isinstance(ref, str) or (kind == "genes" and ref == "rest"):
                continue  # 'rest': every other gene
            if kind == "genes" and ":" not in ref and " " not in ref.strip():
                ref = f"genes:{ref}"  # a bare symbol (an anchor gene)
            if kind == "genes" and is_family_ref(ref):
                kind = "family"  # a gene-set parameter given a whole family (set_cohesion)
            out.append((name, str(kind), ref))
    return out


_REF_CHECKS: OrderedDict[tuple[Any, ...], str] = OrderedDict()  # (cache, reference) -> verdict
_REF_CHECKS_MAX = 512


def check_references(resolved: ResolvedSpec, cache: Cache | None) -> str:
    """'' or the first reference that does not resolve (or has nothing in the cache).

    With a cache this is the probe's own first step (`ProbeContext.gene_rows` / `pair_rows`),
    asked for at least one present gene or pair; without one, the references only resolve.
    Verdicts on a cache are remembered for the process (keyed by the cache's checksum and view
    and everything the check reads), so a campaign that proposes `string:>=700` in every
    iteration resolves it once; the worker resolves every reference again when it runs.
    """
    if cache is None:
        return _check_references(resolved, None)
    include_zero = bool(resolved.params.get("include_zero_genes", False))
    p = resolved.params
    sizes = (p.get("min_set_size", p.get("min_size")), p.get("max_set_size"), p.get("max_sets"))
    for name, kind, ref in reference_params(resolved.spec.probe, resolved.params):
        least = _declared_min(resolved.spec.probe, name, p) if kind == "genes" else 1
        key = (cache.checksum, getattr(cache, "view", None), str(cache.path), name, kind, ref,
               include_zero, least, *(sizes if kind == "family" else ()))
        verdict = _REF_CHECKS.get(key)
        if verdict is None:
            verdict = _check_one(name, kind, ref, p, cache, include_zero, least)
            _REF_CHECKS[key] = verdict
            while len(_REF_CHECKS) > _REF_CHECKS_MAX:
                _REF_CHECKS.popitem(last=False)
        else:
            _REF_CHECKS.move_to_end(key)
        if verdict:
            return verdict
    return ""


def _declared_min(probe: str, name: str, params: dict[str, Any]) -> int:
    """The fewest present genes a gene-set parameter needs, where its field names the
    parameter that says so (``json_schema_extra["min_param"]``), or the count it declares
    (``min_present``), else 1."""
    from geoscreen.probes.registry import get_probe

    f = get_probe(probe).params.model_fields.get(name)
    extra = f.json_schema_extra if f is not None and isinstance(f.json_schema_extra, dict) else {}
    if isinstance(extra.get("min_present"), int):
        return int(extra["min_present"])
    key = extra.get("min_param")
    value = params.get(key) if isinstance(key, str) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def _check_one(name: str, kind: str, ref: str, p: dict[str, Any], cache: Cache,
               include_zero: bool, least: int = 1) -> str:
    from geoscreen.probes.context import ProbeContext

    ctx = ProbeContext(cache=cache, seed=0)
    try:
        if kind == "family":
            ctx.family_rows(ref, param=name,
                            min_size=int(p.get("min_set_size", p.get("min_size", 1))),
                            max_size=int(p.get("max_set_size", 10**9)),
                            max_sets=int(p.get("max_sets", 10**9)),
                            include_zero=include_zero)
        elif kind == "genes":
            ctx.gene_rows(ref, param=name, min_size=least, include_zero=include_zero)
        else:
            ctx.pair_rows(ref, param=name, min_size=1, include_zero=include_zero)
    except GeoscreenError as exc:
        text = str(exc)
        return text if text.startswith("field ") or f"params.{name}" in text else \
            f"field 'params.{name}': {text}"
    return ""


def _check_references(resolved: ResolvedSpec, cache: None) -> str:
    """Without a cache: '' or the first reference that does not resolve."""
    from geoscreen.store.resources.api import (
        resolve_gene_family,
        resolve_gene_set,
        resolve_pair_set,
    )

    for name, kind, ref in reference_params(resolved.spec.probe, resolved.params):
        try:
            if kind == "family":
                resolve_gene_family(ref)
            else:
                (resolve_gene_set if kind == "genes" else resolve_pair_set)(ref)
        except GeoscreenError as exc:
            text = str(exc)
            return text if text.startswith("field ") or f"params.{name}" in text else \
                f"field 'params.{name}': {text}"
    return ""


def check_parents(parents: Iterable[int], known: set[int]) -> str:
    missing = [p for p in parents if p not in known]
    if missing:
        return (f"field 'parents': {', '.join(f'#{p}' for p in missing)} not in the ledger; "
                "cite existing hypothesis ids, or []")
    return ""


def preflight(resolved: ResolvedSpec, *, cache: Cache | None = None,
              known_ids: set[int] | None = None, references: bool = True) -> str:
    """'' when the spec can run on `cache`, else its first problem as one line.

    Parameters
    ----------
    resolved
        The spec after `HypothesisSpec.resolved` (registry checks done).
    cache
        The campaign's cache; None skips the layer, axis and presence checks.
    known_ids
        Hypothesis ids in the ledger; None skips the parents check.
    references
        Resolve resource references (a dry run of the probe's first step).
    """
    spec = resolved.spec
    if cache is not None:
        if err := check_layers(spec.layers, cache.layers) or \
                check_layer_count(resolved, cache.layers):
            return err
        if err := check_axes(resolved.params, min(cache.dim, cache.n_genes)):
            return err
    if known_ids is not None and (err := check_parents(spec.parents, known_ids)):
        return err
    if references:
        return check_universe(resolved, cache) or check_references(resolved, cache)
    return ""


def check_universe(resolved: ResolvedSpec, cache: Cache | None) -> str:
    """'' or why the spec's `universe` does not resolve (or leaves too few genes in the cache)."""
    from geoscreen.hypotheses.spec import MIN_UNIVERSE
    from geoscreen.store.resources.api import resolve_gene_set

    ref = resolved.spec.universe
    if ref is None:
        return ""
    try:
        if cache is None:
            resolve_gene_set(ref)
        else:
            from geoscreen.probes.context import ProbeContext

            ProbeContext(cache=cache, seed=0).gene_rows(ref, param="universe",
                                                        min_size=MIN_UNIVERSE)
    except GeoscreenError as exc:
        text = str(exc).replace("field 'params.universe'", "field 'universe'")
        return text if "field 'universe'" in text else f"field 'universe': {text}"
    return ""
