"""Shared per-layer nulls (`geoscreen.probes.null_store`): the spectrum's feature-shuffle copies
are drawn once per layer and campaign, stored next to the SVD, checked when read, and a test
gets the same p-value whether its draws were read or made."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, genes_ref, run

from geoscreen.probes import null_store
from geoscreen.probes.spectrum import feature_shuffle_copies, gram_eigenvalues32

# the draws themselves: the bound of `null_method: bound` (the default) decides the correlated
# layer without drawing (tests/test_feature_shuffle_bound.py)
FS = {"null": "feature_shuffle", "n_bootstrap": 0, "n_permutations": 99, "null_method": "draws"}


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((120, 10)) * np.linspace(2.0, 0.3, 10)
    mixed = base @ (np.eye(10) + 0.4 * rng.standard_normal((10, 10)))  # correlated dimensions
    return cache_from_layers(tmp_path_factory.mktemp("ns") / "c", [base, mixed])


def _files(tmp):
    return sorted((tmp / "work" / "nulls").rglob("*.npz"))


def _shared(r):
    return r.extra["shared_null"]


def test_copies_are_remade_alone():
    """Copy q depends on (seed, q) only: made in one call or one at a time, the same spectra,
    and those of a plain Gram eigen-decomposition of the permuted columns."""
    rng = np.random.default_rng(1)
    Xt = np.ascontiguousarray(rng.standard_normal((6, 40)).astype(np.float32))
    many = feature_shuffle_copies(Xt, 0, 5, seed=77)
    alone = np.concatenate([feature_shuffle_copies(Xt, q, q + 1, seed=77) for q in range(5)])
    assert np.array_equal(many, alone)
    Y = np.random.default_rng((77, 3)).permuted(Xt, axis=1)
    ref = np.linalg.eigvalsh(Y.astype(np.float64) @ Y.T.astype(np.float64))
    assert np.allclose(np.sort(many[3]), ref, rtol=1e-5)
    assert not np.array_equal(many[0], feature_shuffle_copies(Xt, 0, 1, seed=78)[0])
    for m in many:  # each copy keeps every column's values: the same total variance
        assert m.sum() == pytest.approx(gram_eigenvalues32(Xt[None])[0].sum(), rel=1e-5)


def test_second_hypothesis_reads_the_first_ones_draws(layers, tmp_path):
    """Two spectrum hypotheses of one campaign (two measures, two hypothesis seeds, one null
    seed) on one layer: the second reads all 99 copies, makes none, and its p-value equals that
    of a context that had to draw them itself."""
    a = run("spectrum", {**FS, "measure": "effective_rank"},
            context(layers, tmp_path, seed=1, null_seed=9), "L1", "less")
    assert _shared(a)["reused"] == 0 and _shared(a)["computed"] == 99
    assert len(_files(tmp_path)) == 1
    b = run("spectrum", {**FS, "measure": "participation_ratio"},
            context(layers, tmp_path, seed=2, null_seed=9), "L1", "less")
    assert _shared(b)["reused"] == 99 and _shared(b)["computed"] == 0
    assert not _shared(b)["store_rejected"]
    fresh = run("spectrum", {**FS, "measure": "participation_ratio"},
                context(layers, tmp_path / "elsewhere", seed=2, null_seed=9), "L1", "less")
    assert _shared(fresh)["computed"] == 99
    assert b.p_value == fresh.p_value and b.extra["null_mean"] == fresh.extra["null_mean"]
    assert a.p_value < 0.05  # correlated dimensions: fewer effective directions than shuffled
    # another campaign seed, another layer: other draws, other files
    c = run("spectrum", {**FS, "measure": "participation_ratio"},
            context(layers, tmp_path, seed=2, null_seed=10), "L1", "less")
    assert _shared(c)["reused"] == 0 and c.extra["null_mean"] != b.extra["null_mean"]
    run("spectrum", FS, context(layers, tmp_path, seed=2, null_seed=9), "L0", "less")
    assert len(_files(tmp_path)) == 3


def test_a_stopped_test_leaves_draws_the_next_extends(layers, tmp_path):
    """A sequential test stops early and stores what it drew; a fixed test reads those and draws
    the rest, and gets the p-value of a fresh fixed test bit for bit."""
    first = run("spectrum", {**FS, "n_permutations": 999},
                context(layers, tmp_path, seed=1, null_seed=4, sequential_h=3), "L0", "less")
    made = _shared(first)["computed"]
    assert first.extra["null_draws_used"] < 999 and made < 999
    second = run("spectrum", {**FS, "n_permutations": 199},
                 context(layers, tmp_path, seed=2, null_seed=4), "L0", "less")
    assert _shared(second)["reused"] == min(made, 199)
    assert _shared(second)["reused"] + _shared(second)["computed"] == 199
    fresh = run("spectrum", {**FS, "n_permutations": 199},
                context(layers, tmp_path / "fresh", seed=2, null_seed=4), "L0", "less")
    assert second.p_value == fresh.p_value and second.e_value == fresh.e_value
    assert second.extra["null_sd"] == fresh.extra["null_sd"]
    stored = null_store.read(_files(tmp_path)[0], np.load(_files(tmp_path)[0])["key"].item())
    assert stored.shape[0] == max(made, 199)


@pytest.mark.parametrize("damage", ["scaled", "reordered", "one_draw", "garbage", "truncated",
                                    "flipped_byte", "other_key", "nan"])
def test_a_damaged_store_is_drawn_again(layers, tmp_path, damage):
    """Every kind of damage is caught when read, the test draws anew with the same p-value,
    and the file is replaced by the good draws (also a rejected file as long as the new run)."""
    ctx = context(layers, tmp_path, seed=1, null_seed=3)
    clean = run("spectrum", FS, ctx, "L1", "less")
    path = _files(tmp_path)[0]
    with np.load(path) as z:
        key, draws = z["key"].item(), z["draws"].copy()
    good = draws.copy()
    raw = bytearray(path.read_bytes())
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "flipped_byte":
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        if damage == "scaled":  # no longer the layer's total variance: the invariant fails
            draws *= 1.01
        elif damage == "reordered":  # every draw valid but for another copy: the spot check
            draws = draws[::-1].copy()
        elif damage == "one_draw":  # a single stored copy: remade and compared, 1 of 1
            draws = draws[:1] * 1.5
        elif damage == "nan":
            draws[5, 0] = np.nan
        np.savez(path, key=np.array("0" * 64 if damage == "other_key" else key), draws=draws)
    again = run("spectrum", FS, context(layers, tmp_path, seed=1, null_seed=3), "L1", "less")
    assert _shared(again)["reused"] == 0 and _shared(again)["computed"] == 99
    assert _shared(again)["store_rejected"] == (damage in ("scaled", "reordered", "one_draw"))
    assert again.p_value == clean.p_value and again.extra["null_mean"] == clean.extra["null_mean"]
    assert np.array_equal(null_store.read(path, key), good)  # replaced by the good draws
    third = run("spectrum", FS, context(layers, tmp_path, seed=1, null_seed=3), "L1", "less")
    assert _shared(third)["reused"] == 99 and not _shared(third)["store_rejected"]


def test_an_unwritable_store_costs_time_only(layers, tmp_path):
    """A store that cannot be written (here `nulls` is a file, so no folder can be made under
    it; chmod does not stop root) draws every time and gets the same p-value."""
    good = run("spectrum", FS, context(layers, tmp_path / "a", seed=1, null_seed=3), "L0", "less")
    (tmp_path / "b" / "work").mkdir(parents=True)
    (tmp_path / "b" / "work" / "nulls").write_text("in the way")
    for _ in range(2):
        r = run("spectrum", FS, context(layers, tmp_path / "b", seed=1, null_seed=3), "L0", "less")
        assert _shared(r)["reused"] == 0 and _shared(r)["computed"] == 99
        assert r.p_value == good.p_value
    assert (tmp_path / "b" / "work" / "nulls").read_text() == "in the way"


def test_without_a_campaign_null_seed_nothing_is_stored(layers, tmp_path):
    """A probe run on its own (no campaign null seed) draws its copies from the hypothesis seed
    and stores nothing: one-off runs do not fill the work folder."""
    a = run("spectrum", FS, context(layers, tmp_path, seed=1), "L1", "less")
    b = run("spectrum", FS, context(layers, tmp_path, seed=1), "L1", "less")
    assert _shared(a)["computed"] == _shared(b)["computed"] == 99
    assert a.p_value == b.p_value and _files(tmp_path) == []
    c = run("spectrum", FS, context(layers, tmp_path, seed=2), "L1", "less")
    assert c.extra["null_mean"] != a.extra["null_mean"]


def test_gene_set_spectra_keep_their_own_draws(layers, tmp_path):
    r = run("spectrum", {**FS, "gene_set": genes_ref(range(60))},
            context(layers, tmp_path, seed=1, null_seed=3), "L1", "less")
    assert "shared_null" not in r.extra and r.n_permutations == 99
    assert _files(tmp_path) == []


def test_write_keeps_the_longer_run(tmp_path):
    path = tmp_path / "n.npz"
    null_store.write(path, "k", np.ones((5, 3)))
    null_store.write(path, "k", np.zeros((3, 3)))  # shorter: not written
    assert null_store.read(path, "k").shape == (5, 3) and null_store.read(path, "k")[0, 0] == 1
    null_store.write(path, "k", np.full((7, 3), 2.0))
    assert null_store.read(path, "k").shape == (7, 3)
    assert null_store.read(path, "other") is None
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_campaigns_spectrum_hypotheses_share_their_null(small_cache, tmp_path):
    """Three spectrum feature-shuffle hypotheses queued in one campaign (one worker): the first
    draws each layer's copies, the others read them; a second campaign with the same seed and
    a fresh store reproduces every p-value, and the provenance names the null seed."""
    from test_executor import _queue

    from geoscreen.agent.campaign import CampaignConfig, run_campaign, shared_null_seed
    from geoscreen.store.query import show_hypothesis

    raws = [{"statement": f"spectrum {m}", "probe": "spectrum",
             "params": {**FS, "measure": m}, "alternative": "less", "across_layers": "all"}
            for m in ("effective_rank", "participation_ratio", "effective_rank_energy")]
    details = []
    for k in range(2):
        ledger = tmp_path / f"l{k}.sqlite"
        _queue(ledger, raws)
        run_campaign(small_cache.path, ledger, CampaignConfig(
            iterations=1, per_iteration=3, brainstormer="none", seed=7, workers=1,
            work_dir=str(tmp_path / f"work{k}"), sequential_h=0))  # every draw
        details.append([show_hypothesis(str(ledger), h) for h in (1, 2, 3)])
    first = details[0]
    assert all(d["status"] == "done" for d in first)
    assert first[0]["provenance"]["null_seed"] == shared_null_seed(7)
    shared = [[r["extra"]["shared_null"] for r in d["layers_detail"]] for d in first]
    assert all(s["computed"] == 99 and s["reused"] == 0 for s in shared[0])
    assert all(s["reused"] == 99 and s["computed"] == 0 for d in shared[1:] for s in d)
    assert len({s["seed"] for s in shared[0]}) == len(shared[0])  # one stream per layer
    for a, b in zip(first, details[1]):
        assert [r["p_value"] for r in a["layers_detail"]] == \
            [r["p_value"] for r in b["layers_detail"]]


def _one_spectrum(args):
    from probe_helpers import context, run

    from geoscreen.store.cache import open_cache

    cache_path, tmp, seed, m = args
    r = run("spectrum", {**FS, "n_permutations": m},
            context(open_cache(cache_path), tmp, seed=seed, null_seed=21), "L1", "less")
    return r.p_value, r.extra["null_mean"], r.extra["shared_null"]["computed"]


def test_workers_writing_one_null_at_once(layers, tmp_path):
    """Four processes draw the same layer's null at the same time, with 99 to 399 draws: each
    writes its run atomically and a shorter run never replaces a longer one, so the store ends
    with the longest run, readable, and every p-value is the one a lone process gets."""
    import multiprocessing as mp

    jobs = [(str(layers.path), tmp_path, s, m) for s, m in ((1, 99), (2, 399), (3, 199), (4, 99))]
    with mp.get_context("spawn").Pool(4) as pool:
        got = pool.map(_one_spectrum, jobs)
    files = _files(tmp_path)
    assert len(files) == 1 and list(files[0].parent.glob("*.tmp")) == []
    with np.load(files[0]) as z:
        assert z["draws"].shape[0] == 399
    for (_, _, seed, m), (p, mean, _) in zip(jobs, got):
        alone = _one_spectrum((str(layers.path), tmp_path / f"alone{seed}", seed, m))
        assert (p, mean) == alone[:2]
