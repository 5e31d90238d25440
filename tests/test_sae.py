"""TopK sparse autoencoders: the module against a re-typed reference on the same batch, recovery
of a planted sparse dictionary, seeded determinism, resume = uninterrupted run, and the
feature atlas (planted gene programs recovered, opened without reading arrays, checksummed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoscreen.errors import GeoscreenError
from geoscreen.extract.activations import ActivationWriter, open_activations
from geoscreen.extract.atlas_build import build_atlas
from geoscreen.extract.sae import ArraySource, SAEConfig, TopKSAE, train, train_step
from geoscreen.extract.sae_reference import reference_forward, reference_train
from geoscreen.store.atlas import open_atlas


def planted(n: int, d: int = 32, m: int = 64, k_true: int = 3, seed: int = 0):
    """Rows = sums of k_true of m unit atoms with positive weights, plus noise and an offset."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(m, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((n, m))
    for i in range(n):
        a = rng.choice(m, k_true, replace=False)
        Z[i, a] = rng.exponential(1.0, k_true) + 0.5
    X = Z @ D + 0.01 * rng.normal(size=(n, d)) + 3.0
    return X.astype(np.float32), D, Z


# -- the module against a re-typed reference ---------------------------------------------------

def test_forward_and_gradients_equal_the_reference_on_one_batch():
    X, _, _ = planted(512)
    cfg = SAEConfig(d_in=32, d_sae=128, k=8, aux_coef=0.0, seed=3)
    sae = TopKSAE(cfg)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():  # non-trivial biases and an untied encoder
        sae.W_enc.add_(0.1 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.05 * torch.randn(128, generator=g))
        sae.b_dec.copy_(0.05 * torch.randn(32, generator=g))
        sae.mean.copy_(torch.as_tensor(X.mean(0)))
        sae.scale.fill_(0.7)
    x = torch.from_numpy(X)
    xn = sae.normalise(x)
    ref = {n: t.detach().clone().requires_grad_() for n, t in
           (("W_enc_T", sae.W_enc.T), ("b_enc", sae.b_enc), ("W_dec", sae.W_dec),
            ("b_dec", sae.b_dec))}
    acts_ref, out_ref = reference_forward(xn, ref["W_enc_T"], ref["b_enc"], ref["W_dec"],
                                               ref["b_dec"], 8)
    z = sae.encode(xn, normalised=True)
    torch.testing.assert_close(z, acts_ref)
    torch.testing.assert_close(sae.decode(z), out_ref)
    assert int((z > 0).sum(1).max()) <= 8
    # one training step: our gradient (before the radial projection) equals the reference's
    (out_ref - xn).pow(2).mean().backward()
    opt = torch.optim.SGD(sae.parameters(), lr=0.0)
    since = torch.zeros(128, dtype=torch.int64)
    train_step(sae, opt, x, since)
    torch.testing.assert_close(sae.W_enc.grad, ref["W_enc_T"].grad.T)
    torch.testing.assert_close(sae.b_enc.grad, ref["b_enc"].grad)
    torch.testing.assert_close(sae.b_dec.grad, ref["b_dec"].grad)
    radial = (ref["W_dec"].grad * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
    torch.testing.assert_close(sae.W_dec.grad, ref["W_dec"].grad - radial)


def test_ours_and_the_reference_reach_the_same_reconstruction(tmp_path):
    """Trained on the same planted data with the same settings (no AuxK), both explain the
    same share of variance (within 2 points)."""
    X, _, _ = planted(20_000, seed=4)
    ref = reference_train(X, 128, 4, lr=2e-3, batch_size=512, epochs=3)
    ours = train(ArraySource([X]), small_cfg(epochs=3, aux_coef=0.0), tmp_path / "o",
                 progress=False)
    x = torch.from_numpy(X)
    torch.set_grad_enabled(False)
    xn = ours.normalise(x)
    fve_ours = 1 - float((ours.decode(ours.encode(xn, normalised=True)) - xn).pow(2).sum()
                         / (xn - xn.mean(0)).pow(2).sum())
    _, out = reference_forward(xn, ref["W_enc_T"], ref["b_enc"], ref["W_dec"], ref["b_dec"], 4)
    fve_ref = 1 - float((out - xn).pow(2).sum() / (xn - xn.mean(0)).pow(2).sum())
    torch.set_grad_enabled(True)
    print(f"fraction of variance explained: ours {fve_ours:.4f}, reference {fve_ref:.4f}")
    assert fve_ours > 0.7 and abs(fve_ours - fve_ref) < 0.02


# -- training ---------------------------------------------------------------------------------

def small_cfg(**kw) -> SAEConfig:
    base = dict(d_in=32, d_sae=128, k=4, lr=2e-3, batch_size=512, epochs=5, seed=0,
                dead_after=20_000, checkpoint_every=50)
    return SAEConfig(**{**base, **kw})


def test_a_planted_sparse_dictionary_is_recovered(tmp_path):
    X, D, _ = planted(60_000)
    sae = train(ArraySource([X[:25_000], X[25_000:]]), small_cfg(), tmp_path / "sae",
                progress=False)
    W = sae.W_dec.detach().numpy()
    best = np.abs(D @ W.T).max(axis=1)
    print(f"planted atoms recovered at cosine > 0.9: {(best > 0.9).mean():.3f} "
          f"(median {np.median(best):.3f})")
    assert (best > 0.9).mean() >= 0.9
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=1e-5)
    saved = json.loads((tmp_path / "sae" / "sae.json").read_text())
    assert saved["progress"]["done"] and saved["history"][-1]["fve"] > 0.9


