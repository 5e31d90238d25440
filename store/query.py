"""Read-only views of a ledger for the CLI, exports and reports (plain dicts, JSON-ready).

Everything here selects columns, never whole ORM objects: `ledger list` and `report` must stay
fast on ledgers of 10,000+ hypotheses with 12 layer rows each.  `list_hypotheses` goes further:
on a SQLite file it runs one SQL statement through the standard library, because importing
SQLAlchemy alone costs a third of the one-second budget `ledger list` has; SQLAlchemy (imported
lazily) serves every other URL and every other view.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geoscreen.store.ledger import Ledger

EXPORT_COLUMNS = ("hypothesis_id", "iteration", "source", "probe", "family", "statement",
                  "status", "p_value", "q_bh", "q_by", "significant", "online_alpha",
                  "online_decision", "online_procedure", "effect_name", "effect_size",
                  "combine_method", "layers", "across_layers", "alternative", "parents", "error",
                  "hash", "rationale", "test_order")

SORT_KEYS = ("id", "p", "q", "q_bh", "q_by", "effect", "abs_effect", "iteration", "family", "probe",
             "source", "status")
FDR_METHODS = ("bh", "by", "online")
_SORT_SQL = {"id": "id", "p": "p_value", "q": "q_bh", "q_bh": "q_bh", "q_by": "q_by",
             "effect": "effect_size",
             "abs_effect": "abs(effect_size)", "iteration": "iteration_index",
             "family": "family", "probe": "probe", "source": "source", "status": "status"}
_LIST_COLUMNS = ("id", "iteration_index", "source", "probe", "family", "statement", "status",
                 "p_value", "q_bh", "q_by", "significant", "online_alpha", "online_decision",
                 "online_procedure", "effect_name", "effect_size", "combine_method", "parents",
                 "error", "hash", "rationale", "campaign_id", "test_order")


def _open_ledger(target: str) -> Ledger:
    from geoscreen.store.ledger import Ledger

    return Ledger(target, must_exist=True)


@contextmanager
def _opened(ledger: str | Ledger) -> Iterator[Ledger]:
    """The ledger itself, or one opened for this call only (its engine disposed afterwards)."""
    if not isinstance(ledger, str | Path):
        yield ledger
        return
    led = _open_ledger(str(ledger))
    try:
        yield led
    finally:
        led.close()


def _hcols() -> Any:
    from geoscreen.store.models import Hypothesis

    return Hypothesis.__table__.c


def ledger_ids(value: Any) -> list[int]:
    """The hypothesis ids in a `parents` value: integers only (not booleans); anything else a
    model wrote there (strings, objects, markup) is dropped here and stays in the raw spec."""
    if not isinstance(value, list | tuple):
        return []
    return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def _row(m: dict[str, Any]) -> dict[str, Any]:
    """One listing row (the export's keys) from raw column values."""
    layers = m["spec_layers"]
    if isinstance(layers, str) and layers.startswith("["):
        layers = json.loads(layers)
    parents = m["parents"]
    if isinstance(parents, str):
        parents = json.loads(parents) if parents != "[]" else []
    parents = ledger_ids(parents)
    online = m["online_decision"]
    return {
        "hypothesis_id": m["id"], "iteration": m["iteration_index"], "source": m["source"],
        "probe": m["probe"], "family": m["family"], "statement": m["statement"],
        "status": m["status"], "p_value": m["p_value"], "q_bh": m["q_bh"], "q_by": m["q_by"],
        "significant": bool(m["significant"]), "online_alpha": m["online_alpha"],
        "online_decision": None if online is None else bool(online),
        "online_procedure": m["online_procedure"] or "", "effect_name": m["effect_name"],
        "effect_size": m["effect_size"], "combine_method": m["combine_method"],
        "layers": "all" if layers is None else layers, "across_layers": m["spec_across"],
        "alternative": m["spec_alternative"], "parents": list(parents or []),
        "error": m["error"] or "", "hash": m["hash"], "rationale": m["rationale"] or "",
        "test_order": m["test_order"],
    }


def _with_spec_fields(m: dict[str, Any], spec: Any) -> dict[str, Any]:
    spec = _json(spec) or {}
    m.update(spec_layers=spec.get("layers"), spec_across=spec.get("across_layers"),
             spec_alternative=spec.get("alternative"))
    return m


def row_of(h: Any) -> dict[str, Any]:
    """The listing row of an ORM hypothesis (kept for callers that already hold one)."""
    return _row(_with_spec_fields({c: getattr(h, c) for c in _LIST_COLUMNS}, h.spec))


def parse_iterations(spec: int | str | None) -> tuple[int | None, int | None]:
    """'3' -> (3, 3); '2-5' -> (2, 5); '4-' -> (4, None); '-2' -> (None, 2)."""
    if spec is None or spec == "":
        return None, None
    if isinstance(spec, int):
        return spec, spec
    from geoscreen.errors import GeoscreenError

    text = str(spec).strip()
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return (int(lo) if lo else None), (int(hi) if hi else None)
        return int(text), int(text)
    except ValueError:
        raise GeoscreenError(f"cannot read iteration {spec!r}", field="--iteration",
                             fix="use N, A-B, A- or -B") from None


def _in(name: str, values: Sequence[str], params: dict[str, Any]) -> str:
    keys = []
    for v in values:
        key = f"p{len(params)}"
        params[key] = v
        keys.append(f":{key}")
    return f"{name} IN ({', '.join(keys)})"


def _significance_sql(method: str, wanted: bool, *, sqlite: bool = True) -> str:
    """WHERE clause: discovered (or not) under one FDR method; untested rows count as 'not'.
    SQLite stores booleans as 0/1; a server (PostgreSQL) compares them with TRUE/FALSE."""
    from geoscreen.errors import GeoscreenError, did_you_mean

    true, false = ("1", "0") if sqlite else ("TRUE", "FALSE")
    yes = {"bh": f"significant = {true}", "by": "q_by <= :alpha",
           "online": f"online_decision = {true}"}
    if method not in yes:
        raise GeoscreenError(f"unknown FDR method {method!r}; "
                             f"{did_you_mean(method, FDR_METHODS)}", field="--fdr")
    return yes[method] if wanted else f"NOT coalesce({yes[method]}, {false})"


def _order_sql(sort: str) -> str:
    from geoscreen.errors import GeoscreenError, did_you_mean

    desc = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in _SORT_SQL:
        raise GeoscreenError(f"cannot sort by {key!r}; {did_you_mean(key, SORT_KEYS)}",
                             field="--sort", fix="prefix with '-' to reverse, e.g. -effect")
    if key in ("effect", "abs_effect"):
        desc = not desc  # largest effects first unless reversed
    col = _SORT_SQL[key]
    return f"({col}) IS NULL, {col} {'DESC' if desc else 'ASC'}, id"


def _list_sql(*, sqlite: bool, statuses: Sequence[str] | None, significant: bool | None,
              fdr: str, probe: Sequence[str] | None, family: Sequence[str] | None,
              source: str | None, iteration: int | str | None, text: str | None, sort: str,
              limit: int | None, kind: str = "exploratory") -> tuple[str, dict[str, Any]]:
    """One SELECT for `list_hypotheses`; spec fields are extracted in SQL on SQLite (parsing
    whole specs, which can hold long literal gene lists, dominated large listings)."""
    params: dict[str, Any] = {}
    cols = list(_LIST_COLUMNS)
    if sqlite:
        cols += ["json_extract(spec, '$.layers') AS spec_layers",
                 "json_extract(spec, '$.across_layers') AS spec_across",
                 "json_extract(spec, '$.alternative') AS spec_alternative"]
    else:
        cols.append("spec")
    where = []
    if kind != "all":
        # replication copies live in confirmatory campaigns of the same ledger
        params["kind"] = kind
        where.append("campaign_id IN (SELECT id FROM campaigns WHERE kind = :kind)")
    if statuses:
        where.append(_in("status", statuses, params))
    if probe:
        where.append(_in("probe", probe, params))
    if family:
        where.append(_in("family", family, params))
    if source:
        params["source"] = source.replace("*", "%").lower()
        where.append("lower(source) LIKE :source")  # any case, as SQLite's LIKE, on a server too
    lo, hi = parse_iterations(iteration)
    if lo is not None:
        params["it_lo"] = lo
        where.append("iteration_index >= :it_lo")
    if hi is not None:
        params["it_hi"] = hi
        where.append("iteration_index <= :it_hi")
    if text:
        params["text"] = f"%{text.lower()}%"
        where.append("lower(statement) LIKE :text")
    if significant is not None:
        where.append(_significance_sql(fdr, significant, sqlite=sqlite))
    sql = f"SELECT {', '.join(cols)} FROM hypotheses"
    if where:
        sql += " WHERE " + " AND ".join(f"({w})" for w in where)
    sql += f" ORDER BY {_order_sql(sort)}"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def sqlite_file(ledger: str | Path) -> Path | None:
    """The file behind a plain SQLite ledger target, else None (other URLs, in-memory)."""
    s = str(ledger)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///"):]
    elif "://" in s:
        return None
    return Path(s).expanduser().resolve() if s else None


def _sqlite_query(path: Path, sql: str, params: dict[str, Any], target: str,
                  ) -> tuple[list[str], list[tuple[Any, ...]], float]:
    """Run a read-only query with the stdlib driver; returns (columns, rows, campaign alpha)."""
    from geoscreen.errors import GeoscreenError

    if not path.exists():
        raise GeoscreenError("does not exist", path=target, field="--ledger",
                             fix="run 'geoscreen campaign run' or 'geoscreen queue add' to "
                                 "create it")
    try:  # as store.ledger.busy_timeout_s, without importing SQLAlchemy
        busy = max(0.0, float(os.environ.get("GEOSCREEN_LEDGER_BUSY_TIMEOUT", "30")))
    except ValueError:
        busy = 30.0
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=busy)
    except sqlite3.Error as exc:
        raise _db_error(exc, target) from None
    try:
        con.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
        cfg = con.execute("SELECT config FROM campaigns ORDER BY kind = 'exploratory' DESC, "
                          "id DESC LIMIT 1").fetchone()
        alpha = float((_json(cfg[0]) or {}).get("alpha", 0.05)) if cfg else 0.05
        params = {**params, "alpha": alpha}
        cur = con.execute(sql, params)
        names = [d[0] for d in cur.description]
        return names, cur.fetchall(), alpha
    except sqlite3.DatabaseError as exc:
        raise _db_error(exc, target) from None
    finally:
        con.close()


