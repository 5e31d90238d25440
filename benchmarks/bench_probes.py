"""Probe benchmark: median seconds per layer of every probe on a 12 x 4,803 x 512 cache.

    python benchmarks/bench_probes.py [--layers 3] [--permutations 1000] [--only NAME ...]

Builds a synthetic float32 cache (decaying spectrum, so late layers look like real ones) and
literal resources sized like the real ones inside a 4,803-gene vocabulary: 25,000 scored
STRING-like pairs, 3,000 TRRUST-like directed edges (400 TFs, 1,500 targets, signed), gene sets
of 300-800 genes, six 40-gene marker sets.  Each probe runs on the last `--layers` layers after
one warm-up pass that computes and stores the per-layer SVDs (their one-off cost is printed
separately: SVDs are shared by every hypothesis on a cache).  Permutation probes use
`--permutations` draws (default 1,000), except the three whose null needs one full-matrix
product or one ripser call per draw (spectrum feature shuffle, layer_similarity, persistent
homology), which run their default 199; descriptive probes use 200 bootstrap replicates.  The
`draws` column shows the draws a null really made where the probe records them (layer_similarity's
moment null makes none; its three rows put the moment null with confirmation, the draws alone and
the moments alone side by side).  The
pole-enrichment scan runs over a 500-set GMT family (10-200 genes each) on singular axes 1-5.
Target (issue 16): at most `TARGET_S` = 0.3 s per layer; the run ends with a summary line that
counts the probe variants at or under it with every draw made and, with `--sequential`, with the
campaign's default stopping (the sequential row where the null stops), and names the rest.  A
probe whose null is drawn once per layer and shared by
the hypotheses of a campaign (`geoscreen.probes.null_store`: the spectrum's feature shuffle)
gets a second row, `stored null`: the same layers again as a second hypothesis would run them,
reading the stored draws and checking them; the k-NN probes likewise get a `stored kNN` row (a
second k-NN hypothesis on the same layers reads their stored, spot-checked neighbour lists,
`geoscreen.probes.knn_store`), while their first row is always a first hypothesis. `--sequential
H` adds, for every probe whose null can stop early (Besag-Clifford,
`geoscreen.probes.sequential`), a row timed on the same layers with stopping at H exceedances,
and its ratio to the fixed run; a two-sided test never stops, so with `--sequential` each probe
runs its first one-sided alternative (fixed and sequential rows alike), and the probes that keep
their draws for a trend across layers (anchor/centroid convergence, gene drift) print no
sequential row. `--genes 20000 --dim 1152 --cache-layers 2 --layers 1` times the probes at the
scale of a whole-transcriptome vocabulary and a Geneformer-width model (a cliff shows as a jump
in s/layer far beyond the genes^2 x dim growth). Wall time is shown with the CPU time of the
process (all threads): on a busy machine the wall time inflates, the CPU time much less.
The six SAE-atlas probes run on synthetic atlases of the timed layers (and the layer before,
for the cross-layer highways) written by `bench_atlas_world` (4,096 features, k = 32, 200,000
positions, top 20 genes: one layer of the published atlases; `--atlas-features`,
`--atlas-cells`), at their default draws.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_atlas_world as atlas_world  # noqa: E402  (same folder)
from bench_core import stopping_alternative  # noqa: E402

TARGET_S = 0.3  # issue 16: every probe at most this many seconds per layer

N_GENES, DIM, N_LAYERS = 4803, 512, 12
# the atlases' size (--atlas-features, --atlas-cells) and features active at each position
ATLAS_FEATURES, ATLAS_CELLS, ATLAS_K = atlas_world.N_FEATURES, atlas_world.N_CELLS, atlas_world.K


def build(root: Path, rng: np.random.Generator) -> tuple[object, object, dict[str, str]]:
    from geoscreen.store.cache import write_cache

    genes = [f"G{i}" for i in range(N_GENES)]
    base = rng.standard_normal((N_GENES, DIM), dtype=np.float32)

    # two planted 100-gene modules whose cohesion peaks early (layer 3) and late (layer 8) of 12:
    # what layer_profile locates (their own generator: the other draws stay as they were)
    mod_rng = np.random.default_rng(99)
    modules = mod_rng.choice(N_GENES, (2, 100), replace=False)
    pulls = mod_rng.standard_normal((2, DIM)).astype(np.float32)

    def layer(k: int) -> np.ndarray:
        decay = np.exp(-np.arange(DIM) / (200.0 / (1 + k))).astype(np.float32)
        X = base * decay + 0.3 * rng.standard_normal((N_GENES, DIM), dtype=np.float32)
        for rows, pull, peak in zip(modules, pulls, (3, 8)):
            X[rows] += 0.4 * np.exp(-((k - peak) ** 2) / 4.0) * pull
        return X

    # the cells of the atlases' perturbation screen (bench_atlas_world), mapped to the cache
    cache = write_cache(root / "cache", ((f"L{k}", layer(k)) for k in range(N_LAYERS)), genes,
                        model="bench", synthetic=True, extra=cell_extra())
    other = write_cache(root / "other", {"L0": layer(11) @ np.linalg.qr(
        rng.standard_normal((DIM, DIM)))[0].astype(np.float32)}, genes, model="bench2",
        synthetic=True)

    def gset(name: str, idx: np.ndarray) -> str:
        (root / f"{name}.txt").write_text("\n".join(f"G{i}" for i in idx) + "\n")
        return f"file:{root / name}.txt"

    def pset(name: str, i: np.ndarray, j: np.ndarray, score=None) -> str:
        rows = [f"G{a}\tG{b}" + (f"\t{score[k]:.0f}" if score is not None else "")
                for k, (a, b) in enumerate(zip(i, j))]
        (root / f"{name}.tsv").write_text("\n".join(rows) + "\n")
        return f"file:{root / name}.tsv"

    perm = rng.permutation(N_GENES)
    i = rng.integers(0, N_GENES, 30000)
    j = rng.integers(0, N_GENES, 30000)
    keep = i != j
    i, j = i[keep][:25000], j[keep][:25000]
    tfs, tg = perm[:400], perm[400:1900]
    ei = rng.choice(tfs, 3000)
    ej = rng.choice(tg, 3000)
    refs = {
        "secreted": gset("secreted", perm[:300]), "cytosol": gset("cytosol", perm[300:1100]),
        "regulators": gset("regulators", tfs), "targets": gset("targets", tg),
        "string": pset("string", i, j, rng.uniform(400, 1000, i.size)),
        "trrust": pset("trrust", ei, ej),
        "repression": pset("repression", ei[:1000], ej[:1000]),
        "activation": pset("activation", ei[1000:], ej[1000:]),
        "markers": [gset(f"marker{k}", perm[2000 + 40 * k:2040 + 40 * k]) for k in range(6)],
        "ribosome": gset("ribosome", perm[2300:2400]),
        "early": gset("early", modules[0]), "late": gset("late", modules[1]),
        "other": str(other.path),
    }
    # 16 TF families of 25 regulators each (role_margins): slices, no draw
    refs["tf_groups"] = [gset(f"tffam{k}", tfs[25 * k:25 * k + 25]) for k in range(16)]
    # a GO-slim-sized family for the pole scan: 500 overlapping sets of 10-200 genes
    # (its sets also tie the synthetic atlases' program features; the regulators with the most
    # targets are their knockdowns)
    refs["family_sets"] = [rng.choice(N_GENES, int(rng.integers(10, 201)), replace=False)
                           for _ in range(500)]
    lines = [f"set{k}\tna\t" + "\t".join(f"G{g}" for g in members)
             for k, members in enumerate(refs["family_sets"])]
    (root / "family.gmt").write_text("\n".join(lines) + "\n")
    refs["family"] = f"file:{root / 'family.gmt'}"
    regulators, n_targets = np.unique(ei, return_counts=True)
    refs["regulators"] = regulators[np.argsort(-n_targets, kind="stable")]
    # the same sizes, but each set the genes nearest a random direction of the layers' shared
    # leading axes: an annotation the geometry follows (its own generator: no other draw moves)
    fam_rng = np.random.default_rng(7)
    lead = base[:, :20] / np.linalg.norm(base[:, :20], axis=1, keepdims=True)
    lines = []
    for k in range(500):
        near = np.argsort(-(lead @ fam_rng.standard_normal(lead.shape[1])))[
            :int(fam_rng.integers(10, 201))]
        lines.append(f"near{k}\tna\t" + "\t".join(f"G{g}" for g in near))
    (root / "near.gmt").write_text("\n".join(lines) + "\n")
    refs["near"] = f"file:{root / 'near.gmt'}"
    # a compartment-like annotation: 20 disjoint sets covering 3,000 genes (knn_communities)
    part = rng.permutation(N_GENES)[:3000].reshape(20, 150)
    (root / "compartments.gmt").write_text("\n".join(
        f"c{k}\tna\t" + "\t".join(f"G{g}" for g in row) for k, row in enumerate(part)) + "\n")
    refs["compartments"] = f"file:{root / 'compartments.gmt'}"
    (root / "scores.tsv").write_text("".join(f"G{g}\t{v:.4f}\n" for g, v in enumerate(
        rng.standard_normal(N_GENES))))
    refs["scores"] = f"file:{root / 'scores.tsv'}"
    # TRRUST itself (8,427 edges, 2,860 genes, hubs up to 472 targets, 4,152 feed-forward loops)
    # on random genes of the vocabulary: the random 3,000-edge set above has no TF -> TF edge
    from geoscreen.store.resources.api import resolve_pair_set

    tr = resolve_pair_set("trrust:all")
    names = sorted(set(tr.a) | set(tr.b))
    spot = dict(zip(names, rng.choice(N_GENES, len(names), replace=False).tolist()))
    refs["trrust_real"] = pset("trrust_real", np.array([spot[a] for a in tr.a]),
                               np.array([spot[b] for b in tr.b]))
    # three layers of a real embedding's kind (their own generator: the draws above stay as
    # they were): a decaying spectrum (effective rank about a fifth of the width) in a random
    # basis, so the dimensions are correlated and the feature shuffle's null is false; the main
    # layers are nearly isotropic with independent dimensions, where it holds
    rot = np.random.default_rng(7)
    Q = np.linalg.qr(rot.standard_normal((DIM, DIM)))[0].astype(np.float32)
    refs["rotated"] = write_cache(root / "rotated", {
        f"R{k}": (rot.standard_normal((N_GENES, DIM), dtype=np.float32) * np.exp(
            -np.arange(DIM) / (DIM / tau)).astype(np.float32)) @ Q
        for k, tau in enumerate((12, 16, 20))}, genes, model="bench-rotated", synthetic=True)
    return cache, other, refs


def cell_extra() -> dict[str, np.ndarray]:
    return atlas_world.cell_ids(ATLAS_CELLS)


ATLAS_PROBES = ("feature_annotation", "feature_network_coherence", "superposition",
                "coactivation_modules", "cross_layer_highways", "perturbation_specificity")


def atlas_specs(refs: dict) -> list[tuple[str, str, dict]]:
    """The atlas probes at their default draws (199 pseudo-atlases, 9,999 re-assignments or
    random directions, 49 rotations) on `bench_atlas_world`'s atlases."""
    if "atlas" not in refs:
        return []
    at = refs["atlas"]
    return [
        ("feature_annotation", "500 sets, top 20", {"atlas": at, "family": refs["family"]}),
        ("feature_network_coherence", "STRING-like", {"atlas": at, "pairs": refs["string"]}),
        ("superposition", "m=10", {"atlas": at, "m": 10}),
        ("coactivation_modules", "200k positions", {"atlas": at}),
        ("cross_layer_highways", "previous layer", {"atlas": at}),
        ("perturbation_specificity", "30 knockdowns", {
            "atlas": at, "labels": refs["labels"], "targets": refs["trrust"]}),
    ]


