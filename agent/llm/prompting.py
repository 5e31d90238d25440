"""Prompt rendering: jinja2 templates fed from the probe and resource registries and the ledger.

The system prompt is generated from what is registered, so a new probe or resource reaches the
model without editing a prompt.  The iteration prompt summarises the ledger under a token
budget: records are ranked once, and the largest prefix of that ranking that fits is shown —
whole records only, so the model never sees half a result.  Users can override any template
by pointing `llm.templates_dir` at a folder with files of the same names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoscreen.agent.llm.tokens import TokenCounter
from geoscreen.agent.state import CampaignState, HypView
from geoscreen.errors import GeoscreenError

TEMPLATES = ("system.j2", "iteration.j2", "repair.j2", "json_instruction.j2")

GENE_SET_CLAIM = ("gene_set", "genes", "pairs")  # required parameters of set-level claims


def null_catalog() -> list[dict[str, Any]]:
    """Every null model, described once from `geoscreen.probes.nulls.NULLS`: what it tests,
    whether it is set- or geometry-level, and how it held on real embedding geometry."""
    from geoscreen.probes.nulls import NULLS

    return [{"name": m.name, "label": m.label, "level": m.level, "meaning": m.meaning,
             "real_geometry": m.real_geometry, "note": m.note,
             "fails": m.real_geometry == "fails for gene-set claims"} for m in NULLS.values()]


def null_policy() -> dict[str, Any]:
    """The rule the system prompt states, with the null names generated from NULLS."""
    from geoscreen.probes.nulls import NULLS

    return {"set_level": [n for n, m in NULLS.items() if m.level in ("set", "pairs")],
            "geometry_level": [{"name": n, "meaning": m.meaning} for n, m in NULLS.items()
                               if m.level == "geometry"],
            "failing": [n for n, m in NULLS.items()
                        if m.real_geometry == "fails for gene-set claims"]}


def _null_note(name: str) -> str:
    from geoscreen.probes.nulls import describe

    m = describe(name)
    if m is None:
        return "see the parameters"
    note = f"{m.label} ({m.level}-level)"
    if m.real_geometry == "fails for gene-set claims":
        note += "; fails for gene-set claims on real geometry: never for a gene set or pair set"
    return note


# -- registries ----------------------------------------------------------------------------------
def _type_of(s: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in s:
        s = defs.get(s["$ref"].rsplit("/", 1)[-1], {})
    if "const" in s:
        return json.dumps(s["const"])
    if "enum" in s:
        return " | ".join(json.dumps(v) for v in s["enum"])
    if "anyOf" in s or "oneOf" in s:
        return " | ".join(_type_of(x, defs) for x in s.get("anyOf", s.get("oneOf", [])))
    t = s.get("type", "any")
    if t == "array":
        return f"list of {_type_of(s.get('items', {}), defs)}"
    bounds = [f"{op}{s[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                           ("maximum", "<="), ("exclusiveMaximum", "<"))
              if k in s]
    return f"{t} {' '.join(bounds)}".strip() if bounds else str(t)


def param_rows(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A probe's JSON schema as rows the system prompt lists: name, type, default, meaning."""
    required = set(schema.get("required", []))
    defs = schema.get("$defs", {})
    rows = []
    for name, s in schema.get("properties", {}).items():
        rows.append({"name": name, "type": _type_of(s, defs), "required": name in required,
                     "default": s.get("default"), "description": s.get("description", "")})
    rows.sort(key=lambda r: (not r["required"], r["name"] == "include_zero_genes"))
    return rows


