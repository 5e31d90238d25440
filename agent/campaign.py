"""The campaign driver: propose, execute in the sandbox, record, apply FDR, repeat.

Resumability is built on two rules.  (1) An iteration's proposals are committed in one
transaction before any of them runs, so a crash either loses the whole proposal step (and a
rerun proposes exactly the same, deterministically) or none of it.  (2) Each result is committed
as it finishes; on restart, hypotheses left `running` by a killed process go back to `queued`.
Seeds depend only on the campaign seed and the hypothesis hash, never on timing, so a resumed
campaign ends with the same results as an uninterrupted one.

Around the loop: a run holds the ledger's run lock (`store.lease`) from before it touches the
queue until it ends, so two runs never share a ledger; a failure for a transient reason (a
timeout, the memory limit, a dead worker, a cache that changed) goes back to the queue on the
next run, up to `MAX_AUTO_ATTEMPTS` starts (`retry_failed` lifts that cap), while failures that
would recur stay failed; a cache that breaks mid-run stops the run (its hypotheses go back to the
queue) instead of failing everything that follows; and hypotheses queued by hand run even after
the planned iterations, in extra iterations of their own.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoscreen.agent.brainstorm import Brainstormer, BrainstormerUnavailable, make_brainstormer
from geoscreen.agent.executor import Job, JobResult, ProcessSandbox
from geoscreen.agent.state import snapshot
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import derive_seed
from geoscreen.probes.sequential import stopping_rule
from geoscreen.store import queue
from geoscreen.store.cache import Cache, open_cache
from geoscreen.store.failures import MAX_AUTO_ATTEMPTS, transient_failure
from geoscreen.store.lease import RunLease
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Hypothesis, Iteration, utcnow

# A campaign's Monte Carlo nulls stop at this many exceedances (Besag & Clifford 1991) unless
# it is registered with another rule (``--sequential-stop H``; 0 draws every permutation)
DEFAULT_SEQUENTIAL_H = 10


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
    #                                   | e-lond
    offline_procedure: str = "bh"  # decides `significant`: bh | by | e-bh (store/fdr.py)
    combine_any: str = "cauchy"  # across_layers any: cauchy | simes
    retry_failed: bool = False  # rerun transient failures past MAX_AUTO_ATTEMPTS
    # folders that specs proposed by a model may read with file: (none by default; human and
    # offline specs may read any regular file)
    allow_files: list[str] = field(default_factory=list)
    # a pre-registered gene split: hold out this fraction of genes for `campaign confirm`
    # (recorded when the campaign is first bound, never changed afterwards)
    holdout_genes: float | None = None
    split: dict[str, Any] | None = None  # the registered split, set from the ledger by the run
    # where the SAE feature atlases of the screened cache are ('{layer}': one per layer); the
    # brainstormers propose atlas hypotheses on them (default: atlases/{layer} if it exists)
    atlas: str | None = None
    # persistent workers (one warden per slot, a fresh forked worker per hypothesis); False
    # starts a new interpreter for every hypothesis
    reuse_workers: bool = True
    # where hypotheses run: "local" (processes here) or "slurm" (job arrays; `slurm` holds the
    # agent.slurm.SlurmOptions as a mapping)
    # Besag-Clifford sequential stopping of the Monte Carlo nulls that support it: a layer's
    # draws stop at this many exceedances (10: a null layer takes about 56 of 1,000 draws; a
    # layer with p below 10 / (m + 1) takes them all and gets the fixed-draw p).  None or 0:
    # every draw on every layer.  Registered with the campaign (a resumed run keeps it).
    sequential_h: int | None = DEFAULT_SEQUENTIAL_H
    executor: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from geoscreen.store.fdr import check_settings

        check_settings(self.online_procedure, self.combine_any, self.offline_procedure)
        self.check_limits()
        if self.executor not in ("local", "slurm"):
            raise GeoscreenError(f"unknown executor {self.executor!r}", field="--executor",
                                 fix="use --executor local or --executor slurm")
        if self.executor == "slurm":
            from geoscreen.agent.slurm import slurm_options

            self.slurm = slurm_options(dict(self.slurm)).model_dump(exclude_defaults=True)
        for folder in self.allow_files:
            if not Path(folder).expanduser().is_dir():
                raise GeoscreenError("is not a folder", path=str(folder), field="--allow-files",
                                     fix="name an existing folder whose files a model's "
                                     "proposals may read")
        self.allow_files = [str(Path(f).expanduser().resolve()) for f in self.allow_files]
        if self.atlas is not None and "{layer}" not in self.atlas \
                and not (Path(self.atlas) / "atlas.json").is_file():
            raise GeoscreenError("is neither an atlas folder nor a path with '{layer}'",
                                 path=self.atlas, field="--atlas",
                                 fix="e.g. --atlas atlases/scgpt/{layer} (geoscreen sae atlas)")
        if self.holdout_genes is not None:
            from geoscreen.store.split import GeneSplit

            GeneSplit(seed=self.seed, fraction=self.holdout_genes)  # refuses a bad fraction

    def check_limits(self) -> None:
        """Refuse limits that would switch a safeguard off or make no sense (one line each).

        `--timeout -1`, `--memory-mb 0` and the like used to disable the limit silently; a
        limit is a positive finite number (`memory_mb=None` from Python: deliberately none).
        """
        def positive(value: Any, flag: str, what: str, *, integer: bool = False) -> None:
            ok = (isinstance(value, int | float) and not isinstance(value, bool)
                  and math.isfinite(value) and value > 0 and (not integer or value == int(value)))
            if not ok:
                raise GeoscreenError(f"{what} must be a positive {'whole ' if integer else ''}"
                                     f"number, got {value!r}", field=flag,
                                     fix="a limit cannot be switched off; pass a larger value")

        positive(self.timeout_s, "--timeout", "the per-hypothesis timeout (seconds)")
        if self.memory_mb is not None:
            positive(self.memory_mb, "--memory-mb", "the per-worker memory limit (MB)",
                     integer=True)
        if self.max_minutes is not None:
            positive(self.max_minutes, "--max-minutes", "the wall-time budget (minutes)")
        positive(self.workers, "--workers", "the number of workers", integer=True)
        # 0: every draw (the fixed-draw test), recorded as None
        self.sequential_h = stopping_rule(self.sequential_h, "--sequential-stop")
        positive(self.iterations, "--iterations", "the number of iterations", integer=True)
        positive(self.per_iteration, "--per-iteration", "proposals per iteration",
                 integer=True)
        from geoscreen.agent.worker import warm_mb_setting

        try:
            warm_mb_setting()
        except ValueError:
            raise GeoscreenError(
                "the memory persistent workers may fill ahead must be a whole number of MiB, "
                f"got {os.environ.get('GEOSCREEN_WARM_MB')!r}", field="GEOSCREEN_WARM_MB",
                fix="unset it (1024 MiB), or set e.g. GEOSCREEN_WARM_MB=512; 0 turns loading "
                    "ahead off") from None
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha < 1.0):
            raise GeoscreenError(f"the target FDR must be in (0, 1), got {self.alpha!r}",
                                 field="--alpha")

    def recorded(self) -> dict[str, Any]:
        """What the ledger stores: everything that changes results (not workers or timeouts)."""
        return {"iterations": self.iterations, "per_iteration": self.per_iteration,
                "brainstormer": self.brainstormer, "alpha": self.alpha, "plugins": self.plugins,
                "online_procedure": self.online_procedure.lower(),
                "offline_procedure": self.offline_procedure.lower(),
                "combine_any": self.combine_any, "sequential_h": self.sequential_h}


def atlas_layers(template: str | None, layers: list[str]) -> dict[str, Any] | None:
    """{"path": template, "layers": the layers that have an atlas there} for the brainstormers,
    or None when there is none (`template` None: the default atlases/{layer})."""
    path = template or "atlases/{layer}"
    have = [n for n in layers if (Path(path.replace("{layer}", n)) / "atlas.json").is_file()]
    return {"path": path, "layers": have} if have else None


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


def _bind_campaign(ledger: Ledger, cache: Cache, cfg: CampaignConfig,
                   locked_at: float | None = None) -> tuple[int, int]:
    """Bind (or check) the campaign's cache and seed and recover from an earlier run; returns
    (campaign id, failures queued again).  A stop request older than `locked_at` (when this
    run took the lock) is forgotten; a newer one stops this run."""
    with ledger.session() as s:
        c = ledger.campaign(s)
        if c.cache_checksum is None:
            c.cache_path = str(cache.path.resolve())
            c.cache_checksum = cache.checksum
            c.model = cache.model
            c.seed = cfg.seed
            c.config = {**cfg.recorded(), **(c.config or {}), "alpha": cfg.alpha}
            rule = (f"Monte Carlo nulls stop at {c.config['sequential_h']} exceedances"
                    if c.config.get("sequential_h") else "every Monte Carlo draw")
            ledger.event(s, c, "started", f"campaign bound to cache {cache.path} "
                         f"({cache.checksum[:12]}), seed {cfg.seed}, {rule}")
            if cfg.holdout_genes is not None:
                from geoscreen.store.split import GeneSplit

                rec = GeneSplit(cfg.seed, cfg.holdout_genes).record(cache.genes.symbols,
                                                                    ~cache.genes.zero)
                c.config = {**c.config, "holdout": rec}
                ledger.event(s, c, "split_registered", (
                    f"gene split registered before any test: {rec['n_holdout']:,} of "
                    f"{rec['n_genes']:,} genes held out for confirmation (fraction "
                    f"{rec['fraction']:g}, seed {rec['seed']}, sha256 "
                    f"{rec['holdout_sha256'][:12]})"), **rec)
        else:
            if c.cache_checksum != cache.checksum:
                raise GeoscreenError(
                    f"belongs to cache {c.cache_path} (checksum {c.cache_checksum[:12]}), not "
                    f"{cache.path} ({cache.checksum[:12]})", path=ledger.label,
                    field="--cache", fix="use the original cache, or a new --ledger file")
            if c.seed != cfg.seed:
                raise GeoscreenError(
                    f"was started with --seed {c.seed}; resuming with --seed {cfg.seed} would "
                    "mix two campaigns", path=ledger.label, field="--seed",
                    fix=f"pass --seed {c.seed} or use a new --ledger file")
            held = (c.config or {}).get("holdout")
            if cfg.holdout_genes is not None and (
                    held is None or float(held["fraction"]) != float(cfg.holdout_genes)):
                raise GeoscreenError(
                    ("was started without a gene split; a split must be registered before the "
                     "screen, not added to it" if held is None else
                     f"registered a held-out fraction of {held['fraction']:g}, not "
                     f"{cfg.holdout_genes:g}"), path=ledger.label, field="--holdout-genes",
                    fix="leave --holdout-genes out to resume, or start a new --ledger file")
            c.config = {**c.config, "iterations": cfg.iterations,
                        "per_iteration": cfg.per_iteration, "brainstormer": cfg.brainstormer}
        # crash recovery: anything left running by a killed process runs again, except Slurm
        # tasks a Slurm driver re-attaches to (they may still be running on the cluster)
        attach = cfg.executor == "slurm"
        n = queue.requeue_running(s, c.id, keep_external="slurm:" if attach else None)
        if n:
            ledger.event(s, c, "resumed", f"{n} hypotheses interrupted mid-run were re-queued")
        if attach:
            k = len(queue.attached(s, c.id, "slurm:"))
            if k:
                ledger.event(s, c, "reattached", f"{k} hypotheses still have Slurm tasks: the "
                             "run polls them instead of submitting them again")
        queue.clear_stop_request(s, c.id, before=locked_at)
        retried = _requeue_transient(ledger, s, c, force=cfg.retry_failed)
        c.status = "running"
        c.status_reason = ""
        held = (c.config or {}).get("holdout")
        cfg.split = {**held, "part": "screen"} if held else None
        # the worker combines layers as the campaign was registered to: the FDR engine then
        # uses the stored p as it is, never recomputing it
        cfg.combine_any = str((c.config or {}).get("combine_any", cfg.combine_any))
        # likewise the stopping rule of its nulls; a campaign registered before the rule
        # existed drew every permutation
        cfg.sequential_h = (c.config or {}).get("sequential_h")
        return c.id, retried


def _requeue_transient(ledger: Ledger, s: Any, c: Campaign, *, force: bool) -> int:
    """Queue failures with a transient reason again; returns how many.

    A failure in an iteration that is still open reruns in that iteration; one in a finished
    iteration (whose FDR step is done) leaves it and joins the queue, so it runs in the next
    iteration like a hand-queued spec.  Seeds depend on the hypothesis hash only, so a rerun
    tests exactly what the first attempt would have.
    """
    open_its = queue.open_iteration_ids(s, c.id)
    again = capped = 0
    for h in queue.failed(s, c.id):
        if not transient_failure(h.error):
            continue
        if (h.attempts or 0) >= MAX_AUTO_ATTEMPTS and not force:
            capped += 1
            continue
        was = h.iteration_index
        if h.iteration_id not in open_its:
            h.iteration_id, h.iteration_index = None, None
        ledger.event(s, c, "retry", f"#{h.id} queued again after {h.attempts or 0} attempt(s) "
                     f"that failed for a transient reason: {h.error[:300]}", was, hypothesis=h.id,
                     attempts=h.attempts or 0, error=h.error[:2000])
        h.status, h.error, h.started_at, h.finished_at = "queued", "", None, None
        h.external_id = None
        again += 1
    if capped:
        ledger.event(s, c, "retry_capped", f"{capped} hypotheses failed for a transient reason "
                     f"{MAX_AUTO_ATTEMPTS} times and stay failed ('campaign run --retry-failed' "
                     "runs them again)")
    return again


def _open_iteration(ledger: Ledger, campaign_id: int, cfg: CampaignConfig,
                    brainstormer: Brainstormer | None, cache: Cache,
                    reporter: Reporter) -> Iteration | None:
    """The unfinished iteration, or a new one with its proposals committed; None when done.

    The brainstormer is asked before anything is written, so a slow LLM call never holds the
    database's write lock (another terminal can `queue add` meanwhile); the iteration, its share
    of the queue and every proposal are then written in one transaction.

    Once the planned iterations are done, hypotheses still in the queue (queued by hand, or
    failures queued again) get extra iterations of their own, without new proposals: a queued
    spec always runs.
    """
    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        assert c is not None
        it = queue.first_open_iteration(s, c.id)
        if it is not None:
            return it
        done = queue.iteration_count(s, c.id)
        queued_ids = queue.unassigned_queued_ids(s, c.id, cfg.per_iteration)
        extra = done >= cfg.iterations
        if extra:
            if not queued_ids:
                return None
            brainstormer = None  # past the plan: the queue only, no new proposals
            reporter.message(f"iteration {done + 1} runs {len(queued_ids)} queued hypotheses "
                             f"beyond the {cfg.iterations} planned iterations")
        if brainstormer is None and not queued_ids:
            return None
        index = done + 1
        room = cfg.per_iteration - len(queued_ids)
        batch = None
        if brainstormer is not None and room > 0:
            state = snapshot(s, c, index, cache={"n_layers": len(cache.layers),
                                                 "layers": cache.layers,
                                                 "n_genes": cache.n_genes, "dim": cache.dim,
                                                 "path": str(cache.path), "split": cfg.split,
                                                 "atlas": atlas_layers(cfg.atlas, cache.layers)},
                             allow_files=tuple(cfg.allow_files))
    if brainstormer is not None and room > 0:
        batch = brainstormer.propose(state, room)
    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        it = Iteration(campaign_id=c.id, index=index, status="proposing",
                       brainstormer=brainstormer.name if brainstormer else "none",
                       note="extra iteration for queued hypotheses" if extra else "")
        s.add(it)
        s.flush()
        if extra:
            ledger.event(s, c, "extended", f"iteration {index} runs {len(queued_ids)} queued "
                         f"hypotheses beyond the {cfg.iterations} planned iterations", index)
        queue.assign(s, queued_ids, it)
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

    from geoscreen.store.query import ledger_ids

    blob = json.dumps(raw, sort_keys=True, default=str)
    s.add(Hypothesis(campaign_id=c.id, iteration_id=it.id, iteration_index=it.index,
                     hash="rejected-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
                     + f"-{it.index}", spec=raw,
                     statement=str(raw.get("statement", ""))[:2000] or "(no statement)",
                     probe=str(raw.get("probe", "?"))[:100], family="?",
                     source=str(raw.get("source", "?"))[:200], status="rejected",
                     error=reason[:4000],
                     # only the ids: a model's raw `parents` (any JSON) stays in `spec`
                     parents=ledger_ids(raw.get("parents"))))


def _finish_iteration(ledger: Ledger, campaign_id: int, it_id: int) -> tuple[int, int]:
    from geoscreen.store import fdr

    with ledger.session() as s:
        c = s.get(Campaign, campaign_id)
        it = s.get(Iteration, it_id)
        assert c is not None and it is not None
        # test order: proposal order within the iteration, fixed once and for all
        last = queue.last_test_order(s, c.id)
        for h in queue.in_iteration(s, it.id, "done"):
            if h.test_order is None:
                last += 1
                h.test_order = last
        fdr.update_campaign(s, c, it)
        it.status = "done"
        it.finished_at = utcnow()
        return (queue.count(s, c.id, significant=True), queue.count(s, c.id, status="done"))


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


def cache_problem(path: str | Path, checksum: str) -> str:
    """What makes the cache at `path` unusable for a run bound to `checksum`; '' if nothing.

    Cheap enough to run after every failed hypothesis: it re-reads the manifest and gene table,
    compares the checksum and maps each layer's header (no data is read or hashed).
    """
    try:
        cache = open_cache(path)
    except GeoscreenError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"{path}: cannot be read ({exc})"
    if cache.checksum != checksum:
        return (f"{cache.path}: its checksum changed ({checksum[:12]} -> "
                f"{cache.checksum[:12]}): the cache was rewritten")
    for name in cache.layers:
        try:
            arr = cache.array(name)
        except GeoscreenError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:
            return f"{cache.path}: layer {name!r} cannot be read ({' '.join(str(exc).split())})"
        if tuple(arr.shape) != (cache.n_genes, cache.dim):
            return (f"{cache.path}: layer {name!r} has shape {tuple(arr.shape)}; the manifest "
                    f"says ({cache.n_genes}, {cache.dim})")
    return ""


class CacheGuard:
    """Checks the campaign's cache again whenever a hypothesis fails.

    If the cache is broken, the failure is the cache's, not the hypothesis's: the hypothesis
    goes back to the queue, `problem` is set and the run stops taking new work.
    """

    def __init__(self, cache: Cache) -> None:
        self.path = cache.path
        self.checksum = cache.checksum
        self.problem = ""
        self.requeued: list[int] = []

    def broken(self) -> bool:
        if not self.problem:
            self.problem = cache_problem(self.path, self.checksum)
        return bool(self.problem)


def ledger_callbacks(ledger: Ledger, reporter: Reporter, guard: CacheGuard | None = None,
                     ) -> tuple[Callable[[Job], None], Callable[[JobResult], None]]:
    """Sandbox callbacks that commit each start and each result to the ledger at once.

    With a `guard`, a failure is first checked against the cache: if the cache is broken the
    hypothesis goes back to the queue instead of failing.
    """

    def on_start(job: Job) -> None:
        with ledger.session() as s:
            h = s.get(Hypothesis, job.hyp_id)
            h.status, h.started_at, h.seed = "running", utcnow(), job.payload["seed"]
            h.attempts = (h.attempts or 0) + 1
            h.external_id = None  # an earlier attempt's Slurm task is not this one
            reporter.hypothesis_started(h.id, h.statement)

    def on_done(res: JobResult) -> None:
        with ledger.session() as s:
            current = s.get(Hypothesis, res.hyp_id).status
        if current != "running":  # recorded already (a duplicate, or another run's task)
            reporter.message(f"#{res.hyp_id}: a late answer for a hypothesis that is "
                             f"{current} was ignored")
            return
        if res.requeue:  # interrupted by our own stop: not a failure, it runs again on resume
            with ledger.session() as s:
                h = s.get(Hypothesis, res.hyp_id)
                h.status, h.started_at, h.external_id = "queued", None, None
                h.attempts = max(0, (h.attempts or 0) - 1)  # our stop is not an attempt
            reporter.message(f"#{res.hyp_id} re-queued: {res.reason}")
            return
        if res.ok:
            ledger.record_result(res.hyp_id, res.outcome)
            comb = res.outcome.combined
            reporter.hypothesis_done(res.hyp_id, "done", comb.p_value,
                                     f"{comb.effect_name}={comb.effect_size:.3g}")
        elif guard is not None and guard.broken():
            with ledger.session() as s:
                h = s.get(Hypothesis, res.hyp_id)
                h.status, h.started_at, h.external_id = "queued", None, None
            guard.requeued.append(res.hyp_id)
            reporter.message(f"#{res.hyp_id} back in the queue: the cache is broken")
        else:
            ledger.record_failure(res.hyp_id, res.reason)
            reporter.hypothesis_done(res.hyp_id, "failed", None, res.reason)

    return on_start, on_done


def shared_null_seed(campaign_seed: int) -> int:
    """The seed of the nulls every hypothesis of a campaign shares on a layer (the spectrum's
    feature-shuffle copies; `geoscreen.probes.null_store`): from the campaign seed alone."""
    return derive_seed(campaign_seed, "<shared nulls>")


def job_for(h: Hypothesis, cache: Cache, cfg: CampaignConfig, seed: int) -> Job:
    return Job(h.id, {
        "spec": h.spec, "cache_path": str(cache.path), "cache_checksum": cache.checksum,
        "seed": derive_seed(seed, h.hash), "plugins": list(cfg.plugins),
        "work_dir": cfg.work_dir, "null_seed": shared_null_seed(seed),
        # what the worker lets the probe read: a model's spec only the allowed folders
        "allowed_files": list(cfg.allow_files) if h.source.startswith("llm:") else None,
        # with a registered gene split the screen sees only its own genes
        "split": cfg.split, "combine_any": cfg.combine_any, "hash": h.hash,
        "sequential_h": cfg.sequential_h})


def run_campaign(cache_path: str | Path, ledger_path: str | Path, cfg: CampaignConfig,
                 reporter: Reporter | None = None,
                 brainstormer: Brainstormer | None | str = "from_config",
                 stop_after: Callable[[int], bool] | None = None) -> RunSummary:
    """Run (or resume) a campaign until its iterations are done, it is stopped, or a budget ends.

    Raises
    ------
    GeoscreenError
        Before anything runs: the cache is unusable, or another live run holds the ledger's run
        lock.  During the run: the cache broke (the hypotheses it interrupted are queued again).
    """
    reporter = reporter or Reporter()
    _import_plugins(cfg.plugins)
    cache = open_cache(cache_path)
    problem = cache_problem(cache.path, cache.checksum)
    if problem:
        raise GeoscreenError(f"cannot be used: {problem}", path=str(cache_path), field="--cache",
                             fix="repair or re-create the cache ('geoscreen cache verify DIR' "
                                 "checks every file); nothing was run")
    ledger = Ledger(ledger_path)
    lease = RunLease(ledger, "campaign run")
    try:
        # SIGTERM / Ctrl-C (and so `campaign stop`) are caught from before the lock is taken,
        # so a stop that arrives while the run starts is a clean stop, not a kill
        with _StopFlag() as flag:
            lease.acquire()
            return _run(ledger, lease, cache, cfg, reporter, brainstormer, stop_after, flag)
    finally:
        lease.release()
        ledger.close()


def _run(ledger: Ledger, lease: RunLease, cache: Cache, cfg: CampaignConfig, reporter: Reporter,
         brainstormer: Brainstormer | None | str,
         stop_after: Callable[[int], bool] | None, flag: _StopFlag) -> RunSummary:
    """`run_campaign`'s loop, run while holding the ledger's run lock."""
    campaign_id, retried = _bind_campaign(ledger, cache, cfg, lease.acquired_at)
    if retried:
        reporter.message(f"{retried} hypotheses that failed for a transient reason (timeout, "
                         "memory, dead worker, changed cache) are queued again")
    if lease.took_over:
        reporter.message(lease.took_over)
        with ledger.session() as s:
            ledger.event(s, s.get(Campaign, campaign_id), "lock_taken_over", lease.took_over)
    guard = CacheGuard(cache)
    if brainstormer == "from_config":
        brainstormer = make_brainstormer(cfg.brainstormer, ledger=ledger,
                                         campaign_id=campaign_id, **cfg.brainstormer_options)
    sandbox = make_sandbox(cfg, ledger, reporter, lease)
    try:
        return _loop(ledger, lease, cache, cfg, reporter, brainstormer, stop_after,
                     campaign_id, guard, sandbox, flag)
    except GeoscreenError as exc:  # e.g. sbatch refused the options: say so in the ledger
        with ledger.session() as s:
            c = s.get(Campaign, campaign_id)
            if c.status == "running":
                c.status, c.status_reason = "stopped", str(exc)[:2000]
                ledger.event(s, c, "stopped", str(exc)[:2000])
        raise
    finally:
        sandbox.close()


def make_sandbox(cfg: CampaignConfig, ledger: Ledger, reporter: Reporter,
                 lease: RunLease | None = None) -> Any:
    """The executor `cfg` names: local worker processes, or Slurm job arrays whose task ids
    are written to the ledger as soon as sbatch accepts them."""
    if cfg.executor == "local":
        return ProcessSandbox(workers=cfg.workers, timeout_s=cfg.timeout_s,
                              memory_mb=cfg.memory_mb, reuse=cfg.reuse_workers)
    from geoscreen.agent.slurm import SlurmSandbox, slurm_options
    from geoscreen.store.netfs import sqlite_file_of, sqlite_on_network_warning

    opts = slurm_options(dict(cfg.slurm))
    warning = sqlite_on_network_warning(ledger.url)
    if warning:  # the driver is the only writer, but readers on other hosts are not safe
        reporter.message(warning)

    def submitted(ids: dict[int, str]) -> None:
        with ledger.session() as s:
            for hyp_id, ext in ids.items():
                s.get(Hypothesis, hyp_id).external_id = ext

    sqlite_file = sqlite_file_of(ledger.url)
    base = sqlite_file.parent if sqlite_file is not None else Path.cwd()
    return SlurmSandbox(options=opts, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb,
                        shared_dir=base / "geoscreen-slurm", on_submitted=submitted,
                        log=reporter.message,
                        lost=(lambda: bool(lease.lost)) if lease is not None else lambda: False)


class _StopRequests:
    """Whether `geoscreen campaign stop` asked this campaign to stop (read at most every
    `every_s` seconds, so a sandbox that asks often does not load the ledger)."""

    def __init__(self, ledger: Ledger, campaign_id: int, every_s: float = 2.0) -> None:
        self.ledger, self.campaign_id, self.every_s = ledger, campaign_id, every_s
        self._next = 0.0
        self.reason = ""

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.reason and now >= self._next:
            self._next = now + self.every_s
            with self.ledger.session() as s:
                self.reason = queue.stop_requested(s, self.campaign_id)
        return bool(self.reason)


def _loop(ledger: Ledger, lease: RunLease, cache: Cache, cfg: CampaignConfig, reporter: Reporter,
          brainstormer: Brainstormer | None | str, stop_after: Callable[[int], bool] | None,
          campaign_id: int, guard: CacheGuard, sandbox: Any, flag: _StopFlag) -> RunSummary:
    """The iterations of `_run`, with its sandbox (whose persistent workers `_run` closes)."""
    t_start = time.monotonic()
    status, reason = "done", "all iterations done"
    requested = _StopRequests(ledger, campaign_id)
    with nullcontext(flag):
        while True:
            if requested():
                flag.stop, flag.reason = True, requested.reason
            if guard.problem:
                status, reason = "stopped", f"the cache is broken: {guard.problem}"
                break
            if lease.lost:
                raise GeoscreenError(f"stopped: {lease.lost}", path=ledger.label,
                                     field="--ledger", fix="this run was frozen longer than the "
                                     "lock allows; let the other run finish")
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
                todo = queue.in_iteration(s, it.id, "queued")
                waiting = len(queue.in_iteration(s, it.id, "pending_approval"))
                adopted = ([h for h in queue.in_iteration(s, it.id, "running")
                            if (h.external_id or "").startswith("slurm:")]
                           if cfg.executor == "slurm" else [])
            approval = (f"iteration {it.index} waits for approval of {waiting} proposals "
                        "('geoscreen queue approve ID')")
            if waiting and not todo and not adopted:
                status, reason = "paused", approval
                break
            reporter.iteration_started(it.index, cfg.iterations, len(todo) + len(adopted))
            jobs = [job_for(h, cache, cfg, cfg.seed) for h in todo]
            for h in adopted:  # a Slurm task of an earlier driver: poll it, do not resubmit
                job = job_for(h, cache, cfg, cfg.seed)
                job.payload["attach"] = h.external_id
                jobs.append(job)

            def stopping() -> bool:
                if requested():
                    flag.stop, flag.reason = True, requested.reason
                return flag.stop or bool(guard.problem) or bool(lease.lost)

            on_start, on_done = ledger_callbacks(ledger, reporter, guard)
            sandbox.run(jobs, on_start, on_done, stopping)
            if flag.stop or guard.problem or lease.lost:
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
        its = queue.iteration_count(s, c.id, done=True)
        counts = queue.status_counts(s, c.id)
        disc = queue.count(s, c.id, significant=True)
    if guard.problem:
        n = len(guard.requeued)
        raise GeoscreenError(
            f"became unusable during the run: {guard.problem}", path=str(cache.path),
            field="--cache", fix=f"repair or restore it, then rerun the same command; the {n} "
                                 f"hypothes{'is' if n == 1 else 'es'} it interrupted "
                                 f"{'is' if n == 1 else 'are'} queued again")
    return RunSummary(status=status, reason=reason, iterations_done=int(its),
                      tested=int(counts.get("done", 0)), discoveries=int(disc),
                      failed=int(counts.get("failed", 0)))
