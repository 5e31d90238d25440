"""Core-loop benchmark: cache open time and hypotheses per second of the campaign loop.

    python benchmarks/bench_core.py [--quick]

Prints (1) the time to open a 13 x 20,000 x 512 float32 cache (manifest + gene table, no array
read) next to the time to read one layer fully, and (2) hypotheses per second of the loop on a
12 x 4,803 x 512 cache with the offline brainstormer, with 1 and 2 workers, side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def stopping_alternative(alternatives: tuple[str, ...] | list[str]) -> str:
    """The probe's first alternative, or its first one-sided one: a sequential (Besag-Clifford)
    test never stops early on a two-sided alternative, so a benchmark of early stopping times a
    one-sided test."""
    return next((a for a in alternatives if a != "two-sided"), alternatives[0])


def _gene_symbols(n: int) -> list[str]:
    """Real symbols where the bundled map has them (so named resources resolve), padded."""
    try:
        from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set

        genes = sorted(set(resolve_gene_set("go:GO:0005615").genes)
                       | set(resolve_gene_set("go:GO:0005829").genes))
        pairs = resolve_pair_set("string:>=700")
        genes = sorted(set(genes) | set(pairs.a[:20000]) | set(pairs.b[:20000]))
    except Exception:
        genes = []
    rng = np.random.default_rng(0)
    genes = list(rng.permutation(genes))[:n]
    genes += [f"SYN{i}" for i in range(n - len(genes))]
    return genes


def bench_open(root: Path, n_layers: int, n_genes: int, dim: int) -> None:
    from geoscreen.store.cache import open_cache, write_cache

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(n_genes)]
    layers = ((f"L{i}", rng.standard_normal((n_genes, dim), dtype=np.float32))
              for i in range(n_layers))
    t = time.perf_counter()
    write_cache(root / "big", layers, genes)
    write_s = time.perf_counter() - t
    opens = []
    for _ in range(20):
        t = time.perf_counter()
        c = open_cache(root / "big")
        opens.append(time.perf_counter() - t)
    t = time.perf_counter()
    float(np.asarray(c.array("L5")).sum())
    read_s = time.perf_counter() - t
    med = statistics.median(opens)
    print(f"cache {n_layers}x{n_genes}x{dim} float32 "
          f"({n_layers * n_genes * dim * 4 / 2**20:.0f} MiB): write {write_s:.2f} s")
    print(f"  open (manifest + gene table, median of 20): {med * 1e3:.2f} ms")
    print(f"  read one layer fully:                       {read_s * 1e3:.1f} ms "
          f"(open is {read_s / med:.0f}x cheaper than reading a single layer)")


def bench_loop(root: Path, n_layers: int, n_genes: int, dim: int, iterations: int,
               per_iteration: int) -> None:
    from geoscreen.agent.campaign import CampaignConfig, run_campaign
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(1)
    genes = _gene_symbols(n_genes)
    layers = {f"L{i}": rng.standard_normal((n_genes, dim), dtype=np.float32)
              for i in range(n_layers)}
    cache = write_cache(root / "loop", layers, genes)
    rates = {}
    for workers in (1, 2):
        os.environ["GEOSCREEN_WORK_DIR"] = str(root / f"work{workers}")
        ledger = root / f"loop{workers}.sqlite"
        t = time.perf_counter()
        s = run_campaign(cache.path, ledger, CampaignConfig(
            iterations=iterations, per_iteration=per_iteration, brainstormer="offline",
            seed=0, workers=workers))
        dt = time.perf_counter() - t
        n = s.tested + s.failed
        rates[workers] = n / dt
        print(f"loop {n_layers}x{n_genes}x{dim}, offline brainstormer, {workers} worker(s): "
              f"{n} hypotheses ({s.tested} done, {s.failed} failed) in {dt:.1f} s = "
              f"{n / dt:.2f} hypotheses/s")
    print(f"  2 workers vs 1: {rates[2] / rates[1]:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if args.quick:
            bench_open(root, 3, 2000, 64)
            bench_loop(root, 3, 1000, 32, 2, 3)
        else:
            bench_open(root, 13, 20000, 512)
            bench_loop(root, 12, 4803, 512, 6, 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
