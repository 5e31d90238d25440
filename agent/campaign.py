"""The campaign driver: propose, execute in the sandbox, record, apply FDR, repeat.

Resumability is built on two rules.  (1) An iteration's proposals are committed in one
transaction before any of them runs, so a crash either loses the whole proposal step (and a
rerun proposes exactly the same, deterministically) or none of it.  (2) Each result is committed
as it finishes; on restart, hypotheses left `running` by a killed process go back to `queued`.
Seeds depend only on the campaign seed and the hypothesis hash, never on timing, so a resumed
campaign ends with the same results as an uninterrupted one.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from geoscreen.agent.brainstorm import Brainstormer, BrainstormerUnavailable, make_brainstormer
from geoscreen.agent.errors import GeoscreenError
from geoscreen.agent.executor import Job, JobResult, ProcessSandbox
from geoscreen.agent.state import snapshot
from geoscreen.probes.context import derive_seed
from geoscreen.store.cache import Cache, open_cache
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Hypothesis, Iteration, utcnow


@dataclass
class CampaignConfig:
    iterations: int = 63
    per_iteration: int = 3
    brainstormer: str = "offline"
    seed: int = 0
    workers: int = 1
    timeout_s: float = 600.0
    memory_mb: int | None = 8192
    alpha: float = 0.05
    max_minutes: float | None = None
    approve: bool = False
    plugins: list[str] = field(default_factory=list)
    work_dir: str | None = None
    brainstormer_options: dict[str, Any] = field(default_factory=dict)
    online_procedure: str = "lord++"  # primary online FDR rule: lord++ | saffron | lond | batch-bh
    combine_any: str = "cauchy"  # across_layers any: cauchy | simes

    def __post_init__(self) -> None:
        from geoscreen.store.fdr import check_settings

        check_settings(self.online_procedure, self.combine_any)

    def recorded(self) -> dict[str, Any]:
        """What the ledger stores: everything that changes results (not workers or timeouts)."""
        return {"iterations": self.iterations, "per_iteration": self.per_iteration,
                "brainstormer": self.brainstormer, "alpha": self.alpha, "plugins": self.plugins,
                "online_procedure": self.online_procedure.lower(),
                "combine_any": self.combine_any}


class Reporter:
    """Progress callbacks; the CLI renders them with rich, tests stay silent."""

    def iteration_started(self, index: int, total: int, n: int) -> None: ...
    def hypothesis_started(self, hyp_id: int, statement: str) -> None: ...
    def hypothesis_done(self, hyp_id: int, status: str, p: float | None, detail: str) -> None: ...
    def iteration_done(self, index: int, discoveries: int, tested: int) -> None: ...
    def message(self, text: str) -> None: ...


class _StopFlag:
    """SIGTERM / SIGINT: finish what is running, commit, stop.  A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.stop = False
        self.reason = ""
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class RunSummary:
    status: str
    reason: str
    iterations_done: int
    tested: int
    discoveries: int
    failed: int


def _bind_campaign(ledger: Ledger, cache: Cache, cfg: CampaignConfig) -> int:
    with ledger.session() as s:
        c = ledger.campaign(s)
        if c.cache_checksum is None:
            c.cache_path = str(cache.path.resolve())
            c.cache_checksum = cache.checksum
            c.model = cache.model
            c.seed = cfg.seed
            c.config = {**cfg.recorded(), **(c.config or {}), "alpha": cfg.alpha}
            ledger.event(s, c, "started", f"campaign bound to cache {cache.path} "
                         f"({cache.checksum[:12]}), seed {cfg.seed}")
        else:
            if c.cache_checksum != cache.checksum:
                raise GeoscreenError(
                    f"belongs to cache {c.cache_path} (checksum {c.cache_checksum[:12]}), not "
                    f"{cache.path} ({cache.checksum[:12]})", path=ledger.target,
                    field="--cache", fix="use the original cache, or a new --ledger file")
            if c.seed != cfg.seed:
                raise GeoscreenError(
                    f"was started with --seed {c.seed}; resuming with --seed {cfg.seed} would "
                    "mix two campaigns", path=ledger.target, field="--seed",
                    fix=f"pass --seed {c.seed} or use a new --ledger file")
            c.config = {**c.config, "iterations": cfg.iterations,
                        "per_iteration": cfg.per_iteration, "brainstormer": cfg.brainstormer}
        # crash recovery: anything left running by a killed process runs again
        n = s.execute(update(Hypothesis).where(Hypothesis.campaign_id == c.id,
                                               Hypothesis.status == "running")
                      .values(status="queued", started_at=None)).rowcount
        if n:
            ledger.event(s, c, "resumed", f"{n} hypotheses interrupted mid-run were re-queued")
        c.status = "running"
        c.status_reason = ""
        return c.id


