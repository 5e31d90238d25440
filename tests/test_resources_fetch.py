"""Fetchers: small files in the official formats served from 127.0.0.1; no test touches the net."""

from __future__ import annotations

import gzip
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources import catalog
from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set
from geoscreen.store.resources.fetch import fetch


# -- a tiny local server ---------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        path = self.path.split("?")[0]
        body = self.files.get(path)
        if body is None:
            self.send_error(404, "not found")
            return
        self.send_response(200)
        declared = len(body) * 2 if path.startswith("/truncated/") else len(body)
        self.send_header("Content-Length", str(declared))
        self.send_header("Last-Modified", "Sat, 01 Nov 2026 00:00:00 GMT")
        self.end_headers()
        self.wfile.write(body)  # a truncated path closes the connection early

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir per test; the derived-index dir is shared by the session."""
    monkeypatch.setenv("GEOSCREEN_INDEX_DIR",
                       str(tmp_path_factory.getbasetemp() / "resource-index"))
    d = tmp_path / "data"
    monkeypatch.setenv("GEOSCREEN_DATA_DIR", str(d))
    return d


def serve(path: str, body: bytes) -> str:
    _Handler.files[path] = body
    return path


def gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, text)
    return buf.getvalue()


# -- files in the official formats -----------------------------------------------------------------
TRRUST_RAW = ("PAX5\tCD19\tActivation\t10000001;10000002\n"
              "PAX5\tBLK\tRepression\t10000003\n"
              "PAX5\tBLK\tActivation\t10000004\n"
              "BATF\tIRF4\tUnknown\t10000005\n"
              "SEPT7\tFOO1\tActivation\t10000006\n")

OBO = """format-version: 1.2
data-version: releases/2026-10-01
ontology: go

[Term]
id: GO:0005575
name: cellular_component
namespace: cellular_component

[Term]
id: GO:0005737
name: cytoplasm
namespace: cellular_component
is_a: GO:0005575 ! cellular_component

[Term]
id: GO:0005829
name: cytosol
namespace: cellular_component
relationship: part_of GO:0005737 ! cytoplasm

[Term]
id: GO:0000001
name: obsolete thing
namespace: biological_process
is_obsolete: true

