"""No worker, and nothing a probe started, outlives its hypothesis or the campaign (issue 12,
item 3): a timeout kills the worker's whole process tree, `setsid` grandchildren included, and
`kill -9` of the campaign takes every worker tree down with it within a few seconds.

Real campaign processes, real SIGKILL, process states read from `/proc`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import PLUGIN_DIR
from faults import (
    campaign_cmd,
    env,
    kill_all,
    queue,
    read_pids,
    resume_to_done,
    tree,
    wait_gone,
    wait_until,
)

from geoscreen.store.query import list_hypotheses

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
TIMEOUT = 15  # the worker must reach the probe first, also on a loaded machine


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import hostile_probes  # noqa: F401  (registers the probes for queueing)


def _spec(pid_file, release="", seconds=3600.0):
    return {"statement": "leaves a setsid grandchild behind and hangs", "probe": "hostile_pids",
            "params": {"pid_file": str(pid_file), "release": str(release),
                       "seconds": seconds}, "layers": [0]}


def test_timeout_kills_the_whole_worker_tree(small_cache, tmp_path):
    ledger, pid_file = tmp_path / "l.sqlite", tmp_path / "pids"
    queue(ledger, [_spec(pid_file)])
    pids: list[int] = []
    try:
        done = subprocess.run(
            campaign_cmd(small_cache.path, ledger, "--brainstormer", "none", "--plugin",
                         "hostile_probes", "--timeout", str(TIMEOUT)),
            env=env(tmp_path / "work"), capture_output=True, text=True, timeout=120)
        pids = read_pids(pid_file)  # worker, its parent (the warden), setsid grandchild
        survivors, took = wait_gone(pids, 3)
    finally:
        kill_all(pids)
    assert done.returncode == 0, done.stderr
    (row,) = list_hypotheses(str(ledger))
    print(f"\n[timeout] faults injected: 1; processes in the worker's tree: {len(pids)}; "
          f"alive 3 s after the campaign ended: {len(survivors)}")
    assert row["status"] == "failed" and f"timed out after {TIMEOUT} s" in row["error"]
    assert survivors == [], f"survived the timeout: {survivors}"


def test_kill9_of_the_campaign_takes_every_worker_tree_down(small_cache, tmp_path):
    ledger, pid_file, release = tmp_path / "l.sqlite", tmp_path / "pids", tmp_path / "release"
    queue(ledger, [_spec(pid_file, release)])
    args = ("--brainstormer", "none", "--plugin", "hostile_probes", "--timeout", "300")
    proc = subprocess.Popen(campaign_cmd(small_cache.path, ledger, *args),
                            env=env(tmp_path / "work"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        assert wait_until(pid_file.exists, 120, proc), "the probe never started"
        pids = sorted(set(read_pids(pid_file)) | set(tree(proc.pid)))
        pids = [p for p in pids if p != proc.pid]
        os.kill(proc.pid, signal.SIGKILL)  # the campaign alone, not its group
        proc.wait(timeout=30)
        survivors, took = wait_gone(pids, 5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_all(pids)
    print(f"\n[kill -9 of the campaign] faults injected: 1; processes in its worker tree: "
          f"{len(pids)}; alive 5 s later: {len(survivors)}; all gone after {took:.2f} s")
    assert survivors == [], f"outlived the campaign: {survivors}"
    # the interrupted hypothesis was left `running`; the next run re-queues and completes it
    release.touch()
    resume_to_done(small_cache.path, ledger, tmp_path / "work", *args)
