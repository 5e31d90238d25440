"""Helpers of the fault-injection tests: real campaign processes, real signals, `/proc` checks.

Nothing here imports the code under test's process handling: process trees are read straight
from `/proc`, so the tests see what the kernel sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import PLUGIN_DIR

from geoscreen.store.query import campaign_status


def env(work_dir: Path) -> dict[str, str]:
    """The campaign's environment: test plug-ins importable, derived files in `work_dir`."""
    return {**os.environ, "GEOSCREEN_WORK_DIR": str(work_dir), "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}


def campaign_cmd(cache: Path, ledger: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run", "--cache",
            str(cache), "--ledger", str(ledger), "--quiet", *extra]


def queue(ledger: Path, raws: list[dict[str, Any]]) -> None:
    """Queue hand-written specs (the plug-in that registers their probes must be imported)."""
    from geoscreen.hypotheses.loader import parse_spec
    from geoscreen.store.ledger import Ledger

    led = Ledger(ledger)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec(r, f"spec {i}") for i, r in enumerate(raws)])
    led.close()


def state(pid: int) -> str | None:
    """The process state letter from `/proc/PID/stat`, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()[0].decode()


def alive(pid: int) -> bool:
    """Running or sleeping, not gone and not a zombie waiting to be reaped."""
    return state(pid) not in (None, "Z", "X")


def tree(root: int) -> list[int]:
    """Live descendants of `root`, by parent pid, from `/proc`."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return [p for p in out if alive(p)]


def wait_gone(pids: list[int], timeout: float) -> tuple[list[int], float]:
    """(pids still alive after `timeout` seconds, seconds it took them all to go)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = [p for p in pids if alive(p)]
        if not left:
            return [], time.monotonic() - t0
        time.sleep(0.05)
    return [p for p in pids if alive(p)], time.monotonic() - t0


def kill_all(pids: list[int]) -> None:
    """Test clean-up: whatever survived (on a broken sandbox) must not outlive the test."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(cond: Any, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll `cond()` (exceptions count as False) until true, `proc` exits, or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if cond():
                return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


def running_count(ledger: Path) -> int:
    return campaign_status(str(ledger))["counts"].get("running", 0)


def resume_to_done(cache: Path, ledger: Path, work: Path, *args: str) -> None:
    """Rerun the campaign after a fault; its one hypothesis must then be done."""
    from geoscreen.store.query import list_hypotheses

    resumed = subprocess.run(campaign_cmd(cache, ledger, *args), env=env(work),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    (row,) = list_hypotheses(str(ledger))
    assert row["status"] == "done"


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]
