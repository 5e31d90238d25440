"""`geoscreen report`: one self-contained HTML page that reviews a campaign.

The page answers three questions without reading code: what was tested, what held up under FDR
control, and why each proposal was made.  It opens from disk with no server and no network: CSS,
JavaScript, data and plots (inline SVG, see `geoscreen.agent.report.svg`) are all inside the file.

Scale: profile plots are drawn here only for the strongest results; every other hypothesis
carries its per-layer numbers in a compact JSON block that the page's script plots on demand, so
a 10,000-hypothesis ledger renders in seconds into a page of a few megabytes.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geoscreen.agent.llm.accounting import usd
from geoscreen.agent.report import svg
from geoscreen.multitest import bh_count, storey_pi0

MAX_PROFILES = 40  # full profile plots drawn server-side (discoveries first)
MAX_LINEAGE_LIST = 400  # nodes in the nested lineage list
MAX_LINEAGE_GRAPH = 160  # nodes in the lineage drawing
MAX_PROBLEM_ROWS = 300  # failed / rejected rows listed one by one
MAX_EVENTS = 300


# -- statistics ---------------------------------------------------------------------------------
def _reference_methods(ps: list[float], alpha: float, pi0: float | None,
                       ) -> list[dict[str, Any]]:
    """Rules computed here for contrast (not used by the campaign, not stored)."""
    m = len(ps)
    rows = [{"label": "unadjusted p ≤ α", "kind": "reference", "hypotheses":
             sum(1 for p in ps if p <= alpha), "valid_under": "controls nothing",
             "parameters": f"alpha={alpha:g}",
             "note": f"what single tests would claim; about α·m = {alpha * m:.1f} false "
                     "positives expected if all were null"},
            {"label": "Bonferroni", "kind": "reference",
             "hypotheses": sum(1 for p in ps if m and p <= alpha / m),
             "valid_under": "family-wise error, any dependence", "parameters": f"alpha/m, m={m}",
             "note": "the strictest common rule"}]
    if pi0 is not None and m:
        rows.append({"label": "Storey-adaptive BH", "kind": "reference",
                     "hypotheses": bh_count(ps, alpha / max(pi0, 1e-9)),
                     "valid_under": "independence", "parameters": f"alpha/pi0, pi0={pi0:.2f}",
                     "note": "BH made less conservative by the estimated share of nulls"})
    return rows


def _fdr_methods(done: list[dict[str, Any]], alpha: float, pi0: float | None,
                 summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per multiple-testing rule: what it controls and what it calls discoveries.

    The campaign's own methods come from the FDR engine's summary (`store.fdr.summary`) when it
    exists; older ledgers fall back to the stored columns."""
    ps = [h["p_value"] for h in done if h["p_value"] is not None]
    rows = _reference_methods(ps, alpha, pi0)
    if summary:
        for meth in summary.get("methods", []):
            offline = meth.get("kind") == "offline"
            rows.append({
                "label": meth.get("label", meth.get("key", "?")), "kind": meth.get("kind", ""),
                "hypotheses": meth.get("hypotheses"), "members": meth.get("members"),
                "tested": meth.get("tested"), "valid_under": meth.get("valid_under", ""),
                "parameters": meth.get("parameters", ""),
                "primary": bool(meth.get("primary") or meth.get("primary_offline")),
                "next_alpha": meth.get("next_alpha"),
                "note": "recomputed over the whole family every iteration: can change" if offline
                        else "level fixed when each test entered the stream: never revised"})
        return rows
    rows += [{"label": "BH", "kind": "offline", "primary": True,
              "hypotheses": sum(1 for h in done if h["significant"]),
              "valid_under": "PRDS (incl. independence)", "parameters": f"alpha={alpha:g}",
              "note": "stored q-values; recomputed over the whole family: can change"},
             {"label": "BY", "kind": "offline",
              "hypotheses": sum(1 for h in done if h["q_by"] is not None and h["q_by"] <= alpha),
              "valid_under": "any dependence", "parameters": f"alpha={alpha:g}",
              "note": "stored q-values; recomputed over the whole family: can change"}]
    procs = Counter(h["online_procedure"] or "online" for h in done
                    if h["online_decision"] is not None)
    for proc, tested in sorted(procs.items()):
        rows.append({"label": proc, "kind": "online", "primary": True, "tested": tested,
                     "hypotheses": sum(1 for h in done if h["online_decision"] and
                                       (h["online_procedure"] or "online") == proc),
                     "valid_under": "", "parameters": "",
                     "note": "decided when each test ran; never revised"})
    if not procs:
        rows.append({"label": "online", "kind": "online", "hypotheses": None,
                     "valid_under": "", "parameters": "",
                     "note": "no online decisions recorded in this ledger"})
    return rows


def _fdr_summary(led: Any, campaign_id: int) -> tuple[dict[str, Any] | None, str]:
    """The FDR engine's own summary of the campaign (methods, family size), read-only."""
    from geoscreen.store import fdr
    from geoscreen.store.models import Campaign

    try:
        with led.session() as s:
            out = fdr.summary(s, s.get(Campaign, campaign_id))
            s.rollback()  # read-only: nothing the summary touched is written back
            return out, ""
    except Exception as exc:  # the page must still render; the reason is shown in it
        return None, f"{type(exc).__name__}: {exc}"


