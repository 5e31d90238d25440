"""Plain-words statements built from a spec itself, and the null each statement names.

A proposal's statement must describe the test it belongs to.  Variants that a brainstormer
derives from an earlier spec (another axis, a shifted subspace, a stricter pair set or null, a
layer range) therefore get a statement rebuilt from their own probe, parameters, layers and
direction, never an inherited sentence with notes appended to it.  Every statement ends by
naming its null model, in the words of `geoscreen.probes.nulls`.
"""

from __future__ import annotations

import re
from typing import Any

from geoscreen.errors import GeoscreenError

# " (null: independent dimensions (feature shuffle))": labels may hold one level of parentheses
NULL_SUFFIX = re.compile(r"\s*\(null: (?:[^()]|\([^()]*\))*\)\s*$")


def spec_null_label(probe: str, params: dict[str, Any]) -> str | None:
    """The label of the null a spec uses (`nulls.label(nulls.spec_null(...))`), or None when
    the probe is unknown.  A `control` adds co-expression residualization, as the probes
    record it."""
    from geoscreen.probes import nulls

    try:
        null = nulls.spec_null(probe, params)
    except (GeoscreenError, KeyError):
        return None
    if params.get("control") and not any(p.startswith("coexpression") for p in null.split("+")):
        null = f"{null}+coexpression_residualization"
    return nulls.label(null)


def with_null(statement: str, probe: str, params: dict[str, Any]) -> str:
    """`statement` ending with ' (null: <label>)', exactly once and for this spec's null."""
    label = spec_null_label(probe, params)
    base = NULL_SUFFIX.sub("", statement).rstrip()
    return f"{base} (null: {label})" if label else base


# -- phrases -------------------------------------------------------------------------------------
def _ref(ref: Any, limit: int = 40) -> str:
    """A gene-set / pair-set reference, long literal lists shortened to their first items."""
    if isinstance(ref, list):
        return " + ".join(_ref(r, limit) for r in ref[:4]) + (
            f" + {len(ref) - 4} more" if len(ref) > 4 else "")
    s = str(ref)
    if len(s) <= limit:
        return s
    head, _, rest = s.partition(":")
    items = rest.split(",")
    kind = "pairs" if head == "pairs" else "genes"
    return f"{s[:limit - 1].rsplit(',', 1)[0]},… ({len(items)} {kind})"


def _span(values: list[Any], word: str) -> str:
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(ints) == len(values) and len(ints) > 2 and ints == list(range(ints[0],
                                                                         ints[-1] + 1)):
        return f"{word}{ints[0]}-{word}{ints[-1]}"
    return ", ".join(f"{word}{v}" for v in values)


def _space(sub: Any) -> str:
    if not isinstance(sub, list) or not sub:
        return "the full space"
    return _span(sub, "SV") if len(sub) > 1 else f"SV{sub[0]}"


def _layers(layers: Any) -> str | None:
    if not isinstance(layers, list):
        return None
    ints = [v for v in layers if isinstance(v, int) and not isinstance(v, bool)]
    if len(ints) == len(layers) and len(ints) > 1 and ints == list(range(ints[0],
                                                                         ints[-1] + 1)):
        return f"layers {ints[0]}-{ints[-1]}"
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(v) for v in layers)


