"""Tokenization is scGPT's: same quantile bins as ``scgpt.preprocess.binning`` given the same
tie-breaking draws, ``<cls>`` first, and seeded subsampling to the model's maximum length."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.extract.scgpt_reference import scgpt_binning
from geoscreen.extract.synthetic import pbmc68k_counts
from geoscreen.extract.tokens import TokenizerConfig, bin_values, collate, tokenize_cell

CFG = TokenizerConfig(cls_id=9000, pad_id=9001, pad_value=-2.0, n_bins=51, max_len=50, seed=3)


@pytest.fixture(scope="module")
def rows():
    counts, _, _ = pbmc68k_counts()
    return [counts[i].data.astype(np.float32) for i in range(0, 700, 70)]


def test_bins_equal_scgpt_binning_with_the_same_draws(rows):
    binning = scgpt_binning()
    for k, row in enumerate(rows):  # real counts: many ties, so draws matter
        np.random.seed(k)
        theirs = np.asarray(binning(row.copy(), n_bins=51)).astype(np.int64)
        ours = bin_values(row, 51, np.random.RandomState(k).random_sample(row.size))
        assert np.array_equal(ours, theirs)
        assert ours.min() >= 1 and ours.max() == 50


def test_bins_are_monotone_in_value(rows):
    row = rows[0]
    binned = bin_values(row, 51, np.random.default_rng(0).random(row.size))
    levels = np.unique(row)  # tied values may share or spread over bins, never overtake
    lo = [binned[row == v].min() for v in levels]
    hi = [binned[row == v].max() for v in levels]
    assert all(h <= next_lo for h, next_lo in zip(hi[:-1], lo[1:]))


def test_tokenize_puts_cls_first_and_is_seeded_per_cell():
    ids = np.arange(120, dtype=np.int64)
    vals = np.random.default_rng(1).integers(1, 30, size=120).astype(np.float32)
    a_ids, a_vals = tokenize_cell(ids, vals, CFG, cell_index=5)
    assert a_ids.size == a_vals.size == CFG.max_len
    assert a_ids[0] == CFG.cls_id and a_vals[0] == CFG.pad_value
    assert set(a_ids[1:]) <= set(ids) and len(set(a_ids[1:])) == CFG.max_len - 1
    b_ids, b_vals = tokenize_cell(ids, vals, CFG, cell_index=5)
    assert np.array_equal(a_ids, b_ids) and np.array_equal(a_vals, b_vals)
    c_ids, _ = tokenize_cell(ids, vals, CFG, cell_index=6)
    assert not np.array_equal(a_ids, c_ids)
    # bins are computed over all the cell's genes before subsampling, as scGPT does
    full = bin_values(vals, 51, np.random.default_rng([CFG.seed, 5]).random(vals.size))
    lookup = dict(zip(ids.tolist(), full.tolist()))
    assert [lookup[int(g)] for g in a_ids[1:]] == a_vals[1:].astype(int).tolist()


def test_short_cells_keep_gene_order_and_collate_pads():
    ids = np.array([4, 8, 15], dtype=np.int64)
    vals = np.array([1, 5, 2], dtype=np.float32)
    t_ids, t_vals = tokenize_cell(ids, vals, CFG, cell_index=0)
    assert t_ids.tolist() == [CFG.cls_id, 4, 8, 15]
    batch_ids, batch_vals = collate([(t_ids, t_vals), (t_ids[:2], t_vals[:2])], CFG)
    assert batch_ids.shape == (2, 4)
    assert batch_ids[1, 2:].tolist() == [CFG.pad_id] * 2
    assert batch_vals[1, 2:].tolist() == [CFG.pad_value] * 2
