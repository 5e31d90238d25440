"""Copy a whole ledger between databases: ``geoscreen ledger copy SRC DST``.

Every table of the ledger schema (`store.models.Base.metadata`), every row and every column is
copied with its primary key, so hypothesis ids, lineage (``parents``) and FDR members mean the
same in the copy.  Values go through SQLAlchemy's column types on both sides: JSON values are
parsed and written again (SQL NULL and JSON null kept apart), floats and datetimes exactly.

* SRC is read in one snapshot (a read transaction), and refused while a live run holds its run
  lock (the copy would miss that run's next results).
* DST is written in one transaction — tables created, rows inserted, PostgreSQL's id sequences
  moved past the copied ids — so a copy that fails leaves DST as it was (a SQLite file the copy
  created is removed again).
* DST holding geoscreen rows already is refused unless ``overwrite``, which deletes those rows
  (never another table's).
* The run lock (``run_leases``) is not copied: it names a process working on SRC.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, delete, func, inspect, null, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import Null
from sqlalchemy.sql.schema import Table
from sqlalchemy.types import JSON

from geoscreen.errors import GeoscreenError
from geoscreen.store.lease import Holder, stale_reason
from geoscreen.store.ledger import (
    Ledger,
    add_missing_columns,
    display_target,
    ledger_url,
    open_engine,
    schema_transaction,
)
from geoscreen.store.models import SCHEMA_VERSION, Base, LeaseRow, Meta
from geoscreen.store.netfs import sqlite_file_of

BATCH = 1000  # rows per INSERT batch
NOT_COPIED = {"run_leases": "a run lock names a process working on SRC"}
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class CopyResult:
    """What `copy_ledger` did.

    Attributes
    ----------
    src, dst
        The two ledgers as shown in messages (passwords hidden).
    counts
        (table, rows copied) in copy order; a table of `NOT_COPIED` has None.
    replaced
        Geoscreen rows DST held before, deleted (``overwrite``).
    nonfinite_json
        NaN or infinite numbers inside JSON values that became null (a server's JSON type has
        no such numbers).
    """

    src: str
    dst: str
    counts: tuple[tuple[str, int | None], ...]
    replaced: int = 0
    nonfinite_json: int = 0

    @property
    def total(self) -> int:
        return sum(n or 0 for _, n in self.counts)


def same_database(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two ledger targets name the same database (file, or server and database)."""
    from sqlalchemy.engine import make_url

    fa, fb = sqlite_file_of(a), sqlite_file_of(b)
    if fa is not None or fb is not None:
        if fa is None or fb is None:
            return False
        fa, fb = fa.resolve(), fb.resolve()
        return fa == fb or (fa.exists() and fb.exists() and fa.samefile(fb))
    try:
        ua, ub = make_url(ledger_url(a)), make_url(ledger_url(b))
    except Exception:  # noqa: BLE001 - a malformed URL is reported when it is opened
        return False

    def key(u: Any) -> tuple[Any, ...]:
        backend = u.get_backend_name()
        port = u.port or (5432 if backend == "postgresql" else None)
        return backend, (u.host or "localhost").lower(), port, u.database

    return key(ua) == key(ub)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction on `engine` that sees one state of the database throughout."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":  # pysqlite opens no transaction for a SELECT
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin() as tx:
                yield conn
                tx.rollback()


def _live_holder(conn: Connection) -> Holder | None:
    """The live holder of a run lock in the database of `conn`, if any."""
    cols = (LeaseRow.token, LeaseRow.pid, LeaseRow.host, LeaseRow.purpose, LeaseRow.started,
            LeaseRow.heartbeat)
    for row in conn.execute(select(*cols)):
        holder = Holder(*row)
        if stale_reason(holder) is None:
            return holder
    return None


def _in_use(label: str, role: str, holder: Holder, what: str) -> GeoscreenError:
    return GeoscreenError(
        f"is in use by a live {holder.purpose}: {holder.describe()}", path=label, field=role,
        fix=f"wait for it to finish or stop it (kill {holder.pid} on {holder.host}), then copy; "
            f"{what}")


