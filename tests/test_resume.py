"""Kill a running campaign with SIGKILL mid-iteration, resume it, and get the same ledger as an
uninterrupted run with the same seed — no test repeated, none lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import PLUGIN_DIR

from geoscreen.store.query import campaign_status, list_hypotheses, show_hypothesis

ITERATIONS, PER_IT = 4, 3


def _cmd(cache, ledger, iterations=ITERATIONS):
    return [sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run", "--cache", str(cache),
            "--ledger", str(ledger), "--iterations", str(iterations), "--per-iteration",
            str(PER_IT), "--seed", "11", "--workers", "2", "--plugin", "toy_probes", "--quiet"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}


def _fingerprint(ledger):
    out = []
    for r in list_hypotheses(str(ledger)):
        d = show_hypothesis(str(ledger), r["hypothesis_id"])
        out.append((d["hash"], d["iteration"], d["status"], d["source"], d["p_value"],
                    d["error"].split(" at ")[0],
                    tuple((x["layer"], x["statistic"], x["p_value"], x["seed"])
                          for x in d["layers_detail"])))
    return out


def test_sigkill_mid_iteration_then_resume_matches_uninterrupted(small_cache, tmp_path):
    env = _env()
    ref = tmp_path / "reference.sqlite"
    done = subprocess.run(_cmd(small_cache.path, ref), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(_cmd(small_cache.path, killed), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if not killed.exists():
            continue
        try:  # campaign status reads the ledger while the campaign writes it (WAL)
            st = campaign_status(str(killed))
        except Exception:
            continue
        cur = st["current_iteration"]
        # mid-iteration: iteration >= 2 has its proposals committed and a hypothesis running
        if cur and cur >= 2 and st["counts"].get("running", 0) >= 1:
            caught = st
            os.killpg(proc.pid, signal.SIGKILL)  # the campaign and its workers, mid-iteration
            break
    proc.wait(timeout=60)
    assert caught is not None, "never caught the campaign mid-iteration"
    assert proc.returncode == -signal.SIGKILL
    st = campaign_status(str(killed))
    assert st["counts"].get("running", 0) >= 1  # left behind by the kill

    resumed = subprocess.run(_cmd(small_cache.path, killed), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _fingerprint(ref), _fingerprint(killed)
    hashes = [x[0] for x in b]
    assert len(hashes) == len(set(hashes)) == ITERATIONS * PER_IT  # no duplicates, none lost
    assert a == b
    assert any(x[2] == "done" for x in b) and campaign_status(str(killed))["status"] == "done"


def test_sigterm_finishes_running_hypothesis_and_exits_zero(small_cache, tmp_path):
    ledger = tmp_path / "l.sqlite"
    # many iterations, so the campaign cannot finish on its own before the signal arrives
    proc = subprocess.Popen(_cmd(small_cache.path, ledger, iterations=50), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            if campaign_status(str(ledger))["counts"].get("running", 0) >= 1:
                break
        except Exception:
            continue
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "campaign stopped: stopped by SIGTERM" in out
    st = campaign_status(str(ledger))
    assert st["counts"].get("running", 0) == 0  # what was running finished and was committed
    assert st["status"] == "stopped"
