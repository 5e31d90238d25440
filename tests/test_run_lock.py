"""One writing run per ledger: the run lock (a lease row with pid, host and heartbeat).

A second `campaign run` on a ledger that a live run holds exits 2 with one line naming the
holder; the lock of a run that died (its pid is gone, or its heartbeat stopped) is taken over,
and of several runs taking over the same stale lock at once exactly one wins.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PLUGIN_DIR, make_cache
from queue_helpers import queue_raw_specs
from sqlalchemy import insert, select, update

from geoscreen.errors import GeoscreenError
from geoscreen.store.lease import RunLease, current_holder
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Event, Hypothesis, LeaseRow

PLANTED = ",".join(f"G{i}" for i in range(40))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}


def _run_cmd(cache: Path, ledger: Path) -> list[str]:
    return [sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run", "--cache",
            str(cache), "--ledger", str(ledger), "--brainstormer", "none", "--per-iteration",
            "4", "--plugin", "toy_probes", "--quiet"]


def _queue_slow(ledger: Path, n: int, delay: float) -> None:
    queue_raw_specs(ledger, [{"statement": f"slow axis {k}", "probe": "toy_slow_axis",
                              "layers": [0], "params": {"axis": k + 1,
                                                        "positive": f"genes:{PLANTED}",
                                                        "delay": delay}} for k in range(n)])


def _wait_for_holder(ledger: Path, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            led = Ledger(ledger)
            try:
                holder = current_holder(led)
            finally:
                led.close()
        except GeoscreenError:
            holder = None
        if holder is not None:
            return holder
        time.sleep(0.1)
    raise AssertionError("the first campaign never took the run lock")


def test_second_run_is_refused_then_takes_over_a_dead_runs_lock(tmp_path):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    _queue_slow(ledger, n=4, delay=2.5)
    first = subprocess.Popen(_run_cmd(cache.path, ledger), env=_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        holder = _wait_for_holder(ledger, first)
        assert (holder.pid, holder.host) == (first.pid, socket.gethostname())
        second = subprocess.run(_run_cmd(cache.path, ledger), env=_env(), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {first.pid}@{socket.gethostname()} (campaign run) since " in lines[0]
        assert "is in use by another campaign run" in lines[0] and str(ledger) in lines[0]
        status = subprocess.run([sys.executable, "-m", "geoscreen.agent.cli", "campaign",
                                 "status", "--ledger", str(ledger)], env=_env(),
                                capture_output=True, text=True, timeout=120)
        assert f"run lock: pid {first.pid}@" in status.stdout
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the campaign dies holding the lock
        first.wait(timeout=60)
    led = Ledger(ledger)
    try:
        assert current_holder(led).pid == first.pid  # left behind by the kill
    finally:
        led.close()
    third = subprocess.run(_run_cmd(cache.path, ledger), env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    led = Ledger(ledger)
    try:
        with led.session() as s:
            events = [e.message for e in s.scalars(select(Event).where(
                Event.kind == "lock_taken_over"))]
            hyps = list(s.scalars(select(Hypothesis)))
        assert current_holder(led) is None  # released at the end
    finally:
        led.close()
    assert len(events) == 1 and f"pid {first.pid}@" in events[0]
    assert "is no longer running" in events[0]
    assert [h.status for h in hyps] == ["done"] * 4  # each tested once, none lost


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "lease.sqlite")


def test_live_foreign_lock_refused_expired_one_taken_over_and_heartbeat(tmp_path):
    led = _ledger(tmp_path)
    now = time.time()
    with led.session() as s:
        s.execute(insert(LeaseRow).values(name="run", token="t-other", pid=4242,
                                          host="other-host", purpose="campaign run",
                                          started=now - 50, heartbeat=now - 5))
    with pytest.raises(GeoscreenError) as err:
        RunLease(led).acquire()
    assert "pid 4242@other-host (campaign run)" in str(err.value)
    assert "last heartbeat 5 s ago" in str(err.value)
    with led.session() as s:  # the other host's run crashed: no heartbeat for an hour
        s.execute(update(LeaseRow).values(heartbeat=now - 3600))
    lease = RunLease(led, heartbeat_s=0.1).acquire()
    try:
        assert "took over the run lock of pid 4242@other-host" in lease.took_over
        assert "no heartbeat for 3600 s" in lease.took_over
        first = current_holder(led).heartbeat
        time.sleep(0.6)
        assert current_holder(led).heartbeat > first  # renewed while held
        assert current_holder(led).pid == os.getpid() and not lease.lost
        # frozen for too long, another run took over: the next heartbeat notices
        with led.session() as s:
            s.execute(update(LeaseRow).values(token="t-new", pid=777, host="third-host"))
        time.sleep(0.6)
        assert "another run took over the run lock: pid 777@third-host" in lease.lost
    finally:
        lease.release()
    assert current_holder(led).token == "t-new"  # release only frees its own lock
    led.close()


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.lease import RunLease
    from geoscreen.store.ledger import Ledger

    led = Ledger(sys.argv[1])
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.005)
    try:
        lease = RunLease(led).acquire()
    except GeoscreenError as exc:
        print("refused", exc)
    else:
        print("won")
        time.sleep(3)  # hold it while the others try
        lease.release()
""")


def test_racing_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    led = _ledger(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with led.session() as s:  # a run on this host whose process has exited
        s.execute(insert(LeaseRow).values(name="run", token="t-dead", pid=int(dead.stdout),
                                          host=socket.gethostname(), purpose="campaign run",
                                          started=time.time(), heartbeat=time.time()))
    led.close()
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "lease.sqlite"),
                                str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(4)]
    time.sleep(3)  # let them all import and wait at the start line
    go.touch()
    outs = [p.communicate(timeout=120) for p in racers]
    results = [o.strip().split(" ")[0] for o, _ in outs]
    assert all(p.returncode == 0 for p in racers), [e for _, e in outs]
    assert results.count("won") == 1, outs
    assert results.count("refused") == 3
    assert all("is in use by another campaign run" in o for o, _ in outs if o.startswith("ref"))
