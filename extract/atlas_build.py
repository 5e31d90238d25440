"""Build a feature atlas: run a trained SAE over every stored position of its layer.

One streaming pass over the activation shards (one chunk of positions in memory at a time)
encodes each position and accumulates, per feature, how often it fires and its mean
activation over each gene's positions; each position's active features are kept as sparse
codes (for co-activation and cross-layer statistics).  Those codes and the position index are
held in memory until written: about positions x (6 k + 8) bytes (0.8 GB for 4 M positions at
k = 32), besides features x genes x 8 bytes of gene sums.  Top genes rank genes by mean activation
over their positions, among genes with at least `min_gene_positions` positions (rarer genes
have unstable means; they keep their means in ``gene_means`` but do not enter the top list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.atlas import Atlas, write_atlas

from .activations import open_activations
from .sae import TopKSAE, read_config


def build_atlas(sae_dir: str | Path, activations: str | Path, out: str | Path, *,
                top_n: int = 50, min_gene_positions: int = 5, chunk: int = 65_536,
                device: str = "cpu", overwrite: bool = False, progress: bool = True) -> Atlas:
    """Encode every position of the SAE's layer and write the atlas (see `store.atlas`)."""
    import torch
    from tqdm import tqdm

    from geoscreen.store.cache import sha256_file

    cfg = read_config(sae_dir)
    acts = open_activations(activations)
    layer = acts.layer_name(cfg.layer) if cfg.layer else acts.layers[-1]
    if acts.dim != cfg.d_in:
        raise GeoscreenError(f"holds {acts.dim}-d activations; the SAE takes {cfg.d_in}",
                             path=str(activations), field="--activations",
                             fix="pass the activations the SAE was trained on")
    if top_n < 1:
        raise GeoscreenError(f"is {top_n}; expected at least 1", field="--top-n")
    sae = TopKSAE.load(sae_dir, device)
    genes = acts.genes()
    n_genes, F, k = len(genes), cfg.d_sae, cfg.k
    gene_row = np.asarray(acts.index("gene_row"), dtype=np.int64)
    n = acts.n_positions
    sums = torch.zeros((n_genes, F), dtype=torch.float64, device=sae.device)
    fires = torch.zeros(F, dtype=torch.int64, device=sae.device)
    codes_idx = np.full((n, k), -1, dtype=np.int32)
    codes_val = np.zeros((n, k), dtype=np.float16)
    sq_err, sq_tot = 0.0, 0.0
    start = 0
    bar = tqdm(total=n, unit="pos", desc=f"atlas {layer}", disable=not progress)
    try:
        with torch.inference_mode():
            for shard in acts.shards(layer):
                for a in range(0, shard.shape[0], chunk):
                    x = torch.from_numpy(np.array(shard[a: a + chunk], dtype=np.float32)
                                         ).to(sae.device)
                    xn = sae.normalise(x)
                    pre = sae.pre_activations(xn)
                    vals, idx = torch.topk(pre, k, dim=-1)
                    vals = vals.relu()
                    z = torch.zeros_like(pre).scatter_(-1, idx, vals)
                    m = x.shape[0]
                    rows = torch.from_numpy(gene_row[start: start + m]).to(sae.device)
                    sums.index_add_(0, rows, z.double())
                    fires += (z > 0).sum(0)
                    err = xn - sae.decode(z)
                    sq_err += float(err.pow(2).sum())
                    sq_tot += float((xn - xn.mean(0)).pow(2).sum())
                    live = (vals > 0).cpu().numpy()
                    ci = idx.cpu().numpy().astype(np.int32)
                    ci[~live] = -1
                    codes_idx[start: start + m] = ci
                    codes_val[start: start + m] = vals.cpu().numpy().astype(np.float16)
                    start += m
                    bar.update(m)
    finally:
        bar.close()
    counts = np.bincount(gene_row, minlength=n_genes).astype(np.int64)
    means = (sums.cpu().numpy() / np.maximum(counts, 1)[:, None]).T.astype(np.float32)
    eligible = counts >= min_gene_positions
    ranked = np.where(eligible[None, :], means, -np.inf)
    top_n = min(top_n, int(eligible.sum())) or 1
    top = np.argsort(-ranked, axis=1, kind="stable")[:, :top_n].astype(np.int32)
    top_vals = np.take_along_axis(means, top, axis=1)
    top[~np.isfinite(np.take_along_axis(ranked, top, axis=1))] = -1
    freq = fires.cpu().numpy() / max(n, 1)
    decoder = sae.W_dec.detach().cpu().numpy().astype(np.float32)
    meta: dict[str, Any] = {
        "layer": layer, "model": acts.manifest.get("model_label", acts.manifest.get("model")),
        "n_features": F, "n_positions": n, "top_n": top_n,
        "min_gene_positions": min_gene_positions,
        "alive_features": int((freq > 0).sum()),
        "fve": round(1.0 - sq_err / sq_tot, 6) if sq_tot > 0 else None,
        "sae": {**{k_: v for k_, v in vars(cfg).items() if k_ != "source"},
                "weights_sha256": sha256_file(Path(sae_dir) / "sae.safetensors")},
        "activations": {"path": str(Path(activations).resolve()),
                        "checksum": acts.checksum(),
                        "cache_checksum": acts.manifest.get("cache_checksum")},
        "top_genes_rule": f"highest mean activation over the gene's positions, genes with >= "
                          f"{min_gene_positions} positions",
    }
    arrays = {"frequency": freq, "gene_means": means, "gene_counts": counts, "top_genes": top,
              "top_values": top_vals.astype(np.float32), "decoder": decoder,
              "codes_idx": codes_idx, "codes_val": codes_val,
              "cell_index": np.asarray(acts.index("cell_index")), "gene_row": gene_row}
    return write_atlas(out, arrays, genes, meta, overwrite=overwrite)


__all__ = ["build_atlas"]
