"""Replication: rerun a campaign's discoveries on an independent cache, as a confirmatory family.

An exploratory screen's discovery is a lead; it becomes a finding when it holds on embeddings the
screen never saw (another extraction seed, dataset or model).  `replicate` copies each discovery's
spec into a *confirmatory* campaign in the same ledger (kind='confirmatory', parent = the
exploratory campaign), bound to the other cache, runs them in the same sandbox, and applies BH
over that fixed family only: the replication has its own error control and does not borrow the
screen's.  A discovery *replicates* when its copy is significant there with the same effect
direction.  Rerunning the command on the same cache resumes or reports; it never tests twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from geoscreen.errors import GeoscreenError
from geoscreen.store import queue
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Hypothesis, Iteration, Replication, utcnow

SELECTIONS = ("bh", "by", "online")


def direction(effect_name: str, effect_size: float | None) -> int | None:
    """+1 / -1 for an effect above / below its null value; None when unknown."""
    if effect_size is None:
        return None
    from geoscreen.store.query import effect_null

    d = float(effect_size) - effect_null(effect_name)
    return 0 if d == 0 else (1 if d > 0 else -1)


def _same_direction(orig: Hypothesis | None, copy: Hypothesis) -> bool | None:
    """A one-sided test only rejects in its stated direction; two-sided ones compare effects."""
    if orig is None or copy.status != "done":
        return None
    if (copy.spec or {}).get("alternative") in ("greater", "less"):
        return True
    d_orig = direction(orig.effect_name, orig.effect_size)
    d_rep = direction(copy.effect_name, copy.effect_size)
    return None if d_orig is None or d_rep is None else bool(d_orig == d_rep != 0)


@dataclass
class ReplicationResult:
    campaign_id: int
    parent_id: int
    cache_path: str
    alpha: float
    status: str  # done / stopped
    reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    not_included: int = 0  # discoveries made after this replication was set up

    @property
    def n_replicated(self) -> int:
        return sum(1 for r in self.rows if r["replicated"])


def _setup(led: Ledger, cache: Any, selection: str, alpha: float | None, seed: int | None,
           split: dict[str, Any] | None = None) -> tuple[int, int, int]:
    """(confirmatory campaign id, its iteration id, discoveries not covered by it).

    With `split` (the held-out part of the campaign's registered gene split) the family runs on
    the same cache; otherwise the cache must be another one.
    """
    with led.session() as s:
        orig = led.campaign(s, create=False)
        if split is None and orig.cache_checksum == cache.checksum:
            raise GeoscreenError(
                f"is the cache this campaign ran on ({cache.path}); a replication needs "
                "independent embeddings", field="--cache",
                fix="extract with another seed, dataset or model and pass that cache")
        conf = (queue.confirmatory_of(s, orig.id, cache.checksum) or [None])[-1]
        found = queue.discoveries(s, orig, selection)
        if conf is None:
            if not found:
                raise GeoscreenError(f"campaign #{orig.id} has no discoveries under "
                                     f"'{selection}' to replicate", path=led.target,
                                     fix="run more iterations or choose --select")
            a = float(alpha if alpha is not None else (orig.config or {}).get("alpha", 0.05))
            sd = int(seed if seed is not None else orig.seed + 1)
            from geoscreen.version import package_version

            where = "held-out genes" if split else cache.path.name
            conf = Campaign(
                name=f"{'confirmation' if split else 'replication'} of #{orig.id} on {where}",
                kind="confirmatory",
                parent_campaign_id=orig.id, cache_path=str(cache.path.resolve()),
                cache_checksum=cache.checksum, model=cache.model, seed=sd, status="running",
                package_version=package_version(), fdr_state={},
                config={"alpha": a, "selection": selection, "replicates": orig.id,
                        "iterations": 1, "per_iteration": len(found), "brainstormer": "none",
                        "plugins": list((orig.config or {}).get("plugins", [])),
                        **({"split": split} if split else {})})
            s.add(conf)
            s.flush()
            it = Iteration(campaign_id=conf.id, index=1, status="running",
                           brainstormer="replication")
            s.add(it)
            s.flush()
            for h in found:
                s.add(Hypothesis(
                    campaign_id=conf.id, iteration_id=it.id, iteration_index=1, hash=h.hash,
                    spec=dict(h.spec), statement=h.statement, probe=h.probe, family=h.family,
                    source=h.source, status="queued", parents=[h.id],
                    rationale=f"replication of #{h.id}", provenance={"replicates": h.id}))
            on = (f"the {split['n_holdout']:,} genes held out before the screen (cache "
                  f"{cache.path})" if split else f"cache {cache.path} ({cache.checksum[:12]})")
            led.event(s, conf, "started", f"confirmatory family of {len(found)} discoveries "
                      f"('{selection}') of campaign #{orig.id} on {on}, seed {sd}, BH at {a:g}")
            led.event(s, orig, "replication_started", f"replicating {len(found)} discoveries "
                      f"on {cache.path} as campaign #{conf.id}", confirmatory=conf.id)
            s.flush()
            return conf.id, it.id, 0
        covered = queue.parents_in(s, conf.id)
        n = queue.requeue_running(s, conf.id)
        if n:
            led.event(s, conf, "resumed", f"{n} hypotheses interrupted mid-run were re-queued")
        it = queue.first_iteration(s, conf.id)
        assert it is not None
        return conf.id, it.id, sum(1 for h in found if h.id not in covered)


def _record(led: Ledger, conf_id: int) -> None:
    """Replication rows for every copy, from the confirmatory family's BH decisions."""
    with led.session() as s:
        conf = s.get(Campaign, conf_id)
        assert conf is not None
        copies = queue.hypotheses(s, conf.id)
        n_rep = 0
        for h in copies:
            orig_id = int((h.parents or [0])[0])
            orig = s.get(Hypothesis, orig_id)
            same = _same_direction(orig, h)
            replicated = bool(h.status == "done" and h.significant and same)
            n_rep += replicated
            row = queue.replication(s, conf.id, original_id=orig_id)
            if row is None:
                row = Replication(campaign_id=conf.id, original_hypothesis_id=orig_id,
                                  replication_hypothesis_id=h.id)
                s.add(row)
            row.cache_path, row.cache_checksum = conf.cache_path or "", conf.cache_checksum or ""
            row.status, row.p_value, row.q_bh = h.status, h.p_value, h.q_bh
            row.significant, row.effect_size = bool(h.significant), h.effect_size
            row.same_direction, row.replicated = same, replicated
            row.created_at = utcnow()
        conf.status, conf.status_reason = "done", f"{n_rep} of {len(copies)} replicated"
        parent = s.get(Campaign, conf.parent_campaign_id)
        alpha = float((conf.config or {}).get("alpha", 0.05))
        on = ("confirmed on the genes held out before the screen"
              if (conf.config or {}).get("split") else f"replicated on {conf.cache_path}")
        msg = (f"{n_rep} of {len(copies)} discoveries {on} "
               f"(confirmatory campaign #{conf.id}, BH at {alpha:g} over {len(copies)})")
        led.event(s, conf, "done", msg)
        if parent is not None:
            led.event(s, parent, "replication", msg, confirmatory=conf.id, replicated=n_rep,
                      tested=len(copies))


def replication_rows(s: Session, conf: Campaign) -> list[dict[str, Any]]:
    """Original vs replication, one dict per copied discovery."""
    out = []
    for h in queue.hypotheses(s, conf.id):
        orig = s.get(Hypothesis, int((h.parents or [0])[0]))
        rep = queue.replication(s, conf.id, copy_id=h.id)
        out.append({
            "original_id": orig.id if orig else None, "statement": h.statement,
            "original_p": orig.p_value if orig else None,
            "original_q_bh": orig.q_bh if orig else None,
            "original_online": orig.online_decision if orig else None,
            "effect_name": h.effect_name or (orig.effect_name if orig else ""),
            "original_effect": orig.effect_size if orig else None,
            "replication_id": h.id, "status": h.status, "error": h.error,
            "p_value": h.p_value, "q_bh": h.q_bh, "q_by": h.q_by,
            "significant": bool(h.significant), "effect": h.effect_size,
            "same_direction": rep.same_direction if rep else None,
            "replicated": bool(rep.replicated) if rep else False})
    return out


def replicate(ledger_path: str | Path, cache_path: str | Path | None, *, selection: str = "bh",
              alpha: float | None = None, seed: int | None = None, workers: int = 1,
              timeout_s: float = 600.0, memory_mb: int | None = 8192,
              plugins: list[str] | None = None, work_dir: str | None = None,
              reporter: Any = None, holdout: bool = False) -> ReplicationResult:
    """Run (or resume, or report) the replication of a ledger's discoveries on `cache_path`.

    With ``holdout=True`` (`geoscreen campaign confirm`) the family runs instead on the genes
    the campaign held out before its screen (`--holdout-genes`), on the campaign's own cache;
    `cache_path` may then be None.
    """
    from geoscreen.agent.campaign import (
        CampaignConfig,
        Reporter,
        _finish_iteration,
        _StopFlag,
        ledger_callbacks,
        shared_null_seed,
    )
    from geoscreen.agent.executor import Job, ProcessSandbox
    from geoscreen.probes.context import derive_seed
    from geoscreen.store.cache import open_cache

    if selection not in SELECTIONS:
        raise GeoscreenError(f"unknown selection {selection!r}", field="--select",
                             fix=f"use one of {', '.join(SELECTIONS)}")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise GeoscreenError(f"alpha must be in (0, 1), got {alpha}", field="--alpha")
    # limits checked before the ledger is touched (a bad --timeout changes nothing)
    CampaignConfig(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb,
                   brainstormer="none")
    from geoscreen.store.lease import RunLease

    reporter = reporter or Reporter()
    led = Ledger(ledger_path, must_exist=True)
    split = None
    if holdout:
        with led.session() as s:
            orig = led.campaign(s, create=False)
            held = (orig.config or {}).get("holdout")
            if not held:
                led.close()
                raise GeoscreenError(
                    f"campaign #{orig.id} registered no gene split, so there is nothing held out "
                    "to confirm on", path=led.target, field="--ledger",
                    fix="start a campaign with --holdout-genes F, or replicate on an "
                    "independent cache with 'geoscreen campaign replicate --cache DIR'")
            split = {**held, "part": "holdout"}
            cache_path = cache_path or orig.cache_path
    try:
        cache = open_cache(cache_path)  # type: ignore[arg-type]
    except GeoscreenError:
        led.close()
        raise
    if split is not None:
        with led.session() as s:
            if led.campaign(s, create=False).cache_checksum != cache.checksum:
                led.close()
                raise GeoscreenError("is not the cache the campaign screened; held-out genes "
                                     "are confirmed on the same embeddings", path=str(cache_path),
                                     field="--cache", fix="leave --cache out")
    lease = RunLease(led, "replication")
    try:
        lease.acquire()  # one writing run per ledger: a campaign or a replication
        conf_id, it_id, not_included = _setup(led, cache, selection, alpha, seed, split)
        with led.session() as s:
            conf = s.get(Campaign, conf_id)
            assert conf is not None
            it = s.get(Iteration, it_id)
            assert it is not None
            cfg = CampaignConfig(seed=conf.seed, workers=workers, timeout_s=timeout_s,
                                 memory_mb=memory_mb, work_dir=work_dir, brainstormer="none",
                                 plugins=list((conf.config or {}).get("plugins", []))
                                 + list(plugins or []))
            todo = queue.hypotheses(s, conf.id, status="queued")
            split_job = (conf.config or {}).get("split")
            jobs = [Job(h.id, {"spec": h.spec, "cache_path": str(cache.path),
                               "cache_checksum": cache.checksum,
                               "seed": derive_seed(conf.seed, h.hash),
                               "null_seed": shared_null_seed(conf.seed),
                               "plugins": list(cfg.plugins), "work_dir": cfg.work_dir,
                               "split": split_job,
                               "combine_any": (conf.config or {}).get("combine_any", "cauchy")})
                    for h in todo]
            it_done = it.status == "done"
            unrecorded = it_done and len(queue.replications(s, conf.id)) < queue.count(s, conf.id)
        if unrecorded:  # killed between the family's BH and the replication rows
            _record(led, conf_id)
        status, reason = "done", "replication complete"
        if not it_done:
            reporter.iteration_started(1, 1, len(jobs))

            on_start, on_done = ledger_callbacks(led, reporter)
            with ProcessSandbox(workers=cfg.workers, timeout_s=cfg.timeout_s,
                                memory_mb=cfg.memory_mb, reuse=cfg.reuse_workers) as sandbox, \
                    _StopFlag() as flag:
                sandbox.run(jobs, on_start, on_done, lambda: flag.stop)
            if flag.stop:
                status, reason = "stopped", f"stopped by {flag.reason}; rerun to resume"
                with led.session() as s:
                    conf = s.get(Campaign, conf_id)
                    conf.status, conf.status_reason = status, reason
            else:
                disc, tested = _finish_iteration(led, conf_id, it_id)
                reporter.iteration_done(1, disc, tested)
                _record(led, conf_id)
        with led.session() as s:
            conf = s.get(Campaign, conf_id)
            assert conf is not None
            return ReplicationResult(
                campaign_id=conf.id, parent_id=int(conf.parent_campaign_id or 0),
                cache_path=conf.cache_path or "", alpha=float(conf.config.get("alpha", 0.05)),
                status=status, reason=reason, rows=replication_rows(s, conf),
                not_included=not_included)
    finally:
        lease.release()
        led.close()


def replications_of(s: Session, campaign: Campaign) -> list[dict[str, Any]]:
    """Summaries of every confirmatory campaign that replicates `campaign`."""
    out = []
    for conf in queue.confirmatory_of(s, campaign.id):
        rows = queue.replications(s, conf.id)
        total = queue.count(s, conf.id)
        split = (conf.config or {}).get("split")
        out.append({"campaign_id": conf.id, "cache_path": conf.cache_path, "status": conf.status,
                    "on": (f"{split['n_holdout']:,} held-out genes" if split
                           else "an independent cache"),
                    "holdout": bool(split),
                    "alpha": float((conf.config or {}).get("alpha", 0.05)), "tested": total,
                    "replicated": sum(1 for r in rows if r.replicated),
                    "selection": (conf.config or {}).get("selection", "bh")})
    return out
