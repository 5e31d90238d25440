"""Resolving bundled resources: GO propagation, STRING bins, TRRUST modes, algebra, records."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources import _util, backends, catalog
from geoscreen.store.resources.api import GeneSet, PairSet, resolve_gene_set, resolve_pair_set
from geoscreen.store.resources.symbols import normalise_symbols, symbol_map


@pytest.fixture(scope="module")
def _no_fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-fetched-data")


@pytest.fixture(autouse=True)
def _isolated(_no_fetched: Path, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared index dir for the session (built once), empty data dir: bundled versions only."""
    monkeypatch.setenv("GEOSCREEN_INDEX_DIR",
                       str(tmp_path_factory.getbasetemp() / "resource-index"))
    monkeypatch.setenv("GEOSCREEN_DATA_DIR", str(_no_fetched))


def genes(ref: str) -> set[str]:
    return set(resolve_gene_set(ref).genes)


def undirected(ps: PairSet) -> set[tuple[str, str]]:
    return {(x, y) if x <= y else (y, x) for x, y in zip(ps.a, ps.b)}


# -- bundled files --------------------------------------------------------------------------------
def test_bundled_files_match_recorded_checksums_and_exclude_restricted_data() -> None:
    on_disk = sorted(p.name for p in _util.BUNDLED_DIR.iterdir() if p.is_file())
    assert on_disk == sorted(catalog.BUNDLED_FILES)
    provenance = (_util.BUNDLED_DIR.parent / "PROVENANCE.md").read_text()
    for name, (sha, size, _rows) in catalog.BUNDLED_FILES.items():
        path = _util.BUNDLED_DIR / name
        assert path.stat().st_size == size
        assert _util.sha256_file(path) == sha
        assert sha in provenance and name in provenance
    for restricted in ("hpa", "panglao", "dorothea", "kegg"):
        assert not any(restricted in n.lower() for n in on_disk)
    assert (_util.BUNDLED_DIR.parent / "ATTRIBUTION.md").exists()


# -- symbols --------------------------------------------------------------------------------------
def test_normalise_symbols_maps_aliases_and_reports_ambiguous_and_unknown() -> None:
    mapped, unmapped, ambiguous = normalise_symbols(
        ["SEPT7", "C15ORF48", "NOV", "MUM1", "FOO1", "ENSG00000121410", "batf", "TP53", "TP53"])
    assert mapped == ["SEPTIN7", "C15orf48", "A1BG", "BATF", "TP53"]
    assert unmapped == ["FOO1"]
    assert ambiguous == ["NOV", "MUM1"]
    assert normalise_symbols(["SEPT7"]).renamed == {"SEPT7": "SEPTIN7"}


@pytest.mark.parametrize(("name", "cols"), [
    ("trrust_v2_human.tsv.gz", [("tf", "tf_symbol_2022"), ("target", "target_symbol_2022")]),
    ("reactome_pathways_human_2021.tsv.gz", [("gene_symbol", "gene_symbol_2022")]),
])
def test_normalisation_reproduces_the_provenance_rule(name: str,
                                                      cols: list[tuple[str, str]]) -> None:
    """The `*_symbol_2022` columns were built with the documented rule; we must agree."""
    head, rows = _util.read_tsv(_util.BUNDLED_DIR / name)
    sm = symbol_map()
    for src, cur in cols:
        pairs = set(zip(*_util.columns(head, rows, [src, cur], name)))
        for s, expected in pairs:
            got, status = sm.lookup(s)
            if expected:
                assert got == expected, (s, expected, got)
            else:  # unknown or ambiguous, unless our documented case-insensitive extension hit
                assert status >= 2 or got.upper() == s.upper(), (s, got)


def test_literal_gene_lists_are_normalised_and_counted() -> None:
    gs = resolve_gene_set("genes:BATF,SEPT7,FOO1,NOV,BATF")
    assert gs.genes == ["BATF", "SEPTIN7", "FOO1", "NOV"]
    rec = gs.record()
    assert (rec["requested"], rec["mapped"], rec["unmapped"], rec["ambiguous"]) == (4, 2, 1, 1)
    assert gs.original == {"SEPTIN7": "SEPT7"}
    assert rec["sources"][0]["name"] == "symbols" and len(rec["sources"][0]["checksum"]) == 64


