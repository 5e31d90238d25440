"""PostgreSQL ledgers, `geoscreen ledger copy`, and the SQLite-on-NFS warning.

The server tests run against the PostgreSQL server named by GEOSCREEN_TEST_PG_URL (started by
`eval "$(bash .ci/services.sh)"`), each in a database of its own created for the test and dropped
after it; without the variable they skip (under CI they fail).  Nothing of ours is mocked: the
campaigns, locks and copies run for real, mostly through the CLI in subprocesses.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_cache, missing, run_cli
from queue_helpers import OPEN_LEDGER_AT_GO, queue_raw_specs

from geoscreen.errors import GeoscreenError
from geoscreen.store.lease import RunLease
from geoscreen.store.ledger import Ledger, display_target, ledger_url
from geoscreen.store.models import (
    SCHEMA_VERSION,
    Base,
    Campaign,
    Event,
    Hypothesis,
    LayerResultRow,
    LLMCall,
)
from geoscreen.store.netfs import (
    fstype_of,
    network_filesystem,
    parse_mountinfo,
    sqlite_on_network_warning,
)

PG_ENV = "GEOSCREEN_TEST_PG_URL"
PLANTED = ",".join(f"G{i}" for i in range(40))
SPECS = f"""
- statement: axis 1 separates the planted genes
  probe: axis_separation
  params: {{axis: 1, positive: "genes:{PLANTED}"}}
- statement: axis 5 separates the planted genes
  probe: axis_separation
  params: {{axis: 5, positive: "genes:{PLANTED}"}}
"""
UNREACHABLE = "postgresql://geoscreen:s3cret@127.0.0.1:1/nowhere"


# -- the server ---------------------------------------------------------------------------------
def _server_url() -> str:
    """The server's admin URL, else skip (fail under CI: the CI image must provide it)."""
    url = os.environ.get(PG_ENV)
    why = None
    if not url:
        why = f'{PG_ENV} is not set (eval "$(bash .ci/services.sh)" starts a server)'
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            why = "psycopg is not installed (pip install -e '.[test]')"
    if why:
        missing(f"no PostgreSQL server: {why}",
                f"no PostgreSQL for the PostgreSQL tests: {why}")
    return url  # type: ignore[return-value]


def _libpq(url: str) -> str:
    """A URL libpq (psycopg.connect) reads: no SQLAlchemy driver suffix."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return _libpq(make_url(ledger_url(url)).set(database=name)
                  .render_as_string(hide_password=False))


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh, empty database on the test server (dropped afterwards); its URL."""
    import psycopg

    admin = _libpq(_server_url())
    name = f"geoscreen_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


# -- helpers ------------------------------------------------------------------------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=300, env=env)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """Assert exit 2 with one line on stderr holding `words`, no traceback; the line."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _canon(v: Any) -> Any:
    """A value compared exactly: floats by their shortest repr (bit-exact), JSON by its text
    with key order, datetimes to the microsecond."""
    if isinstance(v, float):
        return ("float", repr(v))
    if isinstance(v, (dict, list)):
        return ("json", json.dumps(v))
    if isinstance(v, datetime):
        return ("datetime", v.isoformat())
    return (type(v).__name__, v)


def _core_dump(target: str) -> dict[str, list[dict[str, Any]]]:
    """Every table of a ledger, every row and column, through SQLAlchemy's column types."""
    from sqlalchemy import select

    led = Ledger(target, must_exist=True)
    try:
        with led.engine.connect() as conn:
            return {t.name: [{k: _canon(v) for k, v in m.items()} for m in conn.execute(
                select(t).order_by(*t.primary_key.columns)).mappings()]
                for t in Base.metadata.sorted_tables}
    finally:
        led.close()


