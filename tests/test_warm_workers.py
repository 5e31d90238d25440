"""Loading ahead in a persistent worker's warden: verified stored SVDs and resource indexes
kept in memory and inherited by the workers it forks, used only while the files they were
verified against are unchanged, and never changing a result."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_cache

from geoscreen.probes import svd_store
from geoscreen.probes.context import ProbeContext


@pytest.fixture(autouse=True)
def _empty_table():
    svd_store._WARM.clear()
    yield
    svd_store._WARM.clear()


def _stored(tmp_path, layers=("L0", "L1", "L2")):
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    work = tmp_path / "work"
    ctx = ProbeContext(cache=cache, seed=0, work_dir=work)
    svds = {x: ctx.svd(x) for x in layers}
    assert ctx.svd_sources == {"computed": len(layers)}
    return cache, work, svds


def test_a_warm_svd_is_the_verified_stored_one_and_is_used_as_is(tmp_path):
    cache, work, svds = _stored(tmp_path)
    assert svd_store.warm(cache, ["L0", "L1"], work, 1 << 30) == ["L0", "L1"]
    assert svd_store.warm(cache, ["L0", "L1"], work, 1 << 30) == []  # already there
    ctx = ProbeContext(cache=cache, seed=0, work_dir=work)
    got = ctx.svd("L0")
    key = svd_store.content_key(cache, "L0", False)
    assert got.U is svd_store._WARM[key][2][0]  # the table's own arrays, not a copy
    np.testing.assert_array_equal(got.U, svds["L0"].U)
    ctx.svd("L2")  # not loaded ahead: read from the store and verified
    assert ctx.svd_sources == {"memory": 1, "store": 1}


def test_a_rewritten_layer_file_is_not_served_from_memory(tmp_path):
    """The entry is tied to the identity (device, inode, size, mtime, ctime) of the layer's file
    and the gene table: after a rewrite the worker reads the store again, checked against the
    file as it is now."""
    cache, work, svds = _stored(tmp_path)
    svd_store.warm(cache, ["L0"], work, 1 << 30)
    layer_file = cache.path / cache.manifest["files"]["L0"]
    st = layer_file.stat()
    os.utime(layer_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    ctx = ProbeContext(cache=cache, seed=0, work_dir=work)
    got = ctx.svd("L0")
    assert ctx.svd_sources == {"store": 1}
    np.testing.assert_array_equal(got.U, svds["L0"].U)
    assert svd_store.warm(cache, ["L0"], work, 1 << 30) == ["L0"]  # loaded again, verified


def test_a_forged_or_oversized_store_file_is_never_loaded_ahead(tmp_path):
    cache, work, _ = _stored(tmp_path)
    key = svd_store.content_key(cache, "L0", False)
    path = svd_store.store_path(work, key)
    with np.load(path) as z:
        forged = {k: z[k] for k in z.files}
    forged["U"] = -np.roll(forged["U"], 1, axis=0)
    np.savez(path, **forged)
    assert svd_store.warm(cache, ["L0"], work, 1 << 30) == []  # fails verification
    big = svd_store.store_path(work, svd_store.content_key(cache, "L1", False))
    with open(big, "ab") as fh:  # a file larger than the SVD it should hold is not read
        fh.write(b"\0" * (1 << 17))
    assert svd_store.warm(cache, ["L1"], work, 1 << 30) == []
    assert svd_store.warm(cache, ["L2"], work, 1000) == []  # over the budget
    assert not svd_store._WARM


def test_the_budget_keeps_the_most_recently_used_svds(tmp_path):
    cache, work, _ = _stored(tmp_path)
    one = 8 * (300 * 12 + 12 + 12 * 12 + 12 + 300)  # bytes of one layer's SVD
    svd_store.warm(cache, ["L0", "L1"], work, 2 * one)
    svd_store.warm(cache, ["L0"], work, 2 * one)  # L0 used again: L1 is now the oldest
    svd_store.warm(cache, ["L2"], work, 2 * one)
    held = {k for k in svd_store._WARM}
    assert held == {svd_store.content_key(cache, x, False) for x in ("L0", "L2")}


def test_lazy_index_arrays_reopen_their_file_after_a_fork(tmp_path):
    """A forked worker reading an index the warden opened must not move the warden's file
    offset (two processes reading through one open file description read each other's bytes:
    what made every worker fail before the indexes reopened their file)."""
    from geoscreen.store.resources._util import LazyArrays

    path = tmp_path / "index.npz"
    np.savez(path, a=np.arange(200_000), b=np.arange(50_000) * 2.0)
    lazy = LazyArrays(path)
    fd = lazy._npz.zip.fp.fileno()
    before = os.lseek(fd, 0, os.SEEK_CUR)
    pid = os.fork()
    if pid == 0:  # the worker
        ok = bool((lazy["a"] == np.arange(200_000)).all())
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.lseek(fd, 0, os.SEEK_CUR) == before
    np.testing.assert_array_equal(lazy["b"], np.arange(50_000) * 2.0)


def _job(cache, i, work, spec):
    from geoscreen.agent.executor import Job

    return Job(i, {"spec": spec, "cache_path": str(cache.path),
                   "cache_checksum": cache.checksum, "seed": i, "plugins": [],
                   "work_dir": str(work), "allowed_files": None, "split": None,
                   "combine_any": "cauchy", "memory_mb": 4000})


def test_workers_use_what_their_warden_loaded_and_get_the_same_results(tmp_path, monkeypatch):
    """Through real persistent workers: the first hypothesis computes and stores the SVDs; the
    next ones on the same layers get them from their warden's memory; with loading ahead off
    (GEOSCREEN_WARM_MB=0) they read the store; every result is the same."""
    from geoscreen.agent.executor import ProcessSandbox

    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    planted = ",".join(f"G{i}" for i in range(40))
    spec = {"statement": "axis 1 separates the planted genes", "probe": "axis_separation",
            "layers": ["L0", "L1"], "params": {"axis": 1, "positive": f"genes:{planted}"}}
    out = {}
    for mb in ("1024", "0"):
        monkeypatch.setenv("GEOSCREEN_WARM_MB", mb)
        work = tmp_path / f"work-{mb}"
        done: dict = {}
        with ProcessSandbox(workers=1, timeout_s=60, memory_mb=4000, split=False) as box:
            for i in range(3):  # one job per iteration, one warden for all of them
                box.run([_job(cache, i, work, spec)], lambda j: None,
                        lambda r, got=done: got.__setitem__(r.hyp_id, r), lambda: False)
        assert all(r.ok for r in done.values()), [r.reason for r in done.values()]
        out[mb] = done
    warm, cold = out["1024"], out["0"]
    assert warm[0].outcome.provenance["svd_sources"] == {"computed": 2}
    assert [warm[i].outcome.provenance["svd_sources"] for i in (1, 2)] == [{"memory": 2}] * 2
    assert [cold[i].outcome.provenance["svd_sources"] for i in (1, 2)] == [{"store": 2}] * 2
    for i in range(3):
        a, b = warm[i].outcome, cold[i].outcome
        assert [(x.statistic, x.p_value) for x in a.layers] == \
            [(x.statistic, x.p_value) for x in b.layers]


def test_warm_indexes_loads_named_resources_and_never_reads_a_file(tmp_path):
    from geoscreen.store.resources import backends
    from geoscreen.store.resources.api import warm_indexes

    backends._LOADED.clear()
    assert warm_indexes("go:GO:0005840 | trrust:TF=STAT3") == ["go", "trrust"]
    assert {k[0] for k in backends._LOADED} == {"go", "trrust"}
    missing = tmp_path / "nowhere.txt"
    assert warm_indexes(f"file:{missing} & genes:CD19") == []  # not opened, not an error
    assert warm_indexes("genes:CD19,PAX5") == []


# -- the cache's manifest and gene table, read once per warden -------------------------------
def _rewrite(path, genes, seed):
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(seed)
    layers = {f"L{i}": rng.standard_normal((len(genes), 12)).astype(np.float32)
              for i in range(3)}
    return write_cache(path, layers, genes, model="test", synthetic=True, overwrite=True)


def test_opened_cache_reuses_its_reading_only_while_the_files_are_unchanged(tmp_path):
    from geoscreen.agent import worker
    from geoscreen.store.cache import open_cache

    worker._OPENED.clear()
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    a = worker.opened_cache(str(cache.path))
    b = worker.opened_cache(str(cache.path))
    fresh = open_cache(cache.path)
    assert b.genes is a.genes and b.manifest is a.manifest  # read once
    assert b._arrays is not a._arrays and not b._arrays  # every caller maps the arrays itself
    assert (a.checksum, a.layers, a.path) == (fresh.checksum, fresh.layers, fresh.path)
    assert list(a.genes.symbols) == list(fresh.genes.symbols)
    np.testing.assert_array_equal(b.array("L1"), fresh.array("L1"))
    assert "L1" in b._arrays and "L1" not in a._arrays

    # the same path, rewritten: other genes, another checksum
    new = _rewrite(cache.path, [f"H{i}" for i in range(250)], seed=5)
    c = worker.opened_cache(str(cache.path))
    assert c.genes is not a.genes
    assert c.checksum == new.checksum != a.checksum
    assert list(c.genes.symbols) == [f"H{i}" for i in range(250)]
    assert worker.opened_cache(str(cache.path)).genes is c.genes

    # the gene table alone touched (same bytes, new mtime): read again
    genes = cache.path / "genes.tsv"
    st = genes.stat()
    os.utime(genes, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert worker.opened_cache(str(cache.path)).genes is not c.genes


def test_opened_cache_checks_the_manifests_paths_again_when_it_reuses_them(tmp_path):
    """A layer file replaced by a symlink out of the folder after the first reading: the
    manifest and gene table are unchanged (the reading is reused), and the path check that
    `open_cache` makes is made again all the same."""
    from geoscreen.agent import worker
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.cache import open_cache

    worker._OPENED.clear()
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    worker.opened_cache(str(cache.path))
    before = worker._cache_files_stat(str(cache.path))
    outside = tmp_path / "outside.npy"
    np.save(outside, np.full((300, 12), 7.0, dtype=np.float32))
    layer = cache.path / cache.manifest["files"]["L0"]
    layer.unlink()
    layer.symlink_to(outside)
    assert worker._cache_files_stat(str(cache.path)) == before  # a reuse, not a new reading
    for opener in (open_cache, worker.opened_cache):
        with pytest.raises(GeoscreenError, match="leads outside the cache folder"):
            opener(str(cache.path))


def test_a_warden_sees_a_cache_rewritten_between_two_of_its_jobs(tmp_path, monkeypatch):
    """Through one real persistent warden: after the cache at the same path is rewritten, the
    next job (which names the new checksum) reads the new manifest and layers; a job still
    naming the old checksum fails with the checksum mismatch, as before."""
    from geoscreen.agent.executor import ProcessSandbox

    monkeypatch.setenv("GEOSCREEN_WARM_MB", "1024")
    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    spec = {"statement": "axis 1 separates the first genes", "probe": "axis_separation",
            "layers": ["L0"], "params": {"axis": 1, "positive": "genes:G0,G1,G2,G3,G4,G5"}}
    spec_new = dict(spec, params={"axis": 1, "positive": "genes:G10,G11,G12,G13,G14"})
    done: dict = {}
    with ProcessSandbox(workers=1, timeout_s=60, memory_mb=4000, split=False) as box:
        def run(job):
            box.run([job], lambda j: None, lambda r: done.__setitem__(r.hyp_id, r),
                    lambda: False)
        run(_job(cache, 0, tmp_path / "work", spec))
        old = cache.checksum
        new = _rewrite(cache.path, [f"G{i}" for i in range(20)], seed=9)
        run(_job(new, 1, tmp_path / "work", spec_new))
        stale = _job(new, 2, tmp_path / "work", spec_new)
        stale.payload["cache_checksum"] = old
        run(stale)
    assert done[0].ok and done[1].ok, [done[0].reason, done[1].reason]
    assert done[0].outcome.provenance["cache_checksum"] == old
    assert done[1].outcome.provenance["cache_checksum"] == new.checksum
    assert not done[2].ok and "checksum mismatch" in done[2].reason


# -- libraries a probe imports when it runs, imported once by the warden ---------------------
_IMPORT_AHEAD = """
import json, sys
from geoscreen.agent import worker
mods = ("ripser", "igraph", "sklearn")
before = {m: m in sys.modules for m in mods}
worker._warm(json.loads(sys.argv[1]))
print(json.dumps({"before": before, "after": {m: m in sys.modules for m in mods}}))
"""


@pytest.mark.parametrize(("spec", "expect"), [
    ({"probe": "persistent_homology"}, {"ripser"}),
    ({"probe": "knn_communities"}, {"igraph"}),
    ({"probe": "layer_profile", "params": {"profile": {"probe": "knn_graph"}}}, {"igraph"}),
    ({"probe": "layer_profile", "params": {"profile": {"probe": "axis_separation"},
                                           "versus": {"probe": "persistent_homology"}}},
     {"ripser"}),
    ({"probe": "axis_separation"}, set()),
    ({"probe": "no_such_probe"}, set()),
])
def test_a_warden_imports_the_libraries_its_probe_declares(spec, expect, tmp_path):
    """In a fresh interpreter, with loading ahead off (GEOSCREEN_WARM_MB=0: the imports do not
    depend on it): `_warm` imports what the job's probe (or a layer profile's probe) declares,
    nothing for a probe that declares nothing, and never fails on a probe it does not know."""
    import json
    import subprocess
    import sys

    job = {"spec": {"statement": "s", "layers": [0], "params": {}, **spec},
           "cache_path": str(tmp_path / "none"), "memory_mb": 4000}
    env = dict(os.environ, GEOSCREEN_WARM_MB="0")
    out = subprocess.run([sys.executable, "-c", _IMPORT_AHEAD, json.dumps(job)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(got["before"].values())
    assert {m for m in ("ripser", "igraph") if got["after"][m]} == expect


def test_declared_imports_are_the_probes_lazy_libraries_and_importable():
    import importlib.util

    from geoscreen.probes.registry import BUILTIN_PROBES, get_probe, probe

    declared = {name: get_probe(name).imports for name in BUILTIN_PROBES
                if get_probe(name).imports}
    assert declared == {"persistent_homology": ("ripser",), "knn_graph": ("igraph",),
                        "knn_communities": ("igraph",),
                        "community_concentration": ("igraph",),
                        "coactivation_modules": ("igraph",)}
    for mods in declared.values():
        assert all(importlib.util.find_spec(m) is not None for m in mods)
    from geoscreen.probes.registry import ProbeParams

    with pytest.raises(TypeError, match="imports must be a tuple"):
        probe("x_bad_imports", family="module_structure", params=ProbeParams, nulls=(),
              version="1", statistic="s", effect="e", imports="ripser")
