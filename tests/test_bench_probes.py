"""benchmarks/bench_probes.py at a small size: the size options build the cache they name, and
the rows of the probes changed for speed (edge direction, motifs with the star motifs, the
whole-stack profile on its planted modules) run and print a timing.  The full run and its
figures: docs/probes.md (Speed) and docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path, *args: str) -> str:
    """The output of benchmarks/bench_probes.py with `args` (one BLAS thread, its work folder
    under tmp_path), which must end without error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GEOSCREEN_WORK_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_probes.py"), *args],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_small_run_prints_a_row_per_variant(tmp_path):
    out = _bench(tmp_path, *(
        "--genes 3000 --dim 16 --cache-layers 12 --layers 1 "
        "--permutations 99 --only edge_direction regulatory_motifs "
        "layer_profile"
    ).split())
    assert "built 12 x 3000 x 16 cache" in out
    rows = re.findall(r"^(edge_direction|regulatory_motifs|layer_profile)\s+.*?\s(\d+)\s+"
                      r"([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, flags=re.M)
    # regulatory_motifs: two position rows (1.4), then eight pair-statistic rows
    assert [r[0] for r in rows] == ["edge_direction"] * 2 + ["regulatory_motifs"] * 10 + \
        ["layer_profile"], out
    assert all(r[1] == "99" for r in rows[:12])  # the permutations asked for
    assert all(float(r[2]) > 0 for r in rows)


def test_a_two_layer_cache_skips_the_whole_stack_profile(tmp_path):
    """The 20,000-gene command of the docs builds two layers; the profile, which needs three or
    more, is skipped with a line saying why instead of ending the run with a traceback."""
    out = _bench(tmp_path, *(
        "--genes 3000 --dim 8 --cache-layers 2 --layers 1 "
        "--permutations 99 --only axis_separation layer_profile"
    ).split())
    assert re.search(r"^axis_separation\s+label_shuffle\s+99\s", out, flags=re.M)
    assert "layer_profile          skipped: a profile needs 3 or more layers" in out


def test_the_stored_knn_rows_run_on_several_layers(tmp_path):
    """A second k-NN hypothesis reads every list from the store, including the one of the layer
    it compares with (`versus_layer: first`, read once for all its layers): on three layers the
    benchmark's own check used to expect that list once per layer and stopped the whole table."""
    out = _bench(tmp_path, *(
        "--genes 3000 --dim 16 --cache-layers 4 --layers 3 "
        "--permutations 99 --only knn_communities"
    ).split())
    # (knn_communities 1.3: layers that agree strongly are decided by Cantelli's bound with
    # no draws; the draws row beside it draws them)
    assert re.search(r"^knn_communities\s+ari vs first, k=10\s+\d+\s", out, flags=re.M)
    assert re.search(r"^knn_communities\s+ari vs prev\., draws\s+99\s", out, flags=re.M)
    assert len(re.findall(r"^knn_communities\s+stored kNN\s+\d+\s", out,
                          flags=re.M)) == 4, out


def test_annotation_similarity_rows_draw_only_where_cantelli_cannot_decide(tmp_path):
    """The 500-set random family (the matched null holds) draws every relabelling; the sets
    that follow the layers' leading axes are decided by the exact stratified mean and sd
    (Cantelli's bound under 1 / (m + 1)) with none drawn."""
    out = _bench(tmp_path, *(
        "--genes 3000 --dim 16 --cache-layers 3 --layers 1 "
        "--permutations 99 --only annotation_similarity"
    ).split())
    assert re.search(r"^annotation_similarity\s+family, matched\s+99\s", out, flags=re.M)
    assert re.search(r"^annotation_similarity\s+sets that follow the layer, matched\s+0\s",
                     out, flags=re.M), out


def test_the_summary_counts_variants_under_the_target_both_ways(tmp_path):
    """The closing summary counts each probe variant once: at its fixed median, and with
    `--sequential` at its stopped median where the null stops; it names the variants over
    0.3 s.  Then a small run: the summary's variant count is the number of fixed rows printed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_probes import TARGET_S, summary
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert TARGET_S == 0.3
    tally = [["a", "x", 0.2, None], ["b", "y", 0.5, 0.1], ["c", "z", 0.4, None],
             ["d", "w", 0.3, 0.9]]
    fixed_only = summary(tally, None)
    assert "4 probe variants; 2 at or under 0.3 s per layer with every draw made" in fixed_only
    assert "stopping rule" not in fixed_only
    assert fixed_only.endswith("over it: b y 0.50; c z 0.40")
    both = summary(tally, 10)
    assert "; 2 with the campaign's stopping rule (h=10)" in both
    assert both.endswith("over it: c z 0.40; d w 0.90")
    assert summary([], 10).endswith("no probe variant ran")

    out = _bench(tmp_path, *(
        "--genes 3000 --dim 12 --cache-layers 3 --layers 2 --permutations 99 "
        "--only axis_separation co_pole --sequential 10"
    ).split())
    rows = re.findall(r"^(axis_separation|co_pole)\s{2,}(\S.*?)\s+\d+\s+[\d.]+\s", out,
                      flags=re.M)
    fixed_rows = [r for r in rows if not r[1].startswith(("sequential", "stored"))]
    m = re.search(r"^summary: (\d+) probe variants; (\d+) at or under 0.3 s per layer with "
                  r"every draw made; (\d+) with the campaign's stopping rule \(h=10\)$", out,
                  flags=re.M)
    assert m, out
    assert int(m.group(1)) == len(fixed_rows) > 0


def test_the_atlas_probes_get_rows_on_synthetic_atlases(tmp_path):
    """The six SAE-atlas probes run on the benchmark's synthetic atlases (written for the timed
    layers and the one before, which `cross_layer_highways` reads) and each prints a row."""
    names = ("feature_annotation", "feature_network_coherence", "superposition",
             "coactivation_modules", "cross_layer_highways", "perturbation_specificity")
    out = _bench(tmp_path, *(
        "--genes 3000 --dim 16 --cache-layers 3 --layers 1 --atlas-features 256 "
        "--atlas-cells 300 --only " + " ".join(names)).split())
    assert "wrote 2 SAE atlases (256 features, 30,000 positions each)" in out, out
    rows = re.findall(r"^(\w+)\s.*?\s(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out,
                      flags=re.M)
    assert tuple(r[0] for r in rows) == names, out
    assert all(float(r[2]) > 0 for r in rows)


def test_atlas_sizes_too_small_are_refused_in_one_line(tmp_path):
    env = dict(os.environ, GEOSCREEN_WORK_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_probes.py"),
                          "--atlas-features", "10"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--atlas-features must be at least 64" in res.stderr.strip().splitlines()[-1]
