"""The ledger: one database (SQLite by default, any SQLAlchemy URL works) per campaign.

It is the campaign's memory.  Everything is committed as soon as it is known — proposals before
they run, each result as it finishes — so a campaign can be killed at any moment and resumed, and
`campaign status` can read it from another terminal while a campaign writes (SQLite WAL mode).

Database failures a user can act on — a ledger locked by another writer, a read-only file, a
damaged file, a full disk; on a PostgreSQL server also an unreachable server, a database that does
not exist, a refused login, a missing privilege — are turned into one-line `LedgerUnavailable`
errors naming the ledger and the fix, for every statement on the ledger's engine (an engine
`handle_error` hook, which also sees failed connections), so no command that opens a ledger
answers them with a traceback.

PostgreSQL (``postgresql://user@host/db``, driver psycopg 3: ``pip install 'geoscreen[team]'``)
is the backend for teams and cluster drivers: SQLite's file locking is unreliable on network
filesystems (`store.netfs`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from geoscreen.errors import GeoscreenError
from geoscreen.result import Outcome
from geoscreen.store.models import (
    SCHEMA_VERSION,
    Base,
    Campaign,
    Event,
    Hypothesis,
    Iteration,
    LayerResultRow,
    Meta,
    utcnow,
)
from geoscreen.store.netfs import network_filesystem as network_filesystem  # re-exported
from geoscreen.store.netfs import sqlite_on_network_warning as sqlite_on_network_warning

TEAM_FIX = "pip install 'geoscreen[team]'"
CONNECT_TIMEOUT_S = 10  # a server that does not answer: fail in seconds, not a TCP timeout


def ledger_url(target: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a path (SQLite file) or a URL.

    ``postgresql://`` and ``postgres://`` URLs name the psycopg (3) driver explicitly
    (``postgresql+psycopg://``: SQLAlchemy 2.0 would pick psycopg2, and knows no
    ``postgres://``); every other URL is passed through unchanged.
    """
    s = str(target)
    if "://" in s:
        scheme, rest = s.split("://", 1)
        if scheme.lower() in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def display_target(target: str | os.PathLike) -> str:
    """`target` as shown in messages: a URL's password replaced by ``***``."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", str(target))


def busy_timeout_s() -> float:
    """How long a command waits for another process's write transaction on the ledger.

    30 s by default; `GEOSCREEN_LEDGER_BUSY_TIMEOUT` (seconds) changes it.
    """
    try:
        return max(0.0, float(os.environ.get("GEOSCREEN_LEDGER_BUSY_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def _wal_mode(cur: sqlite3.Cursor, timeout_s: float) -> None:
    """Put the database in WAL mode unless it is already.

    Switching a new database to WAL takes an exclusive lock.  When several processes open a
    new ledger at once, SQLite may refuse one of them at once ("database is locked", without
    waiting in its busy handler: it refuses one of two readers that both ask to write, which
    would otherwise wait for each other); tests/test_campaign_recovery.py's four processes
    opening one new ledger failed that way about one run in 30.  So the switch is retried with
    a short back-off for up to the busy timeout, and a database another process has switched
    meanwhile needs nothing more.  Other errors (a read-only file) reach the caller as before.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if _db_error_kind(exc) != "locked" or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.2)


