"""Embedding caches: import, inspection, validation of bad input, read-only memory mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import import_array, open_cache, write_cache


def _write_inputs(tmp_path, arr, genes):
    emb = tmp_path / "layer_gene_embeddings.npy"
    np.save(emb, arr)
    gl = tmp_path / "gene_list.txt"
    gl.write_text("\n".join(genes) + "\n")
    return emb, gl


def test_import_roundtrip_published_layout(tmp_path, cli):
    rng = np.random.default_rng(1)
    arr = rng.standard_normal((3, 50, 8)).astype(np.float32)
    arr[:, 7] = 0.0  # an out-of-vocabulary gene, zero in every layer
    genes = [f"GENE{i}" for i in range(50)]
    emb, gl = _write_inputs(tmp_path, arr, genes)
    res = cli("cache", "import", str(emb), "--genes", str(gl), "-o", str(tmp_path / "c"),
              "--model", "scGPT-human")
    assert res.returncode == 0, res.stderr
    assert "1 all-zero genes flagged" in res.stdout
    cache = open_cache(tmp_path / "c")
    assert cache.layers == ["L0", "L1", "L2"] and cache.n_genes == 50 and cache.dim == 8
    assert cache.model == "scGPT-human"
    np.testing.assert_array_equal(cache.array(1), arr[1])
    assert cache.genes.zero.tolist() == [i == 7 for i in range(50)]
    rows, X = cache.matrix("L2")
    assert 7 not in rows and X.shape == (49, 8)
    assert cache.verify() == []
    info = cli("cache", "info", str(tmp_path / "c"), "--json")
    data = json.loads(info.stdout)
    assert data["zero_genes"] == ["GENE7"] and data["n_genes"] == 50
    assert data["cache_checksum"] == cache.checksum


def test_opening_reads_no_array(tmp_path):
    cache = write_cache(tmp_path / "c", {"L0": np.ones((4, 3)), "L1": np.ones((4, 3))},
                        list("ABCD"))
    # Corrupt the array payloads: opening must still work because it never reads them.
    for rel in cache.manifest["files"].values():
        (tmp_path / "c" / rel).write_bytes(b"garbage")
    reopened = open_cache(tmp_path / "c")
    assert reopened.layers == ["L0", "L1"] and reopened._arrays == {}
    assert sorted(reopened.verify()) == sorted(cache.manifest["files"].values())


def test_arrays_are_read_only_memory_maps(small_cache):
    arr = small_cache.array("L0")
    assert isinstance(arr, np.memmap)
    with pytest.raises(ValueError):
        arr[0, 0] = 1.0


def test_same_input_same_checksum(tmp_path):
    a = write_cache(tmp_path / "a", {"L0": np.eye(3)}, ["X", "Y", "Z"])
    b = write_cache(tmp_path / "b", {"L0": np.eye(3)}, ["X", "Y", "Z"])
    c = write_cache(tmp_path / "c", {"L0": np.eye(3) * 2}, ["X", "Y", "Z"])
    assert a.checksum == b.checksum != c.checksum


@pytest.mark.parametrize("case,expected", [
    ("duplicate", "duplicate gene symbols: B (lines 2 and 3)"),
    ("nan", "NaN or Inf values in 1 gene rows (e.g. C)"),
    ("length", "has 3 symbols but layer_gene_embeddings.npy has 4 gene rows"),
    ("shape", "expected (layers, genes, dim)"),
    ("blank", "line 2 is blank"),
])
def test_bad_imports_write_nothing(tmp_path, cli, case, expected):
    arr = np.random.default_rng(0).standard_normal((2, 4, 3))
    genes = ["A", "B", "C", "D"]
    if case == "duplicate":
        genes = ["A", "B", "B", "D"]
    elif case == "nan":
        arr[1, 2, 0] = np.nan
    elif case == "length":
        genes = ["A", "B", "C"]
    elif case == "shape":
        arr = arr[0]
    emb, gl = _write_inputs(tmp_path, arr, genes)
    if case == "blank":
        gl.write_text("A\n\nC\nD\n")
    out = tmp_path / "c"
    res = cli("cache", "import", str(emb), "--genes", str(gl), "-o", str(out))
    assert res.returncode == 2
    assert expected in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]  # no temp left


def test_pickled_arrays_are_refused(tmp_path):
    emb = tmp_path / "obj.npy"
    np.save(emb, np.array([[[object()]]], dtype=object), allow_pickle=True)
    gl = tmp_path / "g.txt"
    gl.write_text("A\n")
    with pytest.raises(GeoscreenError, match="pickled object arrays are refused"):
        import_array(emb, gl, tmp_path / "c")


def test_existing_output_is_not_overwritten(tmp_path):
    write_cache(tmp_path / "c", {"L0": np.eye(2)}, ["A", "B"])
    with pytest.raises(GeoscreenError, match="already exists"):
        write_cache(tmp_path / "c", {"L0": np.eye(2)}, ["A", "B"])


def test_open_errors_are_one_line(tmp_path, cli):
    res = cli("cache", "info", str(tmp_path))
    assert res.returncode == 2 and "has no manifest.json" in res.stderr
    (tmp_path / "manifest.json").write_text("{not json")
    res = cli("cache", "info", str(tmp_path))
    assert res.returncode == 2 and "is not valid JSON" in res.stderr


def test_verify_detects_modification(tmp_path, cli):
    cache = write_cache(tmp_path / "c", {"L0": np.eye(3)}, ["X", "Y", "Z"])
    assert cli("cache", "verify", str(cache.path)).returncode == 0
    np.save(cache.path / cache.manifest["files"]["L0"], np.eye(3) * 5)
    res = cli("cache", "verify", str(cache.path))
    assert res.returncode == 2 and "checksum mismatch in layers/00_L0.npy" in res.stderr


def test_info_audits_a_gene_list(tmp_path, cli):
    """`cache info --genes REF`: which genes have a vector, which are all-zero (out of
    vocabulary), which are absent; in the table and in --json; a bad reference is one line,
    exit 2."""
    arr = np.ones((2, 4, 3), dtype=np.float32)
    arr[:, 1] = 0.0  # MS4A1: an out-of-vocabulary token
    cache = write_cache(tmp_path / "c", {"L0": arr[0], "L1": arr[1]},
                        ["CD19", "MS4A1", "PAX5", "BLK"])
    ref = "genes:CD19,MS4A1,CD79A,PAX5,CD19"
    res = cli("cache", "info", str(cache.path), "--genes", ref, "--json")
    assert res.returncode == 0, res.stderr
    audit = json.loads(res.stdout)["gene_audit"]
    assert audit == {"reference": ref, "asked": 4, "with_vector": 2, "all_zero": ["MS4A1"],
                     "absent": ["CD79A"]}
    table = cli("cache", "info", str(cache.path), "--genes", ref)
    assert table.returncode == 0
    assert "1: MS4A1" in table.stdout
    assert "1: CD79A" in table.stdout
    bad = cli("cache", "info", str(cache.path), "--genes", "gp:GO:0005615")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--genes" in bad.stderr and "unknown resource 'gp'" in bad.stderr