def _decision_patterns(done: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """How often the methods agree: counts of each (BH, BY, online) decision pattern."""
    has_online = any(h["online_decision"] is not None for h in done)
    pats: Counter[tuple[bool, bool, bool | None]] = Counter()
    for h in done:
        by = h["q_by"] is not None and h["q_by"] <= alpha
        pats[(bool(h["significant"]), by,
              bool(h["online_decision"]) if has_online else None)] += 1
    return [{"bh": k[0], "by": k[1], "online": k[2], "n": n}
            for k, n in sorted(pats.items(), key=lambda kv: (-kv[1]))
            if k[0] or k[1] or k[2]]


# -- summary ------------------------------------------------------------------------------------
def _cache_info(c: dict[str, Any], hyps: list[dict[str, Any]]) -> dict[str, Any]:
    """What the campaign ran on; reads the cache manifest when the cache is still there."""
    info: dict[str, Any] = {"path": c.get("cache_path"), "checksum": c.get("cache_checksum"),
                            "model": c.get("model"), "manifest": None}
    path = Path(c["cache_path"]) / "manifest.json" if c.get("cache_path") else None
    if path is not None and path.is_file():
        try:
            info["manifest"] = json.loads(path.read_text())
        except (OSError, ValueError):
            info["manifest"] = None
    man = info["manifest"] or {}
    prov_synth = any((h.get("provenance") or {}).get("synthetic_cache") for h in hyps)
    info["synthetic"] = bool(man.get("synthetic") or prov_synth or
                             str(c.get("model") or "").startswith("synthetic"))
    info["source"] = man.get("source")
    info["layers"] = man.get("layers")
    info["n_genes"] = man.get("n_genes")
    info["dim"] = man.get("dim")
    info["created"] = man.get("created")
    info["description"] = (man.get("metadata") or {}).get("description")
    return info


def _versions(c: dict[str, Any], hyps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Software versions recorded with the results (several values = the campaign spans them)."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    probes: dict[str, Counter[str]] = defaultdict(Counter)
    for h in hyps:
        prov = h.get("provenance") or {}
        for key in ("package_version", "python", "numpy", "scipy", "torch", "scgpt"):
            if prov.get(key):
                seen[key][str(prov[key])] += 1
        if prov.get("probe"):
            probes[str(prov["probe"])][str(prov.get("probe_version", "?"))] += 1
    out = [("geoscreen (campaign created with)", c.get("package_version") or "?")]
    names = {"package_version": "geoscreen (results)", "python": "Python", "numpy": "NumPy",
             "scipy": "SciPy", "torch": "PyTorch", "scgpt": "scGPT"}
    for key, counts in seen.items():
        out.append((names[key], ", ".join(v for v, _ in counts.most_common())))
    for probe, counts in sorted(probes.items()):
        out.append((f"probe {probe}", ", ".join(v for v, _ in counts.most_common())))
    return out


def _short_ref(ref: Any, limit: int = 48) -> str:
    s = str(ref)
    if len(s) <= limit:
        return s
    head = s.split(":", 1)[0]
    n = s.count(",") + 1
    return f"{s[:limit - 12]}… ({head}, {n} items)"


def _resources(hyps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gene sets / pair sets the probes resolved, grouped by resource, version and checksum."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for h in hyps:
        for res in ((h.get("provenance") or {}).get("resources") or {}).values():
            if not isinstance(res, dict):
                continue
            key = (str(res.get("resource", "?")), str(res.get("version", "")),
                   str(res.get("checksum", ""))[:12])
            g = groups.setdefault(key, {"resource": key[0], "version": key[1] or "–",
                                        "checksum": key[2] or "–", "kind": res.get("kind", ""),
                                        "refs": Counter(), "hypotheses": set(), "sources": {}})
            g["refs"][_short_ref(res.get("ref", ""))] += 1
            g["hypotheses"].add(h["hypothesis_id"])
            for src in res.get("sources") or []:
                if isinstance(src, dict) and src.get("name") and src["name"] != key[0]:
                    g["sources"][src["name"]] = src.get("version", "")
    out = []
    for g in sorted(groups.values(), key=lambda g: -len(g["hypotheses"])):
        refs = [r for r, _ in g["refs"].most_common(3)]
        more = len(g["refs"]) - len(refs)
        out.append({**g, "refs": refs, "more_refs": more, "hypotheses": len(g["hypotheses"]),
                    "sources": ", ".join(f"{k} {v}".strip() for k, v in g["sources"].items())})
    return out


def _budget(c: dict[str, Any], hyps: list[dict[str, Any]], iterations: list[dict[str, Any]],
            calls: list[dict[str, Any]]) -> list[tuple[str, str]]:
    cfg = c.get("config") or {}
    cost = sum(x["cost_usd"] or 0.0 for x in calls)
    out = []
    done_its = sum(1 for it in iterations if it["status"] == "done")
    out.append(("iterations", f"{done_its} done of {cfg.get('iterations', '?')} planned, "
                              f"{cfg.get('per_iteration', '?')} proposals each"))
    starts = [it["started_at"] for it in iterations if it.get("started_at")]
    ends = [it["finished_at"] for it in iterations if it.get("finished_at")]
    if starts and ends:
        out.append(("wall time", _duration((max(ends) - min(starts)).total_seconds())))
    compute = sum(h["runtime_s"] or 0.0 for h in hyps)
    out.append(("probe compute time", _duration(compute)))
    rule = cfg.get("sequential_h")  # absent: registered before the stopping rule existed
    out.append(("Monte Carlo nulls", f"a layer stops at {rule} draws as extreme as observed "
                f"(Besag-Clifford; one with p below {rule} / (m + 1) draws all m)"
                if rule else "every permutation drawn on every layer"))
    limit = cfg.get("max_cost_usd") or cfg.get("budget_usd")
    out.append(("LLM cost", usd(cost) + (f" of {usd(float(limit))} budget" if limit else "")
                + f" ({len(calls)} calls)"))
    for key in sorted(cfg):
        if key.startswith(("max_", "budget")) and key not in ("max_cost_usd", "budget_usd"):
            out.append((key.replace("_", " "), str(cfg[key])))
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- sections -----------------------------------------------------------------------------------
def _profile_arrays(prof: list[tuple]) -> tuple[list[str], list[float], list[float | None]]:
    return ([p[0] for p in prof], [p[2] for p in prof], [p[3] for p in prof])


def _layer_effect(h: dict[str, Any], prof: list[tuple]) -> tuple[str, float | None, str]:
    """What the per-layer values are: (name, no-effect level or None, note).  A trend test's
    layers carry descriptive values (no p), whose 'no effect' level is not defined."""
    from geoscreen.store.query import effect_null

    name = (prof[0][4] if prof and len(prof[0]) > 4 else "") or h["effect_name"]
    if any(p[3] is not None for p in prof):
        return name, effect_null(name, h.get("provenance")), ""
    return name, None, (f"descriptive per layer; tested across layers ({h['across_layers']}): "
                        f"p = {svg.fmt(h['p_value'])}")


def _is_discovery(h: dict[str, Any], alpha: float, online: dict[int, dict[str, bool]]) -> bool:
    """Held up under BH, BY, or any online procedure the FDR engine ran."""
    return bool(h["significant"] or (h["q_by"] is not None and h["q_by"] <= alpha)
                or h["online_decision"] or any(online.get(h["hypothesis_id"], {}).values()))


def _rank_key(h: dict[str, Any]) -> tuple:
    q = h["q_bh"] if h["q_bh"] is not None else 2.0
    p = h["p_value"] if h["p_value"] is not None else 2.0
    return (not h["significant"], q, p, h["hypothesis_id"])


def _discoveries(hyps: list[dict[str, Any]], profiles: dict[int, list], alpha: float,
                 max_profiles: int, online: dict[int, dict[str, bool]],
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Discovery table rows (any method) with sparklines, and full profile cards for the top."""
    disc = sorted((h for h in hyps if h["status"] == "done" and _is_discovery(h, alpha, online)),
                  key=_rank_key)
    rows, cards = [], []
    for h in disc:
        prof = profiles.get(h["hypothesis_id"], [])
        _names, eff, _ps = _profile_arrays(prof)
        null = _layer_effect(h, prof)[1]
        procs = online.get(h["hypothesis_id"], {})
        rows.append({**h, "by": h["q_by"] is not None and h["q_by"] <= alpha,
                     "online_rejects": [p for p, rej in procs.items() if rej],
                     "spark": svg.sparkline(eff, ref=null)})
    tested = sorted((h for h in hyps if h["status"] == "done"), key=_rank_key)
    for h in tested[:max_profiles]:
        prof = profiles.get(h["hypothesis_id"], [])
        if not prof:
            continue
        names, eff, ps = _profile_arrays(prof)
        lname, null, note = _layer_effect(h, prof)
        cards.append({**h, "svg": svg.profile(
            names, eff, ps, effect_name=f"{lname} per layer", null_level=null, alpha=alpha,
            width=560, height=230, note=note,
            label=f"#{h['hypothesis_id']} per-layer profile")})
    return rows, cards


def _families(hyps: list[dict[str, Any]], iterations: list[dict[str, Any]],
              evs: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Tallies per family, per iteration, and the family x iteration chart."""
    its = sorted({h["iteration"] for h in hyps if h["iteration"] is not None} |
                 {it["index"] for it in iterations})
    fams = sorted({h["family"] for h in hyps if h["family"] not in ("?", "")})
    tested = {f: Counter() for f in fams}
    disc_it: Counter[int] = Counter()
    table: dict[str, Counter] = {f: Counter() for f in fams + ["?"]}
    per_it: dict[int, Counter] = {i: Counter() for i in its}
    for h in hyps:
        fam = h["family"] if h["family"] in table else "?"
        t = table[fam]
        t["proposed"] += 1
        t[h["status"]] += 1
        it = h["iteration"]
        c = per_it.get(it) if it is not None else None
        if c is not None:
            c["proposed"] += 1
            c[h["status"]] += 1
        if h["status"] == "done":
            if fam in tested and it is not None:
                tested[fam][it] += 1
            if h["significant"]:
                t["discoveries"] += 1
                if it is not None:
                    disc_it[it] += 1
                    per_it[it]["discoveries"] += 1
    retired = {}
    for e in evs:
        if e["kind"] == "retired":
            fam = str((e.get("data") or {}).get("family", ""))
            retired[fam] = {"iteration": e["iteration_index"], "reason": e["message"]}
    fam_rows = []
    for f in fams + ["?"]:
        t = table[f]
        if not t["proposed"]:
            continue
        its_f = [h["iteration"] for h in hyps if h["family"] == f and h["iteration"]]
        fam_rows.append({"family": f if f != "?" else "(unresolved: rejected proposals)",
                         "proposed": t["proposed"], "tested": t["done"], "failed": t["failed"],
                         "rejected": t["rejected"], "discoveries": t["discoveries"],
                         "rate": (t["discoveries"] / t["done"]) if t["done"] else None,
                         "first": min(its_f) if its_f else None,
                         "last": max(its_f) if its_f else None, "retired": retired.get(f)})
    chart = ""
    if its and fams:
        chart = svg.stacked_bars([str(i) for i in its],
                                 {f: [tested[f][i] for i in its] for f in fams},
                                 markers=[disc_it[i] for i in its],
                                 label="hypotheses tested per iteration, by family",
                                 marker_label="discoveries (BH)")
    it_meta = {it["index"]: it for it in iterations}
    it_rows = []
    cum = 0
    for i in its:
        c = per_it[i]
        cum += c["discoveries"]
        meta = it_meta.get(i, {})
        dur = None
        if meta.get("started_at") and meta.get("finished_at"):
            dur = (meta["finished_at"] - meta["started_at"]).total_seconds()
        it_rows.append({"index": i, "brainstormer": meta.get("brainstormer", ""),
                        "status": meta.get("status", ""), "proposed": c["proposed"],
                        "tested": c["done"], "failed": c["failed"], "rejected": c["rejected"],
                        "discoveries": c["discoveries"], "cumulative": cum,
                        "duration": _duration(dur) if dur is not None else "",
                        "note": meta.get("note", "")})
    return {"rows": fam_rows, "chart": chart, "iterations": it_rows,
            "retired": [{"family": f, **v} for f, v in retired.items()]}


def _attach_nulls(hyps: list[dict[str, Any]], profiles: dict[int, list]) -> None:
    """Each hypothesis's null model, as its per-layer results recorded it (else as its spec
    implies): `null_name`, `null_label` and `null_warning` (the caveat of a null that failed
    real-geometry calibration, or None; see `geoscreen.probes.nulls`)."""
    from geoscreen.agent.statements import null_used

    memo: dict[tuple[str, str, str], dict[str, Any]] = {}
    for h in hyps:
        recorded = [x[5] for x in profiles.get(h["hypothesis_id"], []) if len(x) > 5]
        params = (h.get("spec") or {}).get("params")
        params = params if isinstance(params, dict) else {}
        key = ("|".join(dict.fromkeys(x for x in recorded if x)), str(h["probe"]),
               "" if recorded else json.dumps(params, sort_keys=True, default=str))
        if key not in memo:
            memo[key] = null_used(recorded, str(h["probe"]), params)
        info = memo[key]
        h.update(null_name=info["null"], null_label=info["label"],
                 null_warning=info["warning"])


def _outcome(h: dict[str, Any]) -> str:
    if h["status"] == "done":
        return "significant" if h["significant"] else "not significant"
    return h["status"]


def _lineage(hyps: list[dict[str, Any]]) -> dict[str, Any]:
    """Which results motivated which proposals: a nested list and a drawing by iteration."""
    by_id = {h["hypothesis_id"]: h for h in hyps}
    children: dict[int, list[int]] = defaultdict(list)
    for h in hyps:
        for p in h["parents"]:
            if p in by_id:
                children[p].append(h["hypothesis_id"])
    members = {i for i in children} | {c for cs in children.values() for c in cs}
    if not members:
        return {"n": 0, "tree": [], "graph": "", "truncated": 0}
    roots = sorted(i for i in members if not any(p in by_id for p in by_id[i]["parents"]))
    placed: set[int] = set()
    budget = [MAX_LINEAGE_LIST]

    def node(i: int, depth: int) -> dict[str, Any] | None:
        if i in placed or budget[0] <= 0 or depth > 40:
            return None
        placed.add(i)
        budget[0] -= 1
        h = by_id[i]
        kids = [k for k in (node(c, depth + 1) for c in sorted(children.get(i, []))) if k]
        also = [p for p in h["parents"] if p in by_id][1:]
        return {"h": h, "outcome": _outcome(h), "children": kids, "also": also}

    tree = [n for n in (node(r, 0) for r in roots) if n]
    graph = ""
    if len(members) <= MAX_LINEAGE_GRAPH:
        nodes = [{"id": i, "iteration": by_id[i]["iteration"], "outcome": _outcome(by_id[i]),
                  "title": by_id[i]["statement"]} for i in sorted(members)]
        edges = [(p, c) for p, cs in children.items() for c in cs]
        graph = svg.lineage_graph(nodes, edges)
    return {"n": len(members), "tree": tree, "graph": graph,
            "truncated": max(0, len(members) - len(placed))}


_DIGITS = re.compile(r"\d+(\.\d+)?")


def _problems(hyps: list[dict[str, Any]], evs: list[dict[str, Any]]) -> dict[str, Any]:
    """Failed and rejected proposals with reasons (grouped, then listed), and the event log."""
    bad = [h for h in hyps if h["status"] in ("failed", "rejected")]
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for h in bad:
        first = (h["error"] or "(no reason recorded)").splitlines()[0]
        key = (h["status"], _DIGITS.sub("N", first)[:110])
        g = groups.setdefault(key, {"status": h["status"], "reason": first, "n": 0, "ids": []})
        g["n"] += 1
        if len(g["ids"]) < 8:
            g["ids"].append(h["hypothesis_id"])
    listed = sorted(bad, key=lambda h: -h["hypothesis_id"])[:MAX_PROBLEM_ROWS]
    kinds = Counter(e["kind"] for e in evs)
    shown = evs[-MAX_EVENTS:]
    return {"n_failed": sum(1 for h in bad if h["status"] == "failed"),
            "n_rejected": sum(1 for h in bad if h["status"] == "rejected"),
            "groups": sorted(groups.values(), key=lambda g: -g["n"]), "rows": listed,
            "truncated": max(0, len(bad) - len(listed)), "event_kinds": dict(kinds),
            "events": shown}


def _llm(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """LLM usage and cost: totals, by model and purpose, and tokens per iteration."""
    if not calls:
        return {"n": 0}
    groups: dict[tuple[str, str], Counter] = defaultdict(Counter)
    lat: dict[tuple[str, str], list[float]] = defaultdict(list)
    for x in calls:
        k = (x["model"], x["purpose"])
        g = groups[k]
        g["calls"] += 1
        g["ok"] += x["outcome"] == "ok"
        g["tokens_in"] += x["tokens_in"] or 0
        g["tokens_out"] += x["tokens_out"] or 0
        g["cost"] += x["cost_usd"] or 0.0
        lat[k].append(x["latency_s"] or 0.0)
    rows = [{"model": k[0], "purpose": k[1], **g, "failed": g["calls"] - g["ok"],
             "latency": sum(lat[k]) / len(lat[k])} for k, g in sorted(groups.items())]
    per_it: dict[int, Counter] = defaultdict(Counter)
    for x in calls:
        if x["iteration_index"] is not None:
            per_it[x["iteration_index"]]["in"] += x["tokens_in"] or 0
            per_it[x["iteration_index"]]["out"] += x["tokens_out"] or 0
    its = sorted(per_it)
    chart = svg.stacked_bars([str(i) for i in its],
                             {"prompt tokens": [per_it[i]["in"] for i in its],
                              "completion tokens": [per_it[i]["out"] for i in its]},
                             label="LLM tokens per iteration") if its else ""
    outcomes = Counter(x["outcome"] for x in calls)
    return {"n": len(calls), "rows": rows, "chart": chart, "outcomes": dict(outcomes),
            "cost": sum(r["cost"] for r in rows),
            "tokens_in": sum(r["tokens_in"] for r in rows),
            "tokens_out": sum(r["tokens_out"] for r in rows)}


# -- client-side data ---------------------------------------------------------------------------
#: probes whose per-layer results carry SAE feature cards (annotation, network, modules,
#: highways)
ATLAS_PROBES = ("feature_annotation", "feature_network_coherence", "coactivation_modules",
                "cross_layer_highways", "perturbation_specificity")


def _atlas_cards(probe: str, ex: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the cards' middle column, the cards) of one atlas result's extra."""
    if probe == "coactivation_modules":
        return "module", [{"feature": f"M{m.get('module')}", "frequency": None,
                           "what": f"{m.get('size')} features: "
                                   + ", ".join(str(f) for f in (m.get("features") or [])[:8]),
                           "p": None, "ok": None, "genes": ", ".join(m.get("top_genes") or [])}
                          for m in (ex.get("modules") or [])]
    if probe == "cross_layer_highways":
        return "highway", [{"feature": f"{c.get('feature_a')}→{c.get('feature_b')}",
                            "frequency": None,
                            "what": f"PMI {c.get('pmi')}: {c.get('count')} positions vs "
                                    f"{c.get('expected')} expected",
                            "p": 10.0 ** c["log10_p"] if c.get("log10_p") is not None
                            else None, "ok": None,
                            "genes": ", ".join(c.get("genes_b") or []) + "  ←  "
                                     + ", ".join(c.get("genes_a") or [])}
                           for c in (ex.get("highways") or [])]
    if probe == "perturbation_specificity":
        return "knockdown", [{"feature": c.get("tf"), "frequency": None,
                              "what": f"{c.get('overlap')} of {c.get('responders')} responders "
                                      f"are target features ({c.get('expected')} expected); z "
                                      f"{c.get('z')} vs {c.get('z_other_knockdowns')} for other "
                                      "knockdowns",
                              "p": c.get("rank_p"), "ok": None,
                              "genes": f"{c.get('cells')} cells, {c.get('target_features')} "
                                       "target features"}
                             for c in (ex.get("tfs") or [])[:20]]
    annotation = probe == "feature_annotation"
    return ("best set" if annotation else "network"), [
        {"feature": c.get("feature"), "frequency": c.get("frequency"),
         "what": (c.get("best_set_name") or c.get("best_set") or "–")
         if annotation else f"{c.get('edges', 0)} edges",
         "p": c.get("best_p") if annotation else c.get("p"),
         "ok": c.get("annotated") if annotation else None,
         "genes": ", ".join(c.get("top_genes") or [])}
        for c in (ex.get("hits") or [])]


def _atlas_detail(probe: str, ex: dict[str, Any]) -> tuple[str, str]:
    """(what the observed number is, a sentence of context) of one atlas result."""
    if probe == "feature_annotation":
        return ("features annotated", f"{ex.get('n_annotated')} of "
                f"{ex.get('n_features_tested')} features, {ex.get('n_sets')} sets")
    if probe == "feature_network_coherence":
        return ("edges per feature", f"{ex.get('features_coherent_bh05')} of "
                f"{ex.get('n_features_tested')} features coherent (BH 0.05); 'any edge' would "
                f"say {100 * (ex.get('features_with_any_edge') or 0):.0f}%")
    rule = (f"the study's PMI > 3 rule would say {ex.get('pmi_gt_3_pairs')} pairs; exact test "
            f"per pair against independent firing over {ex.get('n_positions')} positions")
    if probe == "perturbation_specificity":
        return ("mean z of knockdowns against their own TF's target features",
                f"{ex.get('tfs_rank_first')} TFs rank first among all knockdowns; the "
                f"responders-vs-targets Fisher test (stratified by frequency) would call "
                f"{ex.get('tfs_fisher_bh05')} specific at BH 0.05; "
                f"{ex.get('n_control_cells')} control cells")
    if probe == "coactivation_modules":
        return ("co-activation edges", f"{ex.get('n_modules')} Leiden modules, "
                f"{100 * (ex.get('share_in_modules') or 0):.0f}% of "
                f"{ex.get('n_features_tested')} features in one; {rule}")
    dm = ex.get("decoder_match") or {}
    match = (f"; decoder match: mean best cosine {dm['mean_best_cosine']:.3f} vs "
             f"{dm['null_mean']:.3f} for rotated dictionaries (p {dm['p']:.3g})"
             if dm.get("mean_best_cosine") is not None else "")
    return (f"highways from {ex.get('reference')}", f"{ex.get('reference_features_linked')} of "
            f"{ex.get('n_reference_features')} reference features linked; {rule}{match}")


def _atlas(hyps: list[dict[str, Any]], extras: dict[int, list[dict[str, Any]]]
           ) -> list[dict[str, Any]]:
    """One block per tested atlas hypothesis and layer: observed vs null, and feature cards."""
    out = []
    for h in hyps:
        if h["probe"] not in ATLAS_PROBES or h["status"] != "done":
            continue
        for row in extras.get(h["hypothesis_id"], []):
            ex = row["extra"]
            what, cards = _atlas_cards(h["probe"], ex)
            label, detail = _atlas_detail(h["probe"], ex)
            out.append({
                "hypothesis_id": h["hypothesis_id"], "statement": h["statement"],
                "probe": h["probe"], "layer": row["layer"], "p": row["p_value"],
                "q": h.get("q_bh"), "significant": h.get("significant"),
                "observed": row["statistic"], "null_mean": ex.get("null_mean"),
                "null_95": ex.get("null_95"), "observed_label": label, "detail": detail,
                "what": what, "atlas": ex.get("atlas"), "cards": cards})
    return out


def _r(x: float | None) -> float | None:
    """Round to 3 significant digits for the embedded JSON (keeps the page small)."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.3g}")


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


INTERNED = ("st", "src", "probe", "fam", "en", "len", "op", "across", "alt", "nl", "nw")


class _Strings:
    """Repeated strings (status, probe, family...) stored once; rows hold their index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, value: Any) -> int:
        key = "" if value is None else str(value)
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append(key)
        return self._index[key]


def _layer_ref(indices: list[int]) -> int | list[int]:
    """A run of consecutive layer indices as its start (the usual case), else the list."""
    start = indices[0]
    return start if indices == list(range(start, start + len(indices))) else indices


def _client_data(hyps: list[dict[str, Any]], profiles: dict[int, list], alpha: float,
                 online: dict[int, dict[str, bool]]) -> dict[str, Any]:
    """Compact per-hypothesis records for the page's table, detail view and on-demand plots
    (decoded by the page's script: interned strings, omitted empty fields, layer runs)."""
    from geoscreen.store.query import effect_null

    strings = _Strings()
    layer_names = _Strings()
    children: dict[int, list[int]] = defaultdict(list)
    for h in hyps:
        for p in h["parents"]:
            children[p].append(h["hypothesis_id"])
    nulls: dict[str, float] = {}
    rows = []
    for h in hyps:
        params = (h.get("spec") or {}).get("params", {})
        d: dict[str, Any] = {
            "id": h["hypothesis_id"], "it": h["iteration"], "st": h["status"],
            "src": h["source"], "probe": h["probe"], "fam": h["family"],
            "stmt": _clip(h["statement"], 300), "why": _clip(h["rationale"], 300),
            "params": _clip(json.dumps(params, sort_keys=True, default=str), 300),
            "across": h["across_layers"], "alt": h["alternative"]}
        if h.get("null_label"):
            d["nl"] = h["null_label"]
        if h.get("null_warning"):
            d["nw"] = h["null_warning"]
        if h["parents"]:
            d["par"] = h["parents"]
        kids = children.get(h["hypothesis_id"])
        if kids:
            d["ch"] = kids[:50]
        if h["error"]:
            d["err"] = _clip(h["error"], 600)
        if h["status"] == "done":
            nulls.setdefault(h["effect_name"], effect_null(h["effect_name"], h.get("provenance")))
            d.update(en=h["effect_name"], e=_r(h["effect_size"]), p=_r(h["p_value"]),
                     q=_r(h["q_bh"]), qby=_r(h["q_by"]))
            if h["significant"]:
                d["sig"] = 1
            if h["q_by"] is not None and h["q_by"] <= alpha:
                d["by"] = 1
            if h["online_decision"] is not None:
                d.update(on=int(bool(h["online_decision"])), oa=_r(h["online_alpha"]),
                         op=h["online_procedure"])
                if not h["online_decision"] and h.get("online_unreachable"):
                    d["ou"] = h["online_unreachable"]
            rejected = [p for p, rej in online.get(h["hypothesis_id"], {}).items() if rej]
            if rejected:
                d["onx"] = [strings(p) for p in rejected]
            prof = profiles.get(h["hypothesis_id"])
            if prof:
                d["L"] = [_layer_ref([layer_names(x[0]) for x in prof]),
                          [_r(x[2]) for x in prof], [_r(x[3]) for x in prof]]
                lname, null, _note = _layer_effect(h, prof)
                nulls.setdefault(lname, effect_null(lname, h.get("provenance")))
                if lname != h["effect_name"]:
                    d["len"] = lname
                if null is None:
                    d["desc"] = 1
        for key in INTERNED:
            if key in d:
                d[key] = strings(d[key])
        rows.append(d)
    return {"rows": rows, "strings": strings.items, "interned": list(INTERNED),
            "layers": layer_names.items, "nulls": nulls, "alpha": alpha}


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: '<', '>' and '&' as \\u escapes, so no text can
    close the element, open an HTML comment ('<!--' switches the parser's script state and a
    later '</script>' no longer ends it) or start markup; U+2028/2029 escaped for old parsers.
    The result is still JSON and parses to the same object."""
    s = json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s


# -- assembly and rendering ---------------------------------------------------------------------
def _pick_campaign(campaigns: list[dict[str, Any]], campaign_id: int | None) -> dict[str, Any]:
    from geoscreen.errors import GeoscreenError

    if not campaigns:
        raise GeoscreenError("holds no campaign yet", field="--ledger",
                             fix="start one with 'geoscreen campaign run'")
    if campaign_id is not None:
        for c in campaigns:
            if c["id"] == campaign_id:
                return c
        raise GeoscreenError(f"has no campaign {campaign_id}; it has "
                             f"{', '.join(str(c['id']) for c in campaigns)}", field="--campaign")
    exploratory = [c for c in campaigns if c["kind"] == "exploratory"]
    return (exploratory or campaigns)[-1]


def collect(ledger: str | Path, *, campaign_id: int | None = None,
            max_profiles: int = MAX_PROFILES) -> dict[str, Any]:
    """Everything the template shows, as plain data (also handy for tests and notebooks)."""
    from geoscreen.store import query

    led = query._open_ledger(str(ledger))
    try:
        campaigns = query.campaign_records(led)
        c = _pick_campaign(campaigns, campaign_id)
        cid = c["id"]
        hyps = query.hypothesis_records(led, cid)
        profiles = query.layer_profiles(led, cid)
        iterations = query.iteration_records(led, cid)
        calls = query.llm_call_records(led, cid)
        evs = query.event_records(led, cid)
        online = query.fdr_member_decisions(led, cid)
        unreachable = query.fdr_member_unreachable(led, cid)
        fdr_summary, fdr_error = _fdr_summary(led, cid)
        confirmations = query.confirmation_records(led, cid)
        extras = query.layer_extras(led, [h["hypothesis_id"] for h in hyps
                                          if h["probe"] in ATLAS_PROBES])
    finally:
        led.close()
    _attach_nulls(hyps, profiles)
    cfg = c.get("config") or {}
    alpha = float(cfg.get("alpha", 0.05))
    done = [h for h in hyps if h["status"] == "done"]
    pvals = [h["p_value"] for h in done if h["p_value"] is not None]
    pi0 = storey_pi0(pvals)
    status_counts = Counter(h["status"] for h in hyps)
    disc_rows, cards = _discoveries(hyps, profiles, alpha, max_profiles, online)
    for row in disc_rows:  # discovered vs confirmed: each confirmatory family's verdict
        row["confirmations"] = [
            {"label": f["label"], "campaign_id": f["campaign_id"],
             **f["rows"][row["hypothesis_id"]]}
            for f in confirmations if row["hypothesis_id"] in f["rows"]]
    for h in hyps:  # why the primary online procedure could not reject it (resolution)
        why = unreachable.get(h["hypothesis_id"], {})
        h["online_unreachable"] = why.get(str(h.get("online_procedure") or "").split("(")[0])
    client = _client_data(hyps, profiles, alpha, online)
    fdr_rows = _fdr_methods(done, alpha, pi0, fdr_summary)
    online_names = sorted({h["online_procedure"] or "online" for h in done
                           if h["online_decision"] is not None})
    primary = [m["label"] for m in (fdr_summary or {}).get("methods", [])
               if m.get("kind") == "online" and m.get("primary")]
    if primary and online_names:
        online_names = primary
    name = c.get("name") or "campaign"
    title = name if name != "campaign" else f"{c.get('model') or 'campaign'} (campaign {cid})"
    return {
        "ledger": str(ledger), "title": title, "generated": datetime.now(timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"), "campaign": c, "other_campaigns": [
            x for x in campaigns if x["id"] != cid], "alpha": alpha, "config": cfg,
        "cache": _cache_info(c, hyps), "versions": _versions(c, hyps),
        "resources": _resources(hyps), "budget": _budget(c, hyps, iterations, calls),
        "counts": {"proposed": len(hyps), "tested": len(done),
                   "failed": status_counts.get("failed", 0),
                   "rejected": status_counts.get("rejected", 0),
                   "waiting": sum(status_counts.get(s, 0) for s in
                                  ("queued", "pending_approval", "running")),
                   "bh": sum(1 for h in done if h["significant"]),
                   "by": sum(1 for h in done if h["q_by"] is not None and h["q_by"] <= alpha),
                   "online": sum(1 for h in done if h["online_decision"]),
                   "online_recorded": any(h["online_decision"] is not None for h in done)},
        "online_names": online_names, "discoveries": disc_rows, "cards": cards,
        "confirmations": confirmations, "holdout": cfg.get("holdout"),
        "n_confirmed": sum(1 for r in disc_rows if any(x["confirmed"]
                                                       for x in r["confirmations"])),
        "n_profiles_total": sum(1 for h in done if profiles.get(h["hypothesis_id"])),
        "pi0": pi0, "n_pvalues": len(pvals),
        "histogram": svg.histogram(pvals, pi0=pi0) if pvals else "",
        "fdr_rows": fdr_rows, "patterns": _decision_patterns(done, alpha),
        "fdr_state": c.get("fdr_state") or {}, "fdr_summary": fdr_summary or {},
        "fdr_error": fdr_error,
        "families": _families(hyps, iterations, evs, alpha), "lineage": _lineage(hyps),
        "problems": _problems(hyps, evs), "llm": _llm(calls), "atlas": _atlas(hyps, extras),
        "client_json": _script_json(client),
    }


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
        lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = svg.fmt
    env.filters["usd"] = usd
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.0f}%"
    env.filters["sortnum"] = lambda x: "" if x is None else f"{float(x):.6g}"
    env.filters["short"] = _clip
    env.filters["shortref"] = _short_ref
    env.filters["tojson_compact"] = lambda x: json.dumps(x, sort_keys=True, default=str)
    return env


def render_report(ledger: str | Path, out: str | Path, *, campaign_id: int | None = None,
                  max_profiles: int = MAX_PROFILES) -> Path:
    """Render the campaign in `ledger` to one self-contained HTML file at `out`."""
    from markupsafe import Markup

    data = collect(ledger, campaign_id=campaign_id, max_profiles=max_profiles)
    data["client_json"] = Markup(data["client_json"])
    for key in ("histogram",):
        data[key] = Markup(data[key])
    data["families"]["chart"] = Markup(data["families"]["chart"])
    data["lineage"]["graph"] = Markup(data["lineage"]["graph"])
    if data["llm"].get("chart"):
        data["llm"]["chart"] = Markup(data["llm"]["chart"])
    for row in data["discoveries"]:
        row["spark"] = Markup(row["spark"])
    for card in data["cards"]:
        card["svg"] = Markup(card["svg"])
    html = _environment().get_template("report.html.j2").render(**data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
