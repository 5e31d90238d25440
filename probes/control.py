"""Co-expression residualization: test proximity that co-expression does not already explain.

Genes that are co-expressed in the training data may sit close in an embedding for that reason
alone.  A probe given ``control: file:COEXPR`` first regresses every gene pair's value (similarity,
co-pole indicator, ...) on the pair's co-expression, by ordinary least squares over all pairs of
present genes, and then tests the residuals instead of the raw values.  The null (gene shuffle,
degree-preserving rewiring, ...) is applied to the residual matrix unchanged, so the test asks
whether the listed pairs are closer than random pairs *at the same co-expression*.

The control file is either

* ``file:PATH.npy``: a square (n_genes, n_genes) float array in the cache's gene order (all genes
  of the cache, including all-zero rows), or
* ``file:PATH.tsv``: gene pairs ``a<TAB>b<TAB>value`` (optional header); the matrix is symmetric,
  pairs not listed have co-expression 0 (the usual reading of a thresholded co-expression network)
  and genes not in the cache are ignored, or
* ``full_space``: no file; the control is each pair's cosine similarity in the layer's full
  (centred) space, for a test in a subspace: are the pairs closer in SV2-4 than their overall
  similarity explains?  (The published screen's "co-expression" control was this cosine.)  It
  needs a subspace: in the full space itself the residuals would be zero, so a cosine test in
  the full space with it is refused when the spec is read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext

FULL_SPACE = "full_space"
CONTROL_DESCRIPTION = (
    "co-expression control: file:PATH.npy (square, cache gene order) or file:PATH.tsv "
    "(a<TAB>b<TAB>value), or full_space (each pair's cosine in the layer's full space, for a "
    "test in a subspace); pair values are regressed on it and residuals are tested")


def check_control(control: str | None, subspace: object = None, metric: str = "cosine") -> None:
    """Refuse `control: full_space` where it would leave nothing: a cosine test in the full
    space (raises ValueError, for a params model's validator)."""
    if control == FULL_SPACE and subspace in (None, "full") and metric == "cosine":
        raise ValueError("control full_space regresses pair values on their full-space cosine, "
                         "which is the statistic itself without a subspace: give a subspace "
                         "(e.g. [2, 3, 4]) or a file: control")


def _path(ref: str) -> Path:
    return Path(ref[len("file:"):] if ref.startswith("file:") else ref).expanduser()


def coexpression_matrix(ctx: ProbeContext, ref: str, rows: np.ndarray) -> np.ndarray:
    """Co-expression restricted to cache rows `rows` (float32, symmetric, zero diagonal)."""
    from geoscreen.store.cache import sha256_file
    from geoscreen.store.userfiles import read_text, regular_file

    p = _path(ref)
    n_all = ctx.cache.n_genes
    if p.suffix == ".npy":
        regular_file(p, field="params.control", what="co-expression matrix")
        try:
            C = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            # the loader's message may quote the file's first bytes: say what is wrong instead
            raise GeoscreenError("is not a NumPy .npy array", path=str(p),
                                 field="params.control",
                                 fix="save the matrix with numpy.save") from None
        checksum = sha256_file(p)
        if C.ndim != 2 or C.shape != (n_all, n_all):
            raise GeoscreenError(f"has shape {C.shape}; expected ({n_all}, {n_all}) in the cache's "
                                 "gene order", path=str(p), field="params.control")
        out = np.asarray(C[np.ix_(rows, rows)], dtype=np.float32)
        out = (out + out.T) / 2
        n_pairs = int(n_all * (n_all - 1) / 2)
    else:
        index = {int(r): k for k, r in enumerate(rows)}
        gene_index = ctx.cache.genes.index
        out = np.zeros((rows.size, rows.size), dtype=np.float32)
        n_pairs = 0
        data = read_text(p, field="params.control", what="co-expression table")
        checksum = hashlib.sha256(data.encode("utf-8")).hexdigest()
        for ln, line in enumerate(data.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise GeoscreenError(f"line {ln} has {len(cols)} column(s); expected a, b, value",
                                     path=str(p), field="params.control")
            try:
                v = float(cols[2])
            except ValueError:
                if ln == 1:
                    continue  # header
                raise GeoscreenError(f"line {ln}: column 3 (value) is not a number", path=str(p),
                                     field="params.control") from None
            a, b = gene_index.get(cols[0].strip()), gene_index.get(cols[1].strip())
            if a is None or b is None or a not in index or b not in index:
                continue
            out[index[a], index[b]] = out[index[b], index[a]] = v
            n_pairs += 1
    if not np.isfinite(out).all():
        raise GeoscreenError("holds NaN or Inf values", path=str(p), field="params.control")
    np.fill_diagonal(out, 0.0)
    ctx.resources_used["control"] = {"ref": ref, "kind": "coexpression", "resource": "file",
                                     "checksum": checksum, "pairs": n_pairs,
                                     "present": int(rows.size)}
    return out


def residualize(K: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Residuals of K_ij = a + b C_ij + e_ij, fitted by least squares over all pairs i != j.

    Returns the residual matrix (float32, diagonal as in K minus the fit) and the fit.
    """
    n = K.shape[0]
    if C.shape != K.shape:
        raise ValueError("control matrix and pair matrix differ in shape")
    N = n * (n - 1)
    dk, dc = np.diag(K).astype(np.float64), np.diag(C).astype(np.float64)
    sk = float(K.sum(dtype=np.float64) - dk.sum())
    sc = float(C.sum(dtype=np.float64) - dc.sum())
    skc = float(np.einsum("ij,ij->", K, C, dtype=np.float64) - (dk * dc).sum())
    scc = float(np.einsum("ij,ij->", C, C, dtype=np.float64) - (dc * dc).sum())
    skk = float(np.einsum("ij,ij->", K, K, dtype=np.float64) - (dk * dk).sum())
    mk, mc = sk / N, sc / N
    cov, var_c, var_k = skc / N - mk * mc, scc / N - mc * mc, skk / N - mk * mk
    slope = cov / var_c if var_c > 1e-300 else 0.0
    intercept = mk - slope * mc
    R = (K - np.float32(slope) * C - np.float32(intercept)).astype(np.float32)
    r2 = (cov * cov / (var_c * var_k)) if var_c > 0 and var_k > 0 else 0.0
    return R, {"intercept": intercept, "slope": slope, "r2": r2}


def full_space_matrix(ctx: ProbeContext, layer: str, rows: np.ndarray,
                      include_zero: bool) -> np.ndarray:
    """Cosine similarity of the genes `rows` in the layer's full centred space (float32,
    symmetric, zero diagonal): the `full_space` control."""
    from geoscreen.probes.params import subspace_coords
    from geoscreen.probes.stats import similarity_matrix

    svd, Z = subspace_coords(ctx, layer, "full", include_zero)
    if not np.array_equal(svd.rows, rows):
        raise ValueError("the full_space control needs the same genes as the tested matrix")
    C = similarity_matrix(Z, "cosine")
    np.fill_diagonal(C, 0.0)
    ctx.resources_used["control"] = {"ref": FULL_SPACE, "kind": "full_space_cosine",
                                     "resource": "layer", "present": int(rows.size)}
    return C


def control_matrix(ctx: ProbeContext, ref: str, rows: np.ndarray, *, layer: str | None = None,
                   include_zero: bool = False) -> np.ndarray:
    """The control matrix of `ref` on cache rows `rows`: a co-expression file, or (with the
    layer) the layer's full-space cosine."""
    if ref == FULL_SPACE:
        if layer is None:
            raise ValueError("the full_space control needs the layer")
        return full_space_matrix(ctx, layer, rows, include_zero)
    return coexpression_matrix(ctx, ref, rows)


def controlled(ctx: ProbeContext, ref: str | None, K: np.ndarray, rows: np.ndarray, *,
               layer: str | None = None, include_zero: bool = False,
               ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """K itself, or its residuals on the control (co-expression, or the full-space cosine)."""
    if ref is None:
        return K, None
    C = control_matrix(ctx, ref, rows, layer=layer, include_zero=include_zero)
    R, fit = residualize(K, C)
    if ref == FULL_SPACE:
        fit = {**fit, "control": FULL_SPACE}
    return R, fit