def _count_nonfinite(v: Any) -> int:
    if isinstance(v, float):
        return 0 if math.isfinite(v) else 1
    if isinstance(v, dict):
        return sum(_count_nonfinite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return sum(_count_nonfinite(x) for x in v)
    return 0


def _unstorable(table: Table, row: dict[str, Any]) -> str | None:
    """Why a server database (PostgreSQL) would refuse `row`, which SQLite accepted: a string
    longer than its column's VARCHAR, a NUL character in text, an integer beyond 32 bits."""
    for col in table.columns:
        v = row.get(col.name)
        if isinstance(v, str):
            limit = getattr(col.type, "length", None)
            if isinstance(col.type, String) and limit and len(v) > limit:
                return f"column {col.name} holds {len(v)} characters, more than its " \
                       f"VARCHAR({limit})"
            if "\x00" in v:
                return f"column {col.name} holds a NUL character"
        elif isinstance(v, int) and type(col.type) is Integer and not (
                _INT32[0] <= v <= _INT32[1]):
            return f"column {col.name} holds {v}, beyond a 32-bit INTEGER"
    return None


def _rows(conn: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    """`table`'s rows in primary-key order, in batches, as dicts ready to insert: a JSON
    column that is SQL NULL (not JSON null) holds `sqlalchemy.null()`."""
    json_cols = [c for c in table.columns if isinstance(c.type, JSON)]
    flags = [c.is_(None).label(f"_geoscreen_null_{c.name}") for c in json_cols]
    q = select(*table.columns, *flags).order_by(*table.primary_key.columns)
    result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(q)
    for part in result.mappings().partitions(BATCH):
        batch = []
        for m in part:
            row = {c.name: m[c.name] for c in table.columns}
            for c in json_cols:
                if m[f"_geoscreen_null_{c.name}"]:
                    row[c.name] = null()
            batch.append(row)
        yield batch


def _prepare_dst(conn: Connection, label: str, overwrite: bool) -> int:
    """Create or upgrade the ledger tables in DST and empty them; returns the rows deleted.

    Refuses a DST written by a newer geoscreen, one a live run holds, and (without
    `overwrite`) one holding any geoscreen row besides its schema version.
    """
    names = set(inspect(conn).get_table_names())
    if "meta" in names:
        row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()
        if row is not None and str(row[0]).isdigit() and int(row[0]) > SCHEMA_VERSION:
            raise GeoscreenError(f"was written by a newer geoscreen (schema {row[0]} > "
                                 f"{SCHEMA_VERSION})", path=label, field="DST",
                                 fix="upgrade geoscreen, or copy into a new database")
    Base.metadata.create_all(conn)
    add_missing_columns(conn)
    holder = _live_holder(conn)
    if holder is not None:
        raise _in_use(label, "DST", holder, "nothing was copied")
    held = {t.name: conn.scalar(select(func.count()).select_from(t))
            for t in Base.metadata.sorted_tables if t.name != "meta"}
    held = {k: int(v) for k, v in held.items() if v}
    if held and not overwrite:
        what = ", ".join(f"{k} {v}" for k, v in held.items())
        raise GeoscreenError(
            f"already holds a geoscreen ledger ({what} rows); nothing was copied", path=label,
            field="DST", fix="copy into a new file or an empty database, or pass --overwrite "
                             "to replace its geoscreen rows (other tables stay as they are)")
    for t in reversed(Base.metadata.sorted_tables):
        conn.execute(delete(t))
    return sum(held.values())


def _reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """Move each PostgreSQL id sequence past the largest copied id (the next insert would
    collide with a copied row otherwise)."""
    prep = conn.dialect.identifier_preparer
    for t in tables:
        col = t.autoincrement_column
        if col is None:
            continue
        qt, qc = prep.format_table(t), prep.quote(col.name)
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence(:t, :c), "
                          f"COALESCE(MAX({qc}), 1), MAX({qc}) IS NOT NULL) FROM {qt}"),
                     {"t": qt, "c": col.name})