def probe_catalog() -> list[dict[str, Any]]:
    """Every registered probe as the system prompt lists it, with the null it uses by default
    (`geoscreen.probes.nulls.spec_null`) and what each of its nulls controls for."""
    from geoscreen.probes.nulls import label, spec_null, warning
    from geoscreen.probes.registry import list_probes

    out = []
    for info in list_probes():
        s = info.schema()
        notes = getattr(info, "null_notes", None) or {}
        default = spec_null(info.name, {})
        fields = info.params.model_fields
        claim = next((k for k in GENE_SET_CLAIM if k in fields and fields[k].is_required()), "")
        out.append({**s, "params": param_rows(s["params"]),
                    "nulls": [{"name": n, "controls": notes.get(n) or _null_note(n)}
                              for n in s["nulls"]],
                    "default_null": {"name": default, "label": label(default),
                                     "warning": warning(default)},
                    "set_claim": claim,
                    "examples": [{"probe": info.name, **ex} for ex in s["examples"]]})
    return out


_LITERALS = [
    {"name": "genes", "title": "literal gene list", "provides": "gene sets",
     "selectors": ["genes:BATF,BACH2,PAX5"], "examples": ["genes:BATF,BACH2"], "available": True},
    {"name": "pairs", "title": "literal gene pairs", "provides": "pair sets",
     "selectors": ["pairs:PAX5-CD19,BATF-IRF4"], "examples": ["pairs:PAX5-CD19"],
     "available": True},
]


def resource_catalog() -> dict[str, Any]:
    """Resources and the reference grammar, from whatever the resource registry offers."""
    try:
        from geoscreen.store.resources import catalog
    except ImportError:
        return {"resources": _LITERALS, "grammar": []}
    infos = getattr(catalog, "RESOURCES", {})
    infos = list(infos.values()) if isinstance(infos, dict) else list(infos)
    out = []
    for r in infos:
        name = getattr(r, "name", None)
        if not name or name == "file":
            continue  # files on the user's disk mean nothing to the model
        try:
            available = bool(getattr(r, "literal", False)) or bool(catalog.versions(name))
        except Exception:  # an unreadable fetch index must not break the prompt
            available = bool(getattr(r, "bundled", False))
        out.append({"name": name, "title": getattr(r, "title", ""),
                    "provides": getattr(r, "provides", ""),
                    "selectors": list(getattr(r, "selectors", ())),
                    "examples": list(getattr(r, "examples", ())), "available": available,
                    "fetch": f"geoscreen resources fetch {name}"})
    return {"resources": out or _LITERALS, "grammar": list(getattr(catalog, "GRAMMAR", ()))}


# -- the ledger, compactly -----------------------------------------------------------------------
def compact_spec(h: HypView) -> dict[str, Any]:
    """The parts of a spec that define the test, without parameters left at their defaults."""
    params = h.spec.get("params", {})
    if not isinstance(params, dict):
        return {"probe": h.probe, "params": params}
    try:
        from geoscreen.probes.registry import get_probe

        fields = get_probe(h.probe).params.model_fields
        params = {k: v for k, v in params.items()
                  if k not in fields or fields[k].is_required() or fields[k].default != v}
    except GeoscreenError:
        pass
    out: dict[str, Any] = {"probe": h.probe, "params": params}
    for key, default in (("layers", "all"), ("across_layers", "any")):
        if h.spec.get(key, default) != default:
            out[key] = h.spec[key]
    if h.spec.get("alternative"):
        out["alternative"] = h.spec["alternative"]
    return out


def flat(text: Any, limit: int | None = None) -> str:
    """Text from the ledger or a model as one line: whitespace runs (newlines included) become
    one space and control characters go, so a previous answer cannot start a heading, a new
    message or an instruction block of its own in a later prompt."""
    out = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    return out if limit is None or len(out) <= limit else out[:limit - 1] + "…"


def quoted(text: Any) -> str:
    """`flat` text as a JSON string literal: data inside quotes, never prompt structure."""
    return json.dumps(flat(text), ensure_ascii=False)


def _fmt(x: float | None) -> str:
    return "NA" if x is None else f"{x:.3g}"


def hyp_record(h: HypView) -> dict[str, Any]:
    effect = (f"{h.effect_name}={_fmt(h.effect_size)}" if h.effect_size is not None else "")
    return {"id": h.id, "iteration": h.iteration, "family": h.family, "probe": h.probe,
            "statement": flat(h.statement, 240), "spec": compact_spec(h),
            "p": _fmt(h.p_value),
            "q": _fmt(h.q_bh), "effect": effect, "parents": list(h.parents),
            "status": h.status, "source": h.source,
            "error": flat(h.error, 240)}