def _db_error(exc: sqlite3.Error, target: str) -> Exception:
    """The one-line error `store.ledger` gives for the same failure (locked, damaged, ...)."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.ledger import ledger_error, not_a_ledger

    if "no such table" in str(exc):  # what Ledger(must_exist=True) says for every backend
        return not_a_ledger(target)
    return ledger_error(exc, target) or GeoscreenError(
        f"is not a readable ledger database ({exc})", path=target, field="--ledger")


def list_hypotheses(ledger: str | Ledger, *, statuses: list[str] | None = None,
                    significant: bool | None = None, probe: str | Sequence[str] | None = None,
                    family: str | Sequence[str] | None = None, source: str | None = None,
                    iteration: int | str | None = None, sort: str = "id",
                    limit: int | None = None, fdr: str = "bh", text: str | None = None,
                    kind: str = "exploratory") -> list[dict[str, Any]]:
    """Hypotheses as listing rows.  `significant` means discovered under `fdr` (bh, by, online)
    at the campaign's alpha; `source` accepts * wildcards; `iteration` is N or a range A-B;
    `sort` is one of SORT_KEYS, '-' reverses."""
    if kind not in ("exploratory", "confirmatory", "all"):
        from geoscreen.errors import GeoscreenError, did_you_mean

        raise GeoscreenError(f"unknown campaign kind {kind!r}; "
                             f"{did_you_mean(kind, ['exploratory', 'confirmatory', 'all'])}",
                             field="--campaigns")
    target = ledger if isinstance(ledger, str | Path) else ledger.target
    path = sqlite_file(target)
    filters = dict(statuses=statuses, significant=significant, fdr=fdr,
                   probe=[probe] if isinstance(probe, str) else probe,
                   family=[family] if isinstance(family, str) else family, source=source,
                   iteration=iteration, text=text, sort=sort, limit=limit, kind=kind)
    if path is not None:
        sql, params = _list_sql(sqlite=True, **filters)
        names, rows, _alpha = _sqlite_query(path, sql, params, str(target))
        return [_row(dict(zip(names, r))) for r in rows]
    from sqlalchemy import text as sql_text

    sql, params = _list_sql(sqlite=False, **filters)
    from sqlalchemy import select

    from geoscreen.store.models import Campaign

    with _opened(ledger) as led, led.session() as s:
        # the alpha of `_sqlite_query`: the newest exploratory campaign's, else any campaign's
        cfg = s.scalars(select(Campaign.config).order_by(
            (Campaign.kind == "exploratory").desc(), Campaign.id.desc()).limit(1)).first()
        params["alpha"] = float((_json(cfg) or {}).get("alpha", 0.05))
        out = []
        for m in s.execute(sql_text(sql), params).mappings():
            d = dict(m)
            out.append(_row(_with_spec_fields(d, d.pop("spec"))))
        return out


def _layer_detail(m: Any) -> dict[str, Any]:
    return {k: m[k] for k in ("layer", "layer_index", "statistic_name", "statistic",
                              "effect_name", "effect_size", "p_value", "n", "null",
                              "n_permutations", "seed", "ci_low", "ci_high", "runtime_s",
                              "extra")} | {k: m.get(k) for k in ("e_value", "e_method")}


def _row_select(*extra: Any) -> Any:
    """SELECT of the listing columns (plus `extra`) through SQLAlchemy Core."""
    from sqlalchemy import select

    H = _hcols()
    return select(*(H[c] for c in _LIST_COLUMNS), H.spec, *extra)


def _core_row(m: Any) -> dict[str, Any]:
    d = dict(m)
    return _row(_with_spec_fields(d, d["spec"]))


def children_of(s: Any, campaign_id: int, hyp_id: int) -> list[int]:
    """Ids whose `parents` list `hyp_id`: one column scan, no per-row queries."""
    from sqlalchemy import select

    H = _hcols()
    rows = s.execute(select(H.id, H.parents).where(H.campaign_id == campaign_id,
                                                   H.parents.is_not(None))).all()
    return [i for i, parents in rows if parents and hyp_id in parents]


def _ancestors(s: Any, parents: list[int], limit: int = 50) -> list[dict[str, Any]]:
    """The chain of results that motivated a hypothesis, nearest first (breadth-first)."""
    from sqlalchemy import select

    H = _hcols()
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    frontier = [p for p in parents if isinstance(p, int)]
    while frontier and len(out) < limit:
        rows = s.execute(select(H.id, H.statement, H.status, H.p_value, H.q_bh, H.significant,
                                H.parents, H.rationale).where(H.id.in_(frontier))
                         .order_by(H.id.desc())).mappings().all()
        frontier = []
        for m in rows:
            if m["id"] in seen:
                continue
            seen.add(m["id"])
            out.append({"hypothesis_id": m["id"], "statement": m["statement"],
                        "status": m["status"], "p_value": m["p_value"], "q_bh": m["q_bh"],
                        "significant": bool(m["significant"]), "rationale": m["rationale"],
                        "parents": ledger_ids(m["parents"])})
            frontier.extend(p for p in ledger_ids(m["parents"]) if p not in seen)
    return out


def show_hypothesis(ledger: str | Ledger, hyp_id: int) -> dict[str, Any]:
    """One hypothesis: listing row + spec, per-layer results, seed, provenance and lineage
    (`ancestors`: the results that motivated it, transitively; `children`: what it motivated)."""
    from sqlalchemy import select

    from geoscreen.errors import GeoscreenError
    from geoscreen.store.models import LayerResultRow

    H = _hcols()
    with _opened(ledger) as led, led.session() as s:
        m = s.execute(_row_select(H.seed, H.runtime_s, H.provenance, H.queued_at, H.started_at,
                                  H.finished_at, H.e_value, H.e_method)
                      .where(H.id == hyp_id)).mappings().first()
        if m is None:
            raise GeoscreenError(f"no hypothesis #{hyp_id}", path=led.target, field="ID")
        out = _core_row(m)
        out.update(spec=m["spec"], seed=m["seed"], runtime_s=m["runtime_s"],
                   provenance=m["provenance"] or {}, queued_at=m["queued_at"],
                   started_at=m["started_at"], finished_at=m["finished_at"],
                   e_value=m["e_value"], e_method=m["e_method"])
        L = LayerResultRow.__table__.c
        out["layers_detail"] = [_layer_detail(r) for r in s.execute(
            select(L).where(L.hypothesis_id == hyp_id).order_by(L.layer_index)).mappings()]
        out["children"] = children_of(s, m["campaign_id"], hyp_id)
        out["ancestors"] = _ancestors(s, out["parents"])
        out["fdr_members"] = _fdr_members(s, hyp_id)
        return out


def campaign_status(ledger: str | Ledger) -> dict[str, Any]:
    from sqlalchemy import func, select

    from geoscreen.store.failures import retryable
    from geoscreen.store.models import Hypothesis, Iteration

    with _opened(ledger) as led, led.session() as s:
        c = led.campaign(s, create=False)
        counts = dict(s.execute(select(Hypothesis.status, func.count(Hypothesis.id))
                                .where(Hypothesis.campaign_id == c.id)
                                .group_by(Hypothesis.status)).all())
        done_its = s.scalar(select(func.count(Iteration.id)).where(
            Iteration.campaign_id == c.id, Iteration.status == "done")) or 0
        cur = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id,
                                                Iteration.status != "done")).first()
        running = s.execute(select(Hypothesis.id, Hypothesis.statement).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "running")).all()
        disc = s.scalar(select(func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id, Hypothesis.significant.is_(True))) or 0
        waiting = s.scalars(select(Hypothesis.id).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "queued")
            .order_by(Hypothesis.id)).all()
        failed = s.execute(select(Hypothesis.error, Hypothesis.attempts).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "failed")).all()
        lock = _lock_line(led)
        return {"status": c.status, "reason": c.status_reason, "cache_path": c.cache_path,
                "cache_checksum": c.cache_checksum, "model": c.model, "seed": c.seed,
                "iterations_done": int(done_its),
                "iterations_planned": (c.config or {}).get("iterations"),
                "current_iteration": cur.index if cur else None, "counts": counts,
                "discoveries": int(disc), "alpha": (c.config or {}).get("alpha", 0.05),
                "running": [(i, st) for i, st in running], "waiting": list(waiting),
                "retryable": sum(1 for err, n in failed if retryable(err, n or 0)),
                "lock": lock, "holdout": (c.config or {}).get("holdout"),
                "offline_procedure": (c.config or {}).get("offline_procedure", "bh")}


def _lock_line(led: Ledger) -> str:
    """Who holds the ledger's run lock, for `campaign status` ('' when nobody does)."""
    from geoscreen.store.lease import current_holder, stale_reason

    holder = current_holder(led)
    if holder is None:
        return ""
    why = stale_reason(holder)
    return holder.describe() + (f" (stale: {why}; the next run takes it over)" if why else "")