def _sqlite_dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table of a SQLite ledger as stored: raw column text and numbers, by name."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for t in Base.metadata.sorted_tables:
            pk = ", ".join(f'"{c.name}"' for c in t.primary_key.columns)
            cur = con.execute(f'SELECT * FROM "{t.name}" ORDER BY {pk}')
            names = [d[0] for d in cur.description]
            out[t.name] = [{n: (type(v).__name__, repr(v)) for n, v in zip(names, row)}
                           for row in cur.fetchall()]
        return out
    finally:
        con.close()


def _run(cache: Path, ledger: str, *extra: str, iterations: int = 2) -> None:
    res = _cli("campaign", "run", "--cache", str(cache), "--ledger", ledger, "--iterations",
               str(iterations), "--per-iteration", "3", "--seed", "5", "--workers", "1",
               "--quiet", *extra)
    assert res.returncode == 0, res.stderr[-3000:]


def _build_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache, SQLite ledger) of a two-iteration campaign, with values chosen to be hard to
    copy: extreme floats, microseconds, JSON null, unicode, an id gap, a confirmatory campaign
    pointing at its parent."""
    base = tmp_path_factory.mktemp("pgsource")
    env = {"GEOSCREEN_WORK_DIR": str(base / "work"), "GEOSCREEN_DATA_DIR": str(base / "data")}
    cache = make_cache(base / "cache", n_genes=300, dim=12, n_layers=2)
    ledger = base / "source.sqlite"
    specs = base / "s.yaml"
    specs.write_text(SPECS)
    assert run_cli("queue", "add", str(specs), "--ledger", str(ledger), env=env).returncode == 0
    res = run_cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
                  "--iterations", "2", "--per-iteration", "3", "--seed", "5", "--quiet",
                  env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    led = Ledger(ledger)
    with led.session() as s:
        h = s.get(Hypothesis, 1)
        h.p_value, h.effect_size = 5e-324, 0.1 + 0.2  # the smallest subnormal; not 0.3
        h.e_value = 1.7976931348623157e308
        h.finished_at = datetime(2024, 2, 29, 23, 59, 59, 123456)
        h.provenance = {**h.provenance, "z": None, "unicode": "é 漢字 \u2028 \"q\"",
                        "nested": [1, 2**53 + 1, 0.1 + 0.2, {"b": [], "a": {}}]}
        s.get(Hypothesis, 2).effect_size = None
        s.get(LayerResultRow, 1).ci_low = 2.2250738585072014e-308
        child = Campaign(name="confirm", kind="confirmatory", parent_campaign_id=1,
                         config={"alpha": 0.05}, fdr_state={}, seed=2**62)
        s.add(child)
        s.add(LLMCall(campaign_id=1, model="m", cost_usd=1 / 3, latency_s=0.0,
                      created_at=datetime(2024, 1, 1, 0, 0, 0)))
        first_event = s.query(Event).order_by(Event.id).first()
        s.delete(first_event)  # an id gap: the copy keeps ids, not positions
    led.close()
    return cache.path, ledger


@pytest.fixture(scope="module")
def _source_once(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Builds the source ledger on first use only, once per module (a module-scoped fixture
    would be built before a test's server check could skip it)."""
    built: list[tuple[Path, Path]] = []

    def get() -> tuple[Path, Path]:
        if not built:
            built.append(_build_source(tmp_path_factory))
        return built[0]

    return get


@pytest.fixture
def lite_source(_source_once: Any) -> tuple[Path, Path]:
    """The source ledger; tests copy it and never write to it."""
    return _source_once()


@pytest.fixture
def source(_source_once: Any) -> tuple[Path, Path]:
    """The source ledger, for tests that also need the PostgreSQL server."""
    _server_url()
    return _source_once()