def _sqlite_pragmas(engine: Engine) -> None:
    busy_ms = int(busy_timeout_s() * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")  # first: the others may wait for a lock
        _wal_mode(cur, busy_ms / 1000)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def _finite_json(v: Any) -> Any:
    """`v` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_json(x) for x in v]
    return v


def server_json_dumps(value: Any) -> str:
    """JSON text for a server's JSON column: strict JSON, a non-finite float becomes null.

    PostgreSQL's ``json`` type refuses the ``NaN`` and ``Infinity`` tokens that Python's
    `json.dumps` (and so a SQLite ledger) writes; null is what every reader already handles.
    """
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite_json(value), allow_nan=False)


def _server_connect_args(url: Any) -> dict[str, Any]:
    """psycopg connection settings the URL does not set itself: a connect timeout, a lock
    timeout equal to SQLite's busy timeout, and an application name for pg_stat_activity."""
    query = {k.lower() for k in url.query}
    args: dict[str, Any] = {}
    if "connect_timeout" not in query:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    if "options" not in query:  # an explicit `options` replaces PGOPTIONS: keep what it says
        args["options"] = " ".join(filter(None, [
            os.environ.get("PGOPTIONS", "").strip(),
            f"-c lock_timeout={int(busy_timeout_s() * 1000)}"]))
    if "application_name" not in query:
        args["application_name"] = "geoscreen"
    return args


_DRIVER_LOG_QUIET = logging.NullHandler()


def _quiet_driver_log() -> None:
    """psycopg logs (as a warning) the pipeline it abandons when a statement fails; the failure
    itself is reported in one line, and without a handler Python would print the warning to
    stderr.  An application that configures logging still receives it."""
    log = logging.getLogger("psycopg")
    if _DRIVER_LOG_QUIET not in log.handlers:
        log.addHandler(_DRIVER_LOG_QUIET)


def open_engine(target: str | os.PathLike) -> Engine:
    """A SQLAlchemy engine on ledger `target` with the ledger's settings and error translation.

    SQLite: busy timeout, WAL, foreign keys.  PostgreSQL (psycopg 3): connect and lock
    timeouts, strict JSON.  A missing driver or a malformed URL is a one-line
    `GeoscreenError`; every later database failure a user can act on is a `LedgerUnavailable`.
    """
    from sqlalchemy.engine import make_url

    _quiet_driver_log()
    label = display_target(target)
    url_text = ledger_url(target)
    try:
        url = make_url(url_text)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            kwargs["json_serializer"] = server_json_dumps
            if url.get_driver_name() == "psycopg":
                kwargs["connect_args"] = _server_connect_args(url)
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        fix = TEAM_FIX if "psycopg" in str(name) else \
            f"install the Python driver module {name!r} that the URL names"
        raise GeoscreenError(f"needs the database driver {name!r}, which is not installed",
                             path=label, field="--ledger", fix=fix) from None
    except (ArgumentError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise GeoscreenError(f"is not a usable database URL ({detail})", path=label,
                             field="--ledger",
                             fix="pass a SQLite file or a URL such as "
                                 "postgresql://user@host:5432/dbname") from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    _translate_errors(engine, label)
    return engine


class LedgerUnavailable(GeoscreenError):
    """The ledger database cannot be used right now: `kind` is locked, readonly, damaged,
    full, unopenable, unreachable, nodb (no such database on the server), auth (login
    refused) or denied (a missing privilege).  One line naming the ledger and the fix."""

    def __init__(self, kind: str, message: str, *, path: str, fix: str) -> None:
        super().__init__(message, path=path, field="--ledger", fix=fix)
        self.kind = kind


# PostgreSQL SQLSTATE codes (psycopg's `sqlstate`) -> kind; connection classes by prefix
_PG_SQLSTATE = {"55P03": "locked", "40P01": "locked", "25006": "readonly", "42501": "denied",
                "53100": "full", "3D000": "nodb", "28P01": "auth", "28000": "auth",
                "53300": "unreachable", "57P01": "unreachable", "57P02": "unreachable",
                "57P03": "unreachable"}
# words of the failures psycopg reports without a SQLSTATE (those of connecting)
_PG_WORDS = (
    ("nodb", (r'database "[^"]*" does not exist',)),
    ("auth", ("password authentication failed", r'role "[^"]*" does not exist',
              "no password supplied", "no pg_hba.conf entry", "authentication failed")),
    ("unreachable", ("connection refused", "could not connect to server",
                     "failed to resolve host", "could not translate host name",
                     "timeout expired", "server closed the connection",
                     "no route to host", "network is unreachable", "connection failed",
                     "the connection is closed", "consuming input failed")),
    ("denied", ("permission denied for",)),
)


def _pg_error_kind(orig: BaseException, low: str) -> str | None:
    """Classify a PostgreSQL driver exception by its SQLSTATE, else by its message."""
    state = str(getattr(orig, "sqlstate", "") or "")
    if state in _PG_SQLSTATE:
        return _PG_SQLSTATE[state]
    if state.startswith("08"):  # connection exception
        return "unreachable"
    for kind, patterns in _PG_WORDS:
        if any(re.search(p, low) for p in patterns):
            return kind
    return None


def _db_error_kind(orig: BaseException) -> str | None:
    """Classify a driver exception (SQLite's error names, PostgreSQL's SQLSTATE codes, else the
    message's words)."""
    name = str(getattr(orig, "sqlite_errorname", "") or "")
    low = " ".join(str(orig).split()).lower()
    if not name and type(orig).__module__.split(".")[0] in ("psycopg", "psycopg2"):
        kind = _pg_error_kind(orig, low)
        if kind is not None:
            return kind
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "is locked" in low \
            or "lock timeout" in low or "could not obtain lock" in low:
        return "locked"
    if name.startswith("SQLITE_READONLY") or "readonly database" in low \
            or "read-only transaction" in low:
        return "readonly"
    if name.startswith("SQLITE_NOTADB") or "not a database" in low:
        return "notadb"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in low:
        return "damaged"
    if name.startswith("SQLITE_FULL") or "database or disk is full" in low \
            or "no space left" in low:
        return "full"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_AUTH")) \
            or "unable to open database" in low or "disk i/o error" in low:
        return "unopenable"
    return None


def _server_error(kind: str, detail: str, target: str) -> LedgerUnavailable | None:
    """The one-line errors only a database server gives."""
    if kind == "nodb":
        return LedgerUnavailable(
            kind, f"names a database that does not exist on its server ({detail})", path=target,
            fix="create it first (createdb NAME, or CREATE DATABASE NAME in psql), or correct "
                "the database name at the end of the URL")
    if kind == "auth":
        return LedgerUnavailable(
            kind, f"was refused by its server: the login failed ({detail})", path=target,
            fix="check the user name in the URL, and give the password in ~/.pgpass or "
                "PGPASSWORD (not in the URL)")
    if kind == "denied":
        return LedgerUnavailable(
            kind, f"cannot be used by this database user: a privilege is missing ({detail})",
            path=target, fix="ask the database's owner to grant this user the privileges on "
                             "the database and its tables (GRANT ... TO user)")
    if kind == "unreachable":
        return LedgerUnavailable(
            kind, f"cannot reach its database server ({detail})", path=target,
            fix="check the host and port in the URL, and that the server is running and "
                "accepts connections from this machine")
    return None


def ledger_error(orig: BaseException, target: str, *, operational: bool = False,
                 ) -> LedgerUnavailable | None:
    """The one-line error for a database failure on ledger `target`, or None (a bug: keep the
    traceback).  `operational`: the driver called it operational (connection, server), so an
    unclassified one is still reported as the ledger being unreachable."""
    kind = _db_error_kind(orig)
    detail = " ".join(str(orig).split())[:200] or type(orig).__name__
    target = display_target(target)
    server = not hasattr(orig, "sqlite_errorname") and "sqlite" not in type(orig).__module__
    if kind is not None and (err := _server_error(kind, detail, target)) is not None:
        return err
    if kind == "locked":
        who = ("a campaign committing, a 'queue add', an open transaction in psql" if server
               else "a campaign committing, a 'queue add', an open sqlite3 shell")
        return LedgerUnavailable(
            kind, f"is locked: another process held a write transaction on it for more than "
                  f"{busy_timeout_s():g} s ({detail})", path=target,
            fix=f"let the other writer ({who}) finish, then retry")
    if kind == "readonly":
        return LedgerUnavailable(
            kind, f"is read-only and this command writes to it ({detail})", path=target,
            fix="connect to a writable server (the primary, not a standby) as a user who may "
                "write" if server else
                "make the file and its folder writable (chmod u+w), or work on a copy")
    if kind == "notadb":
        return LedgerUnavailable(
            "damaged", f"is not a readable ledger database ({detail})", path=target,
            fix="pass the file 'geoscreen campaign run' or 'queue add' wrote; if this was one, "
                "restore it from a backup")
    if kind == "damaged":
        return LedgerUnavailable(
            kind, f"is damaged ({detail})", path=target,
            fix="restore it from a backup, or salvage its rows with "
                "\"sqlite3 FILE .recover | sqlite3 NEW.sqlite\" and use NEW.sqlite")
    if kind == "full":
        return LedgerUnavailable(kind, f"cannot be written: the disk is full ({detail})",
                                 path=target, fix="free some space (on the database server's "
                                                  "disk, for a server) and rerun the command; "
                                                  "nothing was half-written")
    if kind == "unopenable":
        return LedgerUnavailable(
            kind, f"cannot be opened ({detail})", path=target,
            fix="check that the file and its folder exist and are readable and writable")
    if operational:
        return LedgerUnavailable("unreachable", f"cannot be used ({detail})", path=target,
                                 fix="check the database URL and that its server is up")
    return None


def _translate_errors(engine: Engine, target: str) -> None:
    """Raise `LedgerUnavailable` instead of the driver's exception, for every statement."""
    server = engine.dialect.name != "sqlite"

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: Any) -> None:
        if isinstance(ctx.sqlalchemy_exception, IntegrityError):
            return  # the caller's business (e.g. a lease already taken)
        # SQLite calls SQL errors "operational" too: only a server's are about reaching it
        err = ledger_error(ctx.original_exception, target,
                           operational=server and isinstance(ctx.sqlalchemy_exception,
                                                             OperationalError))
        if err is not None:
            raise err from None


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Any]:
    """A connection in a transaction that serialises schema changes across processes.

    SQLite: `BEGIN IMMEDIATE` (the write lock; DDL is transactional there).  PostgreSQL: a
    transaction-scoped advisory lock.  Others: a plain transaction.  Check what is missing
    again inside it: another process may have just created it.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
    else:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7361696465)")  # geoscreen
            yield conn


def create_tables(engine: Engine) -> bool:
    """Create missing tables and the schema_version row; True if anything was missing.

    Two processes opening a new ledger at once (a campaign creating it while `campaign status`
    polls it) used to race: both saw no table and the second CREATE failed.  The check is
    cheap and read-only when nothing is missing (a read-only ledger opens); otherwise it is
    repeated and acted on inside `schema_transaction`.
    """
    from sqlalchemy import insert

    def complete(conn: Any) -> bool:
        have = set(inspect(conn).get_table_names())
        if not all(t in have for t in Base.metadata.tables):
            return False
        return conn.execute(select(Meta.value).where(Meta.key == "schema_version")
                            ).first() is not None

    with engine.connect() as conn:
        if complete(conn):
            return False
    with schema_transaction(engine) as conn:
        if complete(conn):
            return False
        Base.metadata.create_all(conn)
        if conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first() is None:
            conn.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
    return True


# Columns added to the first schema, in order: (table, column, SQL type, backfill or None).
ADDED_COLUMNS: tuple[tuple[str, str, str, str | None], ...] = (
    ("hypotheses", "attempts", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE hypotheses SET attempts = 1 WHERE status IN ('done', 'failed')"),
    ("hypotheses", "e_value", "FLOAT", None),
    ("hypotheses", "e_method", "VARCHAR(64)", None),
    ("layer_results", "e_value", "FLOAT", None),
    ("layer_results", "e_method", "VARCHAR(64)", None),
    ("hypotheses", "external_id", "VARCHAR(1000)", None),
)


def _missing_columns(conn: Any) -> list[tuple[str, str, str, str | None]]:
    insp = inspect(conn)
    tables = dict.fromkeys(t for t, *_ in ADDED_COLUMNS)
    if not all(insp.has_table(t) for t in tables):
        return []
    have = {t: {c["name"] for c in insp.get_columns(t)} for t in tables}
    return [x for x in ADDED_COLUMNS if x[1] not in have[x[0]]]


def add_missing_columns(conn: Any) -> list[tuple[str, str, str, str | None]]:
    """Add `ADDED_COLUMNS` a ledger lacks, on `conn` (inside `schema_transaction`), and bump
    its schema version; returns what was added."""
    missing = _missing_columns(conn)
    for table, column, kind, backfill in missing:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if backfill:
            conn.exec_driver_sql(backfill)
    if missing:
        conn.exec_driver_sql(f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = "
                             f"'schema_version' AND CAST(value AS INTEGER) < {SCHEMA_VERSION}")
    return missing


def upgrade_schema(engine: Engine, target: str) -> bool:
    """Add the columns a ledger written by an older geoscreen lacks, in place; True if it did.

    The check is read-only when nothing is missing (a read-only current ledger opens); the
    change re-checks and runs inside `schema_transaction` (on SQLite one `BEGIN IMMEDIATE`
    transaction, DDL being transactional there), so two processes opening an old ledger at once
    upgrade it once, and a process killed half-way leaves it unchanged.  Rows written before a
    column existed keep its default: `attempts` is backfilled, e-values stay NULL (their
    calibrated p-value stands in wherever one is needed: `geoscreen.combine._layer_e`,
    `store.fdr`).
    """
    with engine.connect() as conn:
        if not _missing_columns(conn):
            return False
    try:
        with schema_transaction(engine) as conn:
            missing = add_missing_columns(conn)
    except LedgerUnavailable as exc:
        if exc.kind == "readonly":
            with engine.connect() as conn:
                what = ", ".join(f"{t}.{c}" for t, c, *_ in _missing_columns(conn))
            raise LedgerUnavailable(
                "readonly", "is read-only and was written by an older geoscreen: it needs a "
                f"one-time upgrade (columns {what} added)", path=target,
                fix="make it writable (chmod u+w) once, or upgrade a copy") from None
        raise
    return bool(missing)


def not_a_ledger(label: str) -> GeoscreenError:
    """The error for an existing database that holds no ledger (a command that reads one)."""
    return GeoscreenError("holds no geoscreen ledger (the database has no geoscreen tables)",
                          path=label, field="--ledger",
                          fix="check the name; 'geoscreen campaign run' or 'geoscreen queue add' "
                              "with this --ledger creates a ledger there")


def _json_safe(v: Any) -> Any:
    """Plain JSON values for a JSON column: numpy scalars and arrays become numbers and lists."""
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy scalar or array
        return _json_safe(v.tolist())
    return v


def _e_value(v: Any) -> float | None:
    """An e-value as stored: a finite nonnegative float, or None (no e-value)."""
    try:
        e = float(v)
    except (TypeError, ValueError):
        return None
    return e if e >= 0.0 and e != float("inf") else None


class Ledger:
    """Open (and create if needed) a ledger: a SQLite file or a database URL.

    Parameters
    ----------
    target
        A SQLite file, or a SQLAlchemy URL (``postgresql://user@host:5432/dbname``).
    must_exist
        For commands that only read or extend an existing ledger: refuse a SQLite file that
        does not exist, and any database (a server's, or a SQLite file) that holds no geoscreen
        tables, instead of creating a ledger there.

    Attributes
    ----------
    target
        `target` as given (a URL keeps its password: use it to connect again).
    label
        `target` for messages: a URL's password replaced by ``***``.
    url
        The SQLAlchemy URL (`ledger_url`).
    """

    def __init__(self, target: str | os.PathLike, *, must_exist: bool = False) -> None:
        self.target = str(target)
        self.label = display_target(target)
        self.url = ledger_url(target)
        if self.url.startswith("sqlite:///"):
            path = Path(self.url[len("sqlite:///"):])
            if must_exist and not path.exists():
                raise GeoscreenError("does not exist", path=str(target), field="--ledger",
                                     fix="run 'geoscreen campaign run' or 'geoscreen queue add' "
                                         "to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = open_engine(target)
        self._Session = sessionmaker(self.engine, expire_on_commit=False, future=True)
        try:
            with self.session() as s:
                has_meta = inspect(s.connection()).has_table("meta")
                if must_exist and not has_meta:
                    raise not_a_ledger(self.label)
                row = s.get(Meta, "schema_version") if has_meta else None
                if row is not None and int(row.value) > SCHEMA_VERSION:
                    raise GeoscreenError(
                        f"was written by a newer geoscreen (schema {row.value} > "
                        f"{SCHEMA_VERSION})", path=self.label, fix="upgrade geoscreen")
            create_tables(self.engine)
            upgrade_schema(self.engine, self.label)
            with self.session() as s:
                row = s.get(Meta, "schema_version")
                if row is None:
                    s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(row.value) < SCHEMA_VERSION:
                    row.value = str(SCHEMA_VERSION)
        except DatabaseError as exc:
            self.engine.dispose()
            raise GeoscreenError(f"is not a readable ledger database "
                                 f"({str(exc.orig).splitlines()[0]})", path=self.label,
                                 field="--ledger") from None
        except BaseException:
            self.engine.dispose()
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error: no half-written rows."""
        s = self._Session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- campaigns ------------------------------------------------------------------------------
    def campaign(self, s: Session, *, create: bool = True, kind: str = "exploratory") -> Campaign:
        """The ledger's campaign of this kind (created on first use)."""
        c = s.scalars(select(Campaign).where(Campaign.kind == kind)
                      .order_by(Campaign.id.desc())).first()
        if c is None:
            if not create:
                raise GeoscreenError("holds no campaign yet", path=self.label, field="--ledger",
                                     fix="start one with 'geoscreen campaign run'")
            from geoscreen.version import package_version

            c = Campaign(kind=kind, package_version=package_version(), config={}, fdr_state={})
            s.add(c)
            s.flush()
        return c

    # -- queue ------------------------------------------------------------------------------------
    def existing_hashes(self, s: Session, campaign_id: int) -> dict[str, int]:
        rows = s.execute(select(Hypothesis.hash, Hypothesis.id)
                         .where(Hypothesis.campaign_id == campaign_id)).all()
        return {h: i for h, i in rows}

    def add_hypotheses(self, s: Session, campaign: Campaign, resolved: Sequence[Any], *,
                       status: str = "queued", iteration: Iteration | None = None,
                       ) -> tuple[list[Hypothesis], list[tuple[Any, int]]]:
        """Insert specs not yet in the campaign; returns (added, [(spec, existing id)])."""
        known = self.existing_hashes(s, campaign.id)
        added: list[Hypothesis] = []
        dups: list[tuple[Any, int]] = []
        for r in resolved:
            h = r.hash
            if h in known:
                dups.append((r, known[h]))
                continue
            spec = r.spec
            row = Hypothesis(
                campaign_id=campaign.id, hash=h, spec=r.to_record(), statement=spec.statement,
                probe=spec.probe, family=r.family, source=spec.source, status=status,
                parents=list(spec.parents), rationale=spec.rationale,
                iteration_id=iteration.id if iteration else None,
                iteration_index=iteration.index if iteration else None)
            s.add(row)
            s.flush()
            known[h] = row.id
            added.append(row)
        return added, dups

    def event(self, s: Session, campaign: Campaign, kind: str, message: str,
              iteration_index: int | None = None, **data: Any) -> None:
        s.add(Event(campaign_id=campaign.id, kind=kind, message=message,
                    iteration_index=iteration_index, data=data))

    # -- results ----------------------------------------------------------------------------------
    def record_result(self, hyp_id: int, outcome: Outcome | dict[str, Any]) -> None:
        """Store a finished hypothesis (per-layer rows + combined p) in one transaction.

        `outcome` is the worker's `geoscreen.result.Outcome` (a dict is validated into one
        first); every column is filled from one of its fields.
        """
        out = outcome if isinstance(outcome, Outcome) else Outcome.model_validate(outcome)
        with self.session() as s:
            h = s.get(Hypothesis, hyp_id)
            if h is None:
                raise KeyError(hyp_id)
            h.results.clear()
            for r in out.layers:
                s.add(LayerResultRow(
                    hypothesis_id=h.id, layer=r.layer, layer_index=r.layer_index,
                    statistic_name=r.statistic_name, statistic=r.statistic,
                    effect_name=r.effect_name, effect_size=r.effect_size,
                    p_value=r.p_value, e_value=_e_value(r.e_value),
                    e_method=(r.e_method or "")[:64] or None,
                    n=r.n, null=r.null, n_permutations=r.n_permutations, seed=r.seed,
                    ci_low=r.ci_low, ci_high=r.ci_high, runtime_s=r.runtime_s,
                    extra=_json_safe(r.extra)))
            comb = out.combined
            h.p_value = comb.p_value
            h.combine_method = comb.method
            h.e_value = _e_value(comb.e_value)
            h.e_method = (comb.e_method or "")[:64] or None
            h.effect_name = comb.effect_name
            h.effect_size = comb.effect_size
            h.provenance = _json_safe(out.provenance)
            h.runtime_s = out.runtime_s
            h.status = "done"
            h.error = ""
            h.finished_at = utcnow()

    def record_failure(self, hyp_id: int, reason: str, provenance: dict[str, Any] | None = None,
                       ) -> None:
        with self.session() as s:
            h = s.get(Hypothesis, hyp_id)
            if h is None:
                raise KeyError(hyp_id)
            h.status = "failed"
            h.error = reason[:4000]
            h.finished_at = utcnow()
            if provenance:
                h.provenance = provenance