# -- bulk views for the report ------------------------------------------------------------------
def _table_rows(ledger: str | Ledger, model: str, campaign_id: int | None = None,
                order: str = "id", **where: Any) -> list[dict[str, Any]]:
    """Every row of one table (optionally one campaign's) as dicts."""
    from sqlalchemy import select

    from geoscreen.store import models

    T = getattr(models, model).__table__.c
    q = select(*T).order_by(T[order])
    if campaign_id is not None:
        q = q.where(T.campaign_id == campaign_id)
    for k, v in where.items():
        if v is not None:
            q = q.where(T[k] == v)
    with _opened(ledger) as led, led.session() as s:
        return [dict(m) for m in s.execute(q).mappings()]


def campaign_records(ledger: str | Ledger) -> list[dict[str, Any]]:
    """Every campaign in the ledger (oldest first)."""
    return _table_rows(ledger, "Campaign")


def confirmation_records(ledger: str | Ledger, campaign_id: int) -> list[dict[str, Any]]:
    """The confirmatory families of a campaign (held-out genes or independent caches), each with
    its per-discovery outcome keyed by the original hypothesis id."""
    from sqlalchemy import select

    from geoscreen.store.models import Campaign, Replication

    out = []
    with _opened(ledger) as led, led.session() as s:
        for conf in s.scalars(select(Campaign).where(
                Campaign.kind == "confirmatory", Campaign.parent_campaign_id == campaign_id)
                .order_by(Campaign.id)):
            split = (conf.config or {}).get("split")
            rows = {r.original_hypothesis_id: {
                "confirmed": bool(r.replicated), "status": r.status, "p_value": r.p_value,
                "q_bh": r.q_bh, "effect_size": r.effect_size, "same_direction": r.same_direction,
                "copy_id": r.replication_hypothesis_id}
                for r in s.scalars(select(Replication).where(
                    Replication.campaign_id == conf.id))}
            out.append({"campaign_id": conf.id, "holdout": bool(split),
                        "label": "held-out genes" if split else "independent cache",
                        "on": (f"the {split['n_holdout']:,} genes held out before the screen"
                               if split else str(conf.cache_path)),
                        "alpha": float((conf.config or {}).get("alpha", 0.05)),
                        "status": conf.status, "rows": rows,
                        "confirmed": sum(1 for r in rows.values() if r["confirmed"])})
    return out