def family_tallies(state: CampaignState, families: list[str]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for fam in families:
        rows[fam] = {"family": fam, "tested": 0, "discoveries": 0, "negatives": 0, "failed": 0,
                     "queued": 0, "rejected": 0, "best_q": None, "retired": fam in state.retired}
    for h in state.history:
        if h.family == "?":
            continue
        r = rows.setdefault(h.family, {"family": h.family, "tested": 0, "discoveries": 0,
                                       "negatives": 0, "failed": 0, "queued": 0,
                                       "rejected": 0, "best_q": None,
                                       "retired": h.family in state.retired})
        if h.status == "done":
            r["tested"] += 1
            r["discoveries" if h.significant else "negatives"] += 1
            if h.q_bh is not None and (r["best_q"] is None or h.q_bh < r["best_q"]):
                r["best_q"] = h.q_bh
        elif h.status == "failed":
            r["failed"] += 1
        elif h.status in ("queued", "pending_approval"):
            r["queued"] += 1
    for r in rows.values():
        r["best_q"] = _fmt(r["best_q"]) if r["best_q"] is not None else "-"
    return list(rows.values())


@dataclass
class Digest:
    """Ranked records per section; `take(n)` keeps the n best-ranked ones."""

    ranked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sections: tuple[str, ...] = ("tallies", "retired", "discoveries", "queued", "failures",
                                 "negatives", "rejected")

    def take(self, n: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
        kept: dict[str, list[dict[str, Any]]] = {s: [] for s in self.sections}
        dropped: dict[str, int] = dict.fromkeys(self.sections, 0)
        order: dict[str, list[tuple[int, dict[str, Any]]]] = {s: [] for s in self.sections}
        for i, (sec, rec) in enumerate(self.ranked):
            if i < n:
                order[sec].append((rec.get("_pos", i), rec))
            else:
                dropped[sec] += 1
        for sec, items in order.items():
            kept[sec] = [r for _, r in sorted(items, key=lambda x: x[0])]
        return kept, dropped


def build_digest(state: CampaignState, families: list[str], head: int = 5) -> Digest:
    """Rank every record: a head of each section first, then the rest, most useful first."""
    by_recency = sorted(state.history, key=lambda h: -h.id)
    disc = sorted(state.discoveries, key=lambda h: (h.q_bh if h.q_bh is not None else 1.0,
                                                    h.p_value or 1.0, h.id))
    sections: dict[str, list[dict[str, Any]]] = {
        "tallies": family_tallies(state, families),
        "retired": [{"family": f, "reason": why} for f, why in sorted(state.retired.items())],
        "discoveries": [hyp_record(h) for h in disc],
        "queued": [hyp_record(h) for h in state.queued],
        "failures": [hyp_record(h) for h in by_recency if h.status == "failed"],
        "negatives": [hyp_record(h) for h in by_recency
                      if h.status == "done" and not h.significant],
        "rejected": [hyp_record(h) for h in by_recency if h.status == "rejected"],
    }
    for recs in sections.values():
        for pos, r in enumerate(recs):
            r["_pos"] = pos
    ranked: list[tuple[str, dict[str, Any]]] = []
    for sec in ("tallies", "retired"):
        ranked += [(sec, r) for r in sections[sec]]
    tiers = ("discoveries", "failures", "negatives", "queued", "rejected")
    for sec in tiers:
        ranked += [(sec, r) for r in sections[sec][:head]]
    for sec in tiers:
        ranked += [(sec, r) for r in sections[sec][head:]]
    return Digest(ranked=ranked)


# -- templates -----------------------------------------------------------------------------------
def _prompts_dir() -> Path:
    import geoscreen.prompts

    return Path(geoscreen.prompts.__file__).parent


class PromptBuilder:
    """The jinja2 environment (user folder first, built-in templates second) and renderers."""

    def __init__(self, templates_dir: str | None = None, counter: TokenCounter | None = None):
        import jinja2

        dirs = ([str(Path(templates_dir).expanduser())] if templates_dir else [])
        dirs.append(str(_prompts_dir()))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs), undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True, autoescape=False, keep_trailing_newline=False)
        self.env.filters["json"] = lambda v: json.dumps(v, separators=(", ", ": "), default=str)
        self.env.filters["data"] = quoted
        self.counter = counter or TokenCounter()
        self.templates_dir = templates_dir

    def render(self, name: str, **ctx: Any) -> str:
        import jinja2

        try:
            return self.env.get_template(name).render(**ctx).strip() + "\n"
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or name
            line = getattr(exc, "lineno", None)
            raise GeoscreenError(f"prompt template error{f' at line {line}' if line else ''}: "
                                 f"{exc.message if hasattr(exc, 'message') else exc}",
                                 path=str(where), field="llm.templates_dir") from None

    def system(self, probes: list[dict[str, Any]] | None = None) -> str:
        from geoscreen.hypotheses.spec import HypothesisSpec

        fields = {name: f.description or "" for name, f in HypothesisSpec.model_fields.items()}
        return self.render("system.j2", probes=probes if probes is not None else probe_catalog(),
                           resources=resource_catalog(), spec_fields=fields,
                           nulls=null_catalog(), null_policy=null_policy())

    def iteration(self, state: CampaignState, k: int, budget: int,
                  families: list[str] | None = None) -> tuple[str, dict[str, int]]:
        """The iteration prompt under `budget` tokens, and how many records each section lost."""
        if families is None:
            families = sorted({p["family"] for p in probe_catalog()})
        digest = build_digest(state, families)

        def render(n: int) -> tuple[str, dict[str, int]]:
            kept, dropped = digest.take(n)
            text = self.render("iteration.j2", iteration=state.iteration, k=k,
                               alpha=state.alpha, cache=state.cache, sections=kept,
                               dropped=dropped, dropped_total=sum(dropped.values()),
                               n_history=len(state.history))
            return text, dropped

        full = render(len(digest.ranked))
        if self.counter.count(full[0]) <= budget:
            return full
        lo, hi = 0, len(digest.ranked)  # invariant: render(lo) fits or lo == 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.counter.count(render(mid)[0]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return render(lo)

    def repair(self, **ctx: Any) -> str:
        return self.render("repair.j2", **ctx)

    def json_instruction(self, schema: dict[str, Any]) -> str:
        return self.render("json_instruction.j2", schema=schema)