def specs(refs: dict, m: int) -> list[tuple[str, str, dict]]:
    sub = [2, 3, 4]
    return atlas_specs(refs) + [
        ("spectrum", "effective_rank", {"measure": "effective_rank"}),
        ("spectrum", "feature_shuffle", {"null": "feature_shuffle", "n_bootstrap": 0}),
        # layers with correlated dimensions: the bound decides without drawing (the row after
        # it draws, for comparison: the first hypothesis on those layers)
        ("spectrum", "f.shuffle, rotated", {"null": "feature_shuffle", "n_bootstrap": 0,
                                            "_cache": "rotated"}),
        ("spectrum", "f.sh. rot., draws", {"null": "feature_shuffle", "n_bootstrap": 0,
                                           "null_method": "draws", "_cache": "rotated"}),
        ("intrinsic_dimension", "all genes", {}),
        ("intrinsic_dimension", "f.shuffle SV1-20", {"subspace": list(range(1, 21)),
                                                      "null": "feature_shuffle",
                                                      "n_permutations": 99, "n_bootstrap": 0}),
        ("spectrum", "k90", {"measure": "k_for_variance"}),
        ("axis_separation", "label_shuffle", {"positive": refs["secreted"],
                                              "negative": refs["cytosol"],
                                              "test": "label_shuffle", "n_permutations": m}),
        ("pair_proximity", "SV2-4", {"pairs": refs["string"], "subspace": sub,
                                     "n_permutations": m}),
        ("pair_proximity", "SV2-4, draws", {"pairs": refs["string"], "subspace": sub,
                                            "null_method": "draws", "n_permutations": m}),
        ("pair_proximity", "full, shuffle", {"pairs": refs["string"], "null": "gene_shuffle",
                                             "n_permutations": m}),
        ("pair_proximity", "full, shuffle, draws", {"pairs": refs["string"],
                                                    "null": "gene_shuffle",
                                                    "null_method": "draws", "n_permutations": m}),
        ("pair_proximity", "SV2 eucl, shuffle", {"pairs": refs["string"], "subspace": [2],
                                                 "metric": "euclidean", "null": "gene_shuffle",
                                                 "n_permutations": m}),
        ("pair_proximity", "SV2 eucl, sh., draws", {"pairs": refs["string"], "subspace": [2],
                                                    "metric": "euclidean",
                                                    "null": "gene_shuffle",
                                                    "null_method": "draws",
                                                    "n_permutations": m}),
        ("pair_proximity", "full, degree", {"pairs": refs["string"], "null": "degree_preserving",
                                            "n_permutations": m}),
        ("pair_proximity", "full, degree, draws", {"pairs": refs["string"],
                                                   "null": "degree_preserving",
                                                   "null_method": "draws", "n_permutations": m}),
        ("co_pole", "SV1 q=0.1", {"pairs": refs["string"], "quantile": 0.1,
                                  "n_permutations": m}),
        ("co_pole", "SV1 q=0.1, draws", {"pairs": refs["string"], "quantile": 0.1,
                                         "null_method": "draws", "n_permutations": m}),
        ("co_pole", "SV1-3 opp, shuffle", {"pairs": refs["string"], "axes": [1, 2, 3],
                                           "pole": "opposite", "null": "gene_shuffle",
                                           "n_permutations": m}),
        ("co_pole", "SV1-3 opp, draws", {"pairs": refs["string"], "axes": [1, 2, 3],
                                         "pole": "opposite", "null": "gene_shuffle",
                                         "null_method": "draws", "n_permutations": m}),
        ("co_pole", "2 of SV1-3", {"pairs": refs["string"], "axes": [1, 2, 3], "min_axes": 2,
                                   "quantile": 0.2, "n_permutations": m}),
        ("co_pole", "SV2-4 axis count", {"pairs": refs["string"], "axes": [2, 3, 4],
                                         "statistic": "axis_count", "quantile": 0.1,
                                         "n_permutations": m}),
        ("co_pole", "SV2-4 count, draws", {"pairs": refs["string"], "axes": [2, 3, 4],
                                           "statistic": "axis_count", "quantile": 0.1,
                                           "null_method": "draws", "n_permutations": m}),
        ("graded_proximity", "5 bins", {"pairs": refs["string"], "subspace": sub,
                                        "n_permutations": m}),
        ("graded_proximity", "5 bins, draws", {"pairs": refs["string"], "subspace": sub,
                                               "null_method": "draws", "n_permutations": m}),
        ("role_separation", "SV2-7", {"positive": refs["regulators"],
                                      "negative": refs["targets"],
                                      "subspace": [2, 3, 4, 5, 6, 7], "n_permutations": m}),
        ("role_margins", "16 families, centroid SV2-7", {"positive": refs["regulators"],
                                                         "negative": refs["targets"],
                                                         "groups": refs["tf_groups"],
                                                         "n_permutations": m}),
        ("role_margins", "score, classifier SV5-7", {"positive": refs["regulators"],
                                                     "negative": refs["targets"],
                                                     "subspace": [5, 6, 7],
                                                     "margin": "classifier",
                                                     "score": refs["scores"],
                                                     "n_permutations": m}),
        ("role_projection", "SV2-7, matched", {"positive": refs["regulators"],
                                                "negative": refs["targets"],
                                                "scored": refs["ribosome"],
                                                "subspace": [2, 3, 4, 5, 6, 7],
                                                "n_permutations": m}),
        ("axis_separation", "|SV2-4| given norm", {"positive": refs["ribosome"],
                                                   "axes": [2, 3, 4], "score": "magnitude",
                                                   "covariates": ["norm"],
                                                   "test": "label_shuffle",
                                                   "n_permutations": m}),
        ("edge_specificity", "full", {"pairs": refs["trrust"], "n_permutations": m}),
        ("sign_contrast", "SV2-7", {"pairs_a": refs["repression"], "pairs_b": refs["activation"],
                                    "subspace": [2, 3, 4, 5, 6, 7], "n_permutations": m}),
        ("anchor_convergence", "z", {"genes": "genes:G1,G2", "anchor": "G3"}),
        ("centroid_convergence", "z, matched", {"genes": "genes:G1,G2,G3",
                                                "anchor_set": "genes:G4,G5,G6,G7",
                                                "n_permutations": m}),
        ("gene_drift", "previous, matched", {"genes": refs["ribosome"], "n_permutations": m}),
        ("centroid_drift", "alignment, matched", {"gene_set": "genes:G1,G2,G3,G4,G5",
                                                  "target": "genes:G6,G7,G8,G9",
                                                  "reference": "first", "n_permutations": m}),
        ("centroid_drift", "vertex_angle, matched", {"gene_set": "genes:G1,G2,G3,G4,G5",
                                                     "target": "genes:G6,G7,G8,G9",
                                                     "second_target": "genes:G10,G11,G12",
                                                     "statistic": "vertex_angle",
                                                     "n_permutations": m}),
        ("axis_pole_overlap", "genes, SV2-3", {"axes": [2, 3], "n_permutations": m}),
        ("axis_pole_overlap", "pairs, SV2-4", {"axes": [2, 4], "statistic": "pairs",
                                               "pairs": refs["string"], "n_permutations": m}),
        ("network_spectrum_alignment", "trrust SV5-7, k=3", {"pairs": refs["trrust"],
                                                             "subspace": [5, 6, 7], "k": 3,
                                                             "n_permutations": m}),
        ("set_centroids", "set vs rest, matched", {"sets": [refs["ribosome"]], "versus": "rest",
                                                   "n_permutations": m}),
        ("pole_enrichment", "500 sets x SV1-5", {"family": refs["family"], "n_permutations": m}),
        ("pole_enrichment", "pole_count", {"family": refs["family"], "test": "pole_count",
                                           "n_permutations": m}),
        ("pole_enrichment", "rank_by drift", {"family": refs["family"], "rank_by": "drift",
                                              "reference": "first", "n_permutations": m}),
        ("pole_enrichment", "rank_by norm_trend", {"family": refs["family"],
                                                   "rank_by": "norm_trend", "n_permutations": m}),
        ("set_cohesion", "mean_similarity", {"gene_set": refs["ribosome"], "n_permutations": m}),
        ("set_cohesion", "retrieval x6", {"gene_set": refs["markers"],
                                          "statistic": "retrieval_auroc", "n_permutations": m}),
        ("set_cohesion", "feature_shuffle", {"gene_set": refs["ribosome"],
                                             "null": "feature_shuffle", "n_permutations": m}),
        ("layer_similarity", "moments+confirm", {"reference_layer": "first"}),
        ("layer_similarity", "gene_shuffle draws", {"reference_layer": "first",
                                                    "null_method": "draws"}),
        ("layer_similarity", "moments only", {"reference_layer": "first", "confirm_below": 0.0}),
        # the feature-shuffle null: decided by its exact Cantelli bound (version 1.3) on these
        # related layers, and the 199 copies the draws make for the same test
        ("layer_similarity", "feature_shuffle", {"reference_layer": "first",
                                                 "null": "feature_shuffle"}),
        ("layer_similarity", "f.shuffle draws", {"reference_layer": "first",
                                                 "null": "feature_shuffle",
                                                 "null_method": "draws"}),
        # the sliced Wasserstein distance to the first layer: descriptive, and against 199
        # copies of both layers with every dimension shuffled
        ("layer_transport", "100 directions", {"reference_layer": "first"}),
        ("layer_transport", "f.shuffle, 50 dir.", {"reference_layer": "first",
                                                   "null": "feature_shuffle",
                                                   "projections": 50}),
        ("subspace_alignment", "k=10, genes", {"k": 10, "reference": "first"}),
        ("knn_homophily", "k=10, matched", {"gene_set": refs["ribosome"], "k": 10,
                                            "n_permutations": m}),
        # (1.2) a census: the 20 neighbours of a 40-gene marker set counted in the ribosome set
        ("knn_homophily", "census, 40 sources", {"gene_set": refs["ribosome"], "k": 20,
                                                 "sources": refs["markers"][0],
                                                 "n_permutations": m}),
        ("knn_graph", "clustering k=10", {"k": 10}),
        ("community_concentration", "k=10, matched", {"gene_sets": [refs["ribosome"]], "k": 10,
                                                      "n_permutations": m}),
        ("knn_communities", "ari, k=10", {"annotation": refs["compartments"], "k": 10,
                                          "n_permutations": m}),
        # 500 sets of 10-200 genes cover every gene: two dense 4,803 x 4,803 matrices
        ("annotation_similarity", "family, matched", {"family": refs["family"],
                                                      "n_permutations": m}),
        # sets that follow the layers' leading axes: the exact stratified mean and sd put
        # Cantelli's bound under 1 / (m + 1), and no relabelling is drawn
        ("annotation_similarity", "sets that follow the layer, matched", {
            "family": refs["near"], "n_permutations": m}),
        ("annotation_similarity", "family, gene_shuffle moments", {
            "family": refs["family"], "null": "gene_shuffle", "n_permutations": m}),
        # precision at k among all 11.5 million gene pairs: the top pairs once per layer, then
        # the rewirings (or relabellings) of the pair set over them
        ("pair_retrieval", "SV2 eucl, k=1000", {"pairs": refs["string"], "k": 1000,
                                                "subspace": [2], "metric": "euclidean",
                                                "n_permutations": m}),
        ("pair_retrieval", "full, k=1000", {"pairs": refs["string"], "k": 1000,
                                            "n_permutations": m}),
        ("pair_retrieval", "full, k=1000, shuffle", {"pairs": refs["string"], "k": 1000,
                                                     "null": "gene_shuffle",
                                                     "n_permutations": m}),
        ("knn_graph", "modularity k=10", {"k": 10, "statistic": "modularity"}),
        # (1.4) the modularity against 99 copies in SV1-20 with each axis shuffled: a k-NN
        # graph and a Leiden partition per copy
        ("knn_graph", "modularity SV1-20, f.shuffle", {
            "k": 10, "statistic": "modularity", "null": "feature_shuffle",
            "subspace": list(range(1, 21)), "n_permutations": 99}),
        # (1.2) the communities against the first layer's: two partitions, then label draws
        ("knn_communities", "ari vs first, k=10", {"versus_layer": "first", "k": 10,
                                                   "n_permutations": m}),
        # consecutive layers agree strongly: Cantelli's bound decides them (1.3), where the
        # weak agreement with the first layer above needs every draw
        ("knn_communities", "ari vs previous", {"versus_layer": "previous", "k": 10,
                                                "n_permutations": m}),
        ("knn_communities", "ari vs prev., draws", {"versus_layer": "previous", "k": 10,
                                                    "n_permutations": m,
                                                    "null_method": "draws"}),
        ("knn_graph", "spectral gap k=10", {"k": 10, "statistic": "spectral_gap"}),
        ("edge_direction", "SV1-10, matched", {"pairs": refs["trrust"],
                                               "subspace": list(range(1, 11)),
                                               "n_permutations": m}),
        ("edge_direction", "full, matched", {"pairs": refs["trrust"], "n_permutations": m}),
        # (1.4) where each loop's middle gene lies between its ends, SV5-7, relabelled genes
        ("regulatory_motifs", "ffl between, SV5-7", {"pairs": refs["trrust_real"],
                                                     "statistic": "between_share",
                                                     "subspace": [5, 6, 7],
                                                     "metric": "euclidean",
                                                     "null": "gene_shuffle",
                                                     "n_permutations": m}),
        ("regulatory_motifs", "ffl between, full", {"pairs": refs["trrust_real"],
                                                    "statistic": "between_share",
                                                    "metric": "euclidean",
                                                    "null": "gene_shuffle",
                                                    "n_permutations": m}),
        ("regulatory_motifs", "ffl, degree", {"pairs": refs["trrust_real"],
                                              "n_permutations": m}),
        ("regulatory_motifs", "ffl vs edges", {"pairs": refs["trrust_real"],
                                               "statistic": "motif_vs_edges",
                                               "n_permutations": m}),
        ("regulatory_motifs", "ffl, motif_pres", {"pairs": refs["trrust_real"],
                                                  "null": "motif_preserving",
                                                  "n_permutations": m}),
        ("regulatory_motifs", "cascade, SV1-10", {"pairs": refs["trrust_real"],
                                                  "motif": "cascade",
                                                  "null": "motif_preserving",
                                                  "subspace": list(range(1, 11)),
                                                  "n_permutations": m}),
        ("regulatory_motifs", "fan_out, degree", {"pairs": refs["trrust_real"],
                                                  "motif": "fan_out", "n_permutations": m}),
        ("regulatory_motifs", "fan_out, SV1-10", {"pairs": refs["trrust_real"],
                                                  "motif": "fan_out",
                                                  "subspace": list(range(1, 11)),
                                                  "n_permutations": m}),
        ("regulatory_motifs", "fan_in, motif_pres", {"pairs": refs["trrust_real"],
                                                     "motif": "fan_in",
                                                     "null": "motif_preserving",
                                                     "n_permutations": m}),
        ("regulatory_motifs", "fan_out SV1-10, both", {"pairs": refs["trrust_real"],
                                                       "motif": "fan_out",
                                                       "null": "degree_and_motif",
                                                       "subspace": list(range(1, 11)),
                                                       "n_permutations": m}),
        ("gene_score_association", "norm ~ score", {"quantity": "norm",
                                                    "score": refs["scores"],
                                                    "n_permutations": m}),
        ("gene_score_association", "knn_degree", {"quantity": "knn_degree",
                                                  "score": refs["scores"],
                                                  "n_permutations": m}),
        ("gene_score_association", "norm_trend", {"quantity": "norm_trend",
                                                  "score": refs["scores"],
                                                  "n_permutations": m}),
        ("subspace_alignment", "k=10, shuffle", {"k": 10, "reference": "first",
                                                 "null": "gene_shuffle", "n_permutations": m}),
        ("subspace_alignment", "k=10, shuffle, draws", {
            "k": 10, "reference": "first", "null": "gene_shuffle", "n_permutations": m,
            "null_method": "draws"}),
        ("layer_similarity", "99% variance", {"reference_layer": "first",
                                              "variance_kept": 0.99}),
        ("persistent_homology", "H1, 100 genes", {"gene_set": refs["ribosome"]}),
        ("persistent_homology", "H0, 100 genes", {"gene_set": refs["ribosome"], "dims": [0],
                                                  "n_permutations": m}),
        ("cross_model_alignment", "cca", {"other_cache": refs["other"], "other_layer": 0,
                                          "n_permutations": m}),
        ("cross_model_alignment", "cca, draws", {"other_cache": refs["other"], "other_layer": 0,
                                                 "n_permutations": m, "null_method": "draws"}),
        ("null_robustness", "SV2-4, 2 nulls", {"pairs": refs["string"], "subspace": sub,
                                               "n_permutations": m}),
        ("null_robustness", "SV2-4, draws", {"pairs": refs["string"], "subspace": sub,
                                             "n_permutations": m, "null_method": "draws"}),
        # whole-stack: one call reads all 12 layers (its s/layer is seconds per hypothesis)
        ("layer_profile", "peak_order x50, 12 layers", {
            "profile": {"probe": "set_cohesion", "params": {"gene_set": refs["early"]}},
            "versus": {"probe": "set_cohesion", "params": {"gene_set": refs["late"]}},
            "replicates": 50}),
    ]


