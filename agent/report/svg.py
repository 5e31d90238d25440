"""Tiny inline-SVG plots for the HTML report: layer profiles, sparklines, histograms, bars, DAGs.

Hand-written rather than matplotlib: the report must open with no server and no network, stay
small with thousands of hypotheses, and geoscreen should not pull a plotting stack into every
install.  Every function returns one `<svg>` string; colours come from the Okabe-Ito palette
(distinguishable with colour-vision deficiencies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#999999")
EFFECT = "#0072B2"
PVAL = "#D55E00"
GOOD = "#009E73"
MUTED = "#9a9a9a"
BAD = "#D55E00"
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'
HALO = 'paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round"'


def fmt(x: float | None, digits: int = 3) -> str:
    """Short number for labels: 3 significant digits, no trailing noise."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def neglog10(p: float | None, floor: float = 1e-300) -> float | None:
    if p is None:
        return None
    return -math.log10(max(float(p), floor))


def _scale(lo: float, hi: float, a: float, b: float):
    """Linear map [lo, hi] -> [a, b] (a flat range maps to the middle)."""
    if hi - lo < 1e-12:
        mid = (a + b) / 2
        return lambda v: mid
    k = (b - a) / (hi - lo)
    return lambda v: a + (v - lo) * k


def _ticks(lo: float, hi: float, n: int = 3) -> list[float]:
    """A few round tick values inside [lo, hi]."""
    if hi - lo < 1e-12:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step and len(out) < 12:
        out.append(round(v, 10))
        v += step
    return out


def _open(width: float, height: float, label: str, cls: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-label="{escape(label)}" {FONT}><title>{escape(label)}</title>')


def _polyline(points: Sequence[tuple[float, float | None]], color: str, width: float = 1.6,
              dash: str = "") -> str:
    """A line through the points, broken wherever y is None."""
    parts, run = [], []
    for x, y in list(points) + [(0.0, None)]:
        if y is None:
            if len(run) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in run)
                d = f' stroke-dasharray="{dash}"' if dash else ""
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" '
                             f'stroke-width="{width}"{d} stroke-linejoin="round"/>')
            run = []
        else:
            run.append((x, y))
    return "".join(parts)