def _copy_rows(src: Connection, dst: Connection, label: str,
               ) -> tuple[list[tuple[str, int | None]], int]:
    """Copy every table from `src` to `dst`; returns per-table counts and the non-finite
    numbers inside JSON values made null on a server."""
    server = dst.dialect.name != "sqlite"
    counts: list[tuple[str, int | None]] = []
    nonfinite = 0
    copied: list[Table] = []
    for table in Base.metadata.sorted_tables:
        if table.name in NOT_COPIED:
            counts.append((table.name, None))
            continue
        json_cols = [c.name for c in table.columns if isinstance(c.type, JSON)]
        n = 0
        for batch in _rows(src, table):
            if server:
                for row in batch:
                    why = _unstorable(table, row)
                    if why is not None:
                        key = ", ".join(str(row[c.name]) for c in table.primary_key.columns)
                        raise GeoscreenError(
                            f"cannot hold row {key} of table {table.name}: {why}; nothing was "
                            "copied", path=label, field="DST",
                            fix="shorten or clean that value in SRC, or copy into a SQLite file")
                    nonfinite += sum(_count_nonfinite(row[c]) for c in json_cols
                                     if not isinstance(row[c], Null))
            try:
                dst.execute(table.insert(), batch)
            except DBAPIError as exc:
                detail = " ".join(str(exc.orig).split())[:200]
                raise GeoscreenError(f"refused the rows of table {table.name} ({detail}); "
                                     "nothing was copied", path=label, field="DST",
                                     fix="copy into a new file or an empty database") from None
            n += len(batch)
        counts.append((table.name, n))
        copied.append(table)
    if dst.dialect.name == "postgresql":
        _reset_sequences(dst, copied)
    return counts, nonfinite


def _remove_sqlite(path: Any) -> None:
    """Remove a SQLite file this copy created, with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(f"{path}{suffix}")
        except OSError:
            pass


def copy_ledger(src: str | os.PathLike, dst: str | os.PathLike, *,
                overwrite: bool = False) -> CopyResult:
    """Copy every table and row of ledger `src` into `dst` (SQLite files or database URLs).

    Parameters
    ----------
    src
        An existing ledger: a SQLite file or a URL (``postgresql://user@host/db``).
    dst
        A new SQLite file, or an existing database (empty, or holding a ledger to replace
        with `overwrite`).  A server database must exist already (``createdb NAME``).
    overwrite
        Replace the geoscreen rows DST holds.

    Returns
    -------
    CopyResult
        Rows copied per table.

    Raises
    ------
    GeoscreenError
        SRC is missing, not a ledger, or in use by a live run; DST holds a ledger (without
        `overwrite`), is in use, cannot hold a value, or cannot be reached.  DST is unchanged.
    """
    src_label, dst_label = display_target(src), display_target(dst)
    if same_database(src, dst):
        raise GeoscreenError("is the same database as SRC", path=dst_label, field="DST",
                             fix="name another file or database to copy into")
    source = Ledger(src, must_exist=True)
    try:
        dst_file = sqlite_file_of(dst)
        created = dst_file is not None and not dst_file.exists()
        if dst_file is not None:
            dst_file.resolve().parent.mkdir(parents=True, exist_ok=True)
        engine: Engine | None = None
        try:
            engine = open_engine(dst)
            with _snapshot(source.engine) as sconn:
                holder = _live_holder(sconn)
                if holder is not None:
                    raise _in_use(source.label, "SRC", holder,
                                  "a copy taken now would miss its next results")
                with schema_transaction(engine) as dconn:
                    replaced = _prepare_dst(dconn, dst_label, overwrite)
                    counts, nonfinite = _copy_rows(sconn, dconn, dst_label)
        except BaseException:
            if engine is not None:
                engine.dispose()
                engine = None
            if created:
                _remove_sqlite(dst_file.resolve())  # type: ignore[union-attr]
            raise
        finally:
            if engine is not None:
                engine.dispose()
    finally:
        source.close()
    return CopyResult(src=src_label, dst=dst_label, counts=tuple(counts), replaced=replaced,
                      nonfinite_json=nonfinite)


def format_result(res: CopyResult) -> str:
    """Plain text for the CLI: one line per table, then a summary line."""
    width = max(len(t) for t, _ in res.counts)
    digits = max(len("rows"), *(len(str(n)) for _, n in res.counts if n is not None))
    lines = [f"{'table'.ljust(width)}  {'rows'.rjust(digits)}",
             f"{'-' * width}  {'-' * digits}"]
    for table, n in res.counts:
        if n is None:
            lines.append(f"{table.ljust(width)}  {'-'.rjust(digits)}  "
                         f"not copied: {NOT_COPIED[table]}")
        else:
            lines.append(f"{table.ljust(width)}  {str(n).rjust(digits)}")
    summary = f"copied {res.total} rows from {res.src} to {res.dst}"
    if res.replaced:
        summary += f", replacing the {res.replaced} geoscreen rows it held"
    lines.append(summary)
    if res.nonfinite_json:
        lines.append(f"note: {res.nonfinite_json} NaN or infinite numbers inside JSON values "
                     "became null (the server's JSON type has no such numbers)")
    return "\n".join(lines)