def test_training_is_seeded_and_resume_equals_an_uninterrupted_run(tmp_path):
    X, _, _ = planted(8_000)
    src = ArraySource([X[:3_000], X[3_000:]])
    cfg = small_cfg(epochs=3, checkpoint_every=7)
    a = train(src, cfg, tmp_path / "a", progress=False)
    b = train(src, cfg, tmp_path / "b", progress=False)
    for t1, t2 in zip(a.parameters(), b.parameters()):
        assert torch.equal(t1, t2)
    c = train(src, small_cfg(epochs=3, checkpoint_every=7, seed=1), tmp_path / "c",
              progress=False)
    assert not torch.equal(a.W_dec, c.W_dec)
    # stopped after 20 steps (mid-epoch), then resumed in a new trainer
    train(src, cfg, tmp_path / "r", progress=False, max_steps=20)
    assert json.loads((tmp_path / "r" / "sae.json").read_text())["progress"]["step"] == 20
    r = train(src, cfg, tmp_path / "r", progress=False, resume=True)
    for t1, t2 in zip(a.parameters(), r.parameters()):
        assert torch.equal(t1, t2)
    loaded = TopKSAE.load(tmp_path / "r")
    assert torch.equal(loaded.W_dec, a.W_dec) and torch.equal(loaded.mean, a.mean)


def test_training_refusals(tmp_path):
    X, _, _ = planted(2_000)
    src = ArraySource([X])
    train(src, small_cfg(epochs=1), tmp_path / "s", progress=False)
    with pytest.raises(GeoscreenError, match="already holds an SAE"):
        train(src, small_cfg(epochs=1), tmp_path / "s", progress=False)
    with pytest.raises(GeoscreenError, match=r"other settings \(k\)"):
        train(src, small_cfg(epochs=1, k=5), tmp_path / "s", progress=False, resume=True)
    with pytest.raises(GeoscreenError, match="holds no SAE to resume"):
        train(src, small_cfg(), tmp_path / "none", progress=False, resume=True)
    with pytest.raises(GeoscreenError, match="field '--k': is 500, more than the 128"):
        train(src, small_cfg(k=500), tmp_path / "k", progress=False)
    with pytest.raises(GeoscreenError, match="differs from the activations' width"):
        train(src, small_cfg(d_in=16), tmp_path / "d", progress=False)


# -- the atlas on planted gene programs ---------------------------------------------------------

