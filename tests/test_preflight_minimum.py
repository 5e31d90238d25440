"""Queue-time checks of a gene-set parameter against the fewest genes its probe needs."""

from __future__ import annotations

import numpy as np
from probe_helpers import cache_from_layers


def test_the_queue_check_asks_a_gene_set_for_the_genes_its_probe_needs(tmp_path):
    """A field that names the parameter holding its minimum (community_concentration's
    gene_sets and min_size) is checked with it at queue time: a set with fewer present genes
    is refused before it runs, as the offline brainstormer's seed examples are."""
    from geoscreen.hypotheses.preflight import check_references
    from geoscreen.hypotheses.spec import HypothesisSpec

    rng = np.random.default_rng(9)
    cache = cache_from_layers(tmp_path / "c", [rng.standard_normal((40, 4))])

    def spec(min_size: int):
        return HypothesisSpec.model_validate({
            "statement": "Three genes gather in one community", "probe":
                "community_concentration",
            "params": {"gene_sets": ["genes:G1,G2,G3,NOTAGENE"], "min_size": min_size}}
        ).resolved()
    assert check_references(spec(3), cache) == ""
    assert "at least 4" in check_references(spec(4), cache)
