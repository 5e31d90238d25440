"""Recovery: transient failures run again, a broken cache stops the run, queued specs always run,
and a ledger of the previous schema is upgraded in place."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import PLUGIN_DIR, make_cache
from queue_helpers import OPEN_LEDGER_AT_GO, hypotheses_by_statement, queue_raw_specs
from sqlalchemy import select, update

from geoscreen.store.ledger import Ledger
from geoscreen.store.models import SCHEMA_VERSION, Event, Hypothesis
from geoscreen.store.query import campaign_status

PLANTED = ",".join(f"G{i}" for i in range(40))
AXIS = "- {{statement: axis {k} separates the planted genes, probe: axis_separation, " \
       "params: {{axis: {k}, positive: 'genes:" + PLANTED + "'}}}}\n"


def _one_line(res) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_transient_failures_run_again_and_the_others_stay_failed(tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [
        {"statement": "slow: longer than a 5 s timeout", "probe": "toy_slow_axis",
         "layers": [0], "params": {"axis": 1, "positive": f"genes:{PLANTED}", "delay": 7}},
        {"statement": "explodes every time", "probe": "toy_raise", "layers": [0]},
        {"statement": "eats memory", "probe": "toy_memory", "params": {"size_mb": 3000},
         "layers": [0]},
    ])

    def run(*extra: str):
        res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
                  "--brainstormer", "none", "--per-iteration", "3", "--plugin", "toy_probes",
                  "--memory-mb", "1500", "--quiet", *extra)
        assert res.returncode == 0, res.stderr
        return hypotheses_by_statement(ledger)

    h = run("--timeout", "5")
    assert {k: (v.status, v.attempts) for k, v in h.items()} == {
        "slow: longer than a 5 s timeout": ("failed", 1), "explodes every time": ("failed", 1),
        "eats memory": ("failed", 1)}
    assert "timed out after 5 s" in h["slow: longer than a 5 s timeout"].error
    assert "memory limit exceeded" in h["eats memory"].error
    status = cli("campaign", "status", "--ledger", str(ledger)).stdout
    assert "failed for a transient reason: 2" in status

    # resumed with a longer timeout: the timeout and the memory failure run again, the
    # probe's own error would recur and does not
    h = run("--timeout", "60")
    slow = h["slow: longer than a 5 s timeout"]
    assert (slow.status, slow.attempts, slow.iteration_index) == ("done", 2, 2)
    assert slow.p_value is not None and slow.error == ""
    assert (h["explodes every time"].status, h["explodes every time"].attempts) == ("failed", 1)
    assert "RuntimeError: probe exploded on purpose" in h["explodes every time"].error
    assert (h["eats memory"].status, h["eats memory"].attempts) == ("failed", 2)

    # after MAX_AUTO_ATTEMPTS starts a transient failure stays failed ...
    led = Ledger(ledger)
    with led.session() as s:
        s.execute(update(Hypothesis).where(Hypothesis.statement == "eats memory")
                  .values(attempts=3))
    led.close()
    h = run("--timeout", "60")
    assert (h["eats memory"].status, h["eats memory"].attempts) == ("failed", 3)
    # ... until --retry-failed asks for it (and never for the error that would recur)
    h = run("--timeout", "60", "--retry-failed")
    assert (h["eats memory"].status, h["eats memory"].attempts) == ("failed", 4)
    assert h["explodes every time"].attempts == 1
    led = Ledger(ledger)
    with led.session() as s:
        kinds = [e.kind for e in s.scalars(select(Event))]
    led.close()
    assert kinds.count("retry") == 3 and "retry_capped" in kinds


def test_broken_cache_is_refused_before_anything_runs(small_cache, tmp_path, cli):
    specs = tmp_path / "s.yaml"
    specs.write_text(AXIS.format(k=1) + AXIS.format(k=2))
    ledger = tmp_path / "l.sqlite"
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    layer = small_cache.path / small_cache.manifest["files"]["L1"]
    with open(layer, "r+b") as fh:  # a truncated copy, a disk error
        fh.truncate(layer.stat().st_size // 2)
    before = ledger.read_bytes()
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--quiet")
    assert res.returncode == 2
    line = _one_line(res)
    assert "field '--cache': cannot be used" in line and "'L1' cannot be read" in line
    assert "nothing was run" in line
    assert ledger.read_bytes() == before
    assert {h.status for h in hypotheses_by_statement(ledger).values()} == {"queued"}


def test_cache_breaking_mid_run_stops_the_run_and_requeues(tmp_path):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=2)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [
        {"statement": f"slow axis {k}", "probe": "toy_slow_axis",
         "params": {"axis": k + 1, "positive": f"genes:{PLANTED}", "delay": 1.0}}
        for k in range(4)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run", "--cache",
         str(cache.path), "--ledger", str(ledger), "--brainstormer", "none", "--per-iteration",
         "4", "--plugin", "toy_probes", "--quiet"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if campaign_status(str(ledger))["counts"].get("running", 0):
                break
        except Exception:
            pass
        time.sleep(0.05)
    for rel in cache.manifest["files"].values():  # the disk holding the cache goes away
        (cache.path / rel).unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "field '--cache': became unusable during the run" in err
    assert "queued again" in err
    st = campaign_status(str(ledger))
    assert st["counts"].get("failed", 0) == 0  # nothing blamed on the hypotheses
    assert st["counts"].get("queued", 0) >= 3
    assert st["status"] == "stopped" and st["reason"].startswith("the cache is broken")


def test_queued_specs_run_after_the_planned_iterations(small_cache, tmp_path, cli):
    ledger = tmp_path / "l.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text(AXIS.format(k=2))
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    run = ("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
           "--iterations", "1", "--per-iteration", "1", "--brainstormer", "none", "--quiet")
    assert cli(*run).returncode == 0  # the planned iteration is done
    specs.write_text(AXIS.format(k=1))  # a person queues one more
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    status = cli("campaign", "status", "--ledger", str(ledger)).stdout
    assert "queued, not yet run: 1 (#2); they run on the next 'geoscreen campaign run'" in status
    res = cli(*run)
    assert res.returncode == 0, res.stderr
    assert "campaign done" in res.stdout and "2 iterations" in res.stdout
    h = hypotheses_by_statement(ledger)["axis 1 separates the planted genes"]
    assert (h.status, h.iteration_index) == ("done", 2)
    status = cli("campaign", "status", "--ledger", str(ledger)).stdout
    assert "iterations: 2 done of 1 planned (+1 extra for queued hypotheses)" in status
    assert "queued, not yet run" not in status


UPGRADE = """
import sys
from geoscreen.store.ledger import Ledger
Ledger(sys.argv[1]).close()
print("ok")
"""


def test_schema_1_ledger_is_upgraded_in_place(tmp_path, cli):
    ledger = tmp_path / "old.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text("".join(AXIS.format(k=k) for k in (1, 2, 3)))
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    con = sqlite3.connect(ledger)
    con.execute("UPDATE hypotheses SET status = 'done' WHERE id = 1")
    con.execute("UPDATE hypotheses SET status = 'failed', error = 'timed out' WHERE id = 2")
    # what a ledger written by schema 1 looks like
    con.execute("ALTER TABLE hypotheses DROP COLUMN attempts")
    con.execute("DROP TABLE run_leases")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    before = con.execute("SELECT * FROM hypotheses ORDER BY id").fetchall()
    con.close()
    # three processes open it at once: one upgrades, none fails
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADE, str(ledger)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    con = sqlite3.connect(ledger)
    cols = [r[1] for r in con.execute("PRAGMA table_info(hypotheses)")]
    rows = con.execute("SELECT * FROM hypotheses ORDER BY id").fetchall()
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "attempts" in cols and version == str(SCHEMA_VERSION) and "run_leases" in tables
    k = cols.index("attempts")
    assert [r[:k] + r[k + 1:] for r in rows] == [r[:k] for r in before]  # nothing else changed
    assert [r[k] for r in rows] == [1, 1, 0]  # done and failed ran once; queued never
    assert "hypotheses: done 1, failed 1, queued 1" in cli(
        "campaign", "status", "--ledger", str(ledger)).stdout


def test_a_new_ledger_opened_by_several_processes_at_once(tmp_path):
    """A campaign creating its ledger while `campaign status` polls it: both open it (the
    second CREATE TABLE used to fail: 'table hypotheses already exists')."""
    ledger, go = tmp_path / "new.sqlite", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_LEDGER_AT_GO, str(ledger), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(3)  # all imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o.strip() for o, _ in outs] == ["ok"] * 4, [e[-300:] for _, e in outs]


def test_the_switch_to_wal_retries_a_refusal_until_the_lock_is_free(tmp_path):
    """SQLite may refuse a journal-mode switch at once ("database is locked", without waiting
    in its busy handler: two connections that read a new file and both try to switch it).  A
    connection with no busy handler (timeout 0) is refused like that while another holds the
    lock; the ledger's switch retries until the lock is free, and gives up after its timeout."""
    import threading

    from geoscreen.store.ledger import _wal_mode

    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")  # SQLite alone: refused at once
    assert time.monotonic() - t0 < 0.2
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _wal_mode(other.cursor(), 0.2)  # still held when the time is up
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    _wal_mode(other.cursor(), 10.0)
    release.join()
    assert time.monotonic() - t0 >= 0.25
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.execute("BEGIN EXCLUSIVE")  # in WAL mode a switch is not needed: no lock asked for
    _wal_mode(other.cursor(), 0.0)
    holder.execute("COMMIT")
    other.close()
    holder.close()