def _open_iteration(ledger: Ledger, campaign_id: int, cfg: CampaignConfig,
                    brainstormer: Brainstormer | None, cache: Cache,
                    reporter: Reporter) -> Iteration | None:
    """The unfinished iteration, or a new one with its proposals committed; None when done.

    The brainstormer is asked before anything is written, so a slow LLM call never holds the
    database's write lock (another terminal can `queue add` meanwhile); the iteration, its share
    of the queue and every proposal are then written in one transaction.
    """
    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        assert c is not None
        it = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id,
                                               Iteration.status != "done")
                       .order_by(Iteration.index)).first()
        if it is not None:
            return it
        done = s.scalar(select(func.count(Iteration.id)).where(Iteration.campaign_id == c.id))
        if done >= cfg.iterations:
            return None
        queued_ids = list(s.scalars(select(Hypothesis.id).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "queued",
            Hypothesis.iteration_id.is_(None)).order_by(Hypothesis.id)
            .limit(cfg.per_iteration)).all())
        if brainstormer is None and not queued_ids:
            return None
        index = done + 1
        room = cfg.per_iteration - len(queued_ids)
        batch = None
        if brainstormer is not None and room > 0:
            state = snapshot(s, c, index, cache={"n_layers": len(cache.layers),
                                                 "layers": cache.layers,
                                                 "n_genes": cache.n_genes})
    if brainstormer is not None and room > 0:
        batch = brainstormer.propose(state, room)
    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        it = Iteration(campaign_id=c.id, index=index, status="proposing",
                       brainstormer=brainstormer.name if brainstormer else "none")
        s.add(it)
        s.flush()
        for h in s.scalars(select(Hypothesis).where(Hypothesis.id.in_(queued_ids))):
            h.iteration_id, h.iteration_index = it.id, it.index
        if batch is not None:
            status = "pending_approval" if cfg.approve else "queued"
            _added, dups = ledger.add_hypotheses(s, c, batch.accepted, status=status,
                                                 iteration=it)
            for rej in batch.rejected:
                _add_rejected(s, c, it, rej.raw, rej.reason)
            for spec, existing in dups:
                ledger.event(s, c, "duplicate", f"proposal duplicates #{existing}: "
                             f"{spec.spec.statement}", it.index, existing=existing)
            for fam, why in batch.retire.items():
                ledger.event(s, c, "retired", why, it.index, family=fam)
                reporter.message(f"retired direction: {why}")
            if batch.note:
                ledger.event(s, c, "note", batch.note, it.index)
        it.status = "running"
        return it


def _add_rejected(s: Any, c: Campaign, it: Iteration, raw: dict[str, Any], reason: str) -> None:
    import hashlib
    import json

    blob = json.dumps(raw, sort_keys=True, default=str)
    s.add(Hypothesis(campaign_id=c.id, iteration_id=it.id, iteration_index=it.index,
                     hash="rejected-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
                     + f"-{it.index}", spec=raw,
                     statement=str(raw.get("statement", ""))[:2000] or "(no statement)",
                     probe=str(raw.get("probe", "?")), family="?",
                     source=str(raw.get("source", "?")), status="rejected", error=reason,
                     parents=list(raw.get("parents", []) or []) if isinstance(
                         raw.get("parents"), list) else []))


def _finish_iteration(ledger: Ledger, campaign_id: int, it_id: int) -> tuple[int, int]:
    from geoscreen.store import fdr

    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        it = s.get(Iteration, it_id)
        assert c is not None and it is not None
        # test order: proposal order within the iteration, fixed once and for all
        last = s.scalar(select(func.max(Hypothesis.test_order))
                        .where(Hypothesis.campaign_id == c.id)) or 0
        rows = s.scalars(select(Hypothesis).where(Hypothesis.iteration_id == it.id,
                                                  Hypothesis.status == "done")
                         .order_by(Hypothesis.id)).all()
        for h in rows:
            if h.test_order is None:
                last += 1
                h.test_order = last
        fdr.update_campaign(s, c, it)
        it.status = "done"
        it.finished_at = utcnow()
        tested = s.scalar(select(func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "done")) or 0
        disc = s.scalar(select(func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id, Hypothesis.significant.is_(True))) or 0
        return int(disc), int(tested)


def _import_plugins(modules: list[str]) -> None:
    """Plug-in probe modules register here too, so specs naming them validate in this process."""
    import importlib

    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise GeoscreenError(f"cannot import plug-in module {mod!r} ({exc})",
                                 field="--plugin", fix="check the module name and PYTHONPATH"
                                 ) from None