def _pick(alt: str, greater: str, less: str, two: str) -> str:
    return {"greater": greater, "less": less}.get(alt, two)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _claim(probe: str, p: dict[str, Any], alt: str) -> tuple[str, str]:
    """(subject, claim): what is measured, and the claim that it departs from the null."""
    space = _space(p.get("subspace"))
    more = _pick(alt, "more", "less", "differently")
    if probe == "axis_separation":
        pos, neg = _ref(p.get("positive")), p.get("negative", "rest")
        neg = "the rest" if neg in (None, "rest") else _ref(neg)
        axis = p.get("axis", 1)
        return (f"the separation of {pos} from {neg} on singular axis {axis}",
                f"Singular axis {axis} separates {pos} from {neg}"
                + _pick(alt, f" ({pos} higher)", f" ({pos} lower)", ""))
    if probe == "set_cohesion":
        sets = _ref(p.get("gene_set"))
        how = " by kNN retrieval" if p.get("statistic") == "retrieval_auroc" else ""
        return (f"the cohesion of {sets} in {space}",
                f"{sets} genes are {more} cohesive{how} in {space} than expected")
    if probe == "persistent_homology":
        dims = "+".join(f"H{d}" for d in p.get("dims") or [1])
        gs = _ref(p.get("gene_set"))
        return (f"the {dims} total persistence of {gs} in {space}",
                f"{gs} genes carry {_pick(alt, 'more', 'less', 'atypical')} {dims} persistence "
                f"in {space} than expected")
    if probe in ("pair_proximity", "null_robustness"):
        pairs = _ref(p.get("pairs"))
        tail = " under every null" if probe == "null_robustness" else ""
        return (f"the similarity of {pairs} pairs in {space}",
                f"{pairs} pairs sit "
                f"{_pick(alt, 'closer', 'farther apart', 'at an atypical distance')} in {space} "
                f"than expected{tail}")
    if probe == "co_pole":
        pairs, axis = _ref(p.get("pairs")), p.get("axis", 1)
        pole = {"top": "top ", "bottom": "bottom "}.get(str(p.get("pole")), "")
        return (f"the share of {pairs} pairs in one {pole}pole of singular axis {axis}",
                f"{pairs} pairs share a {pole}pole of singular axis {axis} {more} often than "
                "expected")
    if probe == "graded_proximity":
        pairs = _ref(p.get("pairs"))
        return (f"the rise of pair proximity in {space} with {pairs} confidence",
                f"Pair proximity in {space} {_pick(alt, 'rises', 'falls', 'changes')} with "
                f"{pairs} confidence")
    if probe == "edge_specificity":
        pairs = _ref(p.get("pairs"))
        how = _pick(alt, "closer to", "farther from", "at an atypical distance from")
        return (f"the specificity of {pairs} TF-target edges in {space}",
                f"TFs sit {how} their {pairs} targets than to other targets in {space}")
    if probe == "sign_contrast":
        a, b = _ref(p.get("pairs_a")), _ref(p.get("pairs_b"))
        return (f"the prominence of {a} over {b} edges in {space}",
                f"{a} edges are {more} prominent than {b} edges in {space}")
    if probe == "role_separation":
        pos, neg = _ref(p.get("positive")), p.get("negative", "rest")
        neg = "the rest" if neg in (None, "rest") else _ref(neg)
        how = _pick(alt, "linearly separable", "less separable than chance",
                    "atypically separable")
        return (f"the linear separability of {pos} from {neg} in {space}",
                f"{pos} and {neg} are {how} in {space}")
    if probe == "anchor_convergence":
        genes, anchor = _ref(p.get("genes")), p.get("anchor")
        how = _pick(alt, "closer to", "farther from", "at an atypical distance from")
        return (f"the similarity of {genes} to {anchor} in {space}",
                f"{genes} sit {how} {anchor} in {space} than other genes")
    if probe in ("spectrum", "intrinsic_dimension"):
        what = "the gene embedding" if not p.get("gene_set") else _ref(p["gene_set"])
        if probe == "intrinsic_dimension":
            m = "intrinsic dimension"
            where = f" in {space}"
        else:
            where = ""
            m = {"effective_rank": "effective rank", "participation_ratio": "participation ratio"
                 }.get(str(p.get("measure")), "")
            if not m:
                k = int(p.get("k") or 1)
                m = ("share of variance on the first singular axis" if k == 1 else
                     f"share of variance on the top {k} singular axes")
        return (f"the {m} of {what}{where}",
                f"The {m} of {what}{where} is {_pick(alt, 'higher', 'lower', 'atypical')} than "
                "expected")
    if probe == "layer_similarity":
        ref = p.get("reference_layer", "previous")
        ref = f"the {ref} layer" if ref in ("previous", "first", "last") else f"layer {ref}"
        return (f"each layer's similarity (CKA) to {ref}",
                f"Each layer's gene geometry is {more} similar to {ref} than expected")
    if probe == "cross_model_alignment":
        other = p.get("other_cache")
        return (f"the alignment ({p.get('method', 'cca')}) with {other}",
                f"The gene geometry aligns with {other} ({p.get('method', 'cca')}) "
                f"{_pick(alt, 'beyond', 'below', 'unlike')} chance")
    keys = ("positive", "negative", "gene_set", "genes", "pairs", "pairs_a", "pairs_b",
            "anchor", "measure", "statistic")
    parts = [f"singular axis {p['axis']}"] if p.get("axis") is not None else []
    parts += [f"in {space}"] if isinstance(p.get("subspace"), list) else []
    parts += [f"{k} {_ref(p[k])}" for k in keys if p.get(k) not in (None, "full")]
    shown = ", ".join(parts)
    subject = f"the {probe} effect" + (f" ({shown})" if shown else "")
    return subject, f"{_cap(subject)} is {_pick(alt, 'above', 'below', 'away from')} its null"


