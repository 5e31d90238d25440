"""The published scGPT screen (arXiv 2602.22247, 183 hypotheses) restated as specs.

docs/published-screen.md classifies every one of the screen's 183 records (exact, equivalent,
partial, none) and hypotheses/published/scgpt_2602_22247/ holds the specs.  These tests keep
the two in step (every record once, every stated record has a spec carrying its class, the
summary counts are the table's), check that every spec passes the queue-time preflight on a
cache holding every protein-coding symbol, and run a sample of them end to end."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from geoscreen.hypotheses.loader import load_specs
from geoscreen.hypotheses.preflight import preflight, reference_params

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "published-screen.md"
SPECS = REPO / "hypotheses" / "published" / "scgpt_2602_22247"
CLASSES = ("exact", "equivalent", "partial", "none")
ROW = re.compile(r"^\| (P\d{3}) \| (iter_\d{4}/H[\w-]+) \| ([^|]+) \| ([^|]+) \| "
                 r"(exact|equivalent|partial|none) \| ([^|]*) \|$")
FETCH_ONLY = ("hpa", "markers", "dorothea", "collectri")


def table() -> dict[str, tuple[str, str, str]]:
    """P id -> (loop id, class, geoscreen cell), from the document's table."""
    rows: dict[str, tuple[str, str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| P") and not line.startswith("| P# "):
            m = ROW.match(line)
            assert m, f"malformed table row: {line[:80]}"
            assert m.group(1) not in rows, f"{m.group(1)} twice"
            rows[m.group(1)] = (m.group(2), m.group(5), m.group(4).strip())
    return rows


def specs():
    return load_specs(SPECS)


def record_of(s) -> tuple[str, str, str]:
    """(P id, loop id, class) from a spec's tags."""
    tags = s.spec.tags
    assert "published-screen" in tags, s.spec.statement
    pid = [t for t in tags if re.fullmatch(r"P\d{3}", t)]
    loop = [t for t in tags if t.startswith("iter_")]
    cls = [t.split(":", 1)[1] for t in tags if t.startswith("match:")]
    assert len(pid) == 1 and len(loop) == 1 and len(cls) == 1, (s.spec.statement, tags)
    return pid[0], loop[0], cls[0]


def test_every_record_once_and_the_summary_is_the_table():
    rows = table()
    assert sorted(rows) == [f"P{i:03d}" for i in range(1, 184)]
    counts = Counter(c for _, c, _ in rows.values())
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"exact (\d+) · equivalent (\d+) · partial (\d+) · none (\d+)", text)
    assert m, "the summary line is missing"
    assert tuple(int(x) for x in m.groups()) == tuple(counts[c] for c in CLASSES)
    stated = counts["exact"] + counts["equivalent"]
    m = re.search(r"\*\*(\d+) of 183 \((\d+)%\)\*\* can be stated", text)
    assert m and int(m.group(1)) == stated and int(m.group(2)) == round(100 * stated / 183)


def test_specs_carry_their_record_and_class():
    """Every stated record has specs tagged with its class, or (a replication on another
    cache, or the same test as another record) names that record's spec: `= P013's spec`, or
    (a data audit) the command that shows it: `audit: ...`.
    No two specs are the same test: a queue of the folder runs each of them."""
    rows = table()
    by_record: dict[str, set[str]] = {}
    all_specs = specs()
    assert len({s.hash for s in all_specs}) == len(all_specs), "two specs are the same test"
    for s in all_specs:
        pid, loop, cls = record_of(s)
        assert pid in rows, pid
        assert rows[pid][0] == loop, (pid, loop, rows[pid][0])
        by_record.setdefault(pid, set()).add(cls)
    for pid, (_, cls, cell) in rows.items():
        same = re.match(r"= (P\d{3})\b", cell)
        if cls == "none":
            assert pid not in by_record and not same, f"{pid} is classed none but has a spec"
        elif cell.startswith("audit: `geoscreen "):  # a data audit: a command, not a spec
            assert pid not in by_record, (pid, cell)
        elif same:
            assert pid not in by_record and same.group(1) in by_record, (pid, cell)
        else:
            assert by_record.get(pid) == {cls}, (pid, cls, by_record.get(pid))


@pytest.fixture(scope="module")
def vocabulary_cache(tmp_path_factory):
    """12 layers x every protein-coding symbol of the bundled map x 64 dims (random values)."""
    import csv
    import gzip

    from geoscreen.store.cache import open_cache, write_cache

    path = REPO / "store" / "resources" / "data" / "gene_id_map_orgHsEgDb_3.16.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        genes = sorted({r["symbol"] for r in csv.DictReader(fh, delimiter="\t")
                        if r["gene_type"] == "protein-coding"})
    rng = np.random.default_rng(0)
    scale = np.exp(-0.05 * np.arange(64))
    layers = ((f"L{i}", (rng.standard_normal((len(genes), 64)) * scale).astype(np.float32))
              for i in range(12))
    out = tmp_path_factory.mktemp("vocab") / "cache"
    write_cache(out, layers, genes, source="every protein-coding symbol, random values")
    return open_cache(out)


