"""What resources exist, where their files are, and which versions are available.

A resource has a name (the prefix in a reference), a licence, a source, and versions: the
bundled snapshot (inside the package) and any releases fetched into the user data directory.
The newest fetched version is used unless a reference pins one (``go@bundled:GO:0005615``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from geoscreen.errors import GeoscreenError, did_you_mean
from geoscreen.store.resources import _util

# sha256, bytes and data rows of every bundled file (also listed in PROVENANCE.md)
BUNDLED_FILES: dict[str, tuple[str, int, int]] = {
    "gene_alias_orgHsEgDb_3.16.tsv.gz":
        ("2c4d3beb2a811bfd25c47cc57ee5a6491d455f1279e9ad36ab729f79d7ae2c55", 1148132, 150059),
    "gene_id_map_orgHsEgDb_3.16.tsv.gz":
        ("4f2bfa7440be8ed3baddddea8686333eaa490be37a2bffd66673acd578cce58a", 1052305, 77614),
    "go_annotations_human_orgHsEgDb_3.16.tsv.gz":
        ("104aa35e29229ee274cf24110e008c0453addb8caa146e034fa247215abbd190", 1510915, 348116),
    "go_term_parents_GOdb_3.16.tsv.gz":
        ("d0b796d474b87ff4bcfb0bda2843d6849e4a26b90a5b8e3dd2a308da75dcb2cc", 393597, 85713),
    "go_terms_GOdb_3.16.tsv.gz":
        ("fbd640bb4f5943092c55b10cd0d319abbc7ebfa4ff184036e51fe10524dd3d70", 453718, 43558),
    "reactome_pathways_human_2021.tsv.gz":
        ("4366e664e915ed2dcf205141029a670767d73ca01335b14b400787e18ee965f9", 660182, 121184),
    "string_v12_hc_notextmining_dmfind.tsv.gz":
        ("a8f315c00ec6bb5a6d18e835019afe2cecf5ff71ad57ee06c2f4333d0a331082", 2381502, 174962),
    "trrust_v2_human.tsv.gz":
        ("80cfdba3a7ab7f0ea93754a6af23731a159c482e27eb73322c91b069fcb4e808", 111536, 9383),
}


def bundled_checksum(name: str) -> str:
    return BUNDLED_FILES[name][0]


def verify_bundled(name: str) -> Path:
    """Path of a bundled file after checking its sha256 (done once, when an index is built)."""
    path = _util.BUNDLED_DIR / name
    if not path.exists():
        raise GeoscreenError("bundled resource file is missing; reinstall geoscreen",
                             path=str(path))
    got = _util.sha256_file(path)
    if got != bundled_checksum(name):
        raise GeoscreenError(f"bundled file is corrupt (sha256 {got[:12]}..., expected "
                             f"{bundled_checksum(name)[:12]}...)", path=str(path),
                             fix="reinstall geoscreen")
    return path


@dataclass(frozen=True)
class FetchFile:
    """One file of a fetchable release: its role for the parser, official URL and local name."""

    role: str
    url: str
    filename: str


@dataclass(frozen=True)
class ResourceInfo:
    """A named resource: how to refer to it, its licence and where its versions come from."""

    name: str
    title: str
    backend: str
    provides: str
    license: str
    homepage: str
    citation: str
    selectors: tuple[str, ...]
    examples: tuple[str, ...]
    bundled_files: tuple[tuple[str, str], ...] = ()  # (role, filename)
    bundled_version: str = ""
    fetch_files: tuple[FetchFile, ...] = ()
    fetch_note: str = ""
    base: str = ""  # a derived resource uses the versions of `base` (go-cooccurrence -> go)
    literal: bool = False

    @property
    def fetchable(self) -> bool:
        return bool(self.fetch_files)

    @property
    def bundled(self) -> bool:
        return bool(self.bundled_files)


@dataclass(frozen=True)
class ResourceVersion:
    """One concrete release of a resource: its files (with sha256) and one combined checksum."""

    name: str
    id: str  # 'bundled' or a fetch stamp such as '20261121-102233'
    label: str
    origin: str  # 'bundled' | 'fetched'
    files: dict[str, Path] = field(hash=False)
    file_checksums: dict[str, str] = field(hash=False)
    checksum: str = ""
    fetched_at: str = ""
    urls: dict[str, str] = field(default_factory=dict, hash=False)

    def record(self, name: str | None = None) -> dict[str, Any]:
        return {"name": name or self.name, "version": self.label, "checksum": self.checksum,
                "origin": self.origin}


_EXPR = ("set algebra: A | B (union), A & B (intersection), A - B (difference; spaces around "
         "'-'), parentheses")

RESOURCES: dict[str, ResourceInfo] = {r.name: r for r in (
    ResourceInfo(
        name="go", title="Gene Ontology annotations (propagated over is_a/part_of)",
        backend="go", provides="gene sets", license="CC BY 4.0",
        homepage="https://geneontology.org",
        citation=("Gene Ontology Consortium, Nucleic Acids Res 2023; Ashburner et al., "
                  "Nat Genet 2000"),
        selectors=("go:GO:0005615  (term id; genes annotated to it or to any is_a/part_of "
                   "descendant)",
                   'go:"extracellular space"  (exact term name, case-insensitive)',
                   "?evidence=-IEA,-ND | ?evidence=experimental | ?evidence=IDA,IMP  "
                   "(evidence filter)",
                   "?propagate=no  (direct annotations only)"),
        examples=("go:GO:0005737", "go:GO:0005615?evidence=-IEA", 'go:"cytosol"'),
        bundled_files=(("annotations", "go_annotations_human_orgHsEgDb_3.16.tsv.gz"),
                       ("terms", "go_terms_GOdb_3.16.tsv.gz"),
                       ("parents", "go_term_parents_GOdb_3.16.tsv.gz")),
        bundled_version="2022-09-12 (org.Hs.eg.db/GO.db 3.16; go-basic 2022-07-01)",
        fetch_files=(FetchFile("gaf", "https://current.geneontology.org/annotations/goa_human.gaf.gz",
                               "goa_human.gaf.gz"),
                     FetchFile("obo", "https://purl.obolibrary.org/obo/go/go-basic.obo",
                               "go-basic.obo")),
    ),
    ResourceInfo(
        name="go-cooccurrence", title="Gene pairs sharing a specific GO term",
        backend="go-cooccurrence", provides="pair sets", license="CC BY 4.0",
        homepage="https://geneontology.org", citation="derived from the 'go' resource",
        selectors=("go-cooccurrence  (= go-cooccurrence:BP<=50)",
                   "go-cooccurrence:BP<=N | CC<=N | MF<=N | ANY<=N  (N from 2 to 1000)",
                   "pairs of genes both annotated (after propagation, any evidence) to at least "
                   "one term of that aspect with 2..N annotated genes"),
        examples=("string:>=700 - go-cooccurrence", "go-cooccurrence:CC<=20"),
        base="go",
    ),
    ResourceInfo(
        name="string", title="STRING v12 functional associations (scored, undirected)",
        backend="string", provides="pair sets", license="CC BY 4.0",
        homepage="https://string-db.org",
        citation="Szklarczyk et al., Nucleic Acids Res 2023",
        selectors=("string | string:all", "string:>=700 | string:>700 | string:<=500 | string:<500",
                   "string:400-699  (inclusive score range)",
                   "string:q1 .. string:q5  (score quintile bins of the version in use; q5 = "
                   "highest)"),
        examples=("string:>=700", "string:q5", "string:400-699"),
        bundled_files=(("links", "string_v12_hc_notextmining_dmfind.tsv.gz"),),
        bundled_version=("v12.0 (dmfind subset: score without text mining, all >=700 plus each "
                         "gene's top 3 in 400-699)"),
        fetch_files=(
            FetchFile("links", "https://stringdb-downloads.org/download/protein.links.full.v12.0/"
                               "9606.protein.links.full.v12.0.txt.gz",
                      "9606.protein.links.full.v12.0.txt.gz"),
            FetchFile("info", "https://stringdb-downloads.org/download/protein.info.v12.0/"
                              "9606.protein.info.v12.0.txt.gz",
                      "9606.protein.info.v12.0.txt.gz")),
        fetch_note="full human network with the standard combined_score (about 80 MB)",
    ),
    ResourceInfo(
        name="trrust", title="TRRUST v2 TF -> target regulation (directed, signed)",
        backend="regnet", provides="pair sets, gene sets", license="CC BY-SA 4.0",
        homepage="https://www.grnpedia.org/trrust/",
        citation="Han et al., Nucleic Acids Res 2018",
        selectors=("trrust | trrust:all  (pairs; sign +1 only-Activation, -1 only-Repression, "
                   "else 0)",
                   "trrust:Activation | trrust:Repression | trrust:Unknown | trrust:signed  "
                   "(pairs)",
                   "trrust:regulators | trrust:targets  (gene sets)",
                   "trrust:TF=PAX5  (PAX5's targets: pairs, or a gene set)",
                   "trrust:target=MYC  (regulators of MYC: pairs, or a gene set)"),
        examples=("trrust:Repression", "trrust:regulators", "trrust:TF=PAX5"),
        bundled_files=(("edges", "trrust_v2_human.tsv.gz"),),
        bundled_version="v2 (2018, trrust_rawdata.human.tsv)",
        fetch_files=(FetchFile("edges", "https://www.grnpedia.org/trrust/data/"
                                        "trrust_rawdata.human.tsv", "trrust_rawdata.human.tsv"),),
    ),
    ResourceInfo(
        name="reactome", title="Reactome pathways (gene symbols)",
        backend="sets", provides="gene sets", license="CC0 1.0",
        homepage="https://reactome.org", citation="Milacic et al., Nucleic Acids Res 2024",
        selectors=("reactome:R-HSA-109582  (pathway stable id)",
                   'reactome:"Hemostasis"  (pathway name, case-insensitive)'),
        examples=("reactome:R-HSA-109582",),
        bundled_files=(("members", "reactome_pathways_human_2021.tsv.gz"),),
        bundled_version="2021-10 (ReactomePathways.gmt, about release 77)",
        fetch_files=(FetchFile("gmt", "https://reactome.org/download/current/"
                                      "ReactomePathways.gmt.zip", "ReactomePathways.gmt.zip"),),
    ),
    ResourceInfo(
        name="hpa", title="Human Protein Atlas subcellular locations",
        backend="sets", provides="gene sets", license="CC BY-SA 4.0 (check the release)",
        homepage="https://www.proteinatlas.org/about/download",
        citation="Thul et al., Science 2017",
        selectors=('hpa:Cytosol | hpa:"Nuclear bodies"  (genes with that location)',
                   "?reliability=-Uncertain | ?reliability=Enhanced,Supported",
                   "?main=yes  (main locations only)"),
        examples=("hpa:Cytosol", "hpa:Mitochondria?reliability=-Uncertain"),
        fetch_files=(FetchFile("zip", "https://www.proteinatlas.org/download/tsv/"
                                      "subcellular_location.tsv.zip",
                               "subcellular_location.tsv.zip"),),
        fetch_note="fetch-only: not bundled because the licence of older releases is unclear",
    ),
    ResourceInfo(
        name="markers", title="PanglaoDB cell-type marker genes (human)",
        backend="sets", provides="gene sets", license="unverified (cite Franzen et al. 2019)",
        homepage="https://panglaodb.se", citation="Franzen et al., Database 2019",
        selectors=('markers:B cells | markers:"T cells"  (cell type, case-insensitive)',
                   "?canonical=yes  (canonical markers only)"),
        examples=("markers:B cells", "markers:Plasma cells?canonical=yes"),
        fetch_files=(FetchFile("tsv", "https://panglaodb.se/markers/"
                                      "PanglaoDB_markers_27_Mar_2020.tsv.gz",
                               "PanglaoDB_markers_27_Mar_2020.tsv.gz"),),
        fetch_note="fetch-only: no licence found for redistribution",
    ),
    ResourceInfo(
        name="dorothea", title="DoRothEA TF regulons via OmniPath (directed, signed)",
        backend="regnet", provides="pair sets, gene sets", license="GPL-3 / OmniPath terms",
        homepage="https://saezlab.github.io/dorothea/",
        citation="Garcia-Alonso et al., Genome Res 2019",
        selectors=("same selectors as trrust", "?levels=A,B,C  (confidence levels; default "
                   "A,B,C)"),
        examples=("dorothea:Repression", "dorothea:TF=PAX5?levels=A,B"),
        fetch_files=(FetchFile("tsv", "https://omnipathdb.org/interactions?datasets=dorothea"
                                      "&dorothea_levels=A,B,C,D,E&genesymbols=yes"
                                      "&organisms=9606&fields=dorothea_level&format=tsv",
                               "dorothea_omnipath.tsv"),),
        fetch_note="fetch-only",
    ),
    ResourceInfo(
        name="collectri", title="CollecTRI TF -> target regulation via OmniPath",
        backend="regnet", provides="pair sets, gene sets", license="OmniPath terms (per source)",
        homepage="https://github.com/saezlab/CollecTRI",
        citation="Mueller-Dott et al., Nucleic Acids Res 2023",
        selectors=("same selectors as trrust",),
        examples=("collectri:Activation", "collectri:regulators"),
        fetch_files=(FetchFile("tsv", "https://omnipathdb.org/interactions?datasets=collectri"
                                      "&genesymbols=yes&organisms=9606&loops=yes"
                                      "&fields=curation_effort&format=tsv",
                               "collectri_omnipath.tsv"),),
        fetch_note="fetch-only",
    ),
    ResourceInfo(
        name="genes", title="Literal gene list (normalised with the alias map)",
        backend="literal", provides="gene sets", license="-", homepage="", citation="",
        selectors=("genes:BATF,BACH2,PAX5",), examples=("genes:BATF,BACH2",), literal=True),
    ResourceInfo(
        name="pairs", title="Literal gene pairs", backend="literal", provides="pair sets",
        license="-", homepage="", citation="",
        selectors=("pairs:PAX5-CD19,BATF-IRF4",), examples=("pairs:PAX5-CD19",), literal=True),
    ResourceInfo(
        name="file", title="Gene list (one per line) or pair TSV (a, b[, score[, sign]])",
        backend="literal", provides="gene sets, pair sets", license="-", homepage="", citation="",
        selectors=('file:genes.txt | file:"my pairs.tsv"',), examples=("file:genes.txt",),
        literal=True),
)}

GRAMMAR = (
    "REF := NAME[@VERSION][:SELECTOR][?OPTION[;OPTION...]]  e.g. go:GO:0005615?evidence=-IEA",
    "SELECTOR may be quoted (\"...\") when it contains ( ) | & ? or ' - '",
    "OPTION := key=value[,value...] or key; values may be quoted",
    "@VERSION pins a version: @bundled or a fetched id such as @20261121-102233",
    _EXPR + "; & binds tighter than | and -; otherwise left to right",
    "the newest fetched version of a resource is used unless a version is pinned",
)


def get(name: str, pos: int | None = None) -> ResourceInfo:
    """The resource called `name`, or an error listing valid names (closest first)."""
    info = RESOURCES.get(name)
    if info is None:
        info = RESOURCES.get(name.lower())
    if info is None:
        where = f"position {pos}: " if pos else ""
        raise GeoscreenError(f"{where}unknown resource {name!r}; "
                             f"{did_you_mean(name, list(RESOURCES))}", field="reference",
                             fix="run 'geoscreen resources list'")
    return info


# -- versions ----------------------------------------------------------------------------------
def fetched_index_path() -> Path:
    return _util.data_dir() / "resources" / "index.json"


def read_fetched_index() -> dict[str, Any]:
    path = fetched_index_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"format": 1, "resources": {}}
    except (OSError, ValueError) as exc:
        raise GeoscreenError(f"cannot read the fetched-resource index ({exc})", path=str(path),
                             fix="delete it and fetch again") from None
    data.setdefault("resources", {})
    return data


@lru_cache(maxsize=16)
def _bundled_version(name: str) -> ResourceVersion:
    info = RESOURCES[name]
    files = {role: _util.BUNDLED_DIR / fn for role, fn in info.bundled_files}
    sums = {role: bundled_checksum(fn) for role, fn in info.bundled_files}
    return ResourceVersion(name=name, id="bundled", label=info.bundled_version, origin="bundled",
                           files=files, file_checksums=sums,
                           checksum=_util.combined_checksum(sums))


def versions(name: str) -> list[ResourceVersion]:
    """All versions of a resource, newest fetched first, the bundled snapshot last."""
    info = RESOURCES[name]
    if info.base:
        return versions(info.base)
    out: list[ResourceVersion] = []
    entries = read_fetched_index()["resources"].get(name, [])
    root = _util.data_dir() / "resources"
    for e in sorted(entries, key=lambda e: e.get("fetched_at", ""), reverse=True):
        files = {role: root / f["path"] for role, f in e["files"].items()}
        sums = {role: f["sha256"] for role, f in e["files"].items()}
        out.append(ResourceVersion(
            name=name, id=e["id"], label=e.get("label", f"fetched {e['id']}"), origin="fetched",
            files=files, file_checksums=sums, checksum=e.get("checksum") or
            _util.combined_checksum(sums), fetched_at=e.get("fetched_at", ""),
            urls={role: f.get("url", "") for role, f in e["files"].items()}))
    if info.bundled:
        out.append(_bundled_version(name))
    return out


#: The pin that asks for the newest fetched version and refuses the bundled snapshot: for a
#: claim that depends on what only the full download holds (STRING's text-mining evidence).
FETCHED_PIN = "fetched"


def select_version(name: str, pin: str | None = None, pos: int | None = None) -> ResourceVersion:
    """The version a reference uses: the pinned one (``fetched``: the newest fetched version,
    never the bundled snapshot), else the newest available."""
    info = RESOURCES[name]
    vs = versions(name)
    where = f"position {pos}: " if pos else ""
    if not vs:
        base = RESOURCES[info.base] if info.base else info
        why = base.fetch_note or "not bundled"
        raise GeoscreenError(f"{where}resource {name!r} ({base.title}) has not been fetched "
                             f"({why})", field="reference",
                             fix=f"run 'geoscreen resources fetch {base.name}'")
    if pin is None:
        return vs[0]
    if pin == FETCHED_PIN:
        fetched = [v for v in vs if v.origin == "fetched"]
        if not fetched:
            base = RESOURCES[info.base] if info.base else info
            raise GeoscreenError(
                f"{where}resource {name!r} ({base.title}) has not been fetched (@fetched asks "
                "for the full download, not the bundled snapshot)",
                field="reference", fix=f"run 'geoscreen resources fetch {base.name}'")
        return fetched[0]
    for v in vs:
        if v.id == pin:
            return v
    raise GeoscreenError(f"{where}resource {name!r} has no version {pin!r}; "
                         f"{did_you_mean(pin, [v.id for v in vs])}", field="reference",
                         fix="run 'geoscreen resources list' to see versions")
