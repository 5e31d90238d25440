"""SIGTERM / SIGINT sent to the campaign's whole process group (`timeout`, systemd, `kill --
-PGID`, Ctrl-C) must not kill the workers: the campaign decides.  The running hypotheses finish,
the campaign exits 0, and a resumed campaign ends with exactly the ledger of an uninterrupted one.
A second Ctrl-C aborts: the hypotheses it interrupts go back to the queue, not to `failed`.

Real campaign processes in their own session, real signals to the group (issue 12, item 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import PLUGIN_DIR, make_cache
from faults import (
    campaign_cmd,
    env,
    kill_all,
    queue,
    read_pids,
    resume_to_done,
    running_count,
    tree,
    wait_gone,
    wait_until,
)
from test_resume import _fingerprint

from geoscreen.store.query import campaign_status, list_hypotheses

ITERATIONS, PER_IT = 2, 3
ARGS = ("--iterations", str(ITERATIONS), "--per-iteration", str(PER_IT), "--seed", "11",
        "--workers", "2", "--brainstormer", "none", "--plugin", "toy_probes")
PLANTED = ",".join(f"G{i}" for i in range(40))
# hand-written, so the test does not depend on what a brainstormer proposes; each takes >= 1.5 s
SPECS = [{"statement": f"singular axis {axis} separates the planted genes",
          "probe": "toy_slow_axis",
          "params": {"axis": axis, "positive": f"genes:{PLANTED}", "delay": 0.5}}
         for axis in range(1, ITERATIONS * PER_IT + 1)]


def _queued_ledger(path):
    import toy_probes  # noqa: F401  (registers toy_slow_axis for queueing)

    queue(path, SPECS)
    return path


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """A cache, and the ledger of the same campaign run without interruption."""
    root = tmp_path_factory.mktemp("signals")
    cache = make_cache(root / "cache", zero_rows=(398, 399))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGIN_DIR))
        ref = _queued_ledger(root / "reference.sqlite")
    done = subprocess.run(campaign_cmd(cache.path, ref, *ARGS), env=env(root / "work"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return cache, root, _fingerprint(ref)


def _signal_group_mid_iteration(cache, ledger, work, sig, iteration) -> tuple[int, str, int]:
    """Start the campaign, signal its whole group while `iteration` has workers running;
    return (exit code, stdout, workers alive at the signal)."""
    proc = subprocess.Popen(campaign_cmd(cache.path, ledger, *ARGS), env=env(work),
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        def caught() -> bool:
            st = campaign_status(str(ledger))
            workers[:] = tree(proc.pid)
            return (st["current_iteration"] or 0) >= iteration and \
                st["counts"].get("running", 0) >= 1 and bool(workers)

        assert wait_until(caught, 300, proc), "never caught the campaign with a worker running"
        time.sleep(0.3)  # the worker is past its start-up, inside the probe
        workers[:] = tree(proc.pid)
        os.killpg(proc.pid, sig)  # the campaign and, unless they left the group, its workers
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_all(workers)
    assert proc.returncode == 0, err
    return proc.returncode, out, len(workers)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_then_resume_matches_uninterrupted(bed, tmp_path, monkeypatch, sig):
    cache, root, reference = bed
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    ledger, work = _queued_ledger(tmp_path / "l.sqlite"), root / "work"
    name = signal.Signals(sig).name
    injected, alive_at_signal = 0, 0
    for iteration in (1, 2):
        _code, out, n = _signal_group_mid_iteration(cache, ledger, work, sig, iteration)
        injected += 1
        alive_at_signal += n
        assert f"campaign stopped: stopped by {name}" in out
        rows = list_hypotheses(str(ledger))
        killed = [r for r in rows if "signal" in (r["error"] or "")]
        assert killed == [], killed  # no worker died of the group's signal
        assert running_count(ledger) == 0  # what was running finished and was committed
    resumed = subprocess.run(campaign_cmd(cache.path, ledger, *ARGS), env=env(work),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    exact = _fingerprint(ledger) == reference
    print(f"\n[{name} to the process group] faults injected: {injected}; worker processes "
          f"running at the signals: {alive_at_signal}; hypotheses failed by it: 0; "
          f"resumed exactly: {int(exact)}/1")
    assert exact
    assert campaign_status(str(ledger))["status"] == "done"


def test_second_ctrl_c_requeues_what_it_interrupts(tmp_path, small_cache, monkeypatch):
    """Ctrl-C twice: the campaign aborts (exit 130), kills its workers' whole trees, and the
    interrupted hypothesis is `queued` again; the next run completes it."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import hostile_probes  # noqa: F401  (registers the probes for queueing)

    ledger, pid_file, release = tmp_path / "l.sqlite", tmp_path / "pids", tmp_path / "release"
    queue(ledger, [{"statement": "hangs until released", "probe": "hostile_pids",
                    "params": {"pid_file": str(pid_file), "release": str(release)},
                    "layers": [0]}])
    args = ("--brainstormer", "none", "--plugin", "hostile_probes", "--timeout", "120")
    proc = subprocess.Popen(campaign_cmd(small_cache.path, ledger, *args),
                            env=env(tmp_path / "work"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert wait_until(pid_file.exists, 120, proc), "the probe never started"
        time.sleep(0.2)
        pids = sorted(set(read_pids(pid_file)) | set(tree(proc.pid)))
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _out, _err = proc.communicate(timeout=60)
        survivors, _ = wait_gone(pids, 5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_all(pids)
    assert proc.returncode == 130  # aborted: typer's exit code for KeyboardInterrupt
    (row,) = list_hypotheses(str(ledger))
    print(f"\n[Ctrl-C twice] faults injected: 1; processes in the worker's tree: {len(pids)}; "
          f"alive 5 s later: {len(survivors)}; interrupted hypothesis now: {row['status']}")
    assert survivors == []
    assert row["status"] == "queued" and not row["error"]
    release.touch()
    resume_to_done(small_cache.path, ledger, tmp_path / "work", *args)