def iteration_records(ledger: str | Ledger, campaign_id: int | None = None,
                      ) -> list[dict[str, Any]]:
    return _table_rows(ledger, "Iteration", campaign_id, order="index")


def llm_call_records(ledger: str | Ledger, campaign_id: int | None = None,
                     ) -> list[dict[str, Any]]:
    return _table_rows(ledger, "LLMCall", campaign_id)


def event_records(ledger: str | Ledger, campaign_id: int | None = None,
                  kind: str | None = None) -> list[dict[str, Any]]:
    return _table_rows(ledger, "Event", campaign_id, kind=kind)


def hypothesis_records(ledger: str | Ledger, campaign_id: int | None = None,
                       ) -> list[dict[str, Any]]:
    """Every hypothesis with the columns a report needs (no layer rows), ordered by id."""
    H = _hcols()
    q = _row_select(H.runtime_s, H.seed, H.provenance).order_by(H.id)
    if campaign_id is not None:
        q = q.where(H.campaign_id == campaign_id)
    with _opened(ledger) as led, led.session() as s:
        out = []
        for m in s.execute(q).mappings():
            row = _core_row(m)
            row.update(spec=m["spec"] or {}, runtime_s=m["runtime_s"], seed=m["seed"],
                       provenance=m["provenance"] or {})
            out.append(row)
        return out