def test_every_spec_passes_the_queue_preflight(vocabulary_cache):
    """Layers, axes and a dry run of every reference; a fetch-only resource, or a resource
    pinned to its full download (`string@fetched`), not fetched in a fresh clone, is the one
    accepted refusal, and only for specs that name one."""
    refused = []
    for s in specs():
        err = preflight(s, cache=vocabulary_cache)
        if not err:
            continue
        named = re.search(r"resource '(\w+)' .* has not been fetched", err)
        pinned = named and f"{named.group(1)}@fetched" in str(s.params)
        if not (named and (named.group(1) in FETCH_ONLY or pinned)):
            refused.append((record_of(s)[0], err))
    assert not refused, refused[:5]


def _genes_of(kind: str, ref: str, cap: int = 300) -> set[str]:
    from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set

    if kind == "pairs":
        ps = resolve_pair_set(ref)
        return set(ps.a[:cap]) | set(ps.b[:cap])
    return set(resolve_gene_set(ref).genes[:cap])


def run_sample() -> list:
    """One spec per probe (the first by record), among those that name no fetch-only
    resource, no gene-set family, no second cache or atlas and no expression record (and
    no k-NN or TwoNN feature-shuffle null, which rebuilds the neighbours per copy)."""
    seen, out = set(), []
    for s in sorted(specs(), key=lambda s: record_of(s)[0]):
        refs = reference_params(s.spec.probe, s.params)
        if (s.spec.probe in seen or any(k == "family" for _, k, _ in refs)
                or any(f in r for _, _, r in refs for f in (*FETCH_ONLY, "@fetched"))
                or any(k in s.params for k in ("other_cache", "atlas"))
                or s.params.get("versus_cache") is not None
                or "expression" in str(s.params)  # the test cache records no expression
                # a k-NN graph (or TwoNN's neighbours) rebuilt for each of 99-199 copies in 12
                # layers: minutes, not seconds
                or (s.spec.probe in ("knn_graph", "intrinsic_dimension")
                    and s.params.get("null") == "feature_shuffle")
                or s.spec.universe):
            continue
        seen.add(s.spec.probe)
        out.append(s)
    return out


def test_a_sample_runs_end_to_end(tmp_path):
    """The sample runs through the worker's own entry point on a 12-layer cache holding the
    genes its references name (300 per reference) and random others: every layer gives a
    p-value in (0, 1] and the combined p-value is one too."""
    import geoscreen
    from geoscreen.store.cache import write_cache

    sample = run_sample()
    assert len(sample) >= 8, [s.spec.probe for s in sample]
    named: set[str] = set()
    for s in sample:
        for _, kind, ref in reference_params(s.spec.probe, s.params):
            named |= _genes_of(kind, ref)
    rng = np.random.default_rng(1)
    import csv
    import gzip

    path = REPO / "store" / "resources" / "data" / "gene_id_map_orgHsEgDb_3.16.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        coding = sorted({r["symbol"] for r in csv.DictReader(fh, delimiter="\t")
                         if r["gene_type"] == "protein-coding"} - named)
    genes = sorted(named) + list(rng.choice(coding, size=max(0, 2500 - len(named)),
                                            replace=False))
    scale = np.exp(-0.05 * np.arange(64))
    layers = ((f"L{i}", (rng.standard_normal((len(genes), 64)) * scale).astype(np.float32))
              for i in range(12))
    cache = tmp_path / "cache"
    write_cache(cache, layers, genes, source="published-screen sample, random values")
    for s in sample:
        out = geoscreen.run_spec(s.spec.model_dump(mode="json"), cache, seed=0,
                                 work_dir=tmp_path / "work")
        ps = [r.p_value for r in out.layers]
        assert ps and all(p is None or 0 < p <= 1 for p in ps), (record_of(s)[0], ps)
        assert 0 < out.combined.p_value <= 1, (record_of(s)[0], s.spec.probe)


def test_the_audit_rows_run(vocabulary_cache, cli):
    """Each `audit:` row's command runs as written (CACHE: a cache of every protein-coding
    symbol) and answers for every gene it names."""
    audits = {pid: cell for pid, (_, _, cell) in table().items() if cell.startswith("audit:")}
    assert audits, "no audit rows"
    for pid, cell in audits.items():
        m = re.fullmatch(r"audit: `geoscreen (cache info) CACHE (--genes \S+)`.*", cell)
        assert m, (pid, cell)
        res = cli(*m.group(1).split(), str(vocabulary_cache.path), *m.group(2).split(), "--json",
                  cwd=REPO)
        assert res.returncode == 0, (pid, res.stderr)
        import json

        audit = json.loads(res.stdout)["gene_audit"]
        named = len([x for x in (SPECS / "named_genes_209.txt").read_text().splitlines()
                     if x and not x.startswith("#")])
        assert audit["asked"] == named == 209
        assert audit["with_vector"] + len(audit["all_zero"]) + len(audit["absent"]) == 209