def test_literal_pairs_split_hyphenated_symbols() -> None:
    ps = resolve_pair_set("pairs:HLA-A-B2M,PAX5-CD19,SEPT7-BATF")
    assert list(zip(ps.a, ps.b)) == [("HLA-A", "B2M"), ("PAX5", "CD19"), ("SEPTIN7", "BATF")]
    assert not ps.directed and ps.record()["mapped"] == 3


def test_concurrent_first_builds_are_safe(tmp_path: Path) -> None:
    """Two fresh processes build the same index at once; both succeed, one file remains."""
    env = {**os.environ, "GEOSCREEN_INDEX_DIR": str(tmp_path / "idx")}
    code = ("from geoscreen.store.resources.api import resolve_pair_set;"
            "print(len(resolve_pair_set('trrust:Repression')))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len([n for n in names if n.startswith("trrust-")]) == 1
    assert not [n for n in names if n.endswith(".tmp")]


def test_file_references(tmp_path: Path) -> None:
    gfile = tmp_path / "genes.txt"
    gfile.write_text("# my set\nPAX5\nSEPT7\n")
    gs = resolve_gene_set(f"file:{gfile}")
    assert gs.genes == ["PAX5", "SEPTIN7"] and gs.resource == "file" and gs.checksum
    pfile = tmp_path / "pairs.tsv"
    pfile.write_text("a\tb\tscore\nPAX5\tCD19\t0.9\nSEPT7\tBATF\t0.5\n")
    ps = resolve_pair_set(f'file:"{pfile}" - pairs:CD19-PAX5')
    assert (ps.a, ps.b) == (["SEPTIN7"], ["BATF"])
    assert ps.score is not None and ps.score.tolist() == [0.5]


# -- GO -------------------------------------------------------------------------------------------
def test_go_annotations_are_propagated_over_is_a_and_part_of() -> None:
    cytoplasm = genes("go:GO:0005737")
    cytosol = genes("go:GO:0005829")  # part_of cytoplasm
    direct = genes("go:GO:0005737?propagate=no")
    assert len(cytoplasm) > 10_000
    assert cytosol <= cytoplasm
    assert direct < cytoplasm
    assert cytosol - direct  # genes reached only through a descendant
    assert genes('go:"cytoplasm"') == cytoplasm == genes("go:0005737")
    details = resolve_gene_set("go:GO:0005737").record()["details"]
    assert details == {"term": "GO:0005737", "name": "cytoplasm", "aspect": "CC"}


def test_go_evidence_filters() -> None:
    every = genes("go:GO:0005615")
    no_iea = genes("go:GO:0005615?evidence=-IEA")
    experimental = genes("go:GO:0005615?evidence=experimental")
    assert experimental <= no_iea < every
    gs = resolve_gene_set("go:GO:0005615?evidence=-iea")
    assert gs.canonical == "go:GO:0005615?evidence=-IEA"


def test_go_errors_name_the_problem() -> None:
    with pytest.raises(GeoscreenError, match="GO:9999999 is not a current GO term"):
        resolve_gene_set("go:GO:9999999")
    with pytest.raises(GeoscreenError, match="did you mean 'extracellular space'"):
        resolve_gene_set("go:extracelular space")
    with pytest.raises(GeoscreenError, match=r"position 15: unknown option 'evidnce'.*evidence"):
        resolve_gene_set("go:GO:0005615?evidnce=-IEA")
    with pytest.raises(GeoscreenError, match="unknown evidence code 'IEX'"):
        resolve_gene_set("go:GO:0005615?evidence=-IEX")


# -- STRING ---------------------------------------------------------------------------------------
def test_string_thresholds_ranges_and_quintiles() -> None:
    hi = resolve_pair_set("string:>=700")
    mid = resolve_pair_set("string:400-699")
    assert (len(hi), len(mid)) == (131_520, 43_442)  # PROVENANCE.md
    assert hi.score is not None and hi.score.min() >= 700 and not hi.directed
    assert len(resolve_pair_set("string:>700")) < len(hi)
    idx = backends.load_index("string", "string", catalog.select_version("string"))
    assert np.allclose(idx.cuts, [672, 796, 900, 944], atol=1)  # PROVENANCE.md cut points
    assert resolve_pair_set("string:q5").record()["details"]["quintile_cuts"][3] == \
        pytest.approx(944, abs=1)
    bins = [resolve_pair_set(f"string:q{k}").score for k in range(1, 6)]
    assert sum(len(b) for b in bins) == 174_962  # a partition of all pairs ...
    assert all(b.max() < c.min() for b, c in zip(bins, bins[1:]))  # ... ordered by score


def test_string_selector_errors() -> None:
    with pytest.raises(GeoscreenError, match=r"position 8: expected a score selector"):
        resolve_pair_set("string:>=7x0")
    with pytest.raises(GeoscreenError, match="position 8"):
        resolve_pair_set("string:q6")


# -- TRRUST ---------------------------------------------------------------------------------------
def test_trrust_modes_are_directed_and_signed() -> None:
    act = resolve_pair_set("trrust:Activation")
    rep = resolve_pair_set("trrust:Repression")
    assert act.directed and rep.directed
    assert act.sign is not None and set(act.sign.tolist()) == {1.0}
    assert rep.sign is not None and set(rep.sign.tolist()) == {-1.0}
    assert 3_100 <= len(act) <= 3_144 and 1_900 <= len(rep) <= 1_922  # PROVENANCE.md counts
    every = resolve_pair_set("trrust")
    assert every.sign is not None and set(every.sign.tolist()) <= {-1.0, 0.0, 1.0}
    signed = resolve_pair_set("trrust:signed")
    assert signed.sign is not None and 0 not in signed.sign
    pax5 = resolve_pair_set("trrust:TF=PAX5")
    assert set(pax5.a) == {"PAX5"}
    assert genes("trrust:TF=PAX5") == set(pax5.b)
    assert "PAX5" in genes("trrust:target=CD19") or genes("trrust:target=CD19")
    assert len(genes("trrust:regulators")) > 700 and len(genes("trrust:targets")) > 2000


def test_trrust_errors_list_valid_selectors() -> None:
    with pytest.raises(GeoscreenError, match="did you mean 'Activation'"):
        resolve_pair_set("trrust:Activaton")
    with pytest.raises(GeoscreenError, match="'trrust:regulators' is a gene set, but a pair"):
        resolve_pair_set("trrust:regulators - trrust:Activation")
    with pytest.raises(GeoscreenError, match="'CD19' is not a regulator in trrust"):
        resolve_pair_set("trrust:TF=CD19")


# -- Reactome -------------------------------------------------------------------------------------
def test_reactome_by_id_and_name() -> None:
    gs = resolve_gene_set("reactome:R-HSA-109582")
    assert len(gs.genes) > 500 and gs.resource == "reactome"
    assert genes('reactome:"Hemostasis"') == set(gs.genes)
    with pytest.raises(GeoscreenError, match="unknown reactome set"):
        resolve_gene_set("reactome:R-HSA-0")


# -- algebra --------------------------------------------------------------------------------------
def test_gene_set_algebra() -> None:
    es, cs = genes("go:GO:0005615"), genes("go:GO:0005829")
    assert genes("go:GO:0005615 - go:GO:0005829") == es - cs
    assert genes("go:GO:0005615 & go:GO:0005829") == es & cs
    assert genes("go:GO:0005615 | go:GO:0005829") == es | cs
    assert genes("(go:GO:0005615 | genes:BATF) - go:GO:0005829") == (es | {"BATF"}) - cs
    gs = resolve_gene_set("go:GO:0005615 - reactome:R-HSA-109582")
    rec = gs.record()
    assert rec["resource"] == "go;reactome"
    assert {s["name"] for s in rec["sources"]} == {"go", "reactome", "symbols"}
    assert [p["ref"] for p in rec["parts"]] == ["go:GO:0005615", "reactome:R-HSA-109582"]
    assert all(p["requested"] >= p["mapped"] > 0 for p in rec["parts"])


def test_ppi_only_control_tests_membership_without_listing_cooccurrence() -> None:
    """`string - go-cooccurrence` (lazy) equals the difference with the listed pairs."""
    string = resolve_pair_set("string:>=900")
    listed = resolve_pair_set("go-cooccurrence:BP<=10")
    assert 30_000 < len(listed) < 100_000
    only = resolve_pair_set("string:>=900 - go-cooccurrence:BP<=10")
    both = resolve_pair_set("go-cooccurrence:BP<=10 & string:>=900")
    cooc = undirected(listed)
    assert undirected(only) == undirected(string) - cooc
    assert undirected(both) == undirected(string) & cooc
    assert both.score is not None  # scores come from the listed (STRING) side
    rec = only.record()
    assert only.canonical == "string:>=900 - go-cooccurrence:BP<=10"
    assert rec["parts"][1]["lazy"] is True and rec["parts"][1]["terms"] > 1000
    assert {s["name"] for s in rec["sources"]} >= {"string", "go"}


def test_default_cooccurrence_and_materialisation_guard() -> None:
    ps = resolve_pair_set("string:>=700 - go-cooccurrence")
    assert ps.canonical == "string:>=700 - go-cooccurrence:BP<=50"
    assert 0 < len(ps) < 131_520
    with pytest.raises(GeoscreenError, match="too many to list"):
        resolve_pair_set("go-cooccurrence:ANY<=1000")


def test_directed_minus_undirected_compares_unordered_pairs() -> None:
    trrust = resolve_pair_set("trrust")
    left = resolve_pair_set("trrust - string")
    string = undirected(resolve_pair_set("string"))
    assert left.directed
    kept = {(x, y) for x, y in zip(left.a, left.b)}
    assert kept == {(x, y) for x, y in zip(trrust.a, trrust.b)
                    if ((x, y) if x <= y else (y, x)) not in string}


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_resource_lists_closest_first() -> None:
    with pytest.raises(GeoscreenError) as err:
        resolve_pair_set("strng:>=700")
    msg = str(err.value)
    assert "position 1: unknown resource 'strng'; did you mean 'string'" in msg
    assert "trrust" in msg  # the rest of the valid names follow


def test_kind_mismatch_and_empty_results_are_errors() -> None:
    with pytest.raises(GeoscreenError, match="position 17: 'string:>=700' is a pair set"):
        resolve_gene_set("go:GO:0005615 - string:>=700")
    with pytest.raises(GeoscreenError, match="resolves to 0 genes"):
        resolve_gene_set("genes:BATF - genes:BATF")


def test_fetch_only_resources_say_how_to_fetch() -> None:
    with pytest.raises(GeoscreenError, match="run 'geoscreen resources fetch markers'"):
        resolve_gene_set("markers:B cells")
    with pytest.raises(GeoscreenError, match="geoscreen resources fetch hpa"):
        resolve_gene_set("hpa:Cytosol")
    with pytest.raises(GeoscreenError, match="has no version '2020'"):
        resolve_gene_set("go@2020:GO:0005615")


# -- speed and sharing ----------------------------------------------------------------------------
def test_a_fresh_process_reuses_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_LOADED", {})  # other tests may have loaded it elsewhere
    resolve_gene_set("go:GO:0005737")  # make sure the index exists in this session's dir
    version = catalog.select_version("go")
    path = backends.index_path("go", version.checksum)
    mtime = path.stat().st_mtime_ns
    code = ("import time; t=time.perf_counter();"
            "from geoscreen.store.resources.api import resolve_gene_set;"
            "n=len(resolve_gene_set('go:GO:0005737').genes);"
            "print(n, time.perf_counter()-t)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), check=True)
    wall = time.perf_counter() - t0
    n, took = out.stdout.split()
    assert int(n) == len(genes("go:GO:0005737"))
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    assert float(took) < 3.0 and wall < 10.0  # generous: shared CI machines


def test_corrupt_index_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSCREEN_INDEX_DIR", str(tmp_path))
    version = catalog.select_version("trrust")
    path = backends.index_path("trrust", version.checksum)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz")
    monkeypatch.setattr(backends, "_LOADED", {})
    ps = resolve_pair_set("trrust:Repression")
    assert len(ps) > 1000
    assert _util.load_npz(path)["tf"].size > 9000


def test_record_shape_for_a_single_resource() -> None:
    gs = resolve_gene_set("go:GO:0005615")
    assert isinstance(gs, GeneSet)
    rec = gs.record()
    v = catalog.select_version("go")
    assert (rec["resource"], rec["version"], rec["checksum"]) == ("go", v.label, v.checksum)
    assert rec["requested"] == rec["mapped"] == len(gs.genes)
    assert [s["name"] for s in rec["sources"]] == ["go", "symbols"]