def layer_profiles(ledger: str | Ledger, campaign_id: int | None = None,
                   ) -> dict[int, list[tuple[str, int, float, float | None, str, str]]]:
    """hypothesis id -> [(layer, layer_index, effect_size, p_value, effect_name, null)], by
    depth (`null`: the null model the layer's result recorded)."""
    from sqlalchemy import select

    from geoscreen.store.models import LayerResultRow

    H = _hcols()
    L = LayerResultRow.__table__.c
    q = select(L.hypothesis_id, L.layer, L.layer_index, L.effect_size, L.p_value, L.effect_name,
               L.null)
    if campaign_id is not None:
        q = q.join(H[0].table, H.id == L.hypothesis_id).where(H.campaign_id == campaign_id)
    out: dict[int, list[tuple[str, int, float, float | None, str, str]]] = {}
    with _opened(ledger) as led, led.session() as s:
        for hid, *row in s.execute(q.order_by(L.hypothesis_id, L.layer_index)):
            out.setdefault(hid, []).append(tuple(row))  # type: ignore[arg-type]
    return out


def layer_extras(ledger: str | Ledger, hypothesis_ids: list[int]
                 ) -> dict[int, list[dict[str, Any]]]:
    """hypothesis id -> its layers' (layer, statistic, p_value, effect_size, extra), by depth:
    the per-layer detail a report section shows for a few hypotheses (e.g. SAE feature cards)."""
    from sqlalchemy import select

    from geoscreen.store.models import LayerResultRow

    if not hypothesis_ids:
        return {}
    L = LayerResultRow.__table__.c
    q = (select(L.hypothesis_id, L.layer, L.statistic, L.p_value, L.effect_size, L.extra)
         .where(L.hypothesis_id.in_(hypothesis_ids)).order_by(L.hypothesis_id, L.layer_index))
    out: dict[int, list[dict[str, Any]]] = {}
    with _opened(ledger) as led, led.session() as s:
        for hid, layer, stat, p, eff, extra in s.execute(q):
            out.setdefault(hid, []).append({"layer": layer, "statistic": stat, "p_value": p,
                                            "effect_size": eff, "extra": extra or {}})
    return out


