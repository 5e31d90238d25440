"""The sandbox: probes that raise, hang or exhaust memory fail alone; the campaign goes on."""

from __future__ import annotations

import sys

import pytest
from conftest import PLUGIN_DIR

from geoscreen.agent.campaign import CampaignConfig, run_campaign
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.store.ledger import Ledger
from geoscreen.store.query import list_hypotheses, show_hypothesis


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import toy_probes  # noqa: F401  (registers the toy probes in this process too)


def _queue(ledger_path, raws):
    led = Ledger(ledger_path)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec(r, f"spec {i}") for i, r in enumerate(raws)])
    led.close()


def test_failures_are_recorded_and_campaign_continues(small_cache, tmp_path):
    planted = ",".join(f"G{i}" for i in range(40))
    raws = [
        {"statement": "explodes", "probe": "toy_raise", "layers": [0]},
        {"statement": "hangs forever", "probe": "toy_hang", "layers": [0]},
        {"statement": "eats memory", "probe": "toy_memory", "params": {"size_mb": 6000},
         "layers": [0]},
        {"statement": "a real test still runs", "probe": "axis_separation",
         "params": {"axis": 1, "positive": f"genes:{planted}"}},
    ]
    ledger = tmp_path / "l.sqlite"
    _queue(ledger, raws)
    cfg = CampaignConfig(iterations=5, per_iteration=4, brainstormer="none", workers=2,
                         timeout_s=8, memory_mb=1500, plugins=["toy_probes"])
    summary = run_campaign(small_cache.path, ledger, cfg)
    assert summary.status == "done" and summary.reason == "the queue is empty"
    rows = {r["statement"]: r for r in list_hypotheses(str(ledger))}
    assert rows["explodes"]["status"] == "failed"
    assert "RuntimeError: probe exploded on purpose" in rows["explodes"]["error"]
    assert rows["hangs forever"]["status"] == "failed"
    assert "timed out after 8 s" in rows["hangs forever"]["error"]
    assert rows["eats memory"]["status"] == "failed"
    assert "memory limit exceeded (1500 MB" in rows["eats memory"]["error"]
    real = rows["a real test still runs"]
    assert real["status"] == "done" and real["p_value"] < 1e-6 and real["significant"]
    detail = show_hypothesis(str(ledger), real["hypothesis_id"])
    assert [r["layer"] for r in detail["layers_detail"]] == ["L0", "L1", "L2"]
    assert detail["provenance"]["cache_checksum"] == small_cache.checksum
    assert detail["provenance"]["resources"]["positive"]["present"] == 40
    assert all(r["seed"] is not None for r in detail["layers_detail"])


def test_same_seed_same_results_and_zero_rows_excluded(small_cache, tmp_path):
    raw = {"statement": "pairs are close", "probe": "pair_proximity",
           "params": {"pairs": "pairs:G0-G1,G2-G3,G4-G5,G6-G7,G398-G399,G8-G9",
                      "n_permutations": 199}}
    outs = []
    for k in range(2):
        ledger = tmp_path / f"l{k}.sqlite"
        _queue(ledger, [raw])
        run_campaign(small_cache.path, ledger,
                     CampaignConfig(iterations=1, per_iteration=1, brainstormer="none", seed=7))
        outs.append(show_hypothesis(str(ledger), 1))
    a, b = outs
    assert a["p_value"] == b["p_value"]
    assert [r["statistic"] for r in a["layers_detail"]] == \
        [r["statistic"] for r in b["layers_detail"]]
    # G398 and G399 are all-zero rows: their pair is excluded by default
    assert a["layers_detail"][0]["n"] == 5
    assert a["provenance"]["resources"]["pairs"]["requested"] == 6
    assert a["provenance"]["resources"]["pairs"]["present"] == 5


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX address-space limit")
def test_worker_limits_do_not_leak_into_parent(small_cache, tmp_path):
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    ledger = tmp_path / "l.sqlite"
    _queue(ledger, [{"statement": "eats memory", "probe": "toy_memory",
                     "params": {"size_mb": 4000}, "layers": [0]}])
    run_campaign(small_cache.path, ledger, CampaignConfig(
        iterations=1, per_iteration=1, brainstormer="none", memory_mb=1200,
        plugins=["toy_probes"]))
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def _jobs(cache, probes, start=0):
    from geoscreen.agent.executor import Job

    return [Job(start + i, {"spec": {"statement": f"toy job {i}", "probe": probe,
                                     "layers": [0], "params": params},
                            "cache_path": str(cache.path), "cache_checksum": cache.checksum,
                            "seed": i, "plugins": ["toy_probes"], "work_dir": None,
                            "allowed_files": None, "split": None, "combine_any": "cauchy"})
            for i, (probe, params) in enumerate(probes)]