# -- no server needed ---------------------------------------------------------------------------
MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 27 0:45 / /home rw,relatime shared:20 - nfs4 fs1:/export/home rw,vers=4.2
41 40 0:46 / /home/alice/local rw,relatime - ext4 /dev/sdb1 rw
42 27 0:47 / /scratch rw shared:21 master:3 - lustre 10.0.0.1@o2ib:/scratch rw
43 27 0:48 / /mnt/my\040share rw - cifs //srv/share rw
44 27 0:49 / /gpfs/proj rw - gpfs proj rw
45 27 0:50 / /mnt/ssh rw - fuse.sshfs me@host:/ rw
46 27 0:51 / /mnt/local-fuse rw - fuse.squashfuse img rw
"""


@pytest.mark.parametrize("path, fstype", [
    ("/home/alice/ledger.sqlite", "nfs4"), ("/home/alice/local/l.sqlite", None),
    ("/scratch/run/l.sqlite", "lustre"), ("/mnt/my share/l.sqlite", "cifs"),
    ("/gpfs/proj/x", "gpfs"), ("/mnt/ssh/l.sqlite", "fuse.sshfs"),
    ("/mnt/local-fuse/l.sqlite", None), ("/tmp/l.sqlite", None), ("/homework/l", None)])
def test_network_filesystem_from_mountinfo(path, fstype):
    assert network_filesystem(path, MOUNTINFO) == fstype


def test_mountinfo_parsing_and_the_warning(tmp_path):
    mounts = parse_mountinfo(MOUNTINFO)
    assert ("/mnt/my share", "cifs") in mounts and len(mounts) == 9
    assert fstype_of("/home/alice/local/x", MOUNTINFO) == "ext4"  # the longest mount point
    # /proc/mounts format too
    assert fstype_of("/data/x", "fs:/d /data nfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\n") == "nfs"
    warning = sqlite_on_network_warning("/home/alice/ledger.sqlite", MOUNTINFO)
    assert warning.startswith("warning: /home/alice/ledger.sqlite: SQLite on nfs4 is "
                              "unsupported for cluster drivers: its locking is unreliable "
                              "there; use --ledger postgresql://")
    assert "\n" not in warning
    assert sqlite_on_network_warning("postgresql://u@h/db", MOUNTINFO) == ""
    assert sqlite_on_network_warning("/tmp/l.sqlite", MOUNTINFO) == ""
    # this machine's own mount table: the test folder is local
    assert network_filesystem(tmp_path / "not-yet" / "ledger.sqlite") is None
    assert sqlite_on_network_warning(tmp_path / "ledger.sqlite") == ""


def test_urls_normalised_and_passwords_hidden():
    assert ledger_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert ledger_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert ledger_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert ledger_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    assert display_target("postgresql://u:p4ss@h/db") == "postgresql://u:***@h/db"
    assert display_target("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_a_missing_driver_and_bad_urls_are_one_line(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None; from geoscreen.agent.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "ledger", "list", "--ledger",
                          "postgresql://u@127.0.0.1:1/db"], capture_output=True, text=True,
                         timeout=120)
    _one_line_error(res, "postgresql://u@127.0.0.1:1/db: field '--ledger'",
                    "needs the database driver 'psycopg'", "pip install 'geoscreen[team]'")
    _one_line_error(_cli("ledger", "list", "--ledger", "postgresql://u@h:port/db"),
                    "is not a usable database URL")


def test_server_unreachable_is_one_line(tmp_path):
    src = tmp_path / "l.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text(SPECS)
    for args in (["ledger", "list", "--ledger", UNREACHABLE],
                 ["queue", "add", str(specs), "--ledger", UNREACHABLE],
                 ["ledger", "copy", UNREACHABLE, str(src)]):
        line = _one_line_error(_cli(*args), "cannot reach its database server",
                               "check the host and port")
        assert "s3cret" not in line and "postgresql://geoscreen:***@127.0.0.1:1/nowhere" in line
    assert not src.exists()


# -- PostgreSQL ---------------------------------------------------------------------------------
def test_missing_database_and_empty_database(pg_db):
    missing = _with_database(pg_db, "geoscreen_no_such_database")
    for args in (["ledger", "list", "--ledger", missing],
                 ["campaign", "status", "--ledger", missing]):
        _one_line_error(_cli(*args), "names a database that does not exist on its server",
                        "createdb")
    # an empty database is no ledger for a command that reads one, and stays empty
    for args in (["ledger", "list", "--ledger", pg_db], ["report", "--ledger", pg_db, "-o",
                                                         os.devnull]):
        _one_line_error(_cli(*args), f"{pg_db}: field '--ledger': holds no geoscreen ledger")
    assert _pg_tables(pg_db) == set()


def test_a_locked_table_times_out_in_one_line(pg_db):
    """A transaction holding a table (psql, a stuck process) delays a command for the busy
    timeout, then it says so, as on SQLite."""
    import psycopg

    Ledger(pg_db).close()
    with psycopg.connect(pg_db) as conn:
        conn.execute("LOCK TABLE hypotheses IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        res = _cli("ledger", "list", "--ledger", pg_db,
                   env={"GEOSCREEN_LEDGER_BUSY_TIMEOUT": "1"})
        assert time.monotonic() - t0 < 30
        _one_line_error(res, "is locked: another process held a write transaction on it for "
                             "more than 1 s", "an open transaction in psql")
        conn.rollback()
    assert _cli("ledger", "list", "--ledger", pg_db).returncode == 0


def test_first_use_by_several_processes_at_once(pg_db, tmp_path):
    """Four processes open the empty database together: the tables are created once (an
    advisory lock serialises the transactional DDL), and every process opens it."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_LEDGER_AT_GO, pg_db, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(3)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o.strip() for o, _ in outs] == ["ok"] * 4, [e[-500:] for _, e in outs]
    assert _pg_tables(pg_db) == set(Base.metadata.tables)
    import psycopg

    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT key, value FROM meta").fetchall() == [
            ("schema_version", str(SCHEMA_VERSION))]