def time_layers(info, ctx, params, layers) -> tuple[list[float], list[float], list]:
    """(wall s, CPU s, result) of the probe on each layer, one after another."""
    times, cpu, results = [], [], []
    for layer in layers:
        t, c = time.perf_counter(), time.process_time()
        results.append(info.fn(ctx, params, layer))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times, cpu, results


def main() -> int:
    global N_GENES, DIM, N_LAYERS, ATLAS_FEATURES, ATLAS_CELLS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=3, help="layers timed per probe")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--only", nargs="*", help="probe names to run")
    ap.add_argument("--genes", type=int, default=N_GENES, help="genes in the synthetic cache")
    ap.add_argument("--dim", type=int, default=DIM, help="width of the synthetic cache")
    ap.add_argument("--cache-layers", type=int, default=N_LAYERS,
                    help="layers in the synthetic cache (each gets its SVD first)")
    ap.add_argument("--sequential", type=int, default=None, metavar="H",
                    help="also time the probes whose null stops sequentially (Besag-Clifford, "
                         "stop at H exceedances), on the same layers, next to the fixed run")
    ap.add_argument("--atlas-features", type=int, default=ATLAS_FEATURES,
                    help="SAE features in each layer's synthetic atlas")
    ap.add_argument("--atlas-cells", type=int, default=ATLAS_CELLS,
                    help="cells in the atlases (100 sampled gene positions each)")
    args = ap.parse_args()
    if args.atlas_features < 2 * ATLAS_K or args.atlas_cells < 20:
        ap.error(f"--atlas-features must be at least {2 * ATLAS_K} (twice the atlases' k) and "
                 "--atlas-cells at least 20 (a control group and knockdowns)")
    N_GENES, DIM, N_LAYERS = args.genes, args.dim, args.cache_layers
    ATLAS_FEATURES, ATLAS_CELLS = args.atlas_features, args.atlas_cells

    from geoscreen.probes.context import ProbeContext
    from geoscreen.probes.registry import get_probe

    with tempfile.TemporaryDirectory(prefix="geoscreen-bench-") as tmp:
        root = Path(tmp)
        os.environ["GEOSCREEN_WORK_DIR"] = str(root / "work")
        t = time.perf_counter()
        cache, _, refs = build(root, np.random.default_rng(0))
        print(f"built {N_LAYERS} x {N_GENES} x {DIM} cache in {time.perf_counter() - t:.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        layers = cache.layers[-args.layers:]
        # null_seed: the nulls a campaign shares per layer are stored, as in a campaign
        ctx = ProbeContext(cache=cache, seed=1, work_dir=root / "work", null_seed=1)
        svd_s = []
        for layer in cache.layers:
            t = time.perf_counter()
            ctx.svd(layer)
            svd_s.append(time.perf_counter() - t)
        print(f"SVD per layer (once per cache, stored and shared): median "
              f"{statistics.median(svd_s):.2f} s")
        if not args.only or set(args.only) & set(ATLAS_PROBES):
            t = time.perf_counter()  # the timed layers and the one before (highways)
            refs.update(atlas_world.write_atlases(root, list(cache.genes.symbols),
                                      cache.layers[-(args.layers + 1):], DIM,
                                      refs["family_sets"], refs["regulators"],
                                      np.random.default_rng(3), ATLAS_FEATURES, ATLAS_CELLS))
            print(f"wrote {min(args.layers + 1, len(cache.layers))} SAE atlases "
                  f"({ATLAS_FEATURES:,} features, {100 * ATLAS_CELLS:,} positions each) in "
                  f"{time.perf_counter() - t:.1f} s")
        print(f"\n{'probe':22s} {'variant':18s} {'draws':>6s} {'median s/layer':>15s} "
              f"{'min':>7s} {'max':>7s} {'cpu s/layer':>12s}")
        rotated = refs["rotated"]
        rctx = ProbeContext(cache=rotated, seed=1, work_dir=root / "work", null_seed=1)
        mctx, mlayers = ctx, layers
        tally: list[list] = []  # [probe, variant, fixed median, sequential median or None]
        for name, variant, prm in specs(refs, args.permutations):
            if args.only and name not in args.only:
                continue
            # a row on the rotated layers runs in their own context, SVDs made first as above
            ctx, layers = (mctx, mlayers) if "_cache" not in prm else \
                (rctx, rotated.layers[-args.layers:])
            prm = {k: v for k, v in prm.items() if k != "_cache"}
            if ctx is rctx:
                for layer in layers:
                    ctx.svd(layer)
            if name == "layer_profile" and N_LAYERS < 3:  # it reads the whole stack
                print(f"{name:22s} skipped: a profile needs 3 or more layers (--cache-layers)")
                continue
            info = get_probe(name)
            params = info.validate_params(prm)
            ctx.memo.clear()  # each variant starts as a campaign's hypothesis does (one-offs
            # such as a hypothesis's rewired networks land on its first layer: the max column)
            # and as the first k-NN hypothesis on these layers (a later one reads the stored
            # k-NN lists: the `stored kNN` row)
            shutil.rmtree(root / "work" / "knn", ignore_errors=True)
            ctx.knn_sources.clear()
            ctx.alternative = stopping_alternative(info.alternatives) if args.sequential \
                else info.alternatives[0]
            times, cpu, results = time_layers(info, ctx, params, layers)
            drawn = [res.extra.get("null_draws_used") for res in results]
            descriptive = getattr(params, "null", "") == "none" or \
                not hasattr(params, "n_permutations")
            draws = getattr(params, "n_bootstrap", 0) if descriptive else params.n_permutations
            if not descriptive and None not in drawn:  # what the null really drew (moments: 0)
                draws = int(statistics.median(drawn))
            print(f"{name:22s} {variant:18s} {draws:6d} {statistics.median(times):15.2f} "
                  f"{min(times):7.2f} {max(times):7.2f} {statistics.median(cpu):12.2f}",
                  flush=True)
            fixed, fixed_cpu = statistics.median(times), statistics.median(cpu)
            tally.append([name, variant, fixed, None])
            if "shared_null" in results[0].extra:  # a second hypothesis on the same layers
                ctx.memo.clear()  # reads the stored draws from disk and checks them
                times, cpu, again = time_layers(info, ctx, params, layers)
                reused = int(statistics.median(r.extra["shared_null"]["reused"] for r in again))
                med, med_cpu = statistics.median(times), statistics.median(cpu)
                print(f"{name:22s} {'  stored null':18s} {reused:6d} {med:15.2f} "
                      f"{min(times):7.2f} {max(times):7.2f} {med_cpu:12.2f}  a second "
                      f"hypothesis on these layers: {fixed / med:.0f}x the first", flush=True)
            if ctx.knn_sources:  # a second k-NN hypothesis on these layers reads the lists
                ctx.memo.clear()
                ctx.knn_sources.clear()
                times, cpu, _ = time_layers(info, ctx, params, layers)
                # every list read, none computed: each layer's own, and a compared layer's
                # (`versus_layer`) once per hypothesis where the layers share it
                assert set(ctx.knn_sources) == {"store"}, ctx.knn_sources
                assert ctx.knn_sources["store"] >= len(layers), ctx.knn_sources
                med, med_cpu = statistics.median(times), statistics.median(cpu)
                print(f"{name:22s} {'  stored kNN':18s} {draws:6d} {med:15.2f} "
                      f"{min(times):7.2f} {max(times):7.2f} {med_cpu:12.2f}  a second k-NN "
                      f"hypothesis on these layers: {fixed / med:.1f}x the first", flush=True)
            if args.sequential:
                ctx.sequential_h = args.sequential
                ctx.null_seed = 2  # other shared draws than the fixed run stored: drawn anew
                ctx.memo.clear()
                shutil.rmtree(root / "work" / "knn", ignore_errors=True)  # as the fixed run
                times, cpu, results = time_layers(info, ctx, params, layers)
                used = [res.extra.get("null_draws_used") for res in results]
                rule = [res.extra.get("sequential_h") for res in results]
                ctx.sequential_h, ctx.null_seed = None, 1
                if used[0] is not None and rule[0] is not None:  # this null stops sequentially
                    med, med_cpu = statistics.median(times), statistics.median(cpu)
                    tally[-1][3] = med
                    print(f"{name:22s} {'  sequential h=' + str(args.sequential):18s} "
                          f"{int(statistics.median(used)):6d} {med:15.2f} {min(times):7.2f} "
                          f"{max(times):7.2f} {med_cpu:12.2f}  {fixed / med:.1f}x the fixed "
                          f"run ({fixed_cpu / max(med_cpu, 1e-9):.1f}x in CPU time)", flush=True)
        print(summary(tally, args.sequential))
    return 0


def summary(tally: list[list], h: int | None) -> str:
    """The closing lines: how many probe variants run at or under `TARGET_S` per layer (median)
    with every draw made and, after a `--sequential H` run, with the campaign's default
    stopping (a variant's sequential row where its null stops, else its fixed row), and which
    are over it."""
    if not tally:
        return "\nsummary: no probe variant ran"
    fixed = sum(t[2] <= TARGET_S for t in tally)
    line = (f"\nsummary: {len(tally)} probe variants; {fixed} at or under {TARGET_S} s per layer "
            "with every draw made")
    cost = [t[3] if h is not None and t[3] is not None else t[2] for t in tally]
    if h is not None:
        line += f"; {sum(c <= TARGET_S for c in cost)} with the campaign's stopping rule (h={h})"
    over = [f"{t[0]} {t[1]} {c:.2f}" for t, c in zip(tally, cost) if c > TARGET_S]
    return line + ("\nover it: " + "; ".join(over) if over else "")


if __name__ == "__main__":
    sys.exit(main())