def _run(sandbox, jobs):
    done = {}
    sandbox.run(jobs, lambda j: None, lambda r: done.__setitem__(r.hyp_id, r), lambda: False)
    return done


def test_persistent_workers_fork_a_fresh_worker_per_hypothesis(small_cache):
    """reuse=True: two wardens serve every hypothesis of both runs; each hypothesis still runs
    in a process of its own (nothing it leaves behind reaches the next); a failure does not
    cost the warden, a timeout does; close() ends the wardens."""
    import os

    from geoscreen.agent.executor import ProcessSandbox

    sandbox = ProcessSandbox(workers=2, timeout_s=20, memory_mb=2000)
    first = _run(sandbox, _jobs(small_cache, [("toy_pid", {})] * 6))
    assert all(r.ok for r in first.values())
    extras = [r.outcome.layers[0].extra for r in first.values()]
    assert len({e["pid"] for e in extras}) == 6  # a fresh process per hypothesis
    wardens = {e["ppid"] for e in extras}
    assert len(wardens) == 2 and not any(e["leaked"] for e in extras)
    assert sandbox.servers_started == 2
    second = _run(sandbox, _jobs(small_cache, [("toy_pid", {}), ("toy_raise", {}),
                                                ("toy_pid", {})], start=10))
    assert not second[11].ok and "probe exploded on purpose" in second[11].reason
    assert {second[i].outcome.layers[0].extra["ppid"] for i in (10, 12)} <= wardens
    assert sandbox.servers_started == 2  # the next iteration reuses them; a failure costs none
    sandbox.timeout_s = 5
    third = _run(sandbox, _jobs(small_cache, [("toy_hang", {"seconds": 60})], start=20)
                 + _jobs(small_cache, [("toy_pid", {})], start=30))
    assert "timed out after 5 s" in third[20].reason and third[30].ok
    sandbox.timeout_s = 20
    after = _run(sandbox, _jobs(small_cache, [("toy_pid", {})] * 2, start=40))
    assert all(r.ok for r in after.values())
    assert sandbox.servers_started == 3  # the timed-out warden was replaced, once
    sandbox.close()
    for pid in wardens:
        try:
            os.kill(pid, 0)
            alive = open(f"/proc/{pid}/stat").read().split()[2] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        assert not alive
    fresh = ProcessSandbox(workers=1, timeout_s=20, reuse=False)
    out = _run(fresh, _jobs(small_cache, [("toy_pid", {})] * 2))
    assert all(r.ok for r in out.values()) and fresh.servers_started == 0


