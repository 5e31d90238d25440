"""A re-typed reference TopK SAE (SAELens ``TopKTrainingSAE`` semantics), for tests and the
benchmark: forward pass and a minimal training loop on an in-memory array.

It is deliberately plain - ``torch.nn`` parameters, Adam, MSE, decoder rows renormalised after
each step, no auxiliary loss, no checkpoints, all data in RAM - so that our trainer
(`extract.sae`) can be checked against it on the same batch and timed next to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def reference_forward(x: Any, W_enc_T: Any, b_enc: Any, W_dec: Any, b_dec: Any,
                      k: int) -> tuple[Any, Any]:
    """sae_in = x - b_dec; hidden_pre = sae_in @ W_enc + b_enc; keep the top k, ReLU;
    out = acts @ W_dec + b_dec.  Returns (acts, out)."""
    import torch

    hidden_pre = (x - b_dec) @ W_enc_T + b_enc
    topv, topi = torch.topk(hidden_pre, k=k, dim=-1, sorted=False)
    acts = torch.zeros_like(hidden_pre).scatter(-1, topi, topv.relu())
    return acts, acts @ W_dec + b_dec


def reference_train(X: np.ndarray, d_sae: int, k: int, *, lr: float = 3e-4,
                    batch_size: int = 4096, epochs: int = 1, seed: int = 0) -> dict[str, Any]:
    """Train on rows of `X` (centred and scaled here, as ours does); return the parameters."""
    import torch

    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.asarray(X, dtype=np.float32))
    mean = x_all.mean(0)
    scale = (x_all.shape[1] / (x_all - mean).pow(2).sum(1).mean()).sqrt()
    d = x_all.shape[1]
    W_dec = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(d_sae, d), dim=1))
    W_enc_T = torch.nn.Parameter(W_dec.detach().T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(d_sae))
    b_dec = torch.nn.Parameter(torch.zeros(d))
    opt = torch.optim.Adam([W_enc_T, b_enc, W_dec, b_dec], lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x_all.shape[0], generator=g)
        for s in range(0, x_all.shape[0], batch_size):
            x = (x_all[perm[s: s + batch_size]] - mean) * scale
            _, out = reference_forward(x, W_enc_T, b_enc, W_dec, b_dec, k)
            loss = (out - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True)
    return {"W_enc_T": W_enc_T.detach(), "b_enc": b_enc.detach(), "W_dec": W_dec.detach(),
            "b_dec": b_dec.detach(), "loss": loss.item()}


__all__ = ["reference_forward", "reference_train"]
