"""The Python API: a ledger as pandas DataFrames, one spec run in this process, a campaign.

For notebooks and scripts; the CLI is built on the same pieces.

>>> import geoscreen
>>> led = geoscreen.open_ledger("geoscreen-demo/ledger.sqlite")     # doctest: +SKIP
>>> led.hypotheses()[["hypothesis_id", "statement", "p_value", "q_bh"]]  # doctest: +SKIP
>>> geoscreen.run_spec({"statement": "SV1 separates secreted genes", "probe": "axis_separation",
...                     "params": {"positive": "go:GO:0005615"}}, "cache/")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from geoscreen.agent.campaign import RunSummary
    from geoscreen.result import Outcome
    from geoscreen.store.cache import Cache

__all__ = ["LedgerView", "open_ledger", "open_cache", "run_spec", "run_campaign"]


class LedgerView:
    """Read-only tables of a ledger (SQLite file or SQLAlchemy URL) as pandas DataFrames.

    Every method reads the ledger afresh, so a view opened on a running campaign sees new rows.
    Column names are the export's (`geoscreen ledger export`): ``q_bh`` is the BH q-value,
    ``significant`` the decision of the campaign's offline procedure.
    """

    def __init__(self, target: str | Path) -> None:
        from geoscreen.store.query import _open_ledger

        self.target = str(target)
        _open_ledger(self.target).close()  # a clear error now for a missing or foreign file

    def __repr__(self) -> str:
        return f"LedgerView({self.target!r})"

    def campaigns(self) -> pd.DataFrame:
        """One row per campaign (exploratory and confirmatory)."""
        import pandas as pd

        from geoscreen.store.query import campaign_records

        return pd.DataFrame(campaign_records(self.target))

    def hypotheses(self, *, campaign_id: int | None = None,
                   status: str | list[str] | None = None) -> pd.DataFrame:
        """One row per hypothesis: statement, probe, null, p, q (BH, BY), decisions, effect.

        Parameters
        ----------
        campaign_id
            Only this campaign's hypotheses (default: every campaign's).
        status
            Only these statuses (``done``, ``failed``, ``rejected``, ``queued``, ...).
        """
        import pandas as pd

        from geoscreen.store.query import EXPORT_COLUMNS, hypothesis_records, list_hypotheses

        statuses = [status] if isinstance(status, str) else status
        rows = list_hypotheses(self.target, statuses=statuses)
        if campaign_id is not None:
            keep = {r["hypothesis_id"] for r in hypothesis_records(self.target, campaign_id)}
            rows = [r for r in rows if r["hypothesis_id"] in keep]
        cols = [c for c in EXPORT_COLUMNS if not rows or c in rows[0]]
        return pd.DataFrame(rows, columns=cols or None)

    def layer_results(self, *, campaign_id: int | None = None) -> pd.DataFrame:
        """One row per (hypothesis, layer): statistic, effect, p- and e-value, null, CI, seed.

        Column names are those of `geoscreen.result.LayerResult` (and of
        ``geoscreen ledger export --table layers``).
        """
        import pandas as pd

        from geoscreen.store.query import LAYER_COLUMNS, layer_records

        return pd.DataFrame(layer_records(self.target, campaign_id), columns=list(LAYER_COLUMNS))

    def hypothesis(self, hyp_id: int) -> dict[str, Any]:
        """Everything recorded about one hypothesis (as `geoscreen ledger show --json`)."""
        from geoscreen.store.query import show_hypothesis

        return show_hypothesis(self.target, hyp_id)


def open_ledger(target: str | Path) -> LedgerView:
    """A read-only view of a ledger (SQLite path or SQLAlchemy URL) with DataFrame tables."""
    return LedgerView(target)


def open_cache(path: str | Path) -> Cache:
    """Open an embedding cache read-only (arrays memory-mapped, checksums in the manifest)."""
    from geoscreen.store.cache import open_cache as _open

    return _open(path)


def run_spec(spec: dict[str, Any], cache: str | Path, *, seed: int = 0,
             work_dir: str | Path | None = None, sequential_h: int | None = None) -> Outcome:
    """Run one hypothesis spec on a cache in this process (no ledger, no sandbox).

    Parameters
    ----------
    spec
        A spec as in a spec file (statement, probe, params, layers, across_layers, ...).
    cache
        The cache folder.
    seed
        Seed of every random draw (the campaign derives one per hypothesis from its own).
    work_dir
        Where saved SVDs are kept (default: the user cache folder).
    sequential_h
        Stop each one-sided Monte Carlo null at this many exceedances (Besag-Clifford), as a
        campaign does (its default is 10); None or 0 draws every permutation.

    Returns
    -------
    geoscreen.result.Outcome
        ``layers`` (one `geoscreen.result.LayerResult` per layer), ``combined`` (the
        `geoscreen.result.CombinedResult`: across-layer p-value, e-value and effect),
        ``runtime_s`` and ``provenance``: exactly what a campaign's worker records, given the
        campaign's hypothesis seed and stopping rule.
    """
    from geoscreen.agent.worker import run_job
    from geoscreen.hypotheses.loader import parse_spec
    from geoscreen.probes.sequential import stopping_rule

    rule = stopping_rule(sequential_h, "sequential_h")
    resolved = parse_spec(dict(spec), "spec")
    return run_job({"spec": resolved.spec.model_dump(mode="json"), "cache_path": str(cache),
                    "seed": int(seed), "work_dir": str(work_dir) if work_dir else None,
                    "sequential_h": rule})


def run_campaign(cache: str | Path, ledger: str | Path, **config: Any) -> RunSummary:
    """Run (or resume) a campaign; keyword arguments are `CampaignConfig` fields
    (``iterations``, ``per_iteration``, ``brainstormer``, ``seed``, ``alpha``, ...)."""
    from geoscreen.agent.campaign import CampaignConfig
    from geoscreen.agent.campaign import run_campaign as _run

    return _run(cache, ledger, CampaignConfig(**config))
