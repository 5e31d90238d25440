"""Builders shared by the report and ledger-CLI tests (this module holds no tests itself).

`campaign_ledger` runs one small real campaign per test session (real probes in the sandbox, the
offline brainstormer refining discoveries, one hypothesis that fails), then records what an LLM
brainstormer and the online FDR engine would add when those are in use: LLM calls, a rejected
proposal, a retired family and online decisions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

N_GENES, DIM, N_LAYERS = 300, 20, 6
PLANTED = 50  # genes G0000..G0049 separate on axis 1, more with depth
PAIRS = [(2 * k + 100, 2 * k + 101) for k in range(30)]  # close in SV2-SV4


def genes() -> list[str]:
    return [f"G{i:04d}" for i in range(N_GENES)]


def write_planted_cache(path: Path, seed: int = 0, model: str = "synthetic-report-test"):
    """A synthetic cache whose axis-1 separation grows with depth and whose pairs sit close."""
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    label = np.zeros(N_GENES)
    label[:PLANTED] = 1.0
    pos = rng.standard_normal((N_GENES, 3))
    for a, b in PAIRS:
        pos[b] = pos[a] + 0.2 * rng.standard_normal(3)
    base = rng.standard_normal((N_GENES, DIM))
    layers = {}
    for layer in range(N_LAYERS):
        depth = layer / (N_LAYERS - 1)
        X = base * np.exp(-np.arange(DIM) * 0.05) + 0.3 * rng.standard_normal((N_GENES, DIM))
        X[:, 0] = (0.3 + 2.5 * depth) * 3 * label + rng.standard_normal(N_GENES)
        X[:, 1:4] = 2 * pos + 0.3 * rng.standard_normal((N_GENES, 3))
        layers[f"L{layer}"] = (X @ Q.T).astype(np.float32)
    return write_cache(path, layers, genes(), model=model, synthetic=True,
                       source="tests: planted structure", overwrite=True)


def specs(seed: int = 1) -> list[dict]:
    g = genes()
    rng = np.random.default_rng(seed)
    planted = "genes:" + ",".join(g[:PLANTED])
    pairs = "pairs:" + ",".join(f"{g[a]}-{g[b]}" for a, b in PAIRS)
    control = "genes:" + ",".join(sorted(rng.choice(g[PLANTED:], 40, replace=False)))
    return [
        {"statement": "Axis 1 separates the planted genes from the rest",
         "probe": "axis_separation", "params": {"axis": 1, "positive": planted},
         "alternative": "two-sided", "rationale": "planted in the synthetic cache"},
        {"statement": "Planted pairs sit closer than chance in SV2-SV4", "probe": "pair_proximity",
         "params": {"pairs": pairs, "subspace": [2, 3, 4], "n_permutations": 199},
         "alternative": "greater", "rationale": "planted in the synthetic cache"},
        {"statement": "Axis 1 separates 40 random genes from the rest (negative control)",
         "probe": "axis_separation", "params": {"axis": 1, "positive": control},
         "alternative": "two-sided", "rationale": "negative control: random genes"},
        {"statement": "Planted pairs sit closer in SV12-SV14 (negative control)",
         "probe": "pair_proximity",
         "params": {"pairs": pairs, "subspace": [12, 13, 14], "n_permutations": 199},
         "alternative": "greater", "rationale": "negative control: no pair structure there"},
        {"statement": "A five-gene set is too small to test", "probe": "axis_separation",
         "params": {"axis": 2, "positive": "genes:G0001,G0002,G0003,G0004,G0005,NOPE1",
                    "min_size": 6},
         "alternative": "two-sided", "rationale": "fails on purpose: too few genes"},
        {"statement": "Separation of the planted genes grows with depth",
         "probe": "axis_separation", "params": {"axis": 1, "positive": planted},
         "across_layers": "trend", "alternative": "two-sided",
         "rationale": "the planted effect is built to grow with depth"},
    ]


def run_small_campaign(out: Path, *, seed: int = 0, cache_seed: int = 0, iterations: int = 2,
                       per_iteration: int = 4) -> Path:
    """Cache + queued specs + a real campaign; returns the ledger path."""
    from geoscreen.agent.campaign import CampaignConfig, run_campaign
    from geoscreen.hypotheses.loader import parse_spec
    from geoscreen.store.ledger import Ledger

    out.mkdir(parents=True, exist_ok=True)
    cache = write_planted_cache(out / "cache", seed=cache_seed)
    ledger = out / "ledger.sqlite"
    led = Ledger(ledger)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec(r, "report test") for r in specs()])
    led.close()
    run_campaign(cache.path, ledger, CampaignConfig(
        iterations=iterations, per_iteration=per_iteration, brainstormer="offline", seed=seed,
        workers=2, timeout_s=120))
    return ledger


def add_review_extras(ledger: Path) -> None:
    """What an LLM brainstormer and the online FDR engine record, for the report to show."""
    from sqlalchemy import select

    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Event, Hypothesis, LLMCall

    led = Ledger(ledger)
    with led.session() as s:
        c = led.campaign(s, create=False)
        for it, (tin, tout, outcome) in enumerate(
                [(5200, 900, "ok"), (6100, 1100, "ok"), (6400, 0, "timeout")], start=1):
            s.add(LLMCall(campaign_id=c.id, iteration_index=it, model="gpt-4o-mini",
                          purpose="propose", tokens_in=tin, tokens_out=tout,
                          cost_usd=tin * 0.15e-6 + tout * 0.6e-6, latency_s=3.5 + it,
                          outcome=outcome))
        s.add(LLMCall(campaign_id=c.id, iteration_index=2, model="gpt-4o-mini",
                      purpose="repair", tokens_in=1500, tokens_out=300, cost_usd=0.0004,
                      latency_s=1.2))
        s.add(Hypothesis(campaign_id=c.id, iteration_index=2, hash="rejected-test-0001-2",
                         spec={"statement": "SV0 orders genes", "probe": "axis_separation",
                               "params": {"axis": 0}}, statement="SV0 orders genes",
                         probe="axis_separation", family="?", source="llm:gpt-4o-mini",
                         status="rejected", rationale="the first axis might carry signal",
                         error="field 'params.axis': Input should be greater than or equal "
                               "to 1"))
        led.event(s, c, "retired", "5 tests in family 'graph_topology' without a discovery", 3,
                  family="graph_topology")
        s.add(Event(campaign_id=c.id, iteration_index=3, kind="duplicate",
                    message="proposal duplicates #1: Axis 1 separates the planted genes",
                    data={"existing": 1}))
        rows = s.scalars(select(Hypothesis).where(Hypothesis.status == "done")
                         .order_by(Hypothesis.test_order)).all()
        if all(h.online_decision is None for h in rows):
            for k, h in enumerate(rows, start=1):  # LORD++-like levels that shrink with k
                h.online_alpha = 0.025 / k ** 1.2
                h.online_decision = bool(h.p_value is not None and h.p_value <= h.online_alpha)
                h.online_procedure = "lord++"
    led.close()


def campaign_ledger(factory: pytest.TempPathFactory, name: str = "report-campaign", **kw,
                    ) -> Path:
    """One campaign per test session (built on first use, reused by later tests)."""
    root = factory.getbasetemp() / name
    ledger = root / "ledger.sqlite"
    if (root / "READY").exists():
        return ledger
    shutil.rmtree(root, ignore_errors=True)
    run_small_campaign(root, **kw)
    add_review_extras(ledger)
    (root / "READY").write_text("ok")
    return ledger
