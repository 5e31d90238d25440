"""One identity of a file, `store.cache.file_identity` (device, inode, size, mtime, ctime),
behind the three places that reuse what they read or checked while a file is unchanged: a
worker's reused manifest and gene table, the warden's verified SVDs and the once-per-node
checksum stamps of a file-queue task.  The case each test builds is a rewrite the earlier
(size, mtime, inode) keys missed: the same bytes count, written in place (same inode), with the
mtime set back as ``touch -r``, ``cp -p`` onto an existing file or ``rsync --inplace`` do.
Only the ctime tells it, which no user-space call sets back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from conftest import make_cache

from geoscreen.probes import svd_store
from geoscreen.probes.context import ProbeContext
from geoscreen.store.cache import GENES, file_identity


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Write `data` (as many bytes as the file has) over `path` through the same inode, and set
    its atime and mtime back to what they were."""
    st = path.stat()
    assert len(data) == st.st_size
    time.sleep(0.05)  # past the kernel's coarse clock tick: the ctime must move
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _same_but_ctime(before: tuple[int, ...], after: tuple[int, ...]) -> None:
    assert before[:4] == after[:4]  # device, inode, size, mtime: what the old keys held
    assert before[4] != after[4]


def _layer_bytes(path: Path, seed: int) -> bytes:
    """Another array of the layer file's shape, as the bytes of an .npy file of its size."""
    X = np.load(path)
    other = np.random.default_rng(seed).standard_normal(X.shape).astype(X.dtype)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, other)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def test_file_identity_is_what_stat_says_and_moves_with_a_rewrite_in_place(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"0123456789")
    (before,) = file_identity([f])
    st = os.stat(f)
    assert before == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    _rewrite_in_place(f, b"abcdefghij")
    (after,) = file_identity([f])
    _same_but_ctime(before, after)
    assert file_identity([f]) == ((after),)  # reading it changes nothing


def test_file_identity_raises_oserror_for_a_missing_file(tmp_path):
    import pytest

    with pytest.raises(OSError):
        file_identity([tmp_path / "missing"])


def test_a_warm_svd_is_dropped_when_its_layer_is_rewritten_in_place_with_the_mtime_back(
        tmp_path):
    svd_store._WARM.clear()
    try:
        cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
        work = tmp_path / "work"
        ProbeContext(cache=cache, seed=0, work_dir=work).svd("L0")  # computed and stored
        assert svd_store.warm(cache, ["L0"], work, 1 << 30) == ["L0"]
        layer = cache.path / cache.manifest["files"]["L0"]
        (before,) = file_identity([layer])
        _rewrite_in_place(layer, _layer_bytes(layer, seed=11))
        _same_but_ctime(before, file_identity([layer])[0])

        ctx = ProbeContext(cache=cache, seed=0, work_dir=work)
        got = ctx.svd("L0")
        # not the warden's entry (verified against the old data), and the stored SVD fails
        # its check against the new data: computed again, from the data as it is now
        assert ctx.svd_sources == {"computed": 1}
        rows, X = cache.matrix("L0")
        Xc = X - X.mean(axis=0)
        np.testing.assert_allclose(got.U * got.S @ got.Vt, Xc, atol=1e-8)
    finally:
        svd_store._WARM.clear()


def test_a_node_stamp_does_not_hide_a_layer_rewritten_in_place_with_the_mtime_back(tmp_path):
    from geoscreen.agent.filetask import verify_cache_once

    cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
    stamps = tmp_path / "node"
    stamps.mkdir()
    assert verify_cache_once(str(cache.path), cache.checksum, str(stamps)) == ""
    assert len(list((stamps / f"geoscreen-verified-{os.getuid()}").glob("[0-9a-f]*[!k]"))) == 1
    layer = cache.path / cache.manifest["files"]["L1"]
    _rewrite_in_place(layer, _layer_bytes(layer, seed=12))
    problem = verify_cache_once(str(cache.path), cache.checksum, str(stamps))
    assert "checksum mismatch" in problem and "L1" in problem


def test_a_worker_reads_a_gene_table_rewritten_in_place_with_the_mtime_back(tmp_path):
    from geoscreen.agent import worker

    worker._OPENED.clear()
    try:
        cache = make_cache(tmp_path / "cache", n_genes=300, dim=12)
        first = worker.opened_cache(str(cache.path))
        genes = cache.path / GENES
        text = genes.read_bytes()
        assert b"\tG17\t" in text
        _rewrite_in_place(genes, text.replace(b"\tG17\t", b"\tX17\t"))
        again = worker.opened_cache(str(cache.path))
        assert again.genes is not first.genes
        assert "X17" in list(again.genes.symbols) and "G17" not in list(again.genes.symbols)
    finally:
        worker._OPENED.clear()
