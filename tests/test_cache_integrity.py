"""The cache checksum covers the whole manifest, and no manifest can make geoscreen read a file
outside the cache folder or a layer from another layer's file (issue 12, item 7).  The shared SVD
store is keyed by layer content and verifies what it loads.

Tampering goes through real files; the CLI runs in real subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import PLUGIN_DIR, make_cache
from faults import campaign_cmd, env, queue

from geoscreen.errors import GeoscreenError
from geoscreen.probes import svd_store
from geoscreen.probes.context import ProbeContext
from geoscreen.store.cache import manifest_checksum, open_cache
from geoscreen.store.query import show_hypothesis


def _edit(cache_path, change, *, rehash=False):
    man = cache_path / "manifest.json"
    m = json.loads(man.read_text())
    change(m)
    if rehash:
        m["cache_checksum"] = manifest_checksum(m)
    man.write_text(json.dumps(m, indent=2))


def _outside_copy(cache, tmp_path):
    """An exact copy of layer L0's file outside the cache folder (its checksum matches)."""
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(cache.path / cache.manifest["files"]["L0"], outside)
    return outside


TAMPERING = {
    # layer L0 now reads L1's array: every per-file checksum still matches
    "another layer's file": lambda c, t: _edit(
        c.path, lambda m: m["files"].update(L0=m["files"]["L1"])),
    "a relative path out of the folder": lambda c, t: _edit(
        c.path, lambda m: m["files"].update(L0=f"../{_outside_copy(c, t).name}")),
    "an absolute path": lambda c, t: _edit(
        c.path, lambda m: m["files"].update(L0=str(_outside_copy(c, t)))),
    "a symlink out of the folder": lambda c, t: _symlink_out(c, t),
    "a layer renamed": lambda c, t: _edit(
        c.path, lambda m: m.update(layers=["L0", "L2", "L1"])),
}


def _symlink_out(cache, tmp_path):
    outside = _outside_copy(cache, tmp_path)
    inside = cache.path / cache.manifest["files"]["L0"]
    inside.unlink()
    os.symlink(outside, inside)  # same bytes, so the file's checksum still matches


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampered_manifest_fails_verify_and_open(tmp_path, cli, how):
    cache = make_cache(tmp_path / "cache", n_genes=60, dim=8)
    TAMPERING[how](cache, tmp_path)
    results = {cmd: cli("cache", cmd, str(cache.path)) for cmd in ("verify", "info")}
    for cmd, res in results.items():
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert "manifest.json: field '" in res.stderr, res.stderr
    print(f"\n[manifest: {how}] cache verify: exit {results['verify'].returncode}; opening "
          f"(cache info): exit {results['info'].returncode}; "
          f"{results['verify'].stderr.strip()}")


def test_rehashed_manifest_edit_changes_the_checksum(tmp_path, cli):
    """An edit whose author recomputes `cache_checksum` is a different cache to every ledger."""
    cache = make_cache(tmp_path / "cache", n_genes=60, dim=8)
    _edit(cache.path, lambda m: m.update(model="another model"))
    res = cli("cache", "verify", str(cache.path))
    assert res.returncode == 2 and "field 'cache_checksum'" in res.stderr, res.stderr
    _edit(cache.path, lambda m: None, rehash=True)
    assert cli("cache", "verify", str(cache.path)).returncode == 0
    assert open_cache(cache.path).checksum != cache.checksum


def test_format_1_caches_still_open_and_verify(tmp_path, cli):
    """A cache written before format 2 keeps its checksum (ledgers bound to it still resume);
    its files map is checked against the layout every cache is written in."""
    cache = make_cache(tmp_path / "cache", n_genes=60, dim=8)

    def legacy(m):
        m["format_version"] = 1
        m["cache_checksum"] = manifest_checksum(m)  # the old digest of the file checksums

    _edit(cache.path, legacy)
    old = open_cache(cache.path)
    assert old.checksum == manifest_checksum({"format_version": 1,
                                              "checksums": cache.manifest["checksums"]})
    assert cli("cache", "verify", str(cache.path)).returncode == 0
    _edit(cache.path, lambda m: m["files"].update(L0=m["files"]["L1"]))
    res = cli("cache", "verify", str(cache.path))
    assert res.returncode == 2 and "field 'files.L0'" in res.stderr, res.stderr
    with pytest.raises(GeoscreenError, match="points at 'layers/01_L1.npy'"):
        open_cache(cache.path)