#: Per-layer export columns: the names of `geoscreen.result.LayerResult` and of the table.
LAYER_COLUMNS = ("hypothesis_id", "layer", "layer_index", "statistic_name", "statistic",
                 "effect_name", "effect_size", "p_value", "e_value", "e_method", "n", "null",
                 "n_permutations", "seed", "ci_low", "ci_high", "runtime_s")


def layer_records(ledger: str | Ledger, campaign_id: int | None = None) -> list[dict[str, Any]]:
    """Every stored per-layer result (`LAYER_COLUMNS`), by hypothesis and depth."""
    from sqlalchemy import select

    from geoscreen.store.models import LayerResultRow

    H = _hcols()
    L = LayerResultRow.__table__.c
    q = select(*(L[c] for c in LAYER_COLUMNS))
    if campaign_id is not None:
        q = q.join(H[0].table, H.id == L.hypothesis_id).where(H.campaign_id == campaign_id)
    with _opened(ledger) as led, led.session() as s:
        return [dict(zip(LAYER_COLUMNS, row))
                for row in s.execute(q.order_by(L.hypothesis_id, L.layer_index))]


def fdr_member_decisions(ledger: str | Ledger, campaign_id: int | None = None,
                         ) -> dict[int, dict[str, bool]]:
    """hypothesis id -> {online procedure: rejected at any of its members}, from the FDR
    engine's per-member records; empty for ledgers written before that table existed."""
    from sqlalchemy import inspect, select

    from geoscreen.store import models

    member = getattr(models, "FdrMember", None)
    if member is None:
        return {}
    M = member.__table__.c
    q = select(M.hypothesis_id, M.online)
    if campaign_id is not None:
        q = q.where(M.campaign_id == campaign_id)
    out: dict[int, dict[str, bool]] = {}
    with _opened(ledger) as led:
        if not inspect(led.engine).has_table(member.__tablename__):
            return {}
        with led.session() as s:
            for hid, online in s.execute(q):
                d = out.setdefault(hid, {})
                for proc, dec in (online or {}).items():
                    d[proc] = d.get(proc, False) or bool((dec or {}).get("reject"))
    return out