def ledger_callbacks(ledger: Ledger, reporter: Reporter,
                     ) -> tuple[Callable[[Job], None], Callable[[JobResult], None]]:
    """Sandbox callbacks that commit each start and each result to the ledger at once."""

    def on_start(job: Job) -> None:
        with ledger.session() as s:
            h = s.get(Hypothesis, job.hyp_id)
            h.status, h.started_at, h.seed = "running", utcnow(), job.payload["seed"]
            reporter.hypothesis_started(h.id, h.statement)

    def on_done(res: JobResult) -> None:
        if res.ok:
            ledger.record_result(res.hyp_id, res.outcome)
            comb = res.outcome["combined"]
            reporter.hypothesis_done(res.hyp_id, "done", comb["p_value"],
                                     f"{comb['effect_name']}={comb['effect_size']:.3g}")
        else:
            ledger.record_failure(res.hyp_id, res.reason)
            reporter.hypothesis_done(res.hyp_id, "failed", None, res.reason)

    return on_start, on_done


def job_for(h: Hypothesis, cache: Cache, cfg: CampaignConfig, seed: int) -> Job:
    return Job(h.id, {
        "spec": h.spec, "cache_path": str(cache.path), "cache_checksum": cache.checksum,
        "seed": derive_seed(seed, h.hash), "plugins": list(cfg.plugins),
        "work_dir": cfg.work_dir})


def run_campaign(cache_path: str | Path, ledger_path: str | Path, cfg: CampaignConfig,
                 reporter: Reporter | None = None,
                 brainstormer: Brainstormer | None | str = "from_config",
                 stop_after: Callable[[int], bool] | None = None) -> RunSummary:
    """Run (or resume) a campaign until its iterations are done, it is stopped, or a budget ends."""
    reporter = reporter or Reporter()
    _import_plugins(cfg.plugins)
    cache = open_cache(cache_path)
    ledger = Ledger(ledger_path)
    campaign_id = _bind_campaign(ledger, cache, cfg)
    if brainstormer == "from_config":
        brainstormer = make_brainstormer(cfg.brainstormer, ledger=ledger,
                                         campaign_id=campaign_id, **cfg.brainstormer_options)
    sandbox = ProcessSandbox(workers=cfg.workers, timeout_s=cfg.timeout_s,
                             memory_mb=cfg.memory_mb)
    t_start = time.monotonic()
    status, reason = "done", "all iterations done"
    with _StopFlag() as flag:
        while True:
            if flag.stop:
                status, reason = "stopped", f"stopped by {flag.reason}"
                break
            if cfg.max_minutes is not None and time.monotonic() - t_start > cfg.max_minutes * 60:
                status, reason = "stopped", f"wall-time budget of {cfg.max_minutes:g} min reached"
                break
            budget = getattr(brainstormer, "budget_exhausted", None)
            if callable(budget) and budget():
                status, reason = "stopped", str(budget())
                break
            try:
                it = _open_iteration(ledger, campaign_id, cfg, brainstormer, cache, reporter)
            except BrainstormerUnavailable as exc:
                with ledger.session() as s:
                    ledger.event(s, s.get(Campaign, campaign_id), "brainstormer_unavailable",
                                 str(exc))
                status, reason = "paused", f"brainstormer unavailable: {exc}"
                break
            if it is None:
                if brainstormer is None:
                    reason = "the queue is empty"
                break
            with ledger.session() as s:
                todo = s.scalars(select(Hypothesis).where(
                    Hypothesis.iteration_id == it.id, Hypothesis.status == "queued")
                    .order_by(Hypothesis.id)).all()
                waiting = s.scalar(select(func.count(Hypothesis.id)).where(
                    Hypothesis.iteration_id == it.id,
                    Hypothesis.status == "pending_approval")) or 0
            approval = (f"iteration {it.index} waits for approval of {waiting} proposals "
                        "('geoscreen queue approve ID')")
            if waiting and not todo:
                status, reason = "paused", approval
                break
            reporter.iteration_started(it.index, cfg.iterations, len(todo))
            jobs = [job_for(h, cache, cfg, cfg.seed) for h in todo]

            on_start, on_done = ledger_callbacks(ledger, reporter)
            sandbox.run(jobs, on_start, on_done, lambda: flag.stop)
            if flag.stop:
                continue  # the loop head records the stop; the iteration resumes next run
            if waiting:
                status, reason = "paused", approval
                break
            disc, tested = _finish_iteration(ledger, campaign_id, it.id)
            reporter.iteration_done(it.index, disc, tested)
            if stop_after is not None and stop_after(it.index):
                status, reason = "stopped", f"stopped after iteration {it.index}"
                break
    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        c.status, c.status_reason = status, reason
        ledger.event(s, c, status, reason)
        its = s.scalar(select(func.count(Iteration.id)).where(
            Iteration.campaign_id == c.id, Iteration.status == "done")) or 0
        counts = dict(s.execute(select(Hypothesis.status, func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id).group_by(Hypothesis.status)).all())
        disc = s.scalar(select(func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id, Hypothesis.significant.is_(True))) or 0
    ledger.close()
    return RunSummary(status=status, reason=reason, iterations_done=int(its),
                      tested=int(counts.get("done", 0)), discoveries=int(disc),
                      failed=int(counts.get("failed", 0)))