[Typedef]
id: part_of
name: part of
"""


def gaf_line(symbol: str, qualifier: str, go: str, evidence: str) -> str:
    cols = ["UniProtKB", f"P{abs(hash(symbol)) % 99999:05d}", symbol, qualifier, go,
            "PMID:1", evidence, "", "C", f"{symbol} protein", "", "protein", "taxon:9606",
            "20260101", "UniProt", "", ""]
    return "\t".join(cols)


GAF = "\n".join(["!gaf-version: 2.2", "!generated-by: GOC",
                 gaf_line("PAX5", "located_in", "GO:0005829", "IDA"),
                 gaf_line("BATF", "is_active_in", "GO:0005737", "IEA"),
                 gaf_line("CD19", "NOT|located_in", "GO:0005829", "IDA"),
                 gaf_line("SEPT7", "located_in", "GO:0005829", "IBA")]) + "\n"

STRING_HEAD = ("protein1 protein2 neighborhood neighborhood_transferred fusion cooccurence "
               "homology coexpression coexpression_transferred experiments "
               "experiments_transferred database database_transferred textmining "
               "textmining_transferred combined_score")


def string_links(rows: list[tuple[str, str, int]]) -> str:
    lines = [STRING_HEAD]
    for a, b, s in rows:
        for x, y in ((a, b), (b, a)):  # STRING lists each edge in both directions
            lines.append(f"9606.{x} 9606.{y} 0 0 0 0 0 0 0 {s} 0 0 0 0 0 {s}")
    return "\n".join(lines) + "\n"


STRING_INFO = ("#string_protein_id\tpreferred_name\tprotein_size\tannotation\n"
               "9606.ENSP01\tPAX5\t391\tPaired box 5\n"
               "9606.ENSP02\tCD19\t556\tB-lymphocyte antigen\n"
               "9606.ENSP03\tBLK\t505\tTyrosine-protein kinase\n"
               "9606.ENSP04\tSEPT7\t437\tSeptin-7\n")

HPA = ("Gene\tGene name\tReliability\tMain location\tAdditional location\tExtracellular location"
       "\tEnhanced\tSupported\tApproved\tUncertain\tSingle-cell variation intensity"
       "\tSingle-cell variation spatial\tCell cycle dependency\tGO id\n"
       "ENSG00000196092\tPAX5\tEnhanced\tNucleoplasm\tCytosol\t\tNucleoplasm\tCytosol\t\t\t\t\t\t"
       "Nucleoplasm (GO:0005654);Cytosol (GO:0005829)\n"
       "ENSG00000006638\tOLDNAME\tApproved\tCytosol\t\t\t\t\tCytosol\t\t\t\t"
       "\tCytosol (GO:0005829)\n"
       "ENSG00000177455\tCD19\tUncertain\tPlasma membrane;Cytosol\t\t\t\t\t\t"
       "Plasma membrane;Cytosol\t\t\t\t\n")

PANGLAO = ("species\tofficial gene symbol\tcell type\tnicknames\tubiquitousness index"
           "\tproduct description\tgene type\tcanonical marker\tgerm layer\torgan"
           "\tsensitivity_human\tspecificity_human\tsensitivity_mouse\tspecificity_mouse\n"
           "Mm Hs\tCD19\tB cells\tB4\t0.01\tCD19 molecule\tprotein-coding gene\t1\tMesoderm"
           "\tImmune system\t0.9\t0.01\t0.9\t0.01\n"
           "Hs\tPAX5\tB cells\tBSAP\t0.01\tpaired box 5\tprotein-coding gene\t0\tMesoderm"
           "\tImmune system\t0.5\t0.01\t0.5\t0.01\n"
           "Mm\tMS4A1\tB cells\tCD20\t0.01\tmembrane spanning\tprotein-coding gene\t1\tMesoderm"
           "\tImmune system\t0.5\t0.01\t0.5\t0.01\n"
           "Hs\tCD3E\tT cells\tT3E\t0.01\tCD3e\tprotein-coding gene\t1\tMesoderm\tImmune system"
           "\t0.9\t0.01\t0.9\t0.01\n")

OMNIPATH_HEAD = ("source\ttarget\tsource_genesymbol\ttarget_genesymbol\tis_directed\tis_stimulation"
                 "\tis_inhibition\tconsensus_direction\tconsensus_stimulation"
                 "\tconsensus_inhibition")
COLLECTRI = OMNIPATH_HEAD + "\tcuration_effort\n" + (
    "P1\tP2\tPAX5\tCD19\t1\t1\t0\t1\t1\t0\t5\n"
    "P1\tP3\tPAX5\tBLK\t1\t0\t1\t1\t0\t1\t2\n"
    "P4\tP5\tBATF\tIRF4\t1\t0\t0\t1\t0\t0\t1\n")
DOROTHEA = OMNIPATH_HEAD + "\tdorothea_level\n" + (
    "P1\tP2\tPAX5\tCD19\t1\t1\t0\t1\t1\t0\tA\n"
    "P1\tP3\tPAX5\tBLK\t1\t0\t1\t1\t0\t1\tB\n"
    "P4\tP5\tBATF\tIRF4\t1\t1\t0\t1\t1\t0\tE\n")

GMT = ("Hemostasis\tR-HSA-109582\tPAX5\tSEPT7\tCD19\n"
       "Signaling by WNT\tR-HSA-195721\tCTNNB1\tAPC\n")


# -- tests ----------------------------------------------------------------------------------------
def test_trrust_fetch_is_preferred_newest_first_and_pinnable(server: str) -> None:
    url = server + serve("/trrust/v1.tsv", TRRUST_RAW.encode())
    entry = fetch("trrust", [url])
    assert not entry["unchanged"] and entry["stats"]["edges"] == 5
    ps = resolve_pair_set("trrust:Activation")
    rec = ps.record()
    assert rec["version"].startswith(f"fetched {entry['id']}")
    assert "Last-Modified" in rec["version"]
    assert rec["checksum"] == entry["checksum"]
    assert sorted(zip(ps.a, ps.b)) == [("PAX5", "BLK"), ("PAX5", "CD19"), ("SEPTIN7", "FOO1")]
    assert rec["unmapped"] == 1  # FOO1 is reported, not dropped
    every = resolve_pair_set("trrust")
    signs = dict(zip(zip(every.a, every.b), every.sign.tolist()))  # type: ignore[union-attr]
    assert signs[("PAX5", "BLK")] == 0.0 and signs[("PAX5", "CD19")] == 1.0  # conflicting -> 0
    bundled = resolve_pair_set("trrust@bundled:Activation")
    assert bundled.version == catalog.RESOURCES["trrust"].bundled_version and len(bundled) > 3000
    # the same content again changes nothing; new content becomes the newest version
    assert fetch("trrust", [url])["unchanged"]
    url2 = server + serve("/trrust/v2.tsv", (TRRUST_RAW + "BATF\tBACH2\tRepression\t1\n").encode())
    second = fetch("trrust", [url2])
    ids = [v.id for v in catalog.versions("trrust")]
    assert ids == [second["id"], entry["id"], "bundled"]
    assert resolve_pair_set("trrust:Repression").record()["checksum"] == second["checksum"]
    assert len(resolve_pair_set(f"trrust@{entry['id']}:Repression")) == 1


def test_go_fetch_parses_gaf_and_obo_and_propagates(server: str) -> None:
    fetch("go", {"gaf": server + serve("/go/goa_human.gaf.gz", gz(GAF)),
                 "obo": server + serve("/go/go-basic.obo", OBO.encode())})
    assert resolve_gene_set("go:GO:0005737").genes == ["BATF", "PAX5", "SEPTIN7"]
    assert resolve_gene_set("go:GO:0005829").genes == ["PAX5", "SEPTIN7"]  # CD19 is NOT
    assert resolve_gene_set("go:GO:0005737?evidence=-IEA").genes == ["PAX5", "SEPTIN7"]
    assert resolve_gene_set('go:"cytosol"?evidence=experimental').genes == ["PAX5"]
    ps = resolve_pair_set("go-cooccurrence:CC<=5")
    assert ("PAX5", "SEPTIN7") in set(zip(ps.a, ps.b))
    with pytest.raises(GeoscreenError, match="GO:0000001 is not a current GO term"):
        resolve_gene_set("go:GO:0000001")  # obsolete terms are dropped


def test_string_fetch_maps_protein_ids_to_names(server: str) -> None:
    # before a fetch, @fetched refuses the bundled subset and names the command that mends it
    with pytest.raises(GeoscreenError, match="has not been fetched") as refusal:
        resolve_pair_set("trrust - string@fetched:>=400")
    assert "geoscreen resources fetch string" in str(refusal.value.fix)
    bundled = resolve_pair_set("string:>=700")
    assert len(bundled) > 1000  # unpinned, the bundled subset answers
    links = string_links([("ENSP01", "ENSP02", 950), ("ENSP01", "ENSP03", 420),
                          ("ENSP02", "ENSP04", 710)])
    fetch("string", [server + serve("/string/links.txt.gz", gz(links)),
                     "info=" + server + serve("/string/info.txt.gz", gz(STRING_INFO))])
    ps = resolve_pair_set("string:>=700")
    assert sorted(zip(ps.a, ps.b)) == [("CD19", "PAX5"), ("CD19", "SEPTIN7")]
    assert ps.score is not None and sorted(ps.score.tolist()) == [710.0, 950.0]
    assert len(resolve_pair_set("string")) == 3  # each edge once although listed twice
    assert resolve_pair_set("string:400-699").a == ["BLK"]
    # @fetched is the newest fetched version; @bundled stays reachable beside it
    pinned = resolve_pair_set("string@fetched:>=700")
    assert sorted(zip(pinned.a, pinned.b)) == sorted(zip(ps.a, ps.b))
    assert pinned.record()["version"].startswith("fetched ")
    assert len(resolve_pair_set("string@bundled:>=700")) == len(bundled)


def test_hpa_fetch_locations_reliability_and_ensembl_ids(server: str) -> None:
    fetch("hpa", [server + serve("/hpa/subcellular_location.tsv.zip",
                                 zipped("subcellular_location.tsv", HPA))])
    assert resolve_gene_set("hpa:Cytosol").genes == ["CD19", "PAX5", "TBXA2R"]  # by Ensembl id
    assert resolve_gene_set("hpa:cytosol?reliability=-Uncertain").genes == ["PAX5", "TBXA2R"]
    assert resolve_gene_set("hpa:Cytosol?main=yes").genes == ["CD19", "TBXA2R"]
    assert resolve_gene_set('hpa:"Plasma membrane"').genes == ["CD19"]
    with pytest.raises(GeoscreenError, match="did you mean 'Nucleoplasm'"):
        resolve_gene_set("hpa:Nucleoplsm")


def test_markers_fetch_keeps_human_rows(server: str) -> None:
    fetch("markers", [server + serve("/panglao/markers.tsv.gz", gz(PANGLAO))])
    assert resolve_gene_set("markers:B cells").genes == ["CD19", "PAX5"]  # MS4A1 is mouse-only
    assert resolve_gene_set("markers:b cells?canonical=yes").genes == ["CD19"]
    assert resolve_gene_set("markers:B cells - markers:T cells").genes == ["CD19", "PAX5"]


def test_collectri_and_dorothea_fetch_signs_and_levels(server: str) -> None:
    fetch("collectri", [server + serve("/omnipath/collectri", COLLECTRI.encode())])
    ps = resolve_pair_set("collectri")
    signs = dict(zip(zip(ps.a, ps.b), ps.sign.tolist()))  # type: ignore[union-attr]
    assert signs == {("PAX5", "CD19"): 1.0, ("PAX5", "BLK"): -1.0, ("BATF", "IRF4"): 0.0}
    assert ps.directed and ps.score is not None and max(ps.score) == 5
    assert resolve_gene_set("collectri:regulators").genes == ["BATF", "PAX5"]
    fetch("dorothea", [server + serve("/omnipath/dorothea", DOROTHEA.encode())])
    assert len(resolve_pair_set("dorothea")) == 2  # default levels A,B,C
    assert len(resolve_pair_set("dorothea?levels=A,B,C,D,E")) == 3
    assert resolve_gene_set("dorothea:TF=PAX5?levels=A").genes == ["CD19"]
    with pytest.raises(GeoscreenError, match="levels must be letters from A-E"):
        resolve_pair_set("dorothea?levels=Z")


def test_reactome_fetch_reads_the_gmt_zip(server: str) -> None:
    fetch("reactome", [server + serve("/reactome/ReactomePathways.gmt.zip",
                                      zipped("ReactomePathways.gmt", GMT))])
    assert resolve_gene_set("reactome:R-HSA-109582").genes == ["CD19", "PAX5", "SEPTIN7"]
    assert resolve_gene_set('reactome:"signaling by wnt"').genes == ["APC", "CTNNB1"]


@pytest.mark.parametrize(("name", "path", "body", "sha", "message"), [
    ("trrust", "/truncated/trrust.tsv", TRRUST_RAW.encode(), None, "interrupted download"),
    ("markers", "/bad/markers.tsv.gz", gz(PANGLAO)[:-20], None, "corrupt or truncated gzip"),
    ("trrust", "/ok/trrust.tsv", TRRUST_RAW.encode(), "0" * 64, "sha256 mismatch"),
    ("trrust", "/html/trrust.tsv", b"<!DOCTYPE html><html>maintenance</html>", None,
     "HTML page"),
    ("trrust", "/wrong/trrust.tsv", b"tf\ttarget\nPAX5\tCD19\n", None, "row 1: expected tf"),
    ("trrust", "/missing.tsv", None, None, "HTTP 404"),
    ("hpa", "/bad/hpa.zip", b"PK\x03\x04 broken", None, "zip"),
])
def test_bad_downloads_are_rejected_and_the_previous_version_kept(
        server: str, data_dir: Path, name: str, path: str, body: bytes | None, sha: str | None,
        message: str) -> None:
    before = {"trrust": fetch("trrust", [server + serve("/good/trrust.tsv",
                                                        TRRUST_RAW.encode())])["id"]}
    if body is not None:
        serve(path, body)
    with pytest.raises(GeoscreenError, match=message):
        fetch(name, [server + path], [sha] if sha else None)
    assert [v.id for v in catalog.versions("trrust")] == [before["trrust"], "bundled"]
    assert len(resolve_pair_set("trrust:Activation")) == 3
    leftovers = [p for p in (data_dir / "resources").rglob(".staging-*")]
    assert leftovers == []


def test_fetch_rejects_unknown_names_and_derived_resources() -> None:
    with pytest.raises(GeoscreenError, match="did you mean 'string'"):
        fetch("strin")
    with pytest.raises(GeoscreenError, match="derived from 'go'"):
        fetch("go-cooccurrence")
    with pytest.raises(GeoscreenError, match="unknown file 'edge'"):
        fetch("trrust", ["edge=http://127.0.0.1:1/x"])


def test_official_urls_are_https_and_point_at_the_providers() -> None:
    hosts = {"go": "geneontology.org", "string": "stringdb-downloads.org",
             "trrust": "grnpedia.org", "hpa": "proteinatlas.org", "markers": "panglaodb.se",
             "dorothea": "omnipathdb.org", "collectri": "omnipathdb.org",
             "reactome": "reactome.org"}
    for name, host in hosts.items():
        urls = [f.url for f in catalog.RESOURCES[name].fetch_files]
        assert urls and all(u.startswith("https://") for u in urls)
        assert host in urls[0]
