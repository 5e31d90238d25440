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
    assert re.search(r"^knn_communities\s+ari vs first, k=10\s+99\s", out, flags=re.M)
    assert len(re.findall(r"^knn_communities\s+stored kNN\s+99\s", out,
                          flags=re.M)) == 2, out


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
