"""Edges among the genes of an atlas's top lists: the sparse product and the packed adjacency.

    python benchmarks/bench_list_edges.py [--genes 4803] [--edges 100000] [--features 4096]
                                          [--top-n 20] [--draws 20] [--uniform]

What `feature_network_coherence` does for the atlas and for each of its pseudo-atlases (199
per null by default): count the network edges among each feature's `--top-n` genes.  The
network is hub-heavy (endpoints drawn in proportion to Pareto(1.2) weights, as STRING's
degrees are; STRING v12 at combined score >= 700 has on the order of 10^5 edges), and the
lists favour hubs (genes drawn in proportion to the square root of the weight, as top lists
of broadly expressed genes do); `--uniform` draws both uniformly instead (no hubs: the sparse
product's best case, and `bench_probes.py`'s STRING-like network).  Times
`packed_adjacency.sparse_list_edges` (the probe before 2026-12-08) and `ListEdges` (the
bit-packed adjacency, built once: its build time is printed apart; it looks pairs up when
(n - 1)/2 is at most the listed genes' mean degree, which the row names) on the same `--draws` sets
of lists, prints both and the ratio, and exits non-zero unless every count is identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import sparse

from geoscreen.probes.packed_adjacency import ListEdges, sparse_list_edges


def hub_network(rng: np.random.Generator, n: int, m: int, uniform: bool = False
                ) -> tuple[sparse.csr_matrix, np.ndarray]:
    w = np.ones(n) if uniform else rng.pareto(1.2, n) + 1.0
    i, j = rng.choice(n, m, p=w / w.sum()), rng.choice(n, m, p=w / w.sum())
    ok = i != j
    A = sparse.csr_matrix((np.ones(2 * int(ok.sum())), (np.r_[i[ok], j[ok]], np.r_[j[ok], i[ok]])),
                          shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1.0
    return A, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=4803)
    ap.add_argument("--edges", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--uniform", action="store_true", help="no hubs: a uniform network and lists")
    a = ap.parse_args()
    if a.top_n < 2 or a.genes < a.top_n or a.features < 1 or a.draws < 1:
        ap.error("need --top-n >= 2, --genes >= --top-n, --features >= 1 and --draws >= 1")
    rng = np.random.default_rng(0)
    A, w = hub_network(rng, a.genes, a.edges, a.uniform)
    p = np.sqrt(w) / np.sqrt(w).sum()
    draws = [np.stack([rng.choice(a.genes, a.top_n, replace=False, p=p)
                       for _ in range(a.features)]) for _ in range(a.draws)]
    s0 = time.perf_counter()
    packed = ListEdges(A)
    s1 = time.perf_counter()
    want = [sparse_list_edges(lists, A) for lists in draws]
    s2 = time.perf_counter()
    got = [packed(lists) for lists in draws]
    s3 = time.perf_counter()
    same = all(np.array_equal(g, e) for g, e in zip(got, want, strict=True))
    print(f"{a.genes:,} genes, {A.nnz // 2:,} edges (largest degree {int(A.sum(1).max()):,}); "
          f"{a.draws} atlases of {a.features:,} lists of {a.top_n} genes "
          f"(mean {np.mean([e.mean() for e in want]):.2f} edges a list):")
    way = "packed lookup" if packed.packed_for(draws[0]) else "the product: low degrees"
    print(f"  sparse product {s2 - s1:.2f} s | ListEdges {s3 - s2:.2f} s ({way}; built once in "
          f"{s1 - s0:.3f} s, {packed.bits.nbytes / 2**20:.1f} MiB) | "
          f"{(s2 - s1) / max(s3 - s2, 1e-9):.1f}x | counts {'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit("the packed adjacency's counts differ from the sparse product's")


if __name__ == "__main__":
    main()
