"""TopK sparse autoencoders over a model's residual stream: the module and a resumable trainer.

The architecture is the TopK SAE of Gao et al. (2024) as used by the SAE atlas study
(arXiv 2603.02952) and SAELens's ``TopKTrainingSAE``::

    x_n   = (x - mean) * scale                        centred, scaled so E||x_n||^2 = d_in
    pre   = (x_n - b_dec) @ W_enc.T + b_enc
    z     = ReLU(TopK_k(pre))                         at most k active features per position
    x_hat = z @ W_dec + b_dec                         rows of W_dec have unit norm

Loss: mean squared error per dimension, plus the AuxK loss (coefficient 1/32): the
`k_aux` largest pre-activations among *dead* features (no activation over the last
`dead_after` positions) reconstruct the residual ``x_n - x_hat``, which revives dead features.
After every Adam step the decoder rows are renormalised to unit norm, and the gradient
component parallel to each row is removed before the step.

Training is seeded and deterministic on CPU (the same seed, data and thread count give the same
weights bit for bit), checkpointed every `checkpoint_every` steps, and resumable: a run
stopped and resumed gives the weights of an uninterrupted run.  Weights are saved as
safetensors with a JSON config (no pickle).  SAELens was considered: it trains on activations
from a TransformerLens ``HookedRootModule`` and pulls transformer-lens, datasets and wandb, so
the module is written here and tested against a re-typed reference on the same batch
(tests/test_sae.py).

References
----------
Gao et al., "Scaling and evaluating sparse autoencoders", arXiv:2406.04093 (2024).
Bricken et al., "Towards Monosemanticity", Transformer Circuits Thread (2023).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError

WEIGHTS = "sae.safetensors"
CONFIG = "sae.json"
STATE = "trainer.safetensors"
FORMAT_VERSION = 1


@dataclass
class SAEConfig:
    """Everything that defines a trained SAE; saved as ``sae.json``."""

    d_in: int
    d_sae: int
    k: int = 32
    k_aux: int | None = None  # default d_in // 2, as Gao et al.
    aux_coef: float = 1.0 / 32
    lr: float = 3e-4
    batch_size: int = 4096
    epochs: int = 1
    seed: int = 0
    dead_after: int = 1_000_000  # positions without a firing before a feature counts as dead
    checkpoint_every: int = 200  # steps
    layer: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        for name, lo in (("d_in", 1), ("d_sae", 1), ("k", 1), ("batch_size", 1),
                         ("epochs", 1), ("dead_after", 1), ("checkpoint_every", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < lo:
                raise GeoscreenError(f"is {v!r}; expected a whole number >= {lo}",
                                     field=f"--{name.replace('_', '-')}")
        if self.k > self.d_sae:
            raise GeoscreenError(f"is {self.k}, more than the {self.d_sae} features", field="--k")
        if not (0 < self.lr < 1):
            raise GeoscreenError(f"is {self.lr}; expected 0 < lr < 1", field="--lr")


def _torch() -> Any:
    import torch

    return torch


class TopKSAE:
    """Parameters and the forward pass (a thin torch module built lazily)."""

    def __init__(self, cfg: SAEConfig, device: str = "cpu") -> None:
        torch = _torch()
        self.cfg = cfg
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(cfg.seed)
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_enc = w.clone().to(self.device).requires_grad_()  # tied initialisation
        self.W_dec = w.clone().to(self.device).requires_grad_()
        self.b_enc = torch.zeros(cfg.d_sae, device=self.device, requires_grad=True)
        self.b_dec = torch.zeros(cfg.d_in, device=self.device, requires_grad=True)
        self.mean = torch.zeros(cfg.d_in, device=self.device)
        self.scale = torch.ones((), device=self.device)

    def parameters(self) -> list[Any]:
        return [self.W_enc, self.b_enc, self.W_dec, self.b_dec]

    def tensors(self) -> dict[str, Any]:
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec,
                "b_dec": self.b_dec, "mean": self.mean, "scale": self.scale.reshape(1)}

    def normalise(self, x: Any) -> Any:
        return (x - self.mean) * self.scale

    def pre_activations(self, xn: Any) -> Any:
        return (xn - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode(self, x: Any, *, normalised: bool = False) -> Any:
        """Sparse codes (positions x d_sae, at most k nonzero per row, all >= 0)."""
        torch = _torch()
        xn = x if normalised else self.normalise(x)
        pre = self.pre_activations(xn)
        vals, idx = torch.topk(pre, self.cfg.k, dim=-1)
        z = torch.zeros_like(pre)
        z.scatter_(-1, idx, vals.relu())
        return z

    def decode(self, z: Any) -> Any:
        return z @ self.W_dec + self.b_dec

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> TopKSAE:
        folder = Path(folder)
        cfg = read_config(folder)
        sae = cls(cfg, device)
        tensors = _load_safetensors(folder / WEIGHTS)
        torch = _torch()
        with torch.no_grad():
            for name, t in sae.tensors().items():
                if name not in tensors or tuple(tensors[name].shape) != tuple(t.shape):
                    raise GeoscreenError(f"tensor {name!r} is missing or misshapen",
                                         path=str(folder / WEIGHTS),
                                         fix="re-train or copy the SAE folder again")
                t.copy_(tensors[name].to(sae.device))
        return sae


def _load_safetensors(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GeoscreenError("does not exist", path=str(path))
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises its own error type
        raise GeoscreenError(f"cannot be read as safetensors ({type(exc).__name__})",
                             path=str(path), fix="re-train or copy the SAE folder again") from None


def read_config(folder: str | Path) -> SAEConfig:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise GeoscreenError("is not an SAE folder (no sae.json)", path=str(folder),
                             fix="pass the folder `geoscreen sae train` wrote")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("history", None)
        raw.pop("progress", None)
        return SAEConfig(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise GeoscreenError(f"is not a valid SAE config ({type(exc).__name__})",
                             path=str(path)) from None


@dataclass
class StepStats:
    step: int
    loss: float
    mse: float
    aux: float
    fve: float  # fraction of variance explained on the batch
    l0: float  # mean number of active features per position
    dead: int  # features that have not fired for dead_after positions


def train_step(sae: TopKSAE, opt: Any, x: Any, since_fired: Any) -> StepStats:
    """One Adam step on a batch `x` (positions x d_in, raw activations)."""
    torch = _torch()
    cfg = sae.cfg
    xn = sae.normalise(x)
    pre = sae.pre_activations(xn)
    vals, idx = torch.topk(pre, cfg.k, dim=-1)
    z = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    x_hat = sae.decode(z)
    err = xn - x_hat
    mse = err.pow(2).mean()
    # dead features: no firing over the last dead_after positions (AuxK revives them)
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x.device)
    fired[idx[vals > 0]] = True
    since_fired += x.shape[0]
    since_fired[fired] = 0
    dead = since_fired >= cfg.dead_after
    aux = torch.zeros((), device=x.device)
    n_dead = int(dead.sum())
    if n_dead and cfg.aux_coef > 0:
        k_aux = min(cfg.k_aux or cfg.d_in // 2, n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))
        av, ai = torch.topk(masked, k_aux, dim=-1)
        za = torch.zeros_like(pre).scatter_(-1, ai, av.relu())
        e_hat = za @ sae.W_dec
        target = err.detach()
        aux = (target - e_hat).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)
        aux = torch.nan_to_num(aux)
    loss = mse + cfg.aux_coef * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        g = sae.W_dec.grad  # keep decoder rows on the unit sphere: drop the radial component
        g -= (g * sae.W_dec).sum(dim=1, keepdim=True) * sae.W_dec
    opt.step()
    with torch.no_grad():
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        fve = 1.0 - float(err.pow(2).sum() / (xn - xn.mean(0)).pow(2).sum().clamp_min(1e-12))
        l0 = float((vals > 0).sum(dim=1).float().mean())
    return StepStats(0, loss.item(), mse.item(), aux.item(), fve, l0, n_dead)


# -- data --------------------------------------------------------------------------------------

class ArraySource:
    """Training rows from one or more (rows x d_in) arrays (memory-mapped shards or in RAM),
    visited in a seeded order: shards shuffled, rows shuffled within each shard, so at most one
    shard is in memory at a time."""

    def __init__(self, shards: list[Any]) -> None:
        if not shards:
            raise GeoscreenError("holds no activations", field="ACTS")
        self.shards = shards
        self.n_rows = int(sum(s.shape[0] for s in shards))
        self.d_in = int(shards[0].shape[1])

    def moments(self, chunk: int = 65_536) -> tuple[np.ndarray, float]:
        """Mean and the scale making E||x - mean||^2 = d_in, in one streaming pass over every
        row (float64 accumulators, one chunk in memory at a time)."""
        total = np.zeros(self.d_in)
        sq = 0.0
        for s in self.shards:
            for a in range(0, s.shape[0], chunk):
                x = np.asarray(s[a: a + chunk], dtype=np.float64)
                total += x.sum(0)
                sq += float((x * x).sum())
        mean = total / self.n_rows
        ms = sq / self.n_rows - float(mean @ mean)
        return mean, math.sqrt(self.d_in / ms) if ms > 0 else 1.0

    def batches(self, epoch: int, seed: int, batch: int) -> Iterator[np.ndarray]:
        """Seeded batches: shards in a shuffled order, rows of each shard in a shuffled order,
        each batch gathered from its (memory-mapped) shard; a batch may span two shards."""
        rng = np.random.default_rng([seed, epoch])
        pending: list[np.ndarray] = []
        n_pending = 0
        for s in rng.permutation(len(self.shards)):
            shard = self.shards[int(s)]
            perm = rng.permutation(shard.shape[0])
            pos = 0
            while pos < perm.size:
                take = min(batch - n_pending, perm.size - pos)
                pending.append(np.asarray(shard[perm[pos: pos + take]], dtype=np.float32))
                n_pending += take
                pos += take
                if n_pending == batch:
                    yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                    pending, n_pending = [], 0
        if n_pending:
            yield np.concatenate(pending)

    def steps_per_epoch(self, batch: int) -> int:
        return math.ceil(self.n_rows / batch)


# -- the trainer -------------------------------------------------------------------------------

def _save(folder: Path, sae: TopKSAE, opt: Any, state: dict[str, Any],
          history: list[dict[str, Any]]) -> None:
    """Atomically write weights, trainer state (Adam moments, dead counters) and config."""
    from safetensors.torch import save_file

    torch = _torch()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.tensors().items()}
    save_file(tensors, str(folder / f".{WEIGHTS}.tmp"))
    opt_state: dict[str, Any] = {"since_fired": state["since_fired"].cpu().contiguous()}
    for i, p in enumerate(sae.parameters()):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                opt_state[f"p{i}.{key}"] = st[key].detach().cpu().contiguous()
        if "step" in st:
            opt_state[f"p{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    save_file(opt_state, str(folder / f".{STATE}.tmp"))
    cfg = asdict(sae.cfg)
    cfg["progress"] = {"epoch": state["epoch"], "batch": state["batch"], "step": state["step"],
                       "done": state["done"]}
    cfg["history"] = history
    (folder / f".{CONFIG}.tmp").write_text(json.dumps(cfg, indent=1))
    for name in (WEIGHTS, STATE, CONFIG):  # config last: it says which step the files hold
        (folder / f".{name}.tmp").replace(folder / name)


def train(source: ArraySource, cfg: SAEConfig, out: str | Path, *, device: str = "cpu",
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_steps: int | None = None,
          on_step: Callable[[StepStats], None] | None = None) -> TopKSAE:
    """Train a TopK SAE on `source`, checkpointing into `out`.

    Parameters
    ----------
    source
        The activations (`ArraySource`).
    cfg
        Architecture and optimisation settings (`SAEConfig`); ``d_in`` must match the source.
    out
        The SAE folder: ``sae.safetensors``, ``sae.json`` (config, progress, loss history) and
        ``trainer.safetensors`` (Adam moments, dead-feature counters) for resuming.
    resume
        Continue a stopped run in `out` (its config must match `cfg`).
    max_steps
        Stop after this many steps in total (for tests and time-boxed runs; resumable).
    """
    torch = _torch()
    out = Path(out)
    cfg.validate()
    if cfg.d_in != source.d_in:
        raise GeoscreenError(f"d_in {cfg.d_in} differs from the activations' width "
                             f"{source.d_in}", field="d_in")
    done_before = out.exists() and (out / CONFIG).is_file()
    if done_before and not (resume or overwrite):
        raise GeoscreenError("already holds an SAE", path=str(out), field="-o",
                             fix="pass --resume to continue it, or --overwrite to start over")
    if resume and not done_before:
        raise GeoscreenError("holds no SAE to resume", path=str(out), field="--resume")
    torch.manual_seed(cfg.seed)
    sae = TopKSAE(cfg, device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "done": False,
                             "since_fired": torch.zeros(cfg.d_sae, dtype=torch.int64,
                                                        device=sae.device)}
    history: list[dict[str, Any]] = []
    if resume:
        sae, opt, state, history = _resume(out, cfg, source, device)
    else:
        mean, scale = source.moments()
        sae.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        sae.scale.fill_(scale)
    if state["done"]:
        return sae
    from tqdm import tqdm

    per_epoch = source.steps_per_epoch(cfg.batch_size)
    total = per_epoch * cfg.epochs
    bar = tqdm(total=total, initial=state["step"], unit="step", desc=f"SAE {cfg.layer}".strip(),
               disable=not progress, smoothing=0.05)
    last = time.monotonic()
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            for b, x in enumerate(source.batches(epoch, cfg.seed, cfg.batch_size)):
                if epoch == state["epoch"] and b < state["batch"]:
                    continue  # resumed mid-epoch: the order is re-drawn from the seed
                if max_steps is not None and state["step"] >= max_steps:
                    _save(out, sae, opt, state, history)
                    return sae
                st = train_step(sae, opt, torch.from_numpy(x).to(sae.device),
                                state["since_fired"])
                state["step"] += 1
                state["batch"] = b + 1
                st.step = state["step"]
                if on_step is not None:
                    on_step(st)
                if st.step % 10 == 0 or st.step == total:
                    history.append({k: round(v, 6) if isinstance(v, float) else v
                                    for k, v in asdict(st).items()})
                bar.set_postfix(loss=f"{st.loss:.4f}", fve=f"{st.fve:.3f}", l0=f"{st.l0:.1f}",
                                dead=st.dead, refresh=False)
                bar.update(1)
                if st.step % cfg.checkpoint_every == 0 or time.monotonic() - last > 600:
                    _save(out, sae, opt, state, history)
                    last = time.monotonic()
            state["epoch"] = epoch + 1
            state["batch"] = 0
        state["done"] = True
        _save(out, sae, opt, state, history)
    finally:
        bar.close()
    return sae


def _resume(out: Path, cfg: SAEConfig, source: ArraySource, device: str
            ) -> tuple[TopKSAE, Any, dict[str, Any], list[dict[str, Any]]]:
    torch = _torch()
    raw = json.loads((out / CONFIG).read_text(encoding="utf-8"))
    prog, history = raw.pop("progress", {}), raw.pop("history", [])
    saved = SAEConfig(**raw)
    differs = [k for k in ("d_in", "d_sae", "k", "lr", "batch_size", "seed", "aux_coef",
                           "dead_after") if getattr(saved, k) != getattr(cfg, k)]
    if differs:
        raise GeoscreenError(f"was trained with other settings ({', '.join(differs)})",
                             path=str(out), field="--resume",
                             fix="resume with the same settings, or start over with --overwrite")
    sae = TopKSAE.load(out, device)
    sae.cfg = cfg  # epochs may be extended on resume
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    st = _load_safetensors(out / STATE)
    for i, p in enumerate(sae.parameters()):
        if f"p{i}.exp_avg" in st:
            opt.state[p] = {"step": torch.tensor(float(st[f"p{i}.step"][0])),
                            "exp_avg": st[f"p{i}.exp_avg"].to(sae.device),
                            "exp_avg_sq": st[f"p{i}.exp_avg_sq"].to(sae.device)}
    state = {"epoch": int(prog.get("epoch", 0)), "batch": int(prog.get("batch", 0)),
             "step": int(prog.get("step", 0)),
             "done": bool(prog.get("done", False)) and prog.get("epoch", 0) >= cfg.epochs,
             "since_fired": st["since_fired"].to(sae.device)}
    return sae, opt, state, history


__all__ = ["ArraySource", "SAEConfig", "StepStats", "TopKSAE", "read_config", "train",
           "train_step"]