def test_layer_tasks_give_the_results_of_whole_hypotheses(tmp_path):
    """With fewer hypotheses than workers can take, hypotheses are cut into layer tasks; the
    parts combine (any, trend over the null sets' draws) into exactly the unsplit results."""
    from conftest import make_cache

    from geoscreen.agent.executor import ProcessSandbox

    cache = make_cache(tmp_path / "c6", n_layers=6, n_genes=300)
    genes = ",".join(f"G{i}" for i in range(40))
    specs = [("axis_separation", {"axis": 1, "positive": f"genes:{genes}"}, "any"),
             ("gene_drift", {"genes": f"genes:{genes}", "n_permutations": 199,
                             "null": "gene_shuffle"}, "trend"),
             ("spectrum", {"measure": "participation_ratio", "n_bootstrap": 0}, "trend")]
    jobs = []
    from geoscreen.agent.executor import Job

    for i, (probe, params, across) in enumerate(specs):
        # any order: the parts come back in the spec's order, as a whole hypothesis has them
        layers = [5, 0, 3, 1, 4, 2] if probe == "axis_separation" else \
            "all" if probe != "gene_drift" else [1, 2, 3, 4, 5]
        jobs.append(Job(i, {"spec": {"statement": f"{probe} spec", "probe": probe,
                                     "params": params, "layers": layers,
                                     "across_layers": across, "alternative": "greater"},
                            "cache_path": str(cache.path), "cache_checksum": cache.checksum,
                            "seed": 100 + i, "plugins": [], "work_dir": str(tmp_path / "w"),
                            "allowed_files": None, "split": None, "combine_any": "cauchy"}))
    out = {}
    for split in (True, False):
        with ProcessSandbox(workers=3, timeout_s=120, split=split) as sandbox:
            out[split] = _run(sandbox, jobs)
    for i in range(3):
        a, b = out[True][i], out[False][i]
        assert a.ok and b.ok, (a.reason, b.reason)
        assert a.outcome.provenance["layer_tasks"] == 2 and "layer_tasks" not in \
            b.outcome.provenance
        assert a.outcome.combined == b.outcome.combined
        strip = [{k: v for k, v in r.model_dump().items() if k != "runtime_s"}
                 for r in a.outcome.layers]
        assert strip == [{k: v for k, v in r.model_dump().items() if k != "runtime_s"}
                         for r in b.outcome.layers]
    assert out[True][1].outcome.combined.method == out[False][1].outcome.combined.method


def test_layer_split_plans(small_cache):
    """How hypotheses are cut: not when there are enough hypotheses for the workers, not when a
    layer is named twice (the worker would run it twice), in the spec's order otherwise."""
    from geoscreen.agent.executor import Job, LayerSplit

    def job(i, layers):
        return Job(i, {"spec": {"statement": f"spec {i}", "probe": "axis_separation",
                                "params": {"axis": 1, "positive": "genes:G1,G2,G3"},
                                "layers": layers}, "cache_path": str(small_cache.path),
                       "seed": i})

    assert LayerSplit([job(0, "all")], 2).parts == {0: [["L0"], ["L1"], ["L2"]]}
    assert LayerSplit([job(0, [2, 0])], 2).parts == {0: [["L2"], ["L0"]]}
    assert LayerSplit([job(0, ["last", 2])], 2).parts == {0: [[]]}  # L2 twice: whole
    three = LayerSplit([job(i, "all") for i in range(3)], 2)  # ceil(4 / 3) = 2 tasks each
    assert three.parts[0] == [["L0", "L1"], ["L2"]] and three.tasks == 6
    many = LayerSplit([job(i, "all") for i in range(4)], 2)
    assert many.tasks == 4 and all(p == [[]] for p in many.parts.values())
    # longest first: the 2-layer tasks, then the 1-layer ones, each in the hypotheses' order
    assert [(t.hyp_id, t.payload["only_layers"]) for t in three.task_jobs()] == \
        [(0, ["L0", "L1"]), (1, ["L0", "L1"]), (2, ["L0", "L1"]), (0, ["L2"]), (1, ["L2"]),
         (2, ["L2"])]
    # a whole-stack probe's one layer reads every layer of the cache: it goes first
    profile = Job(9, {"spec": {"statement": "profile", "probe": "layer_profile",
                               "params": {"profile": {"probe": "set_cohesion", "params": {
                                   "gene_set": "genes:G1,G2,G3"}}},
                               "layers": ["last"]},
                      "cache_path": str(small_cache.path), "seed": 9})
    mixed = LayerSplit([job(0, "all"), profile], 2)
    assert mixed.weight == {0: 1, 9: 3}
    assert [(t.hyp_id, t.payload.get("only_layers")) for t in mixed.task_jobs()] == \
        [(9, None), (0, ["L0", "L1"]), (0, ["L2"])]
