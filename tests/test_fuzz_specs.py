"""Hostile spec files: each is a one-line error (exit 2) in bounded time and memory, and the
ledger `queue add` was pointed at is byte-identical afterwards.

Every input goes through the CLI's entry point in a subprocess capped at 1 GiB of address space,
with a per-input alarm, so an unbounded parse shows up as a MemoryError, a RecursionError or a
timeout rather than a slow machine; a few also run as `geoscreen queue add` processes of their
own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import PLUGIN_DIR

MEMORY_CAP = 1 << 30
TIME_BOUND_S = 20.0
GOOD = "{statement: axis 1 separates A, probe: axis_separation, " \
       "params: {positive: 'genes:G1,G2,G3,G4,G5'}}"


def _write(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p
    return make


def _laughs() -> str:
    out = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for n in "bcdefghi":
        out += f"{n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = n
    return out + "statement: laughs\nprobe: axis_separation\nparams: {positive: *i}\n"


def _sparse(d: Path) -> Path:
    p = d / "huge.yaml"
    with open(p, "wb") as fh:
        fh.write(b"statement: ")
        fh.truncate(200 * 1024 * 1024)  # 200 MB, sparse on disk
    return p


def _fifo(d: Path) -> Path:
    p = d / "fifo.yaml"
    os.mkfifo(p)
    return p


def _dev_zero_link(d: Path) -> Path:
    p = d / "zero.yaml"
    p.symlink_to("/dev/zero")
    return p


def _folder_with_fifo(d: Path) -> Path:
    sub = d / "folder"
    sub.mkdir()
    (sub / "a.yaml").write_text(f"- {GOOD}\n")
    os.mkfifo(sub / "b.yaml")
    return sub


def _spec(**fields: object) -> str:
    base = {"statement": "a statement", "probe": "axis_separation",
            "params": {"positive": "genes:G1,G2,G3,G4,G5"}}
    return json.dumps({**base, **fields})


HOSTILE: list[tuple[str, Callable[[Path], Path]]] = [
    ("billion laughs (1.4 KB of nested aliases)", _write("laughs.yaml", _laughs())),
    ("200 MB file", _sparse),
    ("FIFO", _fifo),
    ("/dev/zero", lambda d: Path("/dev/zero")),
    ("symlink to /dev/zero", _dev_zero_link),
    ("folder holding a FIFO", _folder_with_fifo),
    ("not UTF-8 (Latin-1)", _write("latin1.yaml", "statement: café\n".encode("latin-1"))),
    ("binary garbage", _write("garbage.yaml", bytes(range(256)) * 40)),
    ("YAML nested 1,000 deep", _write("deep.yaml", "[" * 1000 + "]" * 1000)),
    ("YAML mappings nested 100 deep", _write(
        "deep_block.yaml", "".join(" " * k + f"k{k}:\n" for k in range(100)) + " " * 100 + "x")),
    ("JSON nested 50,000 deep", _write("deep.json", "[" * 50_000 + "]" * 50_000)),
    ("5,000-digit integer (YAML)", _write(
        "bigint.yaml", "statement: big\nprobe: axis_separation\nparams: {axis: "
        + "9" * 5000 + "}\n")),
    ("5,000-digit integer (JSON)", _write(
        "bigint.json", '{"statement": "big", "probe": "axis_separation", "params": {"axis": '
        + "9" * 5000 + "}}")),
    ("recursive alias", _write("recursive.yaml", "a: &a [*a]\n")),
    ("python object tag", _write("tag.yaml", "!!python/object/apply:os.system ['true']\n")),
    ("500,000-item list", _write("wide.yaml", "[" + ",".join(["1"] * 500_000) + "]")),
    ("100,000-character statement", _write("long_statement.json",
                                           _spec(statement="x" * 100_000))),
    ("10,000-character rationale", _write("long_rationale.json", _spec(rationale="r" * 10_000))),
    ("1,500 specs in one file", _write("many.yaml", "".join(
        f"- {{statement: spec number {k}, probe: axis_separation, "
        f"params: {{axis: {k % 50 + 1}, positive: 'genes:G1,G2'}}}}\n" for k in range(1500)))),
    ("40,000-gene inline list", _write("genes.json", _spec(params={
        "positive": "genes:" + ",".join(f"G{k}" for k in range(40_000))}))),
    ("empty file", _write("empty.yaml", "")),
]


DRIVER = """
import contextlib, io, json, signal, sys, time
from geoscreen.agent.cli import main