def test_campaign_on_postgres_equals_sqlite(pg_db, tmp_path):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=2)
    lite = str(tmp_path / "l.sqlite")
    specs = tmp_path / "s.yaml"
    specs.write_text(SPECS)  # a planted discovery, then what the offline brainstormer proposes
    for ledger in (lite, pg_db):
        assert _cli("queue", "add", str(specs), "--ledger", ledger).returncode == 0
        _run(cache.path, ledger)
    listings = [json.loads(_cli("ledger", "list", "--ledger", x, "--json").stdout)
                for x in (lite, pg_db)]
    assert len(listings[0]) == 6 and listings[0] == listings[1]
    assert any(r["significant"] for r in listings[0])
    from geoscreen.store.query import list_hypotheses

    for significant in (True, False):  # the SQL behind --significant / --not-significant
        for fdr in ("bh", "by", "online"):
            got = [list_hypotheses(x, significant=significant, fdr=fdr, sort="-p")
                   for x in (lite, pg_db)]
            assert got[0] == got[1], (significant, fdr)
    dumps = [_core_dump(x) for x in (lite, pg_db)]
    timing = {"created_at", "updated_at", "queued_at", "started_at", "finished_at",
              "runtime_s", "heartbeat", "started", "latency_s", "cache_path"}

    def same_draws(value: Any) -> Any:
        """A layer's extra without where its stored null came from: the second campaign on
        the same cache reuses the null copies the first one stored (reused vs computed), the
        same draws and the same numbers."""
        if not (isinstance(value, tuple) and value[0] == "json" and "shared_null" in value[1]):
            return value
        extra = json.loads(value[1])
        extra["shared_null"] = {k: v for k, v in extra["shared_null"].items()
                                if k not in ("reused", "computed")}
        return ("json", json.dumps(extra, sort_keys=True))

    def results(d: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return {t: [{k: same_draws(v) for k, v in r.items()
                     if k not in timing and k != "provenance"}
                    for r in rows] for t, rows in d.items()}

    assert results(dumps[0]) == results(dumps[1])  # statements, p, effects, flags, FDR state
    assert dumps[0]["campaigns"][0]["fdr_state"] == dumps[1]["campaigns"][0]["fdr_state"]


def test_run_lock_on_postgres(pg_db):
    first, second = Ledger(pg_db), Ledger(pg_db)
    try:
        lease = RunLease(first, "campaign run").acquire()
        try:
            with pytest.raises(GeoscreenError) as err:
                RunLease(second, "campaign run").acquire()
            msg = str(err.value)
            assert f"is in use by another campaign run: pid {os.getpid()}@" \
                   f"{socket.gethostname()}" in msg and "\n" not in msg
        finally:
            lease.release()
        again = RunLease(second, "campaign run").acquire()
        again.release()
    finally:
        first.close()
        second.close()


RACE = """
import sys, time
from pathlib import Path
from geoscreen.errors import GeoscreenError
from geoscreen.store.lease import RunLease
from geoscreen.store.ledger import Ledger
led = Ledger(sys.argv[1])
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
try:
    lease = RunLease(led, "campaign run").acquire()
except GeoscreenError as exc:
    print("refused", exc)
else:
    print("won")
    time.sleep(1)
    lease.release()
"""


def test_run_lock_race_on_postgres(pg_db, tmp_path):
    """Four processes take the lock at the same moment: exactly one wins."""
    Ledger(pg_db).close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, pg_db, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(3)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    words = sorted(o.split()[0] for o, _ in outs if o.strip())
    assert words == ["refused"] * 3 + ["won"], outs


def test_readers_while_a_campaign_runs(pg_db, tmp_path):
    from geoscreen.store.query import list_hypotheses

    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    queue_raw_specs(pg_db, [{"statement": f"slow axis {k}", "probe": "toy_slow_axis",
                             "layers": [0], "params": {"axis": k + 1,
                                                       "positive": f"genes:{PLANTED}",
                                                       "delay": 0.7}} for k in range(6)])
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent / "plugins"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run",
                             "--cache", str(cache.path), "--ledger", pg_db, "--brainstormer",
                             "none", "--per-iteration", "2", "--plugin", "toy_probes",
                             "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reads, seen = 0, set()
    try:
        while proc.poll() is None:
            rows = list_hypotheses(pg_db, kind="all")
            assert len(rows) == 6
            seen.add(sum(r["status"] == "done" for r in rows))
            reads += 1
            if reads % 5 == 0:  # and through the CLI, in another process
                res = _cli("ledger", "list", "--ledger", pg_db, "--tsv")
                assert res.returncode == 0, res.stderr
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert reads >= 5 and len(seen) >= 2  # read while results were arriving
    assert {r["status"] for r in list_hypotheses(pg_db)} == {"done"}


def test_cli_commands_on_postgres(pg_db, tmp_path):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=2)
    specs = tmp_path / "s.yaml"
    specs.write_text(SPECS)
    res = _cli("queue", "add", str(specs), "--ledger", pg_db)
    assert res.returncode == 0 and "queued 2" in res.stdout.lower(), res.stdout + res.stderr
    assert "queued" in _cli("queue", "list", "--ledger", pg_db).stdout
    res = _cli("campaign", "run", "--cache", str(cache.path), "--ledger", pg_db,
               "--brainstormer", "none", "--quiet")
    assert res.returncode == 0, res.stderr
    listing = _cli("ledger", "list", "--ledger", pg_db)
    assert listing.returncode == 0 and "2 hypotheses" in listing.stdout
    sig = json.loads(_cli("ledger", "list", "--ledger", pg_db, "--significant", "--json",
                          "--source", "HUM*").stdout)
    assert [r["statement"] for r in sig] == ["axis 1 separates the planted genes"]
    show = _cli("ledger", "show", "1", "--ledger", pg_db)
    assert show.returncode == 0 and "per layer" in show.stdout and "mann_whitney" in show.stdout
    out = tmp_path / "r.csv"
    res = _cli("ledger", "export", "--ledger", pg_db, "-o", str(out))
    assert res.returncode == 0 and len(out.read_text().splitlines()) == 3
    report = tmp_path / "r.html"
    res = _cli("report", "--ledger", pg_db, "-o", str(report))
    assert res.returncode == 0 and "axis 1 separates" in report.read_text()
    status = _cli("campaign", "status", "--ledger", pg_db)
    assert status.returncode == 0 and "hypotheses: done 2" in status.stdout


