"""`geoscreen.arrays.unique_sorted` is `np.unique` (sorted distinct values, flattened, the same
dtype), by one sort for integer and boolean arrays."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.arrays import unique_sorted


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64, bool,
                                   np.float32, np.float64, "U3", object])
def test_unique_sorted_equals_np_unique(dtype):
    rng = np.random.default_rng(0)
    for size in (0, 1, 2, 7, 1000):
        x = rng.integers(0, 50, size)
        a = x.astype(str).astype(dtype) if dtype in ("U3", object) else x.astype(dtype)
        got, ref = unique_sorted(a), np.unique(a)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref)
    grid = rng.integers(-5, 5, (6, 7))  # any shape is flattened, as np.unique does
    assert np.array_equal(unique_sorted(grid), np.unique(grid))
    assert np.array_equal(unique_sorted([3, 1, 3, 2]), np.array([1, 2, 3]))


def test_nans_are_gathered_as_np_unique_gathers_them():
    x = np.array([1.0, np.nan, 0.5, np.nan, 1.0])
    assert np.array_equal(unique_sorted(x), np.unique(x), equal_nan=True)


def test_mostly_distinct_int64_keys_equal_np_unique():
    x = np.random.default_rng(1).integers(0, 2**62, 300_000)
    x = np.concatenate([x, x[:100_000]])
    assert np.array_equal(unique_sorted(x), np.unique(x))