class TookTooLong(Exception):
    pass


def alarm(*_):
    raise TookTooLong()


signal.signal(signal.SIGALRM, alarm)
ledger, bound = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    name, path = json.loads(line)
    err, out = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    signal.alarm(bound)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(["queue", "add", path, "--ledger", ledger])
    except BaseException as exc:  # MemoryError, RecursionError, TookTooLong: not bounded
        rc = f"raised {type(exc).__name__}"
    finally:
        signal.alarm(0)
    print(json.dumps([name, rc, err.getvalue(), time.monotonic() - t0]), flush=True)
"""


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}


def _queue_add(path: Path, ledger: Path) -> tuple[str | int, str, float]:
    """`geoscreen queue add` as its own process (exit code and stderr as a user sees them)."""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "geoscreen.agent.cli", "queue", "add",
                          str(path), "--ledger", str(ledger)], env=_env(), capture_output=True,
                         text=True, timeout=120, preexec_fn=_limits)
    return res.returncode, res.stderr, time.monotonic() - t0


def _queue_add_all(items: list[tuple[str, Path]], ledger: Path,
                   ) -> list[tuple[str, str | int, str, float]]:
    """The CLI's entry point on every input in one capped process (one start-up, not 20)."""
    res = subprocess.run([sys.executable, "-c", DRIVER, str(ledger), str(int(TIME_BOUND_S))],
                         input="".join(json.dumps([n, str(p)]) + "\n" for n, p in items),
                         env=_env(), capture_output=True, text=True, timeout=600,
                         preexec_fn=_limits)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("[")]
    done = {r[0] for r in rows}
    lost = [(n, f"driver died: exit {res.returncode}", res.stderr[-300:], 0.0)
            for n, _ in items if n not in done]
    return [tuple(r) for r in rows] + lost  # type: ignore[misc]


def _snapshot(ledger: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ledger.parent.glob(ledger.name + "*"))}


# these also go through the installed command itself, in processes of their own
OWN_PROCESS = ("billion laughs (1.4 KB of nested aliases)", "FIFO", "/dev/zero")


def test_hostile_spec_files_are_one_line_errors(tmp_path):
    ledger = tmp_path / "ledger" / "l.sqlite"
    ledger.parent.mkdir()
    good = tmp_path / "good.yaml"
    good.write_text(f"- {GOOD}\n")
    rc, err, _ = _queue_add(good, ledger)
    assert rc == 0, err
    before = _snapshot(ledger)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = [(name, make(inputs)) for name, make in HOSTILE]
    results = _queue_add_all(paths, ledger)
    results += [(f"{name} (own process)", *_queue_add(p, ledger))
                for name, p in paths if name in OWN_PROCESS]
    failures = []
    one_line = 0
    for name, rc, err, wall in results:
        lines = err.strip().splitlines()
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
              and "Traceback" not in err and wall < TIME_BOUND_S)
        one_line += ok
        if not ok:
            failures.append(f"{name}: exit {rc} in {wall:.1f} s: {err[-500:]!r}")
    identical = _snapshot(ledger) == before
    print(f"spec-file fuzz: {len(results)} inputs tried / {one_line} one-line errors / "
          f"ledger byte-identical: {'yes' if identical else 'NO'}")
    for name, _rc, err, wall in results:
        print(f"  {wall:5.2f} s  {name}: {err.strip()[-120:]}")
    assert not failures, "\n".join(failures)
    assert identical
