"""The probe catalogue: every probe registered with a family and working examples, the hand-written
hypothesis catalogue valid, results reproducible from the seed, and third-party probes loadable
through the `geoscreen.probes` entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, gaussian_layers, genes_ref, pairs_ref, run

from geoscreen.hypotheses.loader import load_specs
from geoscreen.hypotheses.spec import HypothesisSpec
from geoscreen.probes.registry import FAMILIES, list_probes

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "hypotheses" / "catalogue"
EXPECTED = {
    "spectrum", "intrinsic_dimension", "axis_separation", "pole_enrichment", "pair_proximity",
    "co_pole",
    "graded_proximity", "role_separation", "edge_specificity", "sign_contrast",
    "anchor_convergence", "centroid_convergence", "gene_drift", "set_cohesion",
    "layer_similarity", "subspace_alignment", "gene_score_association", "knn_homophily",
    "knn_graph", "knn_communities", "edge_direction", "regulatory_motifs",
    "persistent_homology", "cross_model_alignment", "null_robustness", "feature_annotation",
    "feature_network_coherence", "superposition", "coactivation_modules",
    "cross_layer_highways", "perturbation_specificity", "layer_profile", "set_centroids",
    "community_concentration", "role_projection", "annotation_similarity", "pair_retrieval",
    "pair_regression", "layer_transport", "centroid_drift", "axis_pole_overlap",
    "network_spectrum_alignment", "role_margins",
}


def test_every_probe_is_registered_and_every_family_covered():
    probes = {p.name: p for p in list_probes()}
    assert EXPECTED <= set(probes)
    assert {p.family for p in probes.values() if p.name in EXPECTED} == set(FAMILIES)
    for name in EXPECTED:
        info = probes[name]
        assert info.statistic and info.effect and info.nulls and info.description
        assert info.alternatives[0] in ("greater", "less", "two-sided")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_are_valid_specs(name):
    info = next(p for p in list_probes() if p.name == name)
    assert info.examples, f"{name} has no examples for the brainstormer"
    for ex in info.examples:
        spec = HypothesisSpec.model_validate({**ex, "probe": name})
        spec.resolved()


def test_catalogue_loads_and_covers_every_probe():
    specs = load_specs(CATALOGUE)
    assert {s.spec.probe for s in specs} == EXPECTED
    assert len({s.hash for s in specs}) == len(specs), "two catalogue specs are the same test"
    described = [s for s in specs if s.spec.across_layers == "trend"]
    assert described and all(s.spec.statement for s in specs)
    for s in specs:  # descriptive probes need a trend across layers for a hypothesis p-value
        params = s.params
        descriptive = s.spec.probe in ("spectrum", "anchor_convergence", "centroid_convergence",
                                       "layer_similarity", "subspace_alignment", "knn_graph",
                                       "intrinsic_dimension") and params.get("null") == "none"
        if descriptive:
            assert s.spec.across_layers in ("trend", "changepoint", "slope_change"), \
                s.spec.statement


def test_same_seed_is_bit_identical_and_seed_matters(tmp_path):
    cache = cache_from_layers(tmp_path / "c", gaussian_layers(1, 200, 8, 0))
    prm = {"pairs": pairs_ref(range(0, 40), range(40, 80)), "n_permutations": 199,
           "null_method": "draws"}
    a = run("pair_proximity", prm, context(cache, tmp_path, seed=7), "L0")
    b = run("pair_proximity", prm, context(cache, tmp_path, seed=7), "L0")
    c = run("pair_proximity", prm, context(cache, tmp_path, seed=8), "L0")
    assert a.model_dump(exclude={"runtime_s"}) == b.model_dump(exclude={"runtime_s"})
    assert a.statistic == c.statistic and a.extra["null_mean"] != c.extra["null_mean"]
    assert a.seed != c.seed
    # the moment null draws nothing on a null layer: its p-value does not depend on the seed
    m7 = run("pair_proximity", {**prm, "null_method": "moments"}, context(cache, tmp_path,
                                                                         seed=7), "L0")
    m8 = run("pair_proximity", {**prm, "null_method": "moments"}, context(cache, tmp_path,
                                                                         seed=8), "L0")
    assert m7.extra["p_method"] == "moments" and m7.p_value == m8.p_value


def test_low_rank_gene_shuffle_equals_gather(tmp_path):
    from geoscreen.probes.stats import PairScorer, pair_null

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((150, 3))
    i, j = rng.integers(0, 150, 400), rng.integers(0, 150, 400)
    i, j = i[i != j], j[i != j]
    fast = PairScorer(Z, "cosine")
    assert fast.factor is not None
    slow = PairScorer(Z, "cosine")
    slow.factor = None
    o1, n1 = pair_null(fast, i, j, "gene_shuffle", 200, np.random.default_rng(1))
    o2, n2 = pair_null(slow, i, j, "gene_shuffle", 200, np.random.default_rng(1))
    assert o1 == pytest.approx(o2, abs=1e-6) and np.allclose(n1, n2, atol=1e-6)


def test_bad_params_are_refused_with_the_field_named():
    from geoscreen.errors import GeoscreenError
    from geoscreen.probes.registry import get_probe

    with pytest.raises(GeoscreenError, match="subspace"):
        get_probe("role_separation").validate_params({"positive": "genes:A", "subspace": "full"})
    with pytest.raises(GeoscreenError, match="feature_shuffle"):
        get_probe("set_cohesion").validate_params(
            {"gene_set": "genes:A", "statistic": "retrieval_auroc", "null": "feature_shuffle"})
    with pytest.raises(GeoscreenError, match="control"):
        get_probe("null_robustness").validate_params(
            {"pairs": "pairs:A-B", "nulls": ["gene_shuffle", "coexpression"]})


def test_small_gene_sets_fail_with_a_clear_message(tmp_path):
    from geoscreen.errors import GeoscreenError

    cache = cache_from_layers(tmp_path / "c", gaussian_layers(1, 100, 8, 0))
    ctx = context(cache, tmp_path)
    with pytest.raises(GeoscreenError, match="at least"):
        run("set_cohesion", {"gene_set": genes_ref([1, 2])}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="no previous layer"):
        run("layer_similarity", {}, ctx, "L0")


def test_third_party_probe_registers_through_entry_point(tmp_path):
    """A distribution exposing `geoscreen.probes` entry points is loaded on first registry use."""
    (tmp_path / "gs_demo_plugin.py").write_text(textwrap.dedent('''
        from geoscreen.probes.registry import ProbeParams, probe
        from geoscreen.result import LayerResult

        @probe("demo_plugin_probe", family="null_sensitivity", params=ProbeParams,
               nulls=("none",), version="0.1", statistic="zero", effect="zero")
        def demo(ctx, p, layer):
            """A probe shipped by another package."""
            return LayerResult(layer=layer, layer_index=0, statistic_name="zero", statistic=0.0,
                               effect_name="zero", effect_size=0.0, p_value=1.0)
    '''))
    dist = tmp_path / "gs_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gs-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[geoscreen.probes]\ndemo = gs_demo_plugin\n")
    code = ("from geoscreen.probes.registry import get_probe; "
            "p = get_probe('demo_plugin_probe'); print(p.family, p.module)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["null_sensitivity", "gs_demo_plugin"]


def test_resolved_params_validate_again():
    """A worker validates a spec's stored params, every default filled in, a second time:
    each example's and each catalogue spec's resolved params must pass unchanged (a validator
    that asks which fields were written cannot tell them from the filled-in defaults)."""
    from geoscreen.probes.registry import get_probe

    for s in load_specs(CATALOGUE):
        info = get_probe(s.spec.probe)
        again = info.validate_params(s.params).model_dump()
        assert again == s.params, s.spec.statement
    for info in list_probes():
        for ex in info.examples:
            once = info.validate_params(ex["params"]).model_dump()
            assert info.validate_params(once).model_dump() == once, (info.name, ex["statement"])