# -- ledger copy --------------------------------------------------------------------------------
def test_copy_sqlite_to_postgres_and_back_is_lossless(source, pg_db, tmp_path):
    cache, ledger = source
    before = _sqlite_dump(ledger)
    res = _cli("ledger", "copy", str(ledger), pg_db)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["table", "rows"]
    assert f"copied {sum(len(v) for v in before.values())} rows from {ledger} to {pg_db}" \
        == lines[-1]
    assert any(line.split()[:2] == ["hypotheses", "6"] for line in lines)
    assert _core_dump(str(ledger)) == _core_dump(pg_db)  # values, through the column types
    back = tmp_path / "sub" / "back.sqlite"
    assert _cli("ledger", "copy", pg_db, str(back)).returncode == 0
    assert _sqlite_dump(back) == before  # every byte of text and bit of every float
    assert _sqlite_dump(ledger) == before  # SRC untouched


def test_copy_to_postgres_then_the_campaign_continues(source, pg_db, tmp_path):
    cache, ledger = source
    assert _cli("ledger", "copy", str(ledger), pg_db).returncode == 0
    led = Ledger(pg_db)
    with led.session() as s:
        max_id = {t: s.query(t).order_by(t.id.desc()).first().id
                  for t in (Hypothesis, Event, LayerResultRow)}
    led.close()
    specs = tmp_path / "s.yaml"
    # new specs (the copied ledger already ran SPECS): queued work runs before brainstormed
    # ideas, which on this small synthetic cache may all be refused by its data
    specs.write_text(SPECS.replace("axis 1", "axis 2").replace("axis: 1", "axis: 2")
                     .replace("axis 5", "axis 3").replace("axis: 5", "axis: 3"))
    res = _cli("queue", "add", str(specs), "--ledger", pg_db)
    assert res.returncode == 0, res.stderr
    _run(cache, pg_db, iterations=3)  # one more iteration on top of the copied two
    led = Ledger(pg_db)
    with led.session() as s:
        new = s.query(Hypothesis).filter(Hypothesis.id > max_id[Hypothesis]).all()
        assert len(new) >= 3 and {h.status for h in new} <= {"done", "failed"}
        assert s.query(Event).filter(Event.id > max_id[Event]).count() > 0
        assert s.query(LayerResultRow).filter(
            LayerResultRow.id > max_id[LayerResultRow]).count() > 0
        assert min(h.id for h in new) == max_id[Hypothesis] + 1  # the sequence moved on
    led.close()