def fdr_member_unreachable(ledger: str | Ledger, campaign_id: int | None = None,
                           ) -> dict[int, dict[str, str]]:
    """hypothesis id -> {online procedure: why a member could not be rejected at its level,
    whatever its data} (the FDR engine's resolution flag); empty where none was flagged."""
    out: dict[int, dict[str, str]] = {}
    from sqlalchemy import inspect, select

    from geoscreen.store import models

    member = getattr(models, "FdrMember", None)
    if member is None:
        return out
    M = member.__table__.c
    q = select(M.hypothesis_id, M.online)
    if campaign_id is not None:
        q = q.where(M.campaign_id == campaign_id)
    with _opened(ledger) as led:
        if not inspect(led.engine).has_table(member.__tablename__):
            return out
        with led.session() as s:
            for hid, online in s.execute(q):
                for proc, dec in (_json(online) or {}).items():
                    why = (dec or {}).get("unreachable")
                    if why:
                        out.setdefault(hid, {}).setdefault(proc, str(why))
    return out


def _fdr_members(s: Any, hyp_id: int) -> list[dict[str, Any]]:
    """One hypothesis's FDR family members: q-values and every online procedure's level and
    decision (read directly: importing the FDR engine would pull in SciPy for one row)."""
    from sqlalchemy import inspect, select

    from geoscreen.store import models

    member = getattr(models, "FdrMember", None)
    if member is None or not inspect(s.get_bind()).has_table(member.__tablename__):
        return []
    M = member.__table__.c
    cols = [M[k] for k in ("layer", "layer_index", "p_value", "q_bh", "q_by", "significant_bh",
                           "significant_by", "stream_index", "batch_index", "online")
            if k in M]
    rows = s.execute(select(*cols).where(M.hypothesis_id == hyp_id)
                     .order_by(M.layer_index, M.id)).mappings()
    return [{**dict(m), "online": dict(m.get("online") or {})} for m in rows]


# -- comparing two campaigns --------------------------------------------------------------------
_EFFECT_NULLS = {"auroc": 0.5, "auc": 0.5}