def test_svd_store_is_keyed_by_content_and_recomputes_a_forged_file(tmp_path):
    a = make_cache(tmp_path / "a", n_genes=80, dim=8)
    b = make_cache(tmp_path / "b", n_genes=80, dim=8)  # the same content under another path
    c = make_cache(tmp_path / "c", n_genes=80, dim=8, seed=1)
    work = tmp_path / "work"
    first = ProbeContext(cache=a, seed=0, work_dir=work).svd("L0")
    stored = sorted(work.rglob("*.npz"))
    assert len(stored) == 1
    ProbeContext(cache=b, seed=0, work_dir=work).svd("L0")
    assert sorted(work.rglob("*.npz")) == stored  # same content, same entry
    ProbeContext(cache=c, seed=0, work_dir=work).svd("L0")
    assert len(sorted(work.rglob("*.npz"))) == 2
    # a probe forges the stored SVD: rows of U shifted, every axis flipped
    with np.load(stored[0]) as z:
        forged = {k: z[k] for k in z.files}
    forged["U"], forged["Vt"] = -np.roll(forged["U"], 1, axis=0), -forged["Vt"]
    np.savez(stored[0], **forged)
    again = ProbeContext(cache=a, seed=0, work_dir=work).svd("L0")
    np.testing.assert_array_equal(again.U, first.U)
    np.testing.assert_array_equal(again.Vt, first.Vt)
    with np.load(stored[0]) as z:  # and the forged file was replaced
        np.testing.assert_array_equal(z["U"], first.U)
    assert svd_store.verified(a.matrix("L0")[1], (first.U, first.S, first.Vt, first.mean))


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte"])
def test_a_truncated_or_corrupt_stored_svd_is_recomputed(tmp_path, damage):
    """A stored SVD cut short or with one byte changed (zipfile's BadZipFile / a bad CRC, not
    an OSError) is recomputed and replaced, not a failure of every later hypothesis."""
    a = make_cache(tmp_path / "a", n_genes=80, dim=8)
    work = tmp_path / "work"
    first = ProbeContext(cache=a, seed=0, work_dir=work).svd("L0")
    path = sorted(work.rglob("*.npz"))[0]
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    again = ProbeContext(cache=a, seed=0, work_dir=work).svd("L0")
    np.testing.assert_array_equal(again.U, first.U)
    with np.load(path) as z:
        np.testing.assert_array_equal(z["U"], first.U)


def test_a_probe_poisoning_the_svd_store_changes_no_result(small_cache, tmp_path,
                                                           monkeypatch):
    """End to end: one hypothesis overwrites every stored SVD; the next one (same layers)
    gets exactly the results of a campaign that never saw the poison."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import hostile_probes  # noqa: F401  (registers the probes for queueing)

    planted = ",".join(f"G{i}" for i in range(40))
    real = {"statement": "axis 1 separates the planted genes", "probe": "axis_separation",
            "params": {"axis": 1, "positive": f"genes:{planted}"}}
    runs = {}
    for name, poison in (("clean", False), ("poisoned", True)):
        work, ledger = tmp_path / f"work-{name}", tmp_path / f"{name}.sqlite"
        raws = [real]
        if poison:
            raws = [{"statement": "poisons the SVD store", "probe": "hostile_poison_svd",
                     "params": {"store": str(work)}}, real]
        queue(ledger, raws)
        done = subprocess.run(
            campaign_cmd(small_cache.path, ledger, "--brainstormer", "none", "--plugin",
                         "hostile_probes", "--workers", "1", "--seed", "3"),
            env=env(work), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        d = show_hypothesis(str(ledger), len(raws))
        runs[name] = [(x["layer"], x["statistic"], x["p_value"]) for x in d["layers_detail"]]
    same = runs["clean"] == runs["poisoned"]
    print(f"\n[SVD store poisoned by a probe] layers poisoned: 3; results identical to a clean "
          f"run: {int(same)}/1")
    assert same