def test_copy_refusals_leave_dst_unchanged(source, pg_db, tmp_path):
    _, ledger = source
    assert _cli("ledger", "copy", str(ledger), pg_db).returncode == 0
    before = _core_dump(pg_db)
    # DST holds a ledger: refused without --overwrite
    line = _one_line_error(_cli("ledger", "copy", str(ledger), pg_db),
                           f"{pg_db}: field 'DST': already holds a geoscreen ledger",
                           "--overwrite")
    assert "hypotheses 6" in line
    # SRC holds a value PostgreSQL cannot: refused, and DST (about to be replaced) is unchanged
    bad = tmp_path / "bad.sqlite"
    assert _cli("ledger", "copy", str(ledger), str(bad)).returncode == 0
    con = sqlite3.connect(bad)
    con.execute("UPDATE hypotheses SET source = ? WHERE id = 3", ("x" * 250,))
    con.commit()
    con.close()
    _one_line_error(_cli("ledger", "copy", str(bad), pg_db, "--overwrite"),
                    "cannot hold row 3 of table hypotheses: column source holds 250 "
                    "characters, more than its VARCHAR(200)", "nothing was copied")
    assert _core_dump(pg_db) == before
    # a row the database refuses half-way (a dangling foreign key): nothing is left behind
    dangling = tmp_path / "dangling.sqlite"
    assert _cli("ledger", "copy", str(ledger), str(dangling)).returncode == 0
    con = sqlite3.connect(dangling)  # foreign keys are not enforced on this connection
    assert con.execute("UPDATE layer_results SET hypothesis_id = 999 WHERE id = "
                       "(SELECT max(id) FROM layer_results)").rowcount == 1
    con.commit()
    con.close()
    _one_line_error(_cli("ledger", "copy", str(dangling), pg_db, "--overwrite"),
                    "refused the rows of table layer_results", "nothing was copied")
    assert _core_dump(pg_db) == before
    lite = tmp_path / "new" / "copy.sqlite"
    _one_line_error(_cli("ledger", "copy", str(dangling), str(lite)),
                    f"{lite}: field 'DST': refused the rows of table layer_results")
    assert list(lite.parent.iterdir()) == []  # the file it began is removed