def planted_activations(path: Path, seed: int = 0) -> tuple[list[str], dict[int, set[int]]]:
    """200 genes; 8 programs of 10 genes each own a direction; each position is one gene's
    token in one cell: its programs' directions (random strength) plus noise."""
    rng = np.random.default_rng(seed)
    d, n_genes, n_cells = 24, 200, 300
    atoms = rng.normal(size=(8, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    programs = {p: set(range(10 * p, 10 * p + 10)) for p in range(8)}
    rows, cells, vecs = [], [], []
    for c in range(n_cells):
        genes = rng.choice(n_genes, 40, replace=False)
        for g in genes:
            v = 0.3 * rng.normal(size=d)
            for p, members in programs.items():
                if g in members:
                    v += (2.0 + rng.exponential(1.0)) * atoms[p]
            rows.append(g)
            cells.append(c)
            vecs.append(v)
    V = np.array(vecs, dtype=np.float32)
    w = ActivationWriter(path, ["L1"], d, V.shape[0], "float32", shard_rows=5_000)
    w.add_index(np.array(cells), np.array(rows), np.zeros(len(rows), dtype=np.int32))
    w.add("L1", V)
    names = [f"G{i}" for i in range(n_genes)]
    w.finish(genes=names, cell_ids=[f"c{i}" for i in range(n_cells)],
             meta={"model": "planted", "cache_checksum": None})
    return names, programs


def planted_atlas(tmp: Path, *, d_sae: int = 96, epochs: int = 8, top_n: int = 10,
                  atlas_dir: Path | None = None):
    """Planted programs -> activations -> SAE -> atlas under `tmp`; returns (names, programs,
    activation store, atlas path)."""
    names, programs = planted_activations(tmp / "acts")
    acts = open_activations(tmp / "acts")
    train(ArraySource(acts.shards("L1")),
          SAEConfig(d_in=24, d_sae=d_sae, k=4, lr=2e-3, batch_size=256, epochs=epochs,
                    dead_after=5_000, layer="L1"), tmp / "sae", progress=False)
    out = atlas_dir or tmp / "atlas"
    build_atlas(tmp / "sae", tmp / "acts", out, top_n=top_n, progress=False)
    return names, programs, acts, out


def test_atlas_recovers_planted_gene_programs(tmp_path):
    names, programs = planted_activations(tmp_path / "acts")
    acts = open_activations(tmp_path / "acts")
    assert acts.verify() == [] and len(acts.shards("L1")) == 3
    cfg = SAEConfig(d_in=24, d_sae=96, k=4, lr=2e-3, batch_size=256, epochs=8, seed=0,
                    dead_after=5_000, layer="L1")
    train(ArraySource(acts.shards("L1")), cfg, tmp_path / "sae", progress=False)
    atlas = build_atlas(tmp_path / "sae", tmp_path / "acts", tmp_path / "atlas", top_n=10,
                        progress=False)
    assert atlas.n_features == 96 and atlas.n_positions == acts.n_positions
    hits = []
    for _p, members in programs.items():
        want = {names[g] for g in members}
        best = max(len(want & set(atlas.top_genes(f, 10))) for f in range(96))
        hits.append(best)
    print(f"planted programs: best feature's top-10 overlap {hits}")
    assert sum(h >= 8 for h in hits) >= 7  # 7 of 8 programs found almost exactly
    # the stored pieces agree with each other
    freq = np.asarray(atlas.array("frequency"))
    codes = np.asarray(atlas.array("codes_idx"))
    counted = np.bincount(codes[codes >= 0], minlength=96) / atlas.n_positions
    np.testing.assert_allclose(freq, counted)
    means = np.asarray(atlas.array("gene_means"))
    f = int(np.argmax(freq))
    assert atlas.top_genes(f, 3) == [names[i] for i in np.argsort(-means[f], kind="stable")[:3]]
    assert atlas.verify() == []
    assert atlas.manifest["activations"]["checksum"] == acts.checksum()


def test_atlas_opens_without_reading_arrays_and_refuses_edits(tmp_path):
    planted_activations(tmp_path / "acts")
    acts = open_activations(tmp_path / "acts")
    train(ArraySource(acts.shards("L1")), SAEConfig(d_in=24, d_sae=48, k=4, batch_size=512,
                                                     epochs=1, layer="L1"),
          tmp_path / "sae", progress=False)
    build_atlas(tmp_path / "sae", tmp_path / "acts", tmp_path / "atlas", progress=False)
    (tmp_path / "atlas" / "gene_means.npy").write_bytes(b"garbage")  # arrays are not read
    atlas = open_atlas(tmp_path / "atlas")
    assert atlas.summary()["n_features"] == 48
    assert atlas.verify() == ["gene_means.npy"]
    man = tmp_path / "atlas" / "atlas.json"
    m = json.loads(man.read_text())
    m["fve"] = 0.99
    man.write_text(json.dumps(m))
    with pytest.raises(GeoscreenError, match="was edited after the atlas was written"):
        open_atlas(tmp_path / "atlas")
    with pytest.raises(GeoscreenError, match="already exists"):
        build_atlas(tmp_path / "sae", tmp_path / "acts", tmp_path / "atlas", progress=False)
