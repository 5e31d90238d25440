"""`geoscreen campaign run|status` and `geoscreen queue add|list|approve|reject`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from geoscreen.agent.cli.console import ledger_option
from geoscreen.errors import GeoscreenError

campaign_app = typer.Typer(help="Run, resume and watch screening campaigns.",
                           no_args_is_help=True)
queue_app = typer.Typer(help="Hand-written hypotheses and proposals awaiting approval.",
                        no_args_is_help=True)

LEDGER_OPT = ledger_option()


def _safe(text: Any) -> str:
    """Ledger text for the terminal: control characters removed, rich markup escaped."""
    from rich.markup import escape

    from geoscreen.agent.textsafe import terminal_safe

    return escape(terminal_safe(text))


class RichReporter:
    """Live progress: iteration, current hypothesis, discoveries so far."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from geoscreen.agent.cli.console import console

        self.console = console()
        self.quiet = quiet
        self.progress = Progress(TextColumn("[bold]iteration {task.fields[it]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[disc]}"),
                                 TextColumn("{task.description}"), console=self.console,
                                 transient=False, disable=quiet)
        self.task = self.progress.add_task("", total=total, it="-", disc="0 discoveries")

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def iteration_started(self, index: int, total: int, n: int) -> None:
        self.progress.update(self.task, it=f"{index}/{total}")

    def hypothesis_started(self, hyp_id: int, statement: str) -> None:
        self.progress.update(self.task, description=f"#{hyp_id} {_safe(statement[:60])}")

    def hypothesis_done(self, hyp_id: int, status: str, p: float | None, detail: str) -> None:
        if self.quiet:
            return
        if status == "done":
            self.progress.console.print(f"  #{hyp_id} done  p={p:.3g}  {_safe(detail)}")
        else:
            self.progress.console.print(f"  #{hyp_id} [red]failed[/]: {_safe(detail)}")

    def iteration_done(self, index: int, discoveries: int, tested: int) -> None:
        self.progress.update(self.task, advance=1,
                             disc=f"{discoveries} discoveries / {tested} tested")

    def message(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(f"  [dim]{_safe(text)}[/]")


class PlainReporter:
    """Piped or redirected output (``> run.log``): one timestamped plain line per event, with
    the hypothesis and its statement, readable the next morning and easy to grep."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.quiet = quiet
        self.total = total

    def __enter__(self) -> PlainReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _line(self, text: str) -> None:
        from geoscreen.agent.cli.console import stamp
        from geoscreen.agent.textsafe import terminal_safe

        typer.echo(f"{stamp()}  {terminal_safe(text)}")

    def iteration_started(self, index: int, total: int, n: int) -> None:
        if not self.quiet:
            self._line(f"iteration {index}/{total}: {n} hypotheses queued")

    def hypothesis_started(self, hyp_id: int, statement: str) -> None:
        if not self.quiet:
            self._line(f"#{hyp_id} started: {statement[:200]}")

    def hypothesis_done(self, hyp_id: int, status: str, p: float | None, detail: str) -> None:
        if self.quiet:
            return
        if status == "done":
            self._line(f"#{hyp_id} done: p={p:.3g} {detail}")
        else:
            self._line(f"#{hyp_id} FAILED: {detail}")

    def iteration_done(self, index: int, discoveries: int, tested: int) -> None:
        if not self.quiet:
            self._line(f"iteration {index} done: {discoveries} discoveries / {tested} tested")

    def message(self, text: str) -> None:
        if not self.quiet:
            self._line(text)


@campaign_app.command("run")
def run_cmd(
    cache: Path = typer.Option(..., "--cache", help="cache folder"),
    ledger: str = LEDGER_OPT,
    iterations: int = typer.Option(63, "--iterations", min=1),
    per_iteration: int = typer.Option(3, "--per-iteration", min=1),
    brainstormer: str = typer.Option("offline", "--brainstormer", metavar="offline|openai|none",
                                     help="offline | openai | none (run the queue only)"),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", min=1),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds per hypothesis"),
    memory_mb: int = typer.Option(8192, "--memory-mb", help="address-space limit per worker"),
    alpha: float = typer.Option(0.05, "--alpha", help="target FDR"),
    online_procedure: str = typer.Option(
        "lord++", "--online-procedure", metavar="lord++|saffron|lond|batch-bh|e-lond",
        help="the primary online FDR procedure"),
    offline_procedure: str = typer.Option(
        "bh", "--offline-procedure", metavar="bh|by|e-bh",
        help="the procedure that decides the significant flag"),
    combine_any: str = typer.Option("cauchy", "--combine-any", metavar="cauchy|simes",
                                    help="across_layers 'any': cauchy | simes"),
    max_minutes: float = typer.Option(None, "--max-minutes", help="wall-time budget"),
    approve: bool = typer.Option(False, "--approve",
                                 help="proposals wait for 'geoscreen queue approve ID'"),
    plugin: list[str] = typer.Option([], "--plugin", help="extra module registering probes"),
    holdout_genes: float = typer.Option(
        None, "--holdout-genes", help="hold out this fraction of genes (seeded by --seed) "
        "before the screen; 'geoscreen campaign confirm' re-tests the discoveries on them"),
    allow_files: list[Path] = typer.Option(
        [], "--allow-files", help="folder whose files specs proposed by a model may read "
        "with file: (repeatable; by default a model's specs read no files)"),
    atlas: str = typer.Option(None, "--atlas", help="SAE feature atlases of the cache, e.g. "
                              "atlases/scgpt/{layer}: the brainstormers propose atlas hypotheses "
                              "on them (default: atlases/{layer} where it exists)"),
    config: Path = typer.Option(None, "--config", help="campaign config (YAML): LLM settings"),
    model: str = typer.Option(None, "--model", help="LLM model (overrides llm.model)"),
    base_url: str = typer.Option(None, "--base-url",
                                 help="OpenAI-compatible endpoint (overrides llm.base_url)"),
    max_cost_usd: float = typer.Option(None, "--max-cost-usd",
                                       help="stop cleanly once LLM spending reaches this"),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="rerun every hypothesis that failed for a transient reason "
        "(timeout, memory limit, dead worker, changed cache), even after "
        "3 attempts; other failures would recur and stay failed"),
    sequential_stop: int = typer.Option(
        10, "--sequential-stop", metavar="H", help="Besag-Clifford: a layer's Monte Carlo "
        "null stops after H draws as extreme as the observed value (p = H / draws; about 56 "
        "of 1,000 draws on a null layer for H = 10); a layer with p below H / (m + 1) gets "
        "all its draws and the fixed-draw p. 0: every draw on every layer. One-sided tests "
        "of every Monte Carlo probe; never the trend-kept nulls of anchor/centroid "
        "convergence and gene_drift (docs/probes.md). A resumed campaign keeps its own rule"),
    executor: str = typer.Option("local", "--executor", metavar="local|slurm",
                                 help="where hypotheses run: local processes, or Slurm job "
                                 "arrays (one per iteration)"),
    slurm_config: Path = typer.Option(None, "--slurm-config",
                                      help="YAML file of Slurm options (partition, account, "
                                      "time, mem_mb, cpus_per_task, max_concurrent, "
                                      "sbatch_options, shared_dir)"),
    partition: str = typer.Option(None, "--partition", help="Slurm partition"),
    account: str = typer.Option(None, "--account", help="Slurm account"),
    slurm_time: str = typer.Option(None, "--slurm-time",
                                   help="sbatch --time of a task (default: --timeout + 5 min)"),
    cpus_per_task: int = typer.Option(None, "--cpus-per-task", min=1,
                                      help="sbatch --cpus-per-task (and BLAS threads)"),
    max_array_tasks: int = typer.Option(None, "--max-array-tasks", min=1,
                                        help="at most this many array tasks at once"),
    sbatch_option: list[str] = typer.Option([], "--sbatch-option",
                                            help="extra sbatch option, e.g. --qos=short "
                                            "(repeatable)"),
    shared_dir: Path = typer.Option(None, "--shared-dir",
                                    help="folder every node sees (job and result files; "
                                    "default: geoscreen-slurm next to the ledger)"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Run a campaign, or resume it: the same command on the same ledger continues."""
    from geoscreen.agent.campaign import CampaignConfig, run_campaign

    options: dict[str, Any] = {}
    if config is not None:
        from geoscreen.agent.llm.config import load_campaign_config  # type: ignore[import-not-found]

        options = load_campaign_config(config)
    options.update({k: v for k, v in (("model", model), ("base_url", base_url),
                                      ("max_cost_usd", max_cost_usd)) if v is not None})
    cfg = CampaignConfig(iterations=iterations, per_iteration=per_iteration,
                         brainstormer=brainstormer, seed=seed, workers=workers, timeout_s=timeout,
                         memory_mb=memory_mb, alpha=alpha, max_minutes=max_minutes,
                         online_procedure=online_procedure, combine_any=combine_any,
                         offline_procedure=offline_procedure, approve=approve,
                         plugins=list(plugin), brainstormer_options=options,
                         retry_failed=retry_failed, allow_files=[str(p) for p in allow_files],
                         holdout_genes=holdout_genes, atlas=atlas, executor=executor,
                         sequential_h=sequential_stop,
                         slurm=_slurm_settings(executor, slurm_config, {
                             "partition": partition, "account": account, "time": slurm_time,
                             "cpus_per_task": cpus_per_task, "max_concurrent": max_array_tasks,
                             "sbatch_options": list(sbatch_option),
                             "shared_dir": str(shared_dir.resolve()) if shared_dir else None}))
    from geoscreen.agent.cli.console import interactive

    reporter = RichReporter if interactive() else PlainReporter
    with reporter(iterations, quiet=quiet) as rep:
        summary = run_campaign(cache, ledger, cfg, reporter=rep)
    from geoscreen.agent.textsafe import terminal_safe
    from geoscreen.store.ledger import display_target

    typer.echo(f"campaign {summary.status}: {terminal_safe(summary.reason)}. "
               f"{summary.iterations_done} "
               f"iterations, {summary.tested} tested, {summary.failed} failed, "
               f"{summary.discoveries} discoveries "
               f"({ {'by': 'BY', 'e-bh': 'e-BH'}.get(offline_procedure.lower(), 'BH')} "
               f"q <= {alpha}). "
               f"Review: geoscreen ledger list --ledger {display_target(ledger)}")


def _slurm_settings(executor: str, path: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The Slurm options of `campaign run`: the --slurm-config file, the flags on top."""
    given = {k: v for k, v in flags.items() if v not in (None, [])}
    if executor != "slurm":
        if path is not None or given:
            raise GeoscreenError("Slurm options were given without --executor slurm",
                                 field="--executor", fix="add --executor slurm, or leave the "
                                 "Slurm options out")
        return {}
    from geoscreen.agent.slurm import load_slurm_options, slurm_options

    opts = (load_slurm_options(path, **given) if path is not None
            else slurm_options(given, "--executor slurm"))
    return opts.model_dump(exclude_defaults=True)


@campaign_app.command("stop")
def stop_cmd(ledger: str = LEDGER_OPT) -> None:
    """Stop a running campaign: its run finishes what it must, records, and exits; Slurm
    tasks it submitted are cancelled (scancel) and their hypotheses queued again.  With no live
    run (a driver that was killed), the Slurm tasks recorded in the ledger are cancelled here."""
    from geoscreen.agent.stop import stop_campaign

    for line in stop_campaign(ledger):
        typer.echo(line)


@campaign_app.command("status")
def status_cmd(ledger: str = LEDGER_OPT) -> None:
    """Where a campaign stands; safe to run while it is running."""
    from geoscreen.agent.cli.console import console
    from geoscreen.store.query import campaign_status

    st = campaign_status(ledger)
    con = console(highlight=False)
    con.print(f"[bold]{_safe(st['status'])}[/] {_safe(st['reason'])}")
    con.print(f"cache: {_safe(st['cache_path'])} ({(st['cache_checksum'] or '')[:12]}), model "
              f"{_safe(st['model'])}, seed {st['seed']}")
    planned = st["iterations_planned"]
    extra = st["iterations_done"] - (planned or 0)
    con.print(f"iterations: {st['iterations_done']} done of "
              + (f"{planned} planned" if planned else "? (no 'campaign run' yet)")
              + (f" (+{extra} extra for queued hypotheses)" if planned and extra > 0 else "")
              + (f"; iteration {st['current_iteration']} in progress"
                 if st['current_iteration'] else ""))
    con.print("hypotheses: " + ", ".join(f"{k} {v}" for k, v in sorted(st["counts"].items())))
    proc = {"bh": "BH", "by": "BY", "e-bh": "e-BH"}.get(str(st["offline_procedure"]).lower(),
                                                       str(st["offline_procedure"]))
    con.print(f"discoveries ({proc} q <= {st['alpha']}): {st['discoveries']}")
    held = st.get("holdout")
    if held:
        con.print(f"gene split: {held['n_holdout']:,} of {held['n_genes']:,} genes held out "
                  f"before the screen (seed {held['seed']}, fraction {held['fraction']:g}); "
                  "'geoscreen campaign confirm' re-tests the discoveries on them")
    waiting = st["waiting"]
    if waiting:
        ids = ", ".join(f"#{i}" for i in waiting[:10]) + (", ..." if len(waiting) > 10 else "")
        con.print(f"queued, not yet run: {len(waiting)} ({ids}); they run on the next "
                  "'geoscreen campaign run' (in extra iterations if the planned ones are done)")
    if st["retryable"]:
        con.print(f"failed for a transient reason: {st['retryable']} (timeout, memory, dead "
                  "worker, changed cache); the next 'campaign run' retries them (up to 3 "
                  "attempts; --retry-failed for more)")
    if st["running"]:
        con.print("running now: " + "; ".join(f"#{i} {_safe(s[:50])}" for i, s in st["running"]))
    lock = st.get("lock")
    if lock:
        con.print(f"run lock: {_safe(lock)}")


def _queue_check(led: Any, cache_opt: Path | None) -> tuple[Any, str]:
    """(check, note): the queue-time test of each spec against the campaign's cache and ledger.

    The cache is `--cache`, else the one the campaign is bound to (its first `campaign run`);
    without either, layers and axes wait for the run and only references are resolved.
    """
    from geoscreen.errors import GeoscreenError
    from geoscreen.hypotheses.preflight import preflight
    from geoscreen.store import queue
    from geoscreen.store.cache import open_cache

    with led.session() as s:
        try:
            c = led.campaign(s, create=False)  # the one `queue add` fills
        except GeoscreenError:  # none yet: this add creates it
            c = None
        bound = c.cache_path if c is not None else None
        known = queue.hypothesis_ids(s, c.id) if c is not None else set()
    cache, note = None, ""
    if cache_opt is not None:
        cache = open_cache(cache_opt)
        if c is not None and c.cache_checksum and cache.checksum != c.cache_checksum:
            raise GeoscreenError("is not the cache this campaign runs on (checksum differs from "
                                 f"{bound})", path=str(cache_opt), field="--cache",
                                 fix="pass the campaign's cache, or leave --cache out")
    elif bound:
        try:
            cache = open_cache(bound)
        except GeoscreenError as exc:
            note = f"the campaign's cache cannot be opened now ({exc}); layers were not checked"
    else:
        note = ("no cache given and none bound yet: layers and axes are checked when the "
                "campaign runs (pass --cache to check them now)")

    def check(spec: Any) -> str:
        if spec.spec.source.startswith("llm:"):
            return (f"field 'source': {spec.spec.source!r} is reserved for proposals the LLM "
                    "brainstormer records; write source: human (or leave it out)")
        return preflight(spec, cache=cache, known_ids=known)

    return check, note


@queue_app.command("add")
def add_cmd(path: Path = typer.Argument(..., help="spec file or folder (YAML/JSON)"),
            ledger: str = LEDGER_OPT,
            cache: Path = typer.Option(
                None, "--cache", help="check layers, axes and gene coverage against this cache "
                "(default: the cache the campaign is bound to)")) -> None:
    """Validate every spec, then queue all of them (or none, if any is invalid).

    Each spec is checked as far as queue time allows: its parameters against the probe, its
    layers and singular axes against the cache, its gene and pair references resolved (a dry
    run), its parents against the ledger.
    """
    from geoscreen.hypotheses.loader import load_specs
    from geoscreen.store.ledger import Ledger

    state: dict[str, Any] = {}

    def check(spec: Any) -> str:
        if "check" not in state:  # open the ledger only once a spec has parsed
            state["led"] = Ledger(ledger)
            state["check"], state["note"] = _queue_check(state["led"], cache)
        return str(state["check"](spec))

    try:
        specs = load_specs(path, check=check)
    except BaseException:
        if "led" in state:
            state["led"].close()
        raise
    note = state.get("note", "")
    led = state.get("led") or Ledger(ledger)
    try:
        with led.session() as s:
            c = led.campaign(s)
            added, dups = led.add_hypotheses(s, c, specs, status="queued")
            ids = [h.id for h in added]
    finally:
        led.close()
    typer.echo(f"queued {len(ids)} hypotheses" + (f" (#{ids[0]}..#{ids[-1]})" if ids else ""))
    if note:
        typer.echo(f"note: {note}")
    from geoscreen.agent.textsafe import terminal_safe

    for spec, existing in dups:
        typer.echo(f"skipped duplicate of #{existing}: {terminal_safe(spec.spec.statement)}")


@queue_app.command("list")
def queue_list_cmd(ledger: str = LEDGER_OPT) -> None:
    """Hypotheses waiting to run or waiting for approval."""
    from rich.table import Table

    from geoscreen.agent.cli.console import console
    from geoscreen.store.query import list_hypotheses

    rows = list_hypotheses(ledger, statuses=["queued", "pending_approval"])
    t = Table(title=f"{len(rows)} in the queue")
    for col in ("id", "status", "source", "probe", "statement"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r["hypothesis_id"]), r["status"], _safe(r["source"]), _safe(r["probe"]),
                  _safe(r["statement"]))
    console().print(t)


def _set_status(ledger: str, ids: list[int], new: str) -> None:
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Hypothesis

    led = Ledger(ledger, must_exist=True)
    with led.session() as s:
        for i in ids:
            h = s.get(Hypothesis, i)
            if h is None:
                raise GeoscreenError(f"no hypothesis #{i}", path=ledger, field="ID")
            if h.status != "pending_approval":
                raise GeoscreenError(f"#{i} is {h.status}, not waiting for approval",
                                     path=ledger, field="ID")
            h.status = "queued" if new == "approve" else "rejected"
            if new == "reject":
                h.error = "rejected by a reviewer"
    typer.echo(f"{new}d {', '.join(f'#{i}' for i in ids)}")


@queue_app.command("approve")
def approve_cmd(ids: list[int] = typer.Argument(..., help="hypothesis ids"),
                ledger: str = LEDGER_OPT) -> None:
    """Let proposals waiting for approval run."""
    _set_status(ledger, ids, "approve")


@queue_app.command("reject")
def reject_cmd(ids: list[int] = typer.Argument(..., help="hypothesis ids"),
               ledger: str = LEDGER_OPT) -> None:
    """Refuse proposals waiting for approval (recorded as rejected by a reviewer)."""
    _set_status(ledger, ids, "reject")


def worker_cmd(job: Path = typer.Argument(..., help="job file (JSON) written by the driver"),
               result: Path = typer.Option(..., "--result", help="where to write the result "
                                           "(JSON; written atomically)")) -> None:
    """Run one hypothesis from a job file, as a Slurm array task does (to rerun a task by
    hand: the job files are in the array's folder under the shared directory)."""
    from geoscreen.agent.filetask import run_file_task

    if not job.is_file():
        raise GeoscreenError("does not exist", path=str(job), field="JOB",
                             fix="give a job-N.json file from a geoscreen-slurm array folder")
    try:
        run_file_task(str(job), str(result))
    except (ValueError, RecursionError, SystemExit) as exc:
        raise GeoscreenError(f"is not a job file ({' '.join(str(exc).split())[:200]})",
                             path=str(job), field="JOB",
                             fix="give a job-N.json file written by the driver") from None
    except OSError as exc:
        raise GeoscreenError(f"cannot be read or answered ({exc.strerror})",
                             path=str(exc.filename or job), field="--result",
                             fix="give a readable job file and a writable --result folder"
                             ) from None


def register(app: typer.Typer) -> None:
    app.add_typer(campaign_app, name="campaign")
    app.add_typer(queue_app, name="queue")
    app.command("worker")(worker_cmd)