def spec_statement(raw: dict[str, Any], *, parent: int | None = None) -> str:
    """A statement of the spec `raw` (probe, params, layers, across_layers, alternative), built
    from those fields alone and ending with its null; `parent` names the result it refines."""
    from geoscreen.probes.registry import get_probe

    probe = str(raw.get("probe", ""))
    params = dict(raw.get("params") or {})
    alt = raw.get("alternative")
    try:
        info = get_probe(probe)
        alt = alt or info.alternatives[0]
        try:
            full = info.validate_params(params).model_dump(mode="json")
        except GeoscreenError:
            full = params
    except GeoscreenError:
        full = params
    alt = alt or "two-sided"
    subject, claim = _claim(probe, full, alt)
    across = raw.get("across_layers", "any")
    where = _layers(raw.get("layers", "all"))
    if across == "trend":
        text = f"{_cap(subject)} {_pick(alt, 'rises', 'falls', 'changes')} with depth"
        text += f" over {where}" if where else ""
    elif across == "slope_change":
        text = (f"{_cap(subject)} {_pick(alt, 'bends upward', 'bends downward', 'bends')} at "
                "one depth")
        text += f" over {where}" if where else ""
    elif across == "changepoint":
        text = (f"{_cap(subject)} {_pick(alt, 'steps up', 'steps down', 'changes level')} at "
                "one depth")
        text += f" over {where}" if where else ""
    elif across == "all":
        text = claim + (f" in every one of {where}" if where else " in every layer")
    elif across == "each":
        text = claim + (f" in each of {where}" if where else " in each layer")
    else:
        text = claim + (f" in {where}" if where else "")
    if parent is not None:
        text += f", refining #{parent}"
    return with_null(text, probe, params)


def null_used(recorded: Any, probe: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The null a result was tested against, for reports: the nulls its per-layer results
    recorded (`recorded`, in layer order), else the spec's own (`nulls.spec_null`).  Returns
    {null, label, warning (the real-geometry caveat, or None), recorded (bool)}."""
    from geoscreen.probes import nulls

    names = list(dict.fromkeys(str(n) for n in (recorded or ()) if n))
    from_layers = bool(names)
    if not names:
        try:
            names = [nulls.spec_null(probe, dict(params or {}))]
        except (GeoscreenError, KeyError, TypeError):
            names = []
    if not names:
        return {"null": "", "label": "unspecified", "warning": None, "recorded": False}
    warnings = [w for w in (nulls.warning(n, dict(params or {})) for n in names) if w]
    return {"null": " / ".join(names), "label": " / ".join(nulls.label(n) for n in names),
            "warning": warnings[0] if warnings else None, "recorded": from_layers}