def test_copy_overwrite_replaces_only_geoscreen_rows(source, pg_db):
    import psycopg

    _, ledger = source
    with psycopg.connect(pg_db) as conn:  # a table that is not ours, in the same database
        conn.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'keep me')")
    assert _cli("ledger", "copy", str(ledger), pg_db).returncode == 0
    res = _cli("ledger", "copy", str(ledger), pg_db, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "replacing the" in res.stdout.splitlines()[-1]
    assert _core_dump(str(ledger)) == _core_dump(pg_db)
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]


def test_copy_refuses_a_source_in_use_and_a_source_that_is_no_ledger(lite_source, tmp_path):
    _, ledger = lite_source
    busy = tmp_path / "busy.sqlite"
    assert _cli("ledger", "copy", str(ledger), str(busy)).returncode == 0
    led = Ledger(busy)
    lease = RunLease(led, "campaign run").acquire()  # this live process holds it
    try:
        dst = tmp_path / "copy.sqlite"
        _one_line_error(_cli("ledger", "copy", str(busy), str(dst)),
                        f"{busy}: field 'SRC': is in use by a live campaign run: pid "
                        f"{os.getpid()}@", "then copy")
        assert not dst.exists()
    finally:
        lease.release()
        led.close()
    _one_line_error(_cli("ledger", "copy", str(tmp_path / "missing.sqlite"),
                         str(tmp_path / "x.sqlite")), "missing.sqlite: field '--ledger': "
                                                      "does not exist")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    _one_line_error(_cli("ledger", "copy", str(other), str(tmp_path / "y.sqlite")),
                    "holds no geoscreen ledger")
    assert not (tmp_path / "y.sqlite").exists()
    _one_line_error(_cli("ledger", "copy", str(ledger), str(ledger)),
                    "is the same database as SRC")


def test_nonfinite_json_on_postgres(source, pg_db, tmp_path):
    """PostgreSQL's json type has no NaN: a result holding one is stored (as null), and a
    SQLite ledger holding one copies with a note."""
    _, ledger = source
    nan_src = tmp_path / "nan.sqlite"
    assert _cli("ledger", "copy", str(ledger), str(nan_src)).returncode == 0
    con = sqlite3.connect(nan_src)
    con.execute("""UPDATE layer_results SET extra = '{"a": NaN, "b": [Infinity, 1.5]}'
                   WHERE id = 1""")
    con.commit()
    con.close()
    res = _cli("ledger", "copy", str(nan_src), pg_db)
    assert res.returncode == 0, res.stderr
    assert "note: 2 NaN or infinite numbers inside JSON values became null" in res.stdout
    led = Ledger(pg_db)
    try:
        with led.session() as s:
            assert s.get(LayerResultRow, 1).extra == {"a": None, "b": [None, 1.5]}
            row = s.get(LayerResultRow, 2)
            row.extra = {"x": float("nan")}  # what a probe might report
        with led.session() as s:
            assert s.get(LayerResultRow, 2).extra == {"x": None}
    finally:
        led.close()
