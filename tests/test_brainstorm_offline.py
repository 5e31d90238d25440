"""The offline brainstormer's proposals: statements that describe their own spec and name its
null, and set-level nulls for gene-set and pair-set claims.

Expectations go through `geoscreen.probes.nulls.spec_null` and the brainstormer's own
`preferred_null`, so they hold whatever null each probe uses by default.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from geoscreen.agent.brainstorm import (
    OfflineBrainstormer,
    exploration,
    preferred_null,
    refinements,
    set_level_null,
)
from geoscreen.agent.state import CampaignState, HypView
from geoscreen.agent.statements import spec_statement, with_null
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.probes import nulls

N_LAYERS = 12
GENE_SET_PROBES = ("set_cohesion", "persistent_homology")


def view(raw: dict[str, Any], hid: int = 1, *, significant: bool = True) -> HypView:
    """A ledger row for `raw` as the campaign stores it (resolved params, defaults filled)."""
    r = parse_spec({"source": "offline", **raw}, "test")
    return HypView(id=hid, iteration=1, hash=r.hash, probe=raw["probe"], family=r.family,
                   statement=raw["statement"], spec=r.to_record(), source="offline",
                   status="done", p_value=1e-5, q_bh=1e-4, significant=significant,
                   effect_name="z", effect_size=4.0, parents=(), error="")


def by_why(variants: list[tuple[dict[str, Any], str]], text: str) -> dict[str, Any]:
    found = [raw for raw, why in variants if text in why]
    assert found, f"no refinement {text!r} among {[w for _, w in variants]}"
    return found[0]


def nulls_in(statement: str) -> list[str]:
    return re.findall(r"\(null: ", statement)


AXIS = {"statement": "Singular axis 1 separates extracellular-space genes from cytosolic genes",
        "probe": "axis_separation",
        "params": {"axis": 1, "positive": "go:GO:0005615", "negative": "go:GO:0005829"},
        "alternative": "two-sided"}


def test_refining_axis_1_to_axis_4_describes_axis_4():
    # a discovery on axis 3 whose stored statement still reads like its root on axis 1 (what the
    # old brainstormer wrote: the root's sentence with the latest note appended)
    h = view({**AXIS, "statement": AXIS["statement"] + " [axis 3]",
              "params": {**AXIS["params"], "axis": 3}}, hid=5)
    variants = refinements(h, N_LAYERS)
    up = by_why(variants, "neighbouring axis 4")
    assert up["params"]["axis"] == 4
    assert "axis 4" in up["statement"]
    assert "axis 1" not in up["statement"] and "axis 3" not in up["statement"]
    assert "[" not in up["statement"] and "#5" in up["statement"]
    early = by_why(variants, "early layers")
    assert early["layers"] == list(range(N_LAYERS // 2))
    assert "axis 3" in early["statement"] and "layers 0-5" in early["statement"]
    assert "axis 1" not in early["statement"] and "[" not in early["statement"]


def test_subspace_variants_describe_their_own_window():
    ribo = {"statement": "Ribosomal genes cluster in SV2-SV4", "probe": "set_cohesion",
            "params": {"gene_set": "go:GO:0005840", "subspace": [2, 3, 4]},
            "alternative": "greater"}
    swept = {tuple(v["params"]["subspace"]): v for v in exploration(ribo)}
    far = swept[(8, 9, 10)]
    assert "SV8-SV10" in far["statement"] and "SV2-SV4" not in far["statement"]
    assert "[" not in far["statement"]
    # a discovery in SV7-SV9 refined one axis up lands on SV8-SV10, and says so
    h = view({**ribo, "statement": "Ribosomal genes cluster in SV2-SV4 [subspace [7, 8, 9]]",
              "params": {**ribo["params"], "subspace": [7, 8, 9]}}, hid=9)
    up = next(raw for raw, _ in refinements(h, N_LAYERS)
              if raw["params"].get("subspace") == [8, 9, 10])
    assert "SV8-SV10" in up["statement"]
    assert "SV2-SV4" not in up["statement"] and "SV7-SV9" not in up["statement"]
    assert "[" not in up["statement"]


def test_repeated_refinement_keeps_no_stale_notes():
    root = view(AXIS, hid=1)
    child_raw = by_why(refinements(root, N_LAYERS), "neighbouring axis 2")
    child = view(child_raw, hid=2)
    grandchild = by_why(refinements(child, N_LAYERS), "early layers")
    s = grandchild["statement"]
    assert "axis 2" in s and "layers 0-5" in s and "#2" in s
    assert "axis 1" not in s and "#1" not in s and "[" not in s
    assert len(nulls_in(s)) == 1
    # refined again, to the late half of axis 3: the statement is rebuilt, not extended
    great = view(by_why(refinements(child, N_LAYERS), "neighbouring axis 3"), hid=3)
    late = by_why(refinements(great, N_LAYERS), "late layers")["statement"]
    assert "axis 3" in late and "layers 6-11" in late and "#3" in late
    assert "axis 2" not in late and "#2" not in late and len(nulls_in(late)) == 1
    assert len(late) < len(AXIS["statement"]) + 120  # no accumulation down the chain


def test_statements_name_their_null_once():
    raw = {"probe": "pair_proximity", "params": {"pairs": "string:>=700"}}
    label = nulls.label(nulls.spec_null("pair_proximity", raw["params"]))
    once = with_null("STRING partners sit close", "pair_proximity", raw["params"])
    assert once == f"STRING partners sit close (null: {label})"
    assert with_null(once, "pair_proximity", raw["params"]) == once
    rewired = {**raw["params"], "null": "degree_preserving"}
    assert with_null(once, "pair_proximity", rewired) == \
        "STRING partners sit close (null: degree-preserving rewiring)"
    # labels with parentheses of their own are replaced whole
    fs = with_null("x", "spectrum", {"null": "feature_shuffle"})
    assert fs == "x (null: independent dimensions (feature shuffle))"
    assert with_null(fs, "spectrum", {"null": "none"}) == "x (null: descriptive (no null))"
    assert spec_statement(raw).endswith(f"(null: {label})")


def test_gene_set_claims_never_get_feature_shuffle():
    for probe in GENE_SET_PROBES:
        target = preferred_null(probe)
        assert target and nulls.NULLS[target].level != "geometry", probe
        raw = {"statement": "a set clusters", "probe": probe,
               "params": {"gene_set": "go:GO:0005840", "null": "feature_shuffle"}}
        fixed = set_level_null(raw)
        assert fixed is not None and fixed["params"]["null"] == target
        assert "feature" not in fixed["statement"] and nulls.label(target) in fixed["statement"]
        # a discovery made against feature_shuffle is refined against the set-level null only
        variants = refinements(view(raw, hid=4), N_LAYERS)
        assert variants
        for v, _why in variants:
            assert nulls.spec_null(probe, v["params"]) != "feature_shuffle"
            assert "feature shuffle" not in v["statement"]
    assert preferred_null("set_cohesion") == (
        "matched" if "matched" in _null_values("set_cohesion") else "gene_shuffle")


def _null_values(probe: str) -> tuple[str, ...]:
    from typing import get_args

    from geoscreen.probes.registry import get_probe

    ann = get_probe(probe).params.model_fields["null"].annotation
    return tuple(get_args(ann))


def test_pair_sets_prefer_degree_preserving():
    assert preferred_null("pair_proximity") == "degree_preserving"
    assert preferred_null("co_pole") == "degree_preserving"
    assert preferred_null("axis_separation") is None  # no gene-set / pair-set null to choose
    raw = {"statement": "pairs close", "probe": "pair_proximity",
           "params": {"pairs": "string:>=700", "subspace": [2, 3, 4], "null": "gene_shuffle"},
           "alternative": "greater"}
    strict = by_why(refinements(view(raw), N_LAYERS), "stricter null")
    assert strict["params"]["null"] == "degree_preserving"
    assert strict["statement"].endswith("(null: degree-preserving rewiring)")
    assert all(v["params"]["null"] == "degree_preserving" for v in exploration(raw))


def test_star_motif_discoveries_are_retested_against_both_nulls():
    """A fan-out or fan-in found against one null is re-tested against degree_and_motif (the
    intersection-union test over both); loops and a test already on both are not."""
    for motif in ("fan_out", "fan_in"):
        for null in ("degree_preserving", "motif_preserving"):
            raw = {"statement": "co-targets close", "probe": "regulatory_motifs",
                   "params": {"pairs": "trrust:all", "motif": motif, "null": null},
                   "alternative": "greater"}
            both = by_why(refinements(view(raw), N_LAYERS), "both nulls")
            assert both["params"]["null"] == "degree_and_motif"
            assert both["params"]["motif"] == motif
            assert nulls.label("degree_and_motif") in both["statement"]
            parse_spec({"source": "offline", **both}, "test")  # a valid spec
    for params in ({"pairs": "trrust:all", "motif": "ffl"},
                   {"pairs": "trrust:all", "motif": "fan_out", "null": "degree_and_motif"}):
        raw = {"statement": "motifs close", "probe": "regulatory_motifs", "params": params,
               "alternative": "greater"}
        assert not [w for _, w in refinements(view(raw), N_LAYERS) if "both nulls" in w]


@pytest.fixture(scope="module")
def proposals() -> list:
    """Everything the offline brainstormer would propose next to two discoveries."""
    state = CampaignState(
        campaign_id=1, seed=3, iteration=2, alpha=0.05,
        history=[view(AXIS, 1),
                 view({"statement": "Reactome cell-cycle genes cluster", "probe": "set_cohesion",
                       "params": {"gene_set": "reactome:R-HSA-1640170",
                                  "null": "feature_shuffle"}, "alternative": "greater"}, 2)],
        cache={"n_layers": N_LAYERS, "layers": [f"L{i}" for i in range(N_LAYERS)]})
    return OfflineBrainstormer().propose(state, 400).accepted


def test_every_offline_proposal_names_its_null(proposals):
    assert len(proposals) > 50
    for r in proposals:
        s = r.spec.statement
        label = nulls.label(nulls.spec_null(r.spec.probe, r.params))
        assert len(nulls_in(s)) == 1, s
        assert s.endswith(f"(null: {label})") or (
            r.params.get("control") and f"(null: {label} + " in s), s
        assert "[" not in s, s


def test_offline_proposals_use_set_level_nulls_for_gene_sets(proposals):
    for r in proposals:
        if r.spec.probe in GENE_SET_PROBES:
            null = nulls.spec_null(r.spec.probe, r.params)
            assert nulls.NULLS[null].level != "geometry", r.spec.statement
    refined = [r for r in proposals if r.spec.parents == [2]]
    assert refined and all(r.params["null"] == preferred_null("set_cohesion") for r in refined)
    assert all("#2 claimed: Reactome cell-cycle genes cluster" in r.spec.rationale
               for r in refined)
