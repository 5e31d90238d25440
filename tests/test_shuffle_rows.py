"""`shuffle_rows` draws what `Generator.permuted` draws, through 8-byte copies and in blocks."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.probes import stats
from geoscreen.probes.stats import (
    degree_preserving_targets,
    feature_shuffle_stack,
    feature_shuffle_stack_t,
    gene_perms,
    shuffle_rows,
)


def _after(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2**62, size=4)  # the generator's state, read by what it draws next


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.int32, np.float32,
                                   np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("block_bytes", [1, 3 * 8 * 37, 2**30])
def test_same_draws_as_permuted(dtype, block_bytes, monkeypatch):
    monkeypatch.setattr(stats, "SHUFFLE_BLOCK_BYTES", block_bytes)
    z = np.random.default_rng(0).standard_normal((23, 37))
    src = (z > 0) if dtype is np.bool_ else (z * 50).astype(dtype)
    ref_rng, rng = np.random.default_rng(5), np.random.default_rng(5)
    ref = ref_rng.permuted(src, axis=1)
    got = shuffle_rows(src, rng)
    assert got.dtype == src.dtype and np.array_equal(got, ref)
    assert np.array_equal(_after(rng), _after(ref_rng))
    assert not np.array_equal(got, src)  # it did shuffle


def test_in_place_broadcast_and_float32_from_float64(monkeypatch):
    monkeypatch.setattr(stats, "SHUFFLE_BLOCK_BYTES", 8 * 50 * 2)  # blocks of two rows
    x = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    ref = np.random.default_rng(9).permuted(np.tile(x, (7, 1)), axis=1)
    # a broadcast (read-only, not contiguous) source
    assert np.array_equal(shuffle_rows(np.broadcast_to(x, (7, 50)),
                                       np.random.default_rng(9)), ref)
    # float32 values held as float64, shuffled into a float32 output
    out = np.empty((7, 50), dtype=np.float32)
    shuffle_rows(np.tile(x.astype(np.float64), (7, 1)), np.random.default_rng(9), out=out)
    assert np.array_equal(out, ref)
    # in place
    a = np.tile(x, (7, 1))
    assert shuffle_rows(a, np.random.default_rng(9), out=a) is a and np.array_equal(a, ref)


def test_refusals():
    with pytest.raises(ValueError, match="2-d"):
        shuffle_rows(np.arange(5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="C-ordered"):
        shuffle_rows(np.zeros((3, 4)), np.random.default_rng(0), out=np.zeros((4, 3)).T)
    with pytest.raises(ValueError, match="not int16"):
        shuffle_rows(np.ones((1, 2)), np.random.default_rng(0), out=np.empty((1, 2), np.int16))
    a = np.arange(24, dtype=np.int32).reshape(6, 4)
    with pytest.raises(ValueError, match="overlap"):
        shuffle_rows(a[:-1], np.random.default_rng(0), out=a[1:])
    assert shuffle_rows(np.zeros((0, 4), np.int32), np.random.default_rng(0)).shape == (0, 4)


def test_callers_draw_what_they_drew_before():
    n, m = 301, 17
    ref = np.random.default_rng(3).permuted(np.tile(np.arange(n, dtype=np.int32), (m, 1)),
                                           axis=1)
    assert np.array_equal(gene_perms(n, m, np.random.default_rng(3)), ref)
    small = gene_perms(n, m, np.random.default_rng(3), small=True)
    assert small.dtype == np.int16 and np.array_equal(small, ref)
    j = np.random.default_rng(2).integers(0, 900, size=40)
    assert np.array_equal(degree_preserving_targets(j, m, np.random.default_rng(4)),
                          np.random.default_rng(4).permuted(np.tile(j, (m, 1)), axis=1))
    X = np.random.default_rng(6).standard_normal((60, 9)).astype(np.float32)
    rng = np.random.default_rng(8)
    old = np.stack([rng.permuted(X, axis=0) for _ in range(5)])  # the definition before
    assert np.array_equal(feature_shuffle_stack(X, 5, np.random.default_rng(8)), old)
    # the same copies kept transposed, also into a given float32 array from float64 values
    XT = np.ascontiguousarray(X.T)
    assert np.array_equal(feature_shuffle_stack_t(XT, 5, np.random.default_rng(8)),
                          old.transpose(0, 2, 1))
    into = np.empty((5,) + XT.shape, dtype=np.float32)
    got = feature_shuffle_stack_t(XT.astype(np.float64), 5, np.random.default_rng(8), out=into)
    assert got is into and np.array_equal(into, old.transpose(0, 2, 1))