def effect_null(name: str, provenance: dict[str, Any] | None = None) -> float:
    """The no-effect value of an effect size.

    The probe declares it (`@probe(effect_null=...)`) and the worker records it in the result's
    provenance; ledgers written before that fall back to the effect's name: 0.5 for an AUROC
    (``auroc``, ``auroc_oriented``), 1 for ratios, otherwise 0.
    """
    declared = (provenance or {}).get("effect_null")
    if isinstance(declared, int | float) and not isinstance(declared, bool):
        return float(declared)
    key = (name or "").lower()
    if key.startswith("auroc") or key in _EFFECT_NULLS:
        return 0.5
    return 1.0 if ("ratio" in key or "fold" in key) else 0.0


def effect_direction(name: str, value: float | None) -> int:
    """+1 / -1 / 0: which side of the no-effect value an effect lies on."""
    if value is None:
        return 0
    ref = effect_null(name)
    return (value > ref) - (value < ref)


def _diff_side(ledger: str, kind: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    H = _hcols()
    with _opened(ledger) as led, led.session() as s:
        c = led.campaign(s, create=False, kind=kind)
        info = {"ledger": ledger, "campaign_id": c.id, "cache_path": c.cache_path,
                "cache_checksum": c.cache_checksum, "model": c.model, "seed": c.seed,
                "alpha": float((c.config or {}).get("alpha", 0.05)), "status": c.status}
        rows = s.execute(_row_select().where(H.campaign_id == c.id, H.status != "rejected")
                         .order_by(H.id)).mappings()
        return info, {m["hash"]: _core_row(m) for m in rows}


def _agreement(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["status"] != "done" or b["status"] != "done":
        return "not tested in both"
    da = effect_direction(a["effect_name"], a["effect_size"])
    db = effect_direction(b["effect_name"], b["effect_size"])
    sa, sb = a["significant"], b["significant"]
    if sa and sb:
        return "both significant, same direction" if da == db else \
            "both significant, OPPOSITE direction"
    if sa or sb:
        return "significant only in A" if sa else "significant only in B"
    return "neither significant"


def diff_campaigns(a: str, b: str, kind: str = "exploratory") -> dict[str, Any]:
    """Match two campaigns' hypotheses by canonical hash (same probe, params, layers, test) and
    say which were tested in both and whether their findings agree (significance, direction)."""
    info_a, rows_a = _diff_side(a, kind)
    info_b, rows_b = _diff_side(b, kind)
    both = [h for h in rows_a if h in rows_b]
    pairs = []
    for h in both:
        ra, rb = rows_a[h], rows_b[h]
        pairs.append({
            "hash": h, "statement": ra["statement"], "probe": ra["probe"],
            "family": ra["family"], "id_a": ra["hypothesis_id"], "id_b": rb["hypothesis_id"],
            "status_a": ra["status"], "status_b": rb["status"],
            "effect_name": ra["effect_name"] or rb["effect_name"],
            "effect_a": ra["effect_size"], "effect_b": rb["effect_size"],
            "p_a": ra["p_value"], "p_b": rb["p_value"], "q_a": ra["q_bh"],
            "q_b": rb["q_bh"], "significant_a": ra["significant"],
            "significant_b": rb["significant"], "agreement": _agreement(ra, rb)})
    tally: dict[str, int] = {}
    for p in pairs:
        tally[p["agreement"]] = tally.get(p["agreement"], 0) + 1
    tested = [p for p in pairs if p["agreement"] != "not tested in both"]
    agree = sum(1 for p in tested if p["agreement"] in ("both significant, same direction",
                                                        "neither significant"))

    def only(rows: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]):
        return [{"hash": h, "id": r["hypothesis_id"], "statement": r["statement"],
                 "status": r["status"], "p_value": r["p_value"], "q_bh": r["q_bh"],
                 "significant": r["significant"]} for h, r in rows.items() if h not in other]

    return {"a": info_a, "b": info_b, "same_cache": info_a["cache_checksum"] ==
            info_b["cache_checksum"], "in_both": len(pairs), "tested_in_both": len(tested),
            "agreeing": agree, "agreement_rate": (agree / len(tested)) if tested else None,
            "tally": tally, "pairs": pairs, "only_a": only(rows_a, rows_b),
            "only_b": only(rows_b, rows_a)}
