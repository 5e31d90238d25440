"""The Slurm executor against a real single-node cluster (munge, slurmctld, slurmd on this
host, started by `.ci/services.sh`): results equal to the local executor, faults recorded with
Slurm's reason and retried, a driver killed with kill -9 re-attaching, `campaign stop`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PLUGIN_DIR, make_cache, missing
from queue_helpers import hypotheses_by_statement, queue_raw_specs
from sqlalchemy import select

from geoscreen.agent.executor import Job
from geoscreen.agent.slurm import (
    SlurmSandbox,
    _Task,
    _task_indices,
    external_id,
    parse_external_id,
)
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Event, Hypothesis, LayerResultRow

PLANTED = ",".join(f"G{i}" for i in range(40))  # the genes make_cache shifts on axis 1


@pytest.fixture(scope="module")
def slurm():
    """A Slurm cluster that answers (sinfo), else skip; under CI a missing cluster fails."""
    ok = bool(os.environ.get("GEOSCREEN_TEST_SLURM"))
    if ok:
        try:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 timeout=20).stdout
            ok = any(s.strip() in ("idle", "mixed", "allocated") for s in out.splitlines())
        except (OSError, subprocess.TimeoutExpired):
            ok = False
    if not ok:
        missing("no Slurm cluster here (start one with: eval \"$(bash .ci/services.sh)\")")


def _events(ledger: Path, kind: str) -> list[str]:
    led = Ledger(ledger)
    try:
        with led.session() as s:
            return list(s.scalars(select(Event.message).where(Event.kind == kind)))
    finally:
        led.close()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR),
                                                         os.environ.get("PYTHONPATH", "")])}


@contextmanager
def _driver(cache, ledger: Path, *extra: str,
            executor: str = "slurm") -> Iterator[subprocess.Popen]:
    """A campaign run in the background (its own session, so kill -9 hits it alone), killed
    on leaving the block if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoscreen.agent.cli", "campaign", "run", "--cache",
         str(cache.path), "--ledger", str(ledger), "--brainstormer", "none", "--plugin",
         "toy_probes", "--executor", executor, "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_submitted(ledger: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> list:
    """Wait until `n` hypotheses are running with a Slurm task id; return those ids."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        ids = [h.external_id for h in hypotheses_by_statement(ledger).values()
               if h.status == "running" and (h.external_id or "").startswith("slurm:")]
        if len(ids) == n:
            return ids
        time.sleep(0.3)
    raise AssertionError(f"{n} Slurm tasks were not recorded in {timeout} s")


def _squeue(task_ids: list[str]) -> list[str]:
    """The given tasks that Slurm still has pending or running."""
    arrays = sorted({t.split("_")[0] for t in task_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)],
                         capture_output=True, text=True).stdout
    live = {line.split()[0] for line in out.splitlines() if line.strip()}
    return [t for t in task_ids if t in live]


def _wait_running(task_ids: list[str], timeout: float = 60) -> None:
    arrays = sorted({t.split("_")[0] for t in task_ids})
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i", "-j",
                              ",".join(arrays)], capture_output=True, text=True).stdout
        if set(task_ids) <= set(out.split()):
            return
        time.sleep(0.3)
    raise AssertionError(f"{task_ids} did not start in {timeout} s")


def _task_ids(ext_ids: list[str]) -> list[str]:
    return [f"{a}_{i}" for a, i, _ in map(parse_external_id, ext_ids)]


# -- pure parts ---------------------------------------------------------------------------------
def test_array_task_ranges_and_external_ids(tmp_path):
    assert _task_indices("3") == [3] and _task_indices("4294967294") == [4294967294]
    assert _task_indices("2-5%2") == [2, 3, 4, 5]
    assert _task_indices("0,4-6") == [0, 4, 5, 6]
    assert _task_indices("0-6:3") == [0, 3, 6]
    ext = external_id("123", 4, tmp_path)
    assert parse_external_id(ext) == ("123", 4, tmp_path)
    assert parse_external_id("slurm:abc_1:/x") is None and parse_external_id("") is None


def _task(tmp_path: Path, hyp_id: int = 7) -> _Task:
    job = Job(hyp_id, {"hash": "h" * 64})
    return _Task(job, "99", 0, tmp_path, "run/0", "h" * 64, time.monotonic())


def test_a_stale_or_foreign_result_file_is_ignored(tmp_path):
    said: list[str] = []
    box = SlurmSandbox(log=said.append)
    t = _task(tmp_path)
    base = {"token": "run/0", "hyp_id": 7, "hash": "h" * 64, "code": 0, "error": "",
            "wall_s": 1.0, "reply": {"ok": False, "reason": "probe said no"}}
    for other in ({"token": "older/0"}, {"hyp_id": 8}, {"hash": "g" * 64}):
        t.result_path.write_text(json.dumps({**base, **other}))
        assert box._read_result(t) is None  # an earlier submission's task, or another's
    assert len(said) == 1 and "ignored" in said[0]  # said once per file, not every poll
    t.result_path.write_text(json.dumps(base))
    res = box._read_result(t)
    assert (res.ok, res.reason) == (False, "probe said no")


def test_a_result_file_over_the_cap_or_not_a_reply_is_refused(tmp_path):
    box = SlurmSandbox(max_reply_bytes=1024)
    t = _task(tmp_path)
    t.result_path.write_text(json.dumps({"token": "run/0", "hyp_id": 7, "hash": "h" * 64,
                                         "reply": {"ok": True, "junk": "x" * 80_000}}))
    assert "over the 0 MiB cap" in box._read_result(t).reason
    box = SlurmSandbox()
    t.result_path.write_text(json.dumps({"token": "run/0", "hyp_id": 7, "hash": "h" * 64,
                                         "reply": {"ok": True, "pickle": "gASV"}}))
    res = box._read_result(t)
    assert not res.ok and res.reason.startswith("invalid reply")
    t.result_path.write_bytes(b"\x80\x04\x95 not json")
    assert box._read_result(t).reason.startswith("invalid reply (result file not JSON")


def test_geoscreen_worker_runs_a_job_file_and_enforces_its_timeout(tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=200, dim=8, n_layers=1)
    base = {"cache_path": str(cache.path), "cache_checksum": cache.checksum, "seed": 1,
            "plugins": ["toy_probes"], "hyp_id": 1, "hash": "x", "token": "t/0",
            "memory_mb": 4096, "threads": 1}
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({**base, "spec": {
        "statement": "a test", "probe": "axis_separation", "layers": [0],
        "params": {"axis": 1, "positive": f"genes:{PLANTED}"}}}))
    res = cli("worker", str(ok), "--result", str(tmp_path / "ok.out"))
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "ok.out").read_text())
    assert out["reply"]["ok"] and out["reply"]["outcome"]["combined"]["p_value"] < 1e-6
    assert (out["token"], out["hyp_id"], out["code"]) == ("t/0", 1, 0)

    hang = tmp_path / "hang.json"
    hang.write_text(json.dumps({**base, "timeout_s": 2, "spec": {
        "statement": "a test", "probe": "toy_hang", "layers": [0]}}))
    t0 = time.monotonic()
    res = cli("worker", str(hang), "--result", str(tmp_path / "hang.out"))
    assert res.returncode == 0 and time.monotonic() - t0 < 30, res.stderr
    out = json.loads((tmp_path / "hang.out").read_text())
    assert out["reply"] is None and out["error"] == "timed out after 2 s"

    # a node whose copy of the cache differs from the manifest gives no result
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**base, "cache_checksum": "0" * 64, "spec": {
        "statement": "a test", "probe": "toy_raise", "layers": [0]}}))
    cli("worker", str(stale), "--result", str(tmp_path / "stale.out"))
    out = json.loads((tmp_path / "stale.out").read_text())
    assert out["reply"] is None and "checksum mismatch" in out["error"]

    res = cli("worker", str(tmp_path / "missing.json"), "--result", str(tmp_path / "x"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "missing.json" in res.stderr
    (tmp_path / "list.json").write_text("[1, 2]")
    res = cli("worker", str(tmp_path / "list.json"), "--result", str(tmp_path / "x"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a job file" in res.stderr
    res = cli("worker", str(ok), "--result", str(tmp_path / "no" / "such" / "dir" / "r.json"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_bad_slurm_options_are_one_line_errors(tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=200, dim=8, n_layers=1)
    conf = tmp_path / "cluster.yaml"
    conf.write_text("partion: short\n")
    ledger = tmp_path / "l.sqlite"
    common = ("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger))
    res = cli(*common, "--executor", "slurm", "--slurm-config", str(conf))
    assert res.returncode == 2 and "did you mean 'partition'" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    res = cli(*common, "--partition", "short")
    assert res.returncode == 2 and "without --executor slurm" in res.stderr
    conf.write_bytes(b"\xff\xfe\x00binary")
    res = cli(*common, "--executor", "slurm", "--slurm-config", str(conf))
    assert res.returncode == 2 and "not a text file" in res.stderr
    conf.write_text("cpus_per_task: 0\n")
    res = cli(*common, "--executor", "slurm", "--slurm-config", str(conf))
    assert res.returncode == 2 and "cpus_per_task" in res.stderr and "Traceback" not in res.stderr
    assert not ledger.exists()


# -- on the cluster -----------------------------------------------------------------------------
def test_options_sbatch_refuses_stop_the_run_with_sbatchs_words(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--iterations", "1", "--executor", "slurm", "--partition", "no-such-partition")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "sbatch refused" in line and "invalid partition" in line.lower()
    h = hypotheses_by_statement(ledger)
    assert h and {x.status for x in h.values()} == {"queued"}  # nothing ran, nothing lost
    assert cli("campaign", "status", "--ledger", str(ledger)).stdout.startswith("stopped")
    assert not list((ledger.parent / "geoscreen-slurm").glob("array-*/result-*"))


def test_slurm_results_equal_the_local_executor(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=2)
    common = ("campaign", "run", "--cache", str(cache.path), "--iterations", "2",
              "--per-iteration", "3", "--seed", "5", "--quiet")
    local, remote = tmp_path / "local.sqlite", tmp_path / "slurm.sqlite"
    res = cli(*common, "--ledger", str(local), "--workers", "2")
    assert res.returncode == 0, res.stderr
    res = cli(*common, "--ledger", str(remote), "--executor", "slurm", "--max-array-tasks", "2",
              "--shared-dir", str(tmp_path / "shared"))
    assert res.returncode == 0, res.stderr
    a, b = hypotheses_by_statement(local), hypotheses_by_statement(remote)
    assert len(a) == 6 and set(a) == set(b)
    cols = ("status", "seed", "p_value", "effect_size", "q_bh", "significant", "online_alpha",
            "online_decision", "test_order", "iteration_index")
    for k in a:
        assert [getattr(a[k], c) for c in cols] == [getattr(b[k], c) for c in cols], k
        assert b[k].external_id.startswith("slurm:") and a[k].external_id is None
    arrays = list((tmp_path / "shared").glob("array-*"))
    assert len(arrays) == 2  # one array per iteration

    def layers(path):
        led = Ledger(path)
        try:
            with led.session() as s:
                rows = s.scalars(select(LayerResultRow)).all()
                state = s.scalars(select(Campaign)).one().fdr_state
                return sorted((r.hypothesis_id, r.layer, r.p_value, r.statistic) for r in rows), \
                    state
        finally:
            led.close()

    assert layers(local) == layers(remote)


def test_slurm_faults_are_recorded_with_slurms_reason_and_retried(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [
        {"statement": "hangs past Slurm's time limit", "probe": "toy_hang", "layers": [0]},
        {"statement": "over Slurm's memory limit", "probe": "toy_memory",
         "params": {"size_mb": 1500}, "layers": [0]},
        {"statement": "explodes", "probe": "toy_raise", "layers": [0]},
        {"statement": "fine", "probe": "axis_separation", "layers": [0],
         "params": {"axis": 1, "positive": f"genes:{PLANTED}"}},
    ])
    conf = tmp_path / "cluster.yaml"
    conf.write_text("slurm:\n  mem_mb: 500\n  poll_s: 1\n  max_poll_s: 3\n")

    def run(*extra: str):
        res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
                  "--brainstormer", "none", "--per-iteration", "4", "--plugin", "toy_probes",
                  "--executor", "slurm", "--slurm-config", str(conf), "--quiet", *extra,
                  timeout=400)
        assert res.returncode == 0, res.stderr
        return hypotheses_by_statement(ledger)

    # the task's own timeout (600 s) is longer than Slurm's (1 min): Slurm's TIMEOUT ends it
    h = run("--timeout", "600", "--slurm-time", "1")
    hang, mem = h["hangs past Slurm's time limit"], h["over Slurm's memory limit"]
    assert hang.status == "failed" and "timed out after" in hang.error, hang.error
    assert "TIMEOUT" in hang.error
    assert mem.status == "failed" and "memory limit exceeded (Slurm task" in mem.error, mem.error
    assert "RuntimeError: probe exploded on purpose" in h["explodes"].error
    assert h["fine"].status == "done" and h["fine"].p_value < 1e-6
    status = cli("campaign", "status", "--ledger", str(ledger)).stdout
    assert "failed for a transient reason: 2" in status

    # the next run retries the two transient failures (here the task's own 2 s timeout ends
    # the hang), never the probe's own error
    h = run("--timeout", "2")
    assert (h["hangs past Slurm's time limit"].attempts, h["over Slurm's memory limit"].attempts,
            h["explodes"].attempts, h["fine"].attempts) == (2, 2, 1, 1)
    assert h["hangs past Slurm's time limit"].error == "timed out after 2 s"


def test_a_task_cancelled_from_outside_is_a_transient_failure(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [{"statement": "hangs", "probe": "toy_hang", "layers": [0]}])
    with _driver(cache, ledger, "--timeout", "300") as proc:
        (ext,) = _wait_submitted(ledger, 1, proc)
        _wait_running(_task_ids([ext]))
        subprocess.run(["scancel", *_task_ids([ext])], check=True)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    h = hypotheses_by_statement(ledger)["hangs"]
    assert h.status == "failed" and "cancelled from outside: scancel" in h.error, h.error
    assert "transient reason: 1" in cli("campaign", "status", "--ledger", str(ledger)).stdout


def test_a_driver_killed_mid_array_reattaches_instead_of_resubmitting(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [
        {"statement": f"slow axis {k}", "probe": "toy_slow_axis", "layers": [0],
         "params": {"axis": k, "positive": f"genes:{PLANTED}", "delay": 6}} for k in (1, 2, 3)])
    with _driver(cache, ledger, "--per-iteration", "3") as proc:
        ext = _wait_submitted(ledger, 3, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to cancel or record anything
        proc.wait()
    assert _squeue(_task_ids(ext)), "the tasks should outlive the driver"
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--per-iteration", "3", "--plugin", "toy_probes",
              "--executor", "slurm", "--quiet")
    assert res.returncode == 0, res.stderr
    h = hypotheses_by_statement(ledger)
    assert all(x.status == "done" and x.attempts == 1 for x in h.values()), \
        {k: (x.status, x.attempts, x.error) for k, x in h.items()}
    assert sorted(x.external_id for x in h.values()) == sorted(ext)  # the same tasks
    assert len(list((ledger.parent / "geoscreen-slurm").glob("array-*"))) == 1  # no resubmit
    assert any("3 hypotheses still have Slurm tasks" in m for m in _events(ledger, "reattached"))
    assert h["slow axis 1"].p_value < 1e-6


def test_campaign_stop_cancels_the_submitted_tasks(slurm, tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [{"statement": f"hangs {k}", "probe": "toy_hang", "layers": [0],
                              "params": {"seconds": 3000 + k}} for k in range(2)])
    # a live driver: stop reaches it (SIGTERM on this host), it cancels and re-queues
    with _driver(cache, ledger, "--per-iteration", "2", "--timeout", "300") as proc:
        ext = _wait_submitted(ledger, 2, proc)
        res = cli("campaign", "stop", "--ledger", str(ledger))
        assert res.returncode == 0 and "sent SIGTERM" in res.stdout, res.stderr
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "campaign stopped: stopped by" in out, (out, err)
    assert _squeue(_task_ids(ext)) == []
    assert {x.status for x in hypotheses_by_statement(ledger).values()} == {"queued"}

    # a killed driver: stop cancels the tasks the ledger records, and queues them again
    with _driver(cache, ledger, "--per-iteration", "2", "--timeout", "300") as proc:
        ext = _wait_submitted(ledger, 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(_squeue(_task_ids(ext))) == 2
    res = cli("campaign", "stop", "--ledger", str(ledger))
    assert res.returncode == 0 and "no run is alive; cancelled 2 Slurm tasks" in res.stdout
    deadline = time.monotonic() + 30
    while _squeue(_task_ids(ext)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _squeue(_task_ids(ext)) == []
    h = hypotheses_by_statement(ledger)
    assert {x.status for x in h.values()} == {"queued"} and all(
        x.external_id is None for x in h.values())


def test_campaign_stop_ends_a_local_run_after_its_running_hypothesis(tmp_path, cli):
    """Without Slurm: stop reaches the local driver (SIGTERM); what runs finishes and is
    recorded, what is queued stays queued, and the next run clears the request."""
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [
        {"statement": f"slow axis {k}", "probe": "toy_slow_axis", "layers": [0],
         "params": {"axis": k, "positive": f"genes:{PLANTED}", "delay": 3}} for k in (1, 2)])
    with _driver(cache, ledger, "--per-iteration", "2", "--workers", "1",
                 executor="local") as proc:
        end = time.monotonic() + 60
        while not any(h.status == "running" for h in hypotheses_by_statement(ledger).values()):
            assert time.monotonic() < end and proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        res = cli("campaign", "stop", "--ledger", str(ledger))
        assert res.returncode == 0 and "sent SIGTERM" in res.stdout, res.stderr
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "campaign stopped" in out, (out, err)
    assert sorted(h.status for h in hypotheses_by_statement(ledger).values()) == ["done", "queued"]
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--plugin", "toy_probes", "--per-iteration", "2",
              "--quiet")
    assert res.returncode == 0 and "campaign done" in res.stdout, res.stderr
    assert {h.status for h in hypotheses_by_statement(ledger).values()} == {"done"}


def test_a_slurm_driver_warns_about_a_sqlite_ledger_on_nfs(tmp_path, monkeypatch):
    from geoscreen.agent.campaign import CampaignConfig, Reporter, make_sandbox
    from geoscreen.store import netfs

    said: list[str] = []

    class Collect(Reporter):
        def message(self, text: str) -> None:
            said.append(text)

    led = Ledger(tmp_path / "l.sqlite")
    try:
        cfg = CampaignConfig(executor="slurm")
        make_sandbox(cfg, led, Collect())
        assert said == []  # a local disk
        nfs = f"36 25 0:45 / {tmp_path} rw,relatime - nfs4 server:/export rw,vers=4.2\n"
        monkeypatch.setattr(netfs, "_mount_table", lambda: nfs)
        make_sandbox(cfg, led, Collect())
        make_sandbox(CampaignConfig(), led, Collect())  # the local executor: no warning
    finally:
        led.close()
    assert len(said) == 1 and "SQLite on nfs4 is unsupported for cluster drivers" in said[0]


@pytest.mark.parametrize("mode, expected", [
    ("truncated_exit", "worker died (exit code 0) without a reply"),
    ("truncated_hang", "timed out after 3 s"),
    ("deep", "invalid reply (not UTF-8 JSON: RecursionError)"),
    ("huge", "invalid reply (announces"),
    ("garbage", "invalid reply (announces"),
])
def test_a_task_answers_a_hostile_worker_with_data_only(tmp_path, cli, mode, expected):
    """What a cluster task writes when its worker forges, truncates or inflates its reply:
    a one-line reason in a JSON result, never the forged bytes."""
    cache = make_cache(tmp_path / "cache", n_genes=200, dim=8, n_layers=1)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "cache_path": str(cache.path), "cache_checksum": cache.checksum, "seed": 1,
        "plugins": ["hostile_probes"], "hyp_id": 3, "hash": "x", "token": "t/3",
        "memory_mb": 4096, "threads": 1, "timeout_s": 3, "max_reply_bytes": 1 << 20,
        "spec": {"statement": "a hostile probe", "probe": "hostile_reply", "layers": [0],
                 "params": {"mode": mode, "marker": str(tmp_path / "pwned")}}}))
    res = cli("worker", str(job), "--result", str(tmp_path / "out.json"), timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["reply"] is None and out["error"].startswith(expected), out["error"]
    assert not (tmp_path / "pwned").exists()


def test_stop_requests_older_than_a_run_are_forgotten_newer_ones_kept(tmp_path):
    from geoscreen.store import queue

    led = Ledger(tmp_path / "l.sqlite")
    try:
        with led.session() as s:
            cid = led.campaign(s).id
            queue.request_stop(s, cid, "old", at=100.0)
            queue.clear_stop_request(s, cid, before=200.0)
            assert queue.stop_requested(s, cid) == ""
            queue.request_stop(s, cid, "new", at=300.0)
            queue.clear_stop_request(s, cid, before=200.0)  # a run that locked at 200
            assert queue.stop_requested(s, cid) == "new"
    finally:
        led.close()


def test_a_start_forgets_an_earlier_task_and_a_late_answer_is_ignored(tmp_path):
    from geoscreen.agent.campaign import Reporter, ledger_callbacks
    from geoscreen.agent.executor import JobResult

    ledger = tmp_path / "l.sqlite"
    (hid,) = queue_raw_specs(ledger, [{"statement": "explodes", "probe": "toy_raise",
                                       "layers": [0]}])
    led = Ledger(ledger)
    try:
        with led.session() as s:
            h = s.get(Hypothesis, hid)
            h.external_id = external_id("5", 0, tmp_path)  # a failed earlier attempt's task
        on_start, on_done = ledger_callbacks(led, Reporter())
        on_start(Job(hid, {"seed": 1}))
        with led.session() as s:
            h = s.get(Hypothesis, hid)
            assert (h.status, h.external_id, h.attempts) == ("running", None, 1)
        on_done(JobResult(hid, False, reason="interrupted (the campaign stopped; scancel)",
                          requeue=True))
        with led.session() as s:  # our own stop: back in the queue, the attempt given back
            h = s.get(Hypothesis, hid)
            assert (h.status, h.attempts) == ("queued", 0)
        on_done(JobResult(hid, False, reason="worker died (late)"))
        with led.session() as s:  # not running any more: the late answer changes nothing
            h = s.get(Hypothesis, hid)
            assert (h.status, h.error) == ("queued", "")
    finally:
        led.close()


def test_slurm_states_are_unknown_when_slurmctld_does_not_answer(tmp_path):
    """A failing scontrol is "nothing known", never "task gone"; scancel lists are compact."""
    from geoscreen.agent.slurm import Slurm, _compact

    assert _compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and _compact([4]) == "4"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("scontrol", "echo 'slurm_load_jobs error: Socket timed out' >&2; exit 1"),
                       ("sacct", "echo 'Slurm accounting storage is disabled' >&2; exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{text}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    assert Slurm(env=env).states("12") is None
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id "
                                      "specified' >&2; exit 1\n")
    assert Slurm(env=env).states("12") == {}  # Slurm answered: it knows no such job


def test_a_node_failure_is_recorded_with_slurms_reason_and_retried(slurm, tmp_path, cli):
    """The node dies under a running task (here: set DOWN by scontrol, which Slurm reports
    as NODE_FAIL, exactly as for a crashed node); the task is recorded with that reason, as a
    transient failure, and the node comes back for the tests after this one."""
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    queue_raw_specs(ledger, [{"statement": "hangs", "probe": "toy_hang", "layers": [0]}])
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True,
                          text=True).stdout.split()
    with _driver(cache, ledger, "--timeout", "300") as proc:
        try:
            (ext,) = _wait_submitted(ledger, 1, proc)
            _wait_running(_task_ids([ext]))
            subprocess.run(["scontrol", "update", f"nodename={node[0]}", "state=down",
                            "reason=geoscreen-test"], check=True)
            out, err = proc.communicate(timeout=120)
        finally:  # the node comes back whatever happened
            subprocess.run(["scontrol", "update", f"nodename={node[0]}", "state=resume"],
                           capture_output=True)
            end = time.monotonic() + 60
            while time.monotonic() < end and "idle" not in subprocess.run(
                    ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout:
                time.sleep(1)
    assert proc.returncode == 0, err
    h = hypotheses_by_statement(ledger)["hangs"]
    assert h.status == "failed" and "NODE_FAIL" in h.error and "worker died" in h.error, h.error
    assert "transient reason: 1" in cli("campaign", "status", "--ledger", str(ledger)).stdout


def test_an_unwritable_shared_dir_is_a_one_line_error_and_nothing_runs(tmp_path, cli):
    cache = make_cache(tmp_path / "cache", n_genes=200, dim=8, n_layers=1)
    ledger = tmp_path / "l.sqlite"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = cli("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
              "--iterations", "1", "--executor", "slurm", "--shared-dir", str(blocker / "sub"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "--shared-dir" in line and "cannot write the job files" in line
    h = hypotheses_by_statement(ledger)
    assert h and {x.status for x in h.values()} == {"queued"}
    assert blocker.read_text() == "not a folder"
