"""Parsers from each source format (bundled snapshot or official download) to plain tables.

Each parser returns one of the small table types below; `backends` turns a table into an index.
Parsers reject files that do not look like the expected format (an HTML error page, a truncated
table), so a bad download is never installed.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources import _util


@dataclass
class GoTables:
    ann_symbol: list[str]
    ann_term: list[str]
    ann_evidence: list[str]
    term_id: list[str]
    term_aspect: list[str]  # BP | CC | MF
    term_name: list[str]
    edge_child: list[str]
    edge_parent: list[str]  # is_a and part_of edges only


@dataclass
class PairTable:
    a: list[str]
    b: list[str]
    score: list[float]


@dataclass
class RegTable:
    tf: list[str]
    target: list[str]
    mode: list[int]  # +1 activation, -1 repression, 0 unknown
    score: list[float]
    level: list[str] = field(default_factory=list)  # DoRothEA confidence A-E, else empty


@dataclass
class SetTable:
    set_id: list[str]
    set_name: list[str]
    symbol: list[str]
    ensembl: list[str] = field(default_factory=list)
    reliability: list[int] = field(default_factory=list)  # HPA: 0 Enhanced .. 3 Uncertain
    main: list[bool] = field(default_factory=list)  # HPA main location
    canonical: list[bool] = field(default_factory=list)  # PanglaoDB canonical marker


def _fail(path: Path, message: str) -> GeoscreenError:
    return GeoscreenError(message, path=str(path), fix="is this the right file for this resource?")


def _nonempty(path: Path, n: int, what: str) -> None:
    if n == 0:
        raise _fail(path, f"no {what} could be read")


# -- GO -------------------------------------------------------------------------------------------
_ASPECT = {"P": "BP", "F": "MF", "C": "CC", "biological_process": "BP",
           "molecular_function": "MF", "cellular_component": "CC"}


def go_bundled(files: dict[str, Path]) -> GoTables:
    head, rows = _util.read_tsv(files["annotations"])
    sym, term, ev = _util.columns(head, rows, ["symbol", "go_id", "evidence"],
                                  str(files["annotations"]))
    head, rows = _util.read_tsv(files["terms"])
    tid, asp, name = _util.columns(head, rows, ["go_id", "aspect", "name"], str(files["terms"]))
    head, rows = _util.read_tsv(files["parents"])
    child, parent, rel = _util.columns(head, rows, ["go_id", "parent_go_id", "relationship"],
                                       str(files["parents"]))
    keep = [i for i, r in enumerate(rel) if r in ("is_a", "part_of")]
    return GoTables(sym, term, ev, tid, asp, name, [child[i] for i in keep],
                    [parent[i] for i in keep])


def parse_obo(path: Path) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """(ids, aspects, names, edge children, edge parents) of the non-obsolete terms of an OBO."""
    text = _util.read_text(path)
    if "format-version:" not in text[:2000]:
        raise _fail(path, "not an OBO file (no 'format-version:' header)")
    ids, aspects, names, child, parent = [], [], [], [], []
    for stanza in text.split("\n[")[1:]:
        if not stanza.startswith("Term]"):
            continue
        tid = name = ns = ""
        obsolete = False
        edges: list[str] = []
        for line in stanza.splitlines()[1:]:
            key, _, val = line.partition(": ")
            val = val.split(" ! ")[0].strip()
            if key == "id":
                tid = val
            elif key == "name":
                name = val
            elif key == "namespace":
                ns = val
            elif key == "is_obsolete" and val == "true":
                obsolete = True
            elif key == "is_a":
                edges.append(val.split()[0])
            elif key == "relationship" and val.startswith("part_of "):
                edges.append(val.split()[1])
        if tid.startswith("GO:") and not obsolete and ns in _ASPECT:
            ids.append(tid)
            aspects.append(_ASPECT[ns])
            names.append(name)
            child += [tid] * len(edges)
            parent += edges
    _nonempty(path, len(ids), "GO terms")
    return ids, aspects, names, child, parent


def go_fetched(files: dict[str, Path]) -> GoTables:
    """goa_human.gaf(.gz) + go-basic.obo; NOT-qualified annotations are dropped."""
    ids, aspects, names, child, parent = parse_obo(files["obo"])
    text = _util.read_text(files["gaf"])
    if not text.startswith("!gaf-version"):
        raise _fail(files["gaf"], "not a GAF file (no '!gaf-version' header)")
    sym, term, ev = [], [], []
    for line in text.splitlines():
        if not line or line[0] == "!":
            continue
        c = line.split("\t")
        if len(c) < 15:
            raise _fail(files["gaf"], f"GAF line with {len(c)} columns (expected 15+)")
        if "NOT" in c[3].split("|"):
            continue
        sym.append(c[2])
        term.append(c[4])
        ev.append(c[6])
    _nonempty(files["gaf"], len(sym), "annotations")
    return GoTables(sym, term, ev, ids, aspects, names, child, parent)


# -- STRING ---------------------------------------------------------------------------------------
def string_bundled(files: dict[str, Path]) -> PairTable:
    head, rows = _util.read_tsv(files["links"])
    a, b, s = _util.columns(head, rows, ["symbol_a", "symbol_b", "combined_score_no_textmining"],
                            str(files["links"]))
    return PairTable(a, b, [float(x) for x in s])


def string_fetched(files: dict[str, Path]) -> PairTable:
    """protein.links(.full) + protein.info: protein ids mapped to preferred names."""
    head, rows = _util.read_tsv(files["info"])
    if not head or "preferred_name" not in head:
        raise _fail(files["info"], "not a STRING protein.info file (no preferred_name column)")
    pid, pname = _util.columns(head, rows, [head[0], "preferred_name"], str(files["info"]))
    names = dict(zip(pid, pname))
    import pandas as pd

    try:
        reader = pd.read_csv(files["links"], sep=" ", chunksize=2_000_000, dtype=str)
        a: list[str] = []
        b: list[str] = []
        s: list[float] = []
        for chunk in reader:
            if not {"protein1", "protein2", "combined_score"} <= set(chunk.columns):
                raise _fail(files["links"], "not a STRING protein.links file")
            chunk = chunk[chunk["protein1"] < chunk["protein2"]]  # each edge is listed twice
            a += chunk["protein1"].map(names).fillna(chunk["protein1"]).tolist()
            b += chunk["protein2"].map(names).fillna(chunk["protein2"]).tolist()
            s += pd.to_numeric(chunk["combined_score"], errors="raise").astype(float).tolist()
    except (ValueError, EOFError, OSError) as exc:
        if isinstance(exc, GeoscreenError):
            raise
        raise _fail(files["links"], f"cannot parse STRING links ({exc})") from None
    _nonempty(files["links"], len(a), "STRING links")
    return PairTable(a, b, s)


# -- regulatory networks --------------------------------------------------------------------------
_MODE = {"activation": 1, "repression": -1, "unknown": 0}


def _trrust_rows(path: Path, rows: list[list[str]]) -> RegTable:
    tf, tg, mode, score = [], [], [], []
    for i, c in enumerate(rows, start=1):
        if len(c) < 3 or c[2].strip().lower() not in _MODE:
            raise _fail(path, f"row {i}: expected tf, target, Activation|Repression|Unknown")
        pm = [p for p in re.split(r"[;,]", c[3]) if p.strip()] if len(c) > 3 else []
        tf.append(c[0].strip())
        tg.append(c[1].strip())
        mode.append(_MODE[c[2].strip().lower()])
        score.append(float(len(pm)))
    _nonempty(path, len(tf), "TRRUST edges")
    return RegTable(tf, tg, mode, score)


def trrust_bundled(files: dict[str, Path]) -> RegTable:
    head, rows = _util.read_tsv(files["edges"])
    if head[:3] != ["tf", "target", "mode"]:
        raise _fail(files["edges"], "not the bundled TRRUST table")
    return _trrust_rows(files["edges"], rows)


def trrust_fetched(files: dict[str, Path]) -> RegTable:
    """trrust_rawdata.human.tsv: no header; tf, target, mode, ;-separated PMIDs."""
    _, rows = _util.read_tsv(files["edges"], header=False)
    return _trrust_rows(files["edges"], rows)


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "t")


def omnipath_fetched(files: dict[str, Path]) -> RegTable:
    """OmniPath interactions TSV (DoRothEA / CollecTRI); also the decoupler-style
    ``source,target,weight`` and the DoRothEA R ``tf,target,confidence,mor`` tables."""
    path = files["tsv"]
    text = _util.read_text(path)
    first = text.split("\n", 1)[0]
    sep = "," if first.count(",") > first.count("\t") else "\t"
    head, rows = _util.read_tsv(path, sep=sep)
    low = [h.lower() for h in head]
    tf: list[str] = []
    tg: list[str] = []
    mode: list[int] = []
    score: list[float] = []
    level: list[str] = []
    if "source_genesymbol" in low:
        cols = ["source_genesymbol", "target_genesymbol", "is_stimulation", "is_inhibition"]
        s_, t_, stim, inh = _util.columns(head, rows, cols, str(path))
        eff = (_util.columns(head, rows, ["curation_effort"], str(path))[0]
               if "curation_effort" in low else ["1"] * len(s_))
        lev = (_util.columns(head, rows, ["dorothea_level"], str(path))[0]
               if "dorothea_level" in low else [""] * len(s_))
        for i in range(len(s_)):
            st, ih = _truthy(stim[i]), _truthy(inh[i])
            # complexes such as 'JUN_FOS' or 'COMPLEX:...' stay as written
            tf.append(s_[i])
            tg.append(t_[i])
            mode.append(1 if st and not ih else -1 if ih and not st else 0)
            try:
                score.append(float(eff[i]) if eff[i] else 1.0)
            except ValueError:
                score.append(1.0)
            # OmniPath may join several levels ('A;B'): keep the best
            level.append(min(lev[i].replace(",", ";").split(";")) if lev[i] else "")
    elif "mor" in low and "tf" in low:
        s_, t_, conf, mor = _util.columns(head, rows, ["tf", "target", "confidence", "mor"],
                                          str(path))
        tf, tg, level = s_, t_, conf
        mode = [1 if float(m) > 0 else -1 if float(m) < 0 else 0 for m in mor]
        score = [1.0] * len(s_)
    elif "source" in low and "target" in low:
        s_, t_ = _util.columns(head, rows, ["source", "target"], str(path))
        w = (_util.columns(head, rows, ["weight"], str(path))[0] if "weight" in low
             else ["0"] * len(s_))
        tf, tg = s_, t_
        mode = [1 if float(x or 0) > 0 else -1 if float(x or 0) < 0 else 0 for x in w]
        score = [1.0] * len(s_)
    else:
        raise _fail(path, "not an OmniPath interactions table (no source_genesymbol column)")
    _nonempty(path, len(tf), "interactions")
    if not any(level):
        level = []
    return RegTable(tf, tg, mode, score, level)


# -- gene-set collections -------------------------------------------------------------------------
def reactome_bundled(files: dict[str, Path]) -> SetTable:
    head, rows = _util.read_tsv(files["members"])
    pid, name, sym = _util.columns(head, rows, ["pathway_id", "pathway_name", "gene_symbol"],
                                   str(files["members"]))
    return SetTable(pid, name, sym)


def _zip_member(path: Path, suffix: str) -> str:
    raw = path.read_bytes()
    if raw[:2] != b"PK":
        return _util.read_text(path)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)] or zf.namelist()
            return zf.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, IndexError) as exc:
        raise _fail(path, f"bad zip archive ({exc})") from None


def reactome_fetched(files: dict[str, Path]) -> SetTable:
    """ReactomePathways.gmt(.zip): name, stable id, genes..."""
    text = _zip_member(files["gmt"], ".gmt")
    pid, name, sym = [], [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        c = line.rstrip("\n").split("\t")
        if len(c) < 3 or not c[1].startswith("R-"):
            raise _fail(files["gmt"], f"line {i}: expected 'name<TAB>R-HSA-id<TAB>genes...'")
        for g in c[2:]:
            if g.strip():
                pid.append(c[1])
                name.append(c[0])
                sym.append(g.strip())
    _nonempty(files["gmt"], len(pid), "pathways")
    return SetTable(pid, name, sym)


_HPA_LEVEL = {"enhanced": 0, "validated": 0, "supported": 1, "approved": 2, "uncertain": 3}


def hpa_fetched(files: dict[str, Path]) -> SetTable:
    """HPA subcellular_location.tsv(.zip); both the current format (Main/Additional location)
    and the pre-2018 one (Validated/Supported/Approved/Uncertain columns)."""
    path = files["zip"]
    text = _zip_member(path, ".tsv")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or "\t" not in lines[0]:
        raise _fail(path, "not an HPA subcellular_location table")
    head = [h.strip() for h in lines[0].split("\t")]
    low = [h.lower() for h in head]
    if "gene" not in low or "gene name" not in low:
        raise _fail(path, "not an HPA subcellular_location table (no Gene / Gene name columns)")
    rows = [ln.split("\t") + [""] * len(head) for ln in lines[1:]]
    g_i, n_i = low.index("gene"), low.index("gene name")
    level_cols = [(low.index(k), v) for k, v in _HPA_LEVEL.items() if k in low]
    main_i = low.index("main location") if "main location" in low else None
    add_i = low.index("additional location") if "additional location" in low else None
    out = SetTable([], [], [], ensembl=[], reliability=[], main=[] if main_i is not None else [])
    for c in rows:
        locs: dict[str, int] = {}
        for i, lev in level_cols:
            for loc in filter(None, (x.strip() for x in c[i].split(";"))):
                locs[loc] = min(lev, locs.get(loc, 9))
        mains = set(filter(None, (x.strip() for x in c[main_i].split(";")))) if main_i is not \
            None else set()
        extra = set(filter(None, (x.strip() for x in c[add_i].split(";")))) if add_i is not \
            None else set()
        gene_rel = _HPA_LEVEL.get(c[low.index("reliability")].strip().lower(), 3) \
            if "reliability" in low else 3
        for loc in mains | extra:
            locs.setdefault(loc, gene_rel)
        for loc, lev in locs.items():
            out.set_id.append(loc)
            out.set_name.append(loc)
            out.symbol.append(c[n_i].strip())
            out.ensembl.append(c[g_i].strip())
            out.reliability.append(lev)
            if main_i is not None:
                out.main.append(loc in mains)
    _nonempty(path, len(out.set_id), "locations")
    return out


def markers_fetched(files: dict[str, Path]) -> SetTable:
    """PanglaoDB_markers_*.tsv(.gz): human rows ('Hs' in species) by cell type."""
    path = files["tsv"]
    head, rows = _util.read_tsv(path)
    low = [h.lower() for h in head]
    if "official gene symbol" in low:
        sym, ct, sp = _util.columns(head, rows, ["official gene symbol", "cell type", "species"],
                                    str(path))
    elif "gene_symbol" in low:
        sym, ct, sp = _util.columns(head, rows, ["gene_symbol", "cell_type", "species"],
                                    str(path))
    else:
        raise _fail(path, "not a PanglaoDB markers table (no 'official gene symbol' column)")
    can_col = "canonical marker" if "canonical marker" in low else "canonical_marker"
    can = (_util.columns(head, rows, [can_col], str(path))[0] if can_col in low
           else ["0"] * len(sym))
    out = SetTable([], [], [], canonical=[])
    for s, c, p, k in zip(sym, ct, sp, can):
        if "Hs" not in p.split() or not s.strip() or not c.strip():
            continue
        out.set_id.append(c.strip())
        out.set_name.append(c.strip())
        out.symbol.append(s.strip())
        out.canonical.append(_truthy(k))
    _nonempty(path, len(out.set_id), "human markers")
    return out


PARSERS = {
    ("go", "bundled"): go_bundled, ("go", "fetched"): go_fetched,
    ("string", "bundled"): string_bundled, ("string", "fetched"): string_fetched,
    ("trrust", "bundled"): trrust_bundled, ("trrust", "fetched"): trrust_fetched,
    ("dorothea", "fetched"): omnipath_fetched, ("collectri", "fetched"): omnipath_fetched,
    ("reactome", "bundled"): reactome_bundled, ("reactome", "fetched"): reactome_fetched,
    ("hpa", "fetched"): hpa_fetched, ("markers", "fetched"): markers_fetched,
}
