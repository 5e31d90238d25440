"""The error contract for ledgers that cannot be used: locked by another writer, read-only, or
damaged.  Every command that opens a ledger answers with one line naming the file and the fix,
and exit code 2 — never a traceback (a locked ledger used to give 112 lines after 30 s)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PLUGIN_DIR

GENES = ",".join(f"G{i}" for i in range(40))
SPEC = "- {{statement: axis {k} separates the planted genes, probe: axis_separation, " \
       "params: {{axis: {k}, positive: 'genes:" + GENES + "'}}}}\n"

DRIVER = """
import contextlib, io, json, sys
from geoscreen.agent.cli import main

for line in sys.stdin:
    argv = json.loads(line)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except BaseException as exc:
        rc = f"raised {type(exc).__name__}: {exc}"
    print(json.dumps([argv[:2], rc, err.getvalue()]), flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200", **extra}


def _commands(ledger: Path, cache: Path, tmp: Path) -> list[list[str]]:
    """Every command that opens a ledger."""
    spec = tmp / "new.yaml"
    spec.write_text(SPEC.format(k=9))
    L = str(ledger)
    return [
        ["campaign", "status", "--ledger", L],
        ["campaign", "run", "--cache", str(cache), "--ledger", L, "--brainstormer", "none"],
        ["campaign", "replicate", "--ledger", L, "--cache", str(cache)],
        ["queue", "add", str(spec), "--ledger", L],
        ["queue", "list", "--ledger", L],
        ["queue", "approve", "1", "--ledger", L],
        ["queue", "reject", "1", "--ledger", L],
        ["ledger", "list", "--ledger", L],
        ["ledger", "show", "1", "--ledger", L],
        ["ledger", "export", "--ledger", L, "-o", str(tmp / "out.csv")],
        ["ledger", "diff", L, L],
        ["ledger", "fdr", "--ledger", L],
        ["report", "--ledger", L, "-o", str(tmp / "report.html")],
        ["llm", "usage", "--ledger", L],
    ]


def _run_all(commands: list[list[str]], env: dict[str, str] | None = None,
             prefix: list[str] | None = None) -> list[tuple[list[str], object, str]]:
    """Each command through the CLI's entry point, in one process (one start-up)."""
    res = subprocess.run([*(prefix or []), sys.executable, "-c", DRIVER],
                         input="".join(json.dumps(c) + "\n" for c in commands),
                         env=env or _env(), capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("[[")]
    assert len(rows) == len(commands), res.stderr[-2000:]
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _cli(*args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None):
    return subprocess.run([*(prefix or []), sys.executable, "-m", "geoscreen.agent.cli", *args],
                          env=env or _env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def ledger(tmp_path: Path, small_cache) -> Path:
    path = tmp_path / "ledger" / "l.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text("".join(SPEC.format(k=k) for k in (1, 2, 3)))
    res = _cli("queue", "add", str(specs), "--ledger", str(path))
    assert res.returncode == 0, res.stderr
    return path


def _check_one_line(results, ledger: Path, phrase: str, fix: str) -> None:
    bad = []
    for argv, rc, err in results:
        lines = err.strip().splitlines()
        if not (rc == 2 and len(lines) == 1 and str(ledger) in lines[0] and phrase in lines[0]
                and fix in lines[0] and "Traceback" not in err):
            bad.append(f"{' '.join(argv)}: exit {rc}: {err[-400:]!r}")
    assert not bad, "\n".join(bad)


def test_damaged_ledger_every_command(ledger, small_cache, tmp_path):
    data = bytearray(ledger.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 8 * page
    # pages 2.. overwritten (a bad disk, a half-copied file); page 1 (header, schema) intact
    data[page:] = bytes((i * 7919) % 251 for i in range(len(data) - page))
    ledger.write_bytes(bytes(data))
    for extra in ("-wal", "-shm"):
        Path(str(ledger) + extra).unlink(missing_ok=True)
    before = ledger.read_bytes()
    results = _run_all(_commands(ledger, small_cache.path, tmp_path))
    _check_one_line(results, ledger, "", "restore it from a backup")
    assert all("is damaged" in e or "not a readable ledger" in e for _, _, e in results)
    assert ledger.read_bytes() == before
    res = _cli("ledger", "show", "1", "--ledger", str(ledger))  # and as a process of its own
    _check_one_line([(["ledger", "show"], res.returncode, res.stderr)], ledger, "damaged",
                    "sqlite3 FILE .recover")


def test_locked_ledger_writers_get_one_line_readers_go_on(ledger, small_cache, tmp_path):
    holder = sqlite3.connect(ledger, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    holder.execute("UPDATE meta SET value = value")
    try:
        env = _env(GEOSCREEN_LEDGER_BUSY_TIMEOUT="1")
        cmds = _commands(ledger, small_cache.path, tmp_path)
        writers = [c for c in cmds if c[:2] in (["campaign", "run"], ["queue", "add"])]
        _check_one_line(_run_all(writers, env), ledger, "is locked: another process held a "
                        "write transaction on it for more than 1 s", "then retry")
        res = _cli("queue", "add", writers[1][2], "--ledger", str(ledger), env=env)
        _check_one_line([(["queue", "add"], res.returncode, res.stderr)], ledger, "is locked",
                        "then retry")
        readers = [c for c in cmds if c[:2] in (["campaign", "status"], ["ledger", "list"],
                                                 ["ledger", "show"], ["queue", "list"])]
        assert all(rc == 0 for _, rc, _ in _run_all(readers, env))  # WAL: reads go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _read_only_prefix() -> list[str] | None:
    """As root, permission bits do not stop writes: drop the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_read_only_ledger_writers_get_one_line_readers_go_on(ledger, small_cache, tmp_path):
    prefix = _read_only_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: a read-only file cannot be simulated")
    os.chmod(ledger, 0o444)
    try:
        before = ledger.read_bytes()
        cmds = _commands(ledger, small_cache.path, tmp_path)
        writers = [c for c in cmds if c[:2] in (["campaign", "run"], ["queue", "add"],
                                                 ["campaign", "replicate"])]
        writers = [c for c in writers if c[1] != "replicate"]  # refused earlier: no discoveries
        _check_one_line(_run_all(writers, prefix=prefix), ledger, "is read-only",
                        "make the file and its folder writable")
        readers = [c for c in cmds if c[:2] in (["campaign", "status"], ["ledger", "list"],
                                                 ["ledger", "show"], ["ledger", "export"])]
        assert all(rc == 0 for _, rc, _ in _run_all(readers, prefix=prefix))
        assert ledger.read_bytes() == before
    finally:
        os.chmod(ledger, 0o644)