def sparkline(values: Sequence[float | None], *, width: int = 96, height: int = 22,
              ref: float | None = None) -> str:
    """A word-sized line of values across layers, with an optional dashed reference level.
    Minimal markup (styled by the page's `svg.spark` CSS): a report holds thousands."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    span = vals + ([ref] if ref is not None else [])
    sx = _scale(0, max(1, len(values) - 1), 2, width - 2)
    sy = _scale(min(span), max(span), height - 3, 3)
    out = [f'<svg class="spark" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']
    if ref is not None:
        out.append(f'<line x1="2" x2="{width - 2}" y1="{sy(ref):.1f}" y2="{sy(ref):.1f}"/>')
    pts = [(sx(i), sy(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    out.append('<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    out.append(f'<circle cx="{pts[-1][0]:.1f}" cy="{pts[-1][1]:.1f}" r="1.8"/></svg>')
    return "".join(out)


def _xlabels(labels: Sequence[str], sx, y: float, max_labels: int = 12) -> str:
    step = max(1, math.ceil(len(labels) / max_labels))
    out = []
    for i, lab in enumerate(labels):
        if i % step == 0 or i == len(labels) - 1:
            out.append(f'<text x="{sx(i):.1f}" y="{y:.1f}" font-size="9" text-anchor="middle" '
                       f'fill="#555">{escape(str(lab))}</text>')
    return "".join(out)


def _yaxis(ticks: Sequence[float], sy, x0: float, x1: float) -> str:
    out = []
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end" '
                   f'fill="#555">{fmt(t)}</text>')
    return "".join(out)


def profile(layers: Sequence[str], effect: Sequence[float | None], pvalues: Sequence[float | None],
            *, effect_name: str = "effect", null_level: float | None = None,
            alpha: float = 0.05, width: int = 380, height: int = 190,
            label: str = "per-layer profile", note: str = "") -> str:
    """Two stacked panels sharing the layer axis: the effect size (with its no-effect level
    dashed) and -log10 p per layer (with the nominal alpha dashed).  Layers without p-values
    (descriptive values of a trend test) get the effect panel only, and `note` instead."""
    n = len(layers)
    has_p = any(p is not None for p in pvalues)
    left, right, top, gap, bottom = 44, 56, 14, 22, 26
    ph = (height - top - gap - bottom) / 2 if has_p else height - top - bottom - 30
    sx = _scale(0, max(1, n - 1), left + 6, width - right - 6)
    out = [_open(width, height, label, "profile")]
    # effect panel
    vals = [v for v in effect if v is not None and math.isfinite(v)]
    if null_level is not None:
        vals.append(null_level)
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.5
    sy = _scale(lo - pad, hi + pad, top + ph, top)
    out.append(_yaxis(_ticks(lo - pad, hi + pad), sy, left, width - right))
    out.append(f'<text x="{left}" y="{top - 4}" font-size="10" fill="{EFFECT}" '
               f'font-weight="600">{escape(effect_name)}</text>')
    if null_level is not None:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(null_level):.1f}" '
                   f'y2="{sy(null_level):.1f}" stroke="{MUTED}" stroke-dasharray="4 3"/>'
                   f'<text x="{width - right + 4}" y="{sy(null_level) + 3:.1f}" font-size="9" '
                   f'fill="{MUTED}">no effect</text>')
    pts = [(sx(i), sy(v) if v is not None and math.isfinite(v) else None)
           for i, v in enumerate(effect)]
    out.append(_polyline(pts, EFFECT, 1.8))
    for (x, y), lab, v in zip(pts, layers, effect):
        if y is not None:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{EFFECT}">'
                       f'<title>{escape(str(lab))}: {escape(effect_name)} = {fmt(v)}</title>'
                       f'</circle>')
    if has_p:
        out.append(_pvalue_panel(pvalues, layers, sx, top + ph + gap, ph, alpha, left,
                                 width - right))
    elif note:
        out.append(f'<text x="{left}" y="{top + ph + 18:.1f}" font-size="10" fill="#555">'
                   f'{escape(note)}</text>')
    out.append(_xlabels(layers, sx, height - 8))
    out.append("</svg>")
    return "".join(out)


def _pvalue_panel(pvalues: Sequence[float | None], layers: Sequence[str], sx, top: float,
                  ph: float, alpha: float, x0: float, x1: float) -> str:
    """-log10 p bars (solid where p <= alpha) with the nominal alpha dashed."""
    lp = [neglog10(p) for p in pvalues]
    thr = -math.log10(alpha)
    hi = max([v for v in lp if v is not None] + [thr * 1.2])
    sy = _scale(0, hi * 1.05, top + ph, top)
    out = [_yaxis(_ticks(0, hi * 1.05), sy, x0, x1),
           f'<text x="{x0}" y="{top - 4}" font-size="10" fill="{PVAL}" '
           f'font-weight="600">−log10 p</text>']
    bw = max(2.0, min(14.0, (x1 - x0) / max(1, len(layers)) * 0.6))
    for i, (v, p, lab) in enumerate(zip(lp, pvalues, layers)):
        if v is None:
            continue
        y = sy(v)
        color = PVAL if p is not None and p <= alpha else "#f2b38f"
        out.append(f'<rect x="{sx(i) - bw / 2:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                   f'height="{max(0.0, top + ph - y):.1f}" fill="{color}">'
                   f'<title>{escape(str(lab))}: p = {fmt(p)}</title></rect>')
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{sy(thr):.1f}" y2="{sy(thr):.1f}" '
               f'stroke="#444" stroke-dasharray="4 3" stroke-width="0.8"/>'
               f'<text x="{x1 + 4}" y="{sy(thr) + 3:.1f}" font-size="9" '
               f'fill="#444">p = {fmt(alpha)}</text>')
    return "".join(out)


def histogram(pvalues: Sequence[float], *, bins: int = 20, pi0: float | None = None,
              width: int = 520, height: int = 230, label: str = "p-value histogram") -> str:
    """Histogram of p-values on [0, 1]; a dashed line at pi0 * m / bins shows the height a
    histogram of true nulls alone would have (uniform p-values)."""
    m = len(pvalues)
    counts = [0] * bins
    for p in pvalues:
        counts[min(bins - 1, max(0, int(float(p) * bins)))] += 1
    left, right, top, bottom = 46, 12, 16, 34
    hi = max(counts + [1])
    if pi0 is not None:
        hi = max(hi, pi0 * m / bins)
    sy = _scale(0, hi * 1.08, height - bottom, top)
    sx = _scale(0, 1, left, width - right)
    out = [_open(width, height, label, "hist")]
    out.append(_yaxis(_ticks(0, hi * 1.08, 4), sy, left, width - right))
    bw = (width - left - right) / bins
    for i, c in enumerate(counts):
        y = sy(c)
        out.append(f'<rect x="{sx(i / bins) + 0.5:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" '
                   f'height="{height - bottom - y:.1f}" fill="{EFFECT}" fill-opacity="0.8">'
                   f'<title>p in [{i / bins:.2f}, {(i + 1) / bins:.2f}): {c}</title></rect>')
    if pi0 is not None and m:
        y = sy(pi0 * m / bins)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{BAD}" stroke-width="1.6" stroke-dasharray="6 4"/>'
                   f'<text x="{sx(0.5):.1f}" y="{y - 6:.1f}" font-size="11" text-anchor="middle" '
                   f'fill="{BAD}" {HALO}>expected from true nulls alone (π₀ = {pi0:.2f})</text>')
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<text x="{sx(t):.1f}" y="{height - bottom + 14}" font-size="10" '
                   f'text-anchor="middle" fill="#555">{t:g}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="10" '
               f'text-anchor="middle" fill="#333">p-value (hypothesis level)</text>')
    out.append("</svg>")
    return "".join(out)


def stacked_bars(x_labels: Sequence[str], series: dict[str, Sequence[float]], *,
                 markers: Sequence[int] | None = None, height: int = 220,
                 label: str = "stacked bars", marker_label: str = "discoveries",
                 x_title: str = "iteration") -> str:
    """One bar per x label, stacked by series (PALETTE order, legend on the right); an optional
    dot per bar (e.g. discoveries) on the same scale."""
    n = len(x_labels)
    bw = 18 if n <= 40 else max(4, 720 // max(1, n))
    items = list(series) + ([marker_label] if markers is not None else [])
    legend_w = 24 + 6.2 * max([len(x) for x in items] + [4])
    left, top, bottom = 40, 12, 30
    plot_w = max(240, n * (bw + 3))
    width = left + plot_w + 16 + legend_w
    height = max(height, top + 16 * len(items) + 10)
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    hi = max(totals + [1])
    sy = _scale(0, hi * 1.08, height - bottom, top)
    x1 = left + plot_w
    out = [_open(width, height, label, "bars")]
    out.append(_yaxis(_ticks(0, hi * 1.08, 4), sy, left, x1))
    step = plot_w / max(1, n)
    for i in range(n):
        base = 0.0
        x = left + i * step + (step - bw) / 2
        for k, (name, vals) in enumerate(series.items()):
            v = vals[i]
            if not v:
                continue
            y0, y1 = sy(base), sy(base + v)
            out.append(f'<rect x="{x:.1f}" y="{y1:.1f}" width="{bw}" height="{y0 - y1:.1f}" '
                       f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(str(x_labels[i]))}: '
                       f'{escape(name)} {fmt(v)}</title></rect>')
            base += v
        if markers is not None and markers[i]:
            out.append(f'<circle cx="{x + bw / 2:.1f}" cy="{sy(markers[i]):.1f}" r="3.2" '
                       f'fill="#fff" stroke="#000" stroke-width="1.4"><title>'
                       f'{escape(str(x_labels[i]))}: {markers[i]} {escape(marker_label)}</title>'
                       f'</circle>')
    lab_step = max(1, math.ceil(n / 30))
    for i, lab in enumerate(x_labels):
        if i % lab_step == 0:
            out.append(f'<text x="{left + (i + 0.5) * step:.1f}" y="{height - bottom + 13}" '
                       f'font-size="9" text-anchor="middle" fill="#555">{escape(str(lab))}</text>')
    out.append(f'<text x="{(left + x1) / 2:.0f}" y="{height - 4}" font-size="10" '
               f'text-anchor="middle" fill="#333">{escape(x_title)}</text>')
    lx = x1 + 16
    for k, name in enumerate(items):
        y = top + 10 + 16 * k
        if k < len(series):
            out.append(f'<rect x="{lx}" y="{y - 9}" width="10" height="10" '
                       f'fill="{PALETTE[k % len(PALETTE)]}"/>')
        else:
            out.append(f'<circle cx="{lx + 5}" cy="{y - 4}" r="3.2" fill="#fff" stroke="#000" '
                       f'stroke-width="1.4"/>')
        out.append(f'<text x="{lx + 15}" y="{y}" font-size="10" fill="#333">'
                   f'{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def lineage_graph(nodes: Sequence[dict], edges: Sequence[tuple[int, int]], *,
                  label: str = "lineage of hypotheses") -> str:
    """Hypotheses as dots in columns by iteration, arrows from the result that motivated a
    proposal to the proposal.  Nodes: dicts with id, iteration, outcome (significant /
    not significant / failed / other) and title.  Each dot links to #h-ID."""
    colors = {"significant": GOOD, "not significant": MUTED, "failed": BAD}
    cols: dict[int, list[dict]] = {}
    for nd in nodes:
        cols.setdefault(int(nd.get("iteration") or 0), []).append(nd)
    parents: dict[int, list[int]] = {}
    for a, b in edges:
        parents.setdefault(b, []).append(a)
    order = sorted(cols)
    col_of = {nd["id"]: order.index(int(nd.get("iteration") or 0)) for nd in nodes}
    skips = [col_of[b] - col_of[a] for a, b in edges if a in col_of and b in col_of]
    arch = 14 if any(k > 1 for k in skips) else 0
    col_w, row_h, left = 96, 34, 30
    top = 44 + arch
    width = left + col_w * len(order) + 30
    height = top + row_h * max(len(v) for v in cols.values()) + 4 if cols else 60
    pos: dict[int, tuple[float, float]] = {}
    for ci, it in enumerate(order):
        # barycentre heuristic: a node sits near the mean row of its parents (fewer crossings)
        def key(d: dict) -> tuple[float, int]:
            ys = [pos[p][1] for p in parents.get(d["id"], []) if p in pos]
            return (sum(ys) / len(ys) if ys else -1.0, d["id"])

        for ri, nd in enumerate(sorted(cols[it], key=key)):
            pos[nd["id"]] = (left + ci * col_w + 20, top + ri * row_h + 8)
    out = [_open(width, height, label, "dag")]
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
               'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
               '<path d="M0,0 L10,5 L0,10 z" fill="#8a8a8a"/></marker></defs>')
    for ci, it in enumerate(order):
        out.append(f'<text x="{left + ci * col_w + 20}" y="14" font-size="11" '
                   f'text-anchor="middle" fill="#555">iteration {it}</text>')
    for a, b in edges:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            skip = col_of[b] - col_of[a]
            if skip > 1:  # arch over the columns in between instead of crossing their nodes
                cy = min(y1, y2) - arch - 8 * min(skip, 4)
                d = f"M{x1 + 6:.1f},{y1 - 5:.1f} C{x1 + 30:.1f},{cy:.1f} {x2 - 30:.1f},{cy:.1f} " \
                    f"{x2 - 7:.1f},{y2 - 5:.1f}"
            else:
                mx = (x1 + x2) / 2
                d = f"M{x1 + 8:.1f},{y1:.1f} C{mx:.1f},{y1:.1f} {mx:.1f},{y2:.1f} " \
                    f"{x2 - 9:.1f},{y2:.1f}"
            out.append(f'<path d="{d}" fill="none" stroke="#8a8a8a" stroke-width="1.1" '
                       f'marker-end="url(#arrow)"/>')
    for nd in nodes:
        x, y = pos[nd["id"]]
        c = colors.get(nd.get("outcome", ""), "#cfcfcf")
        out.append(f'<a href="#h-{nd["id"]}" class="hlink" data-h="{nd["id"]}">'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="{c}" stroke="#fff" '
                   f'stroke-width="1.5"><title>#{nd["id"]} {escape(nd.get("title", ""))}</title>'
                   f'</circle><text x="{x:.1f}" y="{y + 21:.1f}" font-size="10.5" '
                   f'text-anchor="middle" fill="#222" {HALO}>#{nd["id"]}</text></a>')
    out.append("</svg>")
    return "".join(out)