def reply_schema(probe_names: list[str]) -> dict[str, Any]:
    """The JSON schema of a brainstormer reply (sent as response_format, or in the prompt)."""
    from geoscreen.hypotheses.spec import AcrossLayers, Alternative

    proposal = {
        "type": "object",
        "properties": {
            "statement": {"type": "string"},
            "probe": {"type": "string", "enum": probe_names} if probe_names
            else {"type": "string"},
            "params": {"type": "object"},
            "layers": {"anyOf": [{"type": "string", "enum": ["all"]},
                                 {"type": "array", "items": {"type": ["integer", "string"]}}]},
            "across_layers": {"type": "string", "enum": list(AcrossLayers.__args__)},
            "alternative": {"type": "string", "enum": list(Alternative.__args__)},
            "rationale": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "parents": {"type": "array", "items": {"type": "integer"}},
            "replaces": {"type": "string"},
        },
        "required": ["statement", "probe", "params", "rationale", "parents"],
    }
    retire = {"type": "object",
              "properties": {"family": {"type": "string"}, "reason": {"type": "string"}},
              "required": ["family", "reason"]}
    return {"type": "object",
            "properties": {"proposals": {"type": "array", "items": proposal},
                           "retire": {"type": "array", "items": retire}},
            "required": ["proposals"]}

