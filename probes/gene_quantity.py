"""Per-gene quantities that span layers: how far each gene moves, and which way it trends.

Two quantities a probe can rank genes by or correlate with a score, beside the single-layer ones
(an axis coordinate, the norm, the centrality):

* ``drift``: each gene's distance between its vector in the tested layer and in a reference
  layer (the layer before it, or a layer named by position or role): cosine distance of the
  two vectors, each layer centred on its mean gene (as `gene_drift`), or the euclidean length
  of the difference (the published screen's "L2(layer 11 - layer 0)", uncentred with
  ``center: false``);
* ``norm_trend``: each gene's Spearman correlation between depth and its distance from the
  layer's centroid (the mean of the tested genes), over a run of layers (every transformer
  block by default): -1 for a gene that closes in on the centroid block after block, +1 for one
  that moves steadily away; the published screen's "trajectory slope".

Both are fixed per gene before any null is drawn, so a gene-relabelling null of the probe that
ranks or correlates them stays exact where it was (uniform or within-strata relabelling; a
covariate-residualised correlation stays Freedman and Lane's approximation).

References
----------
Spearman, C. (1904). The proof and measurement of association between two things. The American
Journal of Psychology 15(1), 72-101.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.drift import drift_values
from geoscreen.probes.params import added_field, changed_fields

stats = lazy_module("scipy.stats")

CROSS_LAYER = ("drift", "norm_trend")
DriftMetric = Literal["cosine", "euclidean"]


def reference_field(since: str) -> object:
    return added_field(
        "previous", since=since,
        description="drift: the layer each tested layer is compared with, 'previous' (the "
                    "stored layer before it) or a layer name, position or role (first, last, "
                    "block:N)")


def drift_metric_field(since: str) -> object:
    return added_field(
        "cosine", since=since,
        description="drift: cosine distance of a gene's two vectors, or euclidean length of "
                    "their difference")


def center_field(since: str) -> object:
    return added_field(
        True, since=since,
        description="drift: centre each layer on its mean gene first (false: raw vectors)")


def trend_layers_field(since: str) -> object:
    return added_field(
        "blocks", since=since,
        description="norm_trend: the layers whose depth order the trend follows, 'blocks' "
                    "(every transformer block) or a list of names, positions or roles; at "
                    "least 3")


def unused_quantity_fields(model: BaseModel, quantity: str) -> str | None:
    """The problem with a params model that changes a cross-layer field its quantity does not
    use (None when there is none)."""
    used = {"drift": ("reference", "drift_metric", "center"),
            "norm_trend": ("trend_layers",)}.get(quantity, ())
    wrong = [f for f in changed_fields(model, ("reference", "drift_metric", "center",
                                               "trend_layers")) if f not in used]
    if not wrong:
        return None
    one = len(wrong) == 1
    return (f"{', '.join(wrong)} {'does' if one else 'do'} not apply to {quantity}; leave "
            f"{'it' if one else 'them'} out")


def trend_layer_names(ctx: ProbeContext, trend_layers: str | list[int | str]) -> list[str]:
    """The layers of a norm trend, in depth order: every transformer block, or the listed ones."""
    names = list(ctx.cache.layers)
    if trend_layers == "blocks":
        chosen = names[ctx.cache.layer_index("first"):]
    elif isinstance(trend_layers, str):
        raise GeoscreenError(f"trend_layers {trend_layers!r} is neither 'blocks' nor a list",
                             field="params.trend_layers",
                             fix="write trend_layers: blocks, or a list such as [first, "
                                 "block:6, last]")
    else:
        chosen = [ctx.cache.layer_name(x) for x in trend_layers]
    pos = [names.index(x) for x in chosen]
    if len(set(pos)) != len(pos):
        raise GeoscreenError("trend_layers names a layer twice", field="params.trend_layers")
    if len(pos) < 3:
        raise GeoscreenError(f"a depth trend needs at least 3 layers; trend_layers gives "
                             f"{len(pos)}", field="params.trend_layers")
    return [names[i] for i in sorted(pos)]


def centroid_distances(ctx: ProbeContext, rows: np.ndarray, layers: list[str]) -> np.ndarray:
    """(genes, layers) euclidean distance of each gene from its layer's centroid (the mean of
    the `rows` genes)."""
    out = np.empty((rows.size, len(layers)))
    for c, name in enumerate(layers):
        X = np.asarray(ctx.cache.array(name)[rows], dtype=np.float64)
        out[:, c] = np.linalg.norm(X - X.mean(axis=0), axis=1)
    return out


def rowwise_spearman(D: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of D with its column order (average ranks for ties;
    0 for a constant row)."""
    L = D.shape[1]
    r = stats.rankdata(D, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    t = np.arange(L, dtype=np.float64) - (L - 1) / 2.0
    den = np.sqrt((r * r).sum(axis=1) * (t * t).sum())
    num = r @ t
    out = np.zeros(D.shape[0])
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def norm_trend_values(ctx: ProbeContext, svd: SVD,
                      trend_layers: str | list[int | str]) -> tuple[np.ndarray, list[str]]:
    """Each gene's Spearman rho between depth and distance from the centroid, over the trend
    layers (the same values whichever layer is tested: kept for the hypothesis)."""
    layers = trend_layer_names(ctx, trend_layers)
    key = (tuple(layers), svd.rows.size, int(svd.rows.sum()))
    rho = ctx.keep_last("norm_trend", key,
                        lambda: rowwise_spearman(centroid_distances(ctx, svd.rows, layers)))
    return rho, layers


def cross_layer_quantity(ctx: ProbeContext, layer: str, svd: SVD, name: str, *,
                         reference: int | str, metric: str, center: bool,
                         trend_layers: str | list[int | str]) -> tuple[np.ndarray, dict]:
    """(values in the SVD's row order, record) of `drift` or `norm_trend`."""
    if name == "drift":
        ref = ctx.reference_layer(layer, reference)
        return (drift_values(ctx, layer, svd, ref, metric, center),
                {"reference_layer": ref, "drift_metric": metric, "center": center})
    rho, layers = norm_trend_values(ctx, svd, trend_layers)
    return rho, {"trend_layers": layers}

