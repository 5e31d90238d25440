"""The null models geoscreen offers, what each one tests, and how each held on real geometry.

A p-value is only as meaningful as its null.  Every null name a probe may record in
`LayerResult.null` is described here once: the question it answers, whether it is a *set-level*
null (is this gene set / network special among genes like it?) or a *geometry-level* null (is the
layer more structured than a simpler reference geometry?), and its calibration on real,
anisotropic, hub-heavy layer geometry (all-MiniLM-L6-v2 over gene descriptions; see docs/probes.md's
calibration tables and ``tests/test_calibration_realgeom.py``).

A geometry-level null is never a default for a claim about a particular gene set: on real
embeddings, whose dimensions are correlated, *any* gene set looks structured against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class NullModel:
    name: str
    label: str  # short phrase for statements and reports
    level: Literal["set", "geometry", "pairs", "labels", "none"]
    meaning: str
    real_geometry: Literal["calibrated", "fails for gene-set claims", "conditional"] = "calibrated"
    note: str = ""


NULLS: dict[str, NullModel] = {m.name: m for m in (
    NullModel("matched", "covariate-matched random genes", "set",
              "random genes drawn within strata of the matching variables (norm, centrality, "
              "annotation count, network degree, expression): is this set special among genes "
              "like it?", "calibrated",
              "exact when membership depends on the embedding only through the matched "
              "variables; balance is recorded in extra.matching"),
    NullModel("gene_shuffle", "uniformly random genes", "set",
              "genes relabelled uniformly at random (size-matched random sets, random pairs "
              "with the same overlap structure)", "conditional",
              "exact for sets drawn uniformly from the cache; on real geometry, curated sets of "
              "well-studied or hub genes are not exchangeable with random genes and look "
              "special against it (use matched / degree_preserving)"),
    NullModel("degree_preserving", "degree-preserving rewiring", "pairs",
              "pair endpoints rewired across pairs so every gene keeps its degree: are these "
              "partners closer than the same hubs paired at random?  (regulatory_motifs: the "
              "directed network rewired by curveball trades keeping every in- and "
              "out-degree, its motifs recounted; exact by Besag-Clifford's parallel scheme "
              "when the network is uniform given its degrees)", "calibrated"),
    NullModel("motif_preserving", "network relabelled within degree/centrality strata", "set",
              "the directed network's genes relabelled within strata of in-degree, out-degree "
              "and the match variables (centrality): every motif instance keeps its structure, "
              "on genes as connected and as central as the real ones", "conditional",
              "exact when the network's labels are exchangeable within strata (hubs placed "
              "on random hub genes: calibrated on Gaussian, hub-heavy and MiniLM layers, "
              "tests/test_motifs.py); when hubness tracks centrality continuously, motif "
              "genes are more central than their strata and it is anti-conservative (use "
              "degree_preserving)"),
    NullModel("degree_and_motif", "degree-preserving rewiring and motif-preserving relabelling",
              "pairs",
              "regulatory_motifs tested against both degree_preserving and motif_preserving, "
              "the larger p-value (an intersection-union test): closer than in rewired "
              "networks with the network's degrees and than the same motifs on matched genes",
              "conditional",
              "valid wherever either null is exact, and never rejects where one of them does "
              "not; for the star motifs (fan_out, fan_in) in band on the placed loop-rich "
              "networks (where degree_preserving alone fails) and on beta-model hub-heavy "
              "networks (where motif_preserving alone leans small), on synthetic and MiniLM "
              "layers, but not where both fail: fan-ins of beta-model networks with triadic "
              "closure FPR 0.17, as degree_preserving alone (tests/test_motifs.py)"),
    NullModel("feature_shuffle", "independent dimensions (feature shuffle)", "geometry",
              "each dimension permuted independently across genes: more structure than "
              "independent dimensions with these marginals", "fails for gene-set claims",
              "destroys the correlation between dimensions that every real embedding has, so "
              "random gene sets reject (H0 FPR 1.00, cohesion 0.55 on all-MiniLM-L6-v2); a "
              "test of the layer's geometry, not of a gene set"),
    NullModel("pc_shuffle", "independent principal components (PC shuffle)", "geometry",
              "each coordinate on the layer's principal axes permuted independently across "
              "genes (within the set for persistent_homology): keeps the covariance, removes "
              "dependence beyond it",
              "fails for gene-set claims",
              "a rotation-aware alternative to feature_shuffle that keeps the correlation "
              "between dimensions; real embeddings are far from Gaussian, so random gene sets "
              "still reject (H0 FPR 1.00, cohesion 0.17 on all-MiniLM-L6-v2)"),
    NullModel("label_shuffle", "shuffled labels among the tested units", "labels",
              "labels permuted among the tested genes or pairs (who is positive, which bin)",
              "calibrated"),
    NullModel("target_shuffle", "targets relabelled keeping every degree", "pairs",
              "candidate targets relabelled, keeping each TF's out-degree and each target's "
              "in-degree", "calibrated"),
    NullModel("score_shuffle", "per-gene scores permuted across genes", "labels",
              "a per-gene score (after its fit on the covariates, if any) permuted across "
              "genes: is the layer's quantity associated with the score beyond the "
              "covariates?", "conditional",
              "exact without covariates for the association itself; a score that tracks how "
              "well studied a gene is looks associated with norm or centrality on real "
              "geometry unless annotation is a covariate (tests/test_calibration_realgeom.py)"),
    NullModel("frequency_and_occurrence", "frequency-matched lists and the atlas regrouped",
              "set",
              "feature_annotation tested against both frequency_matched and "
              "occurrence_preserving, the larger p-value (an intersection-union test): are the "
              "features annotated more often than gene lists of their own frequencies and than "
              "their own genes regrouped at random?", "conditional",
              "valid wherever either null is; each fails where the other holds (a bias steep "
              "within a frequency bin; features unlike each other): FPR at 0.05 0.04 and 0.05 "
              "in those worlds, 0.22 for the failing null (tests/test_feature_annotation.py); "
              "where both fail it can fail too, as degree_and_occurrence does"),
    NullModel("degree_and_occurrence", "degree-matched lists and the atlas regrouped", "set",
              "feature_network_coherence tested against both degree_matched and "
              "occurrence_preserving, the larger p-value, atlas-wide and per feature",
              "conditional",
              "valid wherever either null is: FPR 0.06 at 0.05 with lists in proportion to "
              "expected degree (degree_matched 0.49; tests/test_feature_network.py); where "
              "both fail (half the features steeply hub-biased, half uniform) it rejected 0.25 "
              "in an ad hoc run of that test's world (docs/sae.md)"),
    NullModel("occurrence_preserving", "the atlas's top genes regrouped at random", "set",
              "pseudo-atlases: the SAE atlas rewired by global curveball trades so that every "
              "feature keeps its list size and every gene its number of top lists (Besag-"
              "Clifford parallel chains), scored by the same annotator: do features group "
              "genes of one set, or linked genes, more than the same genes regrouped at "
              "random?", "conditional",
              "exact when the atlas is uniform given its margins (features exchangeable): "
              "holds a steep per-gene bias that frequency and degree matching do not (FPR 0.04 "
              "and 0.06 at 0.05), fails when features differ in which genes they favour (half "
              "steeply biased, half uniform: 0.22); use the default intersection-union"),
    NullModel("frequency_matched", "frequency-matched random gene lists", "set",
              "pseudo-atlases: each SAE feature's top genes replaced by random genes of the "
              "same quantile bin of positions per gene, scored by the same annotator: are the "
              "atlas's features annotated more often than gene lists like theirs?",
              "conditional",
              "calibrated on null atlases with a mild frequency bias (tests/"
              "test_feature_annotation.py: FPR 0.010-0.042 at 0.05); a bias steep within a bin "
              "survives it (top lists in proportion to positions: FPR 0.22-0.27 at 0.05); the "
              "default since feature_annotation 1.1 adds occurrence_preserving"),
    NullModel("degree_matched", "degree-matched random gene lists", "set",
              "pseudo-atlases: each top gene replaced by a random gene of the same quantile bin "
              "of network degree (hubs by hubs): do features' top genes share more edges than "
              "gene lists like theirs?", "conditional",
              "FPR 0.027 (uniform lists) and 0.040 (lists favouring hubs by the square root of "
              "expected degree) at 0.05 on null atlases, but 0.45-0.49 when lists pick genes in "
              "proportion to expected degree (tests/test_feature_network.py); the default since "
              "feature_network_coherence 1.1 adds occurrence_preserving"),
    NullModel("random_genes", "uniformly random gene lists", "set",
              "pseudo-atlases of uniformly random gene lists under the same annotator",
              "conditional",
              "exact when top lists are uniform draws; when top lists favour expressed genes or "
              "hubs (as real ones do) it understates the chance rate: FPR 0.32 and 1.00 at 0.05 "
              "on biased null atlases (tests/test_feature_annotation.py, "
              "tests/test_feature_network.py)"),
    NullModel("random_directions", "uniformly random directions", "geometry",
              "decoder directions compared with isotropic random unit vectors, whose share in "
              "an m-dimensional subspace is Beta(m/2, (d-m)/2) exactly", "conditional",
              "exact for its question; on anisotropic layers any data-derived direction leans "
              "into the top singular subspace, so 'greater' says the features follow the "
              "layer's variance, and 'less' (features avoid the SVD view) is the informative "
              "side"),
    NullModel("position_shuffle", "features firing independently", "pairs",
              "each SAE feature's firing positions shuffled independently of the others' "
              "(each keeps its firing count), among positions with the same number of active "
              "features: the co-firing count of a pair is then hypergeometric, tested per pair "
              "(one-sided Fisher), BH over pairs for edges and Simes over pairs for the "
              "hypothesis", "calibrated",
              "conservative on null atlases (Simes FPR 0.013 at 0.05 with independent firing, "
              "0.007 TopK-shaped, 0.053 with dense firing; tests/test_coactivation.py); over "
              "positions of unequal activity every pair co-fires above chance (FPR 1.0), hence "
              "activity: modal by default; features that prefer the same genes or cells "
              "co-fire for that reason, which this null counts as co-activation"),
    NullModel("knockdown_pairing", "target sets re-assigned to knockdowns", "labels",
              "which TF's target features belong to which knockdown permuted: does a "
              "knockdown hit its own TF's target features more than other knockdowns hit "
              "them? (overlaps standardised within firing-frequency strata)", "calibrated",
              "exact when knockdowns are exchangeable under the null; FPR 0.027 and 0.020 at "
              "0.05 on null screens with a general response, and with knockdown strength "
              "coupled to the targets' hub-richness, where the responders-vs-targets Fisher "
              "test gives 0.87 and 1.0 (tests/test_perturbation.py)"),
    NullModel("mann_whitney", "Mann-Whitney rank test", "labels",
              "exact rank-sum test of the two groups (exchangeable units)", "calibrated"),
    NullModel("coexpression_residualization", "co-expression residuals", "set",
              "pair values regressed on co-expression first: closer than random pairs at the "
              "same co-expression", "calibrated"),
    NullModel("coexpression", "co-expression residuals", "set",
              "gene shuffle on co-expression residuals", "calibrated"),
    NullModel("half_sampling", "gene half-samples (resampling standard error)", "set",
              "the named genes resampled: each replicate keeps every gene with probability "
              "f, the same genes for every profile compared; z = estimate / standard error "
              "(delete-d jackknife scaling), normal tail", "conditional",
              "large-sample: calibrated on Gaussian and hub-heavy layers at 40+ genes per set "
              "or 150+ pairs (tests/test_layer_profile.py); with few genes the standard error "
              "is noisy and the normal tail approximate.  It tests the named genes' profile as "
              "it is: on real layers a hub set's excess over its matched null still varies "
              "with the layer, so its correlation with a whole-layer profile (a spectrum) is "
              "real for hub genes and not special to the set (real geometry: FPR 0.067 for "
              "random sets, 0.317 for hub sets, Spearman, tests/test_calibration_realgeom.py); "
              "against a whole-layer profile Pearson tests the gene profile's projection on "
              "it (valid; conservative for structureless sets), Spearman FPR 0.08-0.10 "
              "(tests/test_layer_profile_curves.py)"),
    NullModel("none", "descriptive (no null)", "none",
              "a measurement; across_layers: trend then permutes the order of the layers",
              "conditional",
              "the layer-order permutation assumes exchangeable layers; neighbouring layers of "
              "a real model are strongly correlated, so random gene sets show 'trends' about a "
              "third of the time: a description of whole layers, not a test of a gene set"),
)}


def describe(null: str) -> NullModel | None:
    """The model of a recorded null label; compound labels ('a+b') give the first part."""
    return NULLS.get(null) or NULLS.get(null.split("+")[0])


def label(null: str) -> str:
    """A short phrase for a recorded null label, e.g. 'covariate-matched random genes'."""
    parts = [NULLS[x].label if x in NULLS else x for x in null.split("+") if x]
    return " + ".join(parts) if parts else "unspecified"


SET_PARAMS = ("gene_set", "genes", "positive", "pairs")


def is_set_claim(params: dict[str, Any] | None) -> bool:
    """Whether a spec's claim is about particular genes (a gene set, genes, pairs) rather than
    about a whole layer (e.g. `spectrum` with no gene_set)."""
    return any((params or {}).get(k) for k in SET_PARAMS)


def warning(null: str, params: dict[str, Any] | None = None) -> str | None:
    """A one-line caveat for a null that failed real-geometry calibration, else None.

    With the spec's `params`, a geometry-level null used for a whole-layer claim (no gene set),
    where it is the right null, gets no caveat.
    """
    if params is not None and not is_set_claim(params):
        return None
    models = [NULLS[x] for x in null.split("+") if x in NULLS]
    for m in models:
        if m.real_geometry == "fails for gene-set claims":
            return f"{m.name}: {m.real_geometry} ({m.note})"
    return None


def spec_null(probe: str, params: dict[str, Any]) -> str:
    """The null a spec will use: its `null` / `nulls` parameter, else the probe's default."""
    from geoscreen.probes.registry import get_probe

    info = get_probe(probe)
    fields = info.params.model_fields
    if "nulls" in params or "nulls" in fields:
        vals = params.get("nulls", fields["nulls"].default if "nulls" in fields else None)
        if vals:
            return "+".join(vals)
    if "null" in params:
        return str(params["null"])
    if "null" in fields:
        return str(fields["null"].default)
    if "test" in params or "test" in fields:
        return str(params.get("test", fields["test"].default if "test" in fields else ""))
    return info.nulls[0] if info.nulls else "none"
