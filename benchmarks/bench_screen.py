"""The paper-scale screen: the offline brainstormer's 63 x 3 campaign, and the engine before.

    python benchmarks/bench_screen.py [--iterations 63] [--per-iteration 3] [--workers 2]
                                      [--sample 8] [--sequential H] [--fixed-too] [--rotate]
                                      [--warm-mb MB]

Builds a 12 x 4,803 x 512 float32 cache over real gene symbols (so GO, STRING, TRRUST and
Reactome references resolve), runs the offline brainstormer's campaign on it with `--workers`
persistent workers and layer tasks (the current engine), and prints its wall time and CPU
seconds (this process and every worker).  Then, in the same run, it takes every `--sample`-th
iteration's hypotheses from that ledger and runs them again, iteration by iteration, through the
engine before persistent workers and layer tasks (`ProcessSandbox(reuse=False, split=False)`:
a new interpreter per hypothesis, whole hypotheses) and through the current one, alternating,
and prints both and their ratio.  The load average is printed beside the figures (the machine
may be shared: compare the ratio, not the seconds).

The campaign stops each null at the campaign's default of 10 exceedances (`--sequential H`; 0
draws every permutation).  `--fixed-too` runs the same campaign again on the same cache with
every draw, prints both and their ratio, and compares the two ledgers hypothesis by hypothesis:
the discoveries (online decision and offline BH), and the p-values below 10 / (m + 1), which a
stopping rule leaves as they are.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import _gene_symbols  # noqa: E402  (same folder)


def cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sample_iterations(ledger: Path, cache, every: int, sequential_h: int) -> list[list]:
    """Every `every`-th iteration's hypotheses as the campaign sent them (jobs), with its
    stopping rule."""
    from sqlalchemy import select

    from geoscreen.agent.campaign import CampaignConfig, job_for
    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Hypothesis

    led = Ledger(ledger)
    cfg = CampaignConfig(sequential_h=sequential_h)
    try:
        with led.session() as s:
            hyps = s.scalars(select(Hypothesis).where(Hypothesis.status == "done")
                             .order_by(Hypothesis.id)).all()
            by_it: dict[int, list] = {}
            for h in hyps:
                by_it.setdefault(h.iteration_index or 0, []).append(job_for(h, cache, cfg, 0))
    finally:
        led.close()
    return [jobs for it, jobs in sorted(by_it.items()) if it % every == 1 or every == 1]


def print_breakdown(ledger: Path, wall: float | None = None, workers: int = 2) -> None:
    """Worker seconds per probe and null (the sum of the ledger's per-layer run times), and,
    given the campaign's wall time, the worker time spent on none of them."""
    from sqlalchemy import select

    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Hypothesis
    from geoscreen.store.models import LayerResultRow as LayerResult

    led = Ledger(ledger)
    rows: dict[tuple[str, str], list[float]] = {}
    try:
        with led.session() as s:
            q = select(Hypothesis.id, Hypothesis.probe, LayerResult.null, LayerResult.runtime_s
                       ).join(LayerResult, LayerResult.hypothesis_id == Hypothesis.id)
            for hid, probe, null, rt in s.execute(q):
                r = rows.setdefault((probe, null or "-"), [0.0, 0, set()])
                r[0] += rt or 0.0
                r[1] += 1
                r[2].add(hid)
    finally:
        led.close()
    total = sum(r[0] for r in rows.values()) or 1.0
    print(f"\nworker seconds by probe and null (sum of per-layer run times, {total:.0f} s):")
    print(f"{'probe':<26} {'null':<32} {'hyps':>5} {'layers':>7} {'s':>8} {'s/layer':>8} "
          f"{'share':>6}")
    for (probe, null), (sec, n, hids) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"{probe:<26} {null:<32} {len(hids):>5} {n:>7} {sec:>8.1f} {sec / n:>8.2f} "
              f"{sec / total:>6.1%}")
    if wall is not None:
        idle = workers * wall - total
        print(f"worker time outside probes: {idle:.0f} s of {workers} x {wall:.0f} s "
              f"({idle / (workers * wall):.0%}: proposing, checking and recording between "
              "iterations, each iteration's tail, sandbox start-up, loading layers)")


def campaign(cache, ledger: Path, args, sequential_h: int) -> tuple[float, float]:
    """Run the offline campaign into `ledger`; print and return (wall s, CPU-s)."""
    from geoscreen.agent.campaign import CampaignConfig, run_campaign

    c0, t0 = cpu_s(), time.perf_counter()
    summary = run_campaign(cache.path, ledger, CampaignConfig(
        iterations=args.iterations, per_iteration=args.per_iteration,
        brainstormer="offline", seed=0, workers=args.workers, sequential_h=sequential_h))
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = summary.tested + summary.failed
    rule = f"sequential stop h={sequential_h}" if sequential_h else "every draw"
    print(f"campaign {args.iterations} x {args.per_iteration}, {rule}: {n} hypotheses "
          f"({summary.tested} done, {summary.failed} failed), {wall:.0f} s wall "
          f"({wall / 60:.1f} min), {cpu:.0f} CPU-s; load average after: {load()}", flush=True)
    return wall, cpu


def outcomes(ledger: Path) -> tuple[dict[str, tuple[bool, bool]], dict[tuple, float]]:
    """({hypothesis hash: (online decision, offline BH significance)}, {(hash, layer, null,
    test key): layer p}) of a finished ledger."""
    from sqlalchemy import select

    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Hypothesis
    from geoscreen.store.models import LayerResultRow as LayerResult

    led = Ledger(ledger)
    try:
        with led.session() as s:
            hyps = {h: (bool(d), bool(sig)) for h, d, sig in s.execute(select(
                Hypothesis.hash, Hypothesis.online_decision, Hypothesis.significant
            ).where(Hypothesis.status == "done"))}
            layers: dict[tuple, float] = {}
            seen: dict[tuple, int] = {}  # a hypothesis may test a layer more than once
            for h, layer, null, p in s.execute(select(
                    Hypothesis.hash, LayerResult.layer, LayerResult.null, LayerResult.p_value
            ).join(LayerResult, LayerResult.hypothesis_id == Hypothesis.id)
                    .where(Hypothesis.status == "done").order_by(LayerResult.id)):
                key = (h, layer, null)
                seen[key] = seen.get(key, -1) + 1
                if p is not None:
                    layers[key + (seen[key],)] = p
            return hyps, layers
    finally:
        led.close()


def compare_ledgers(fixed: Path, stopped: Path, h: int, m: int = 1000) -> None:
    """Print how the campaign that stops its nulls differs from the one that draws them all:
    the discoveries either way, and the layers whose fixed-draw p is below h / (m + 1) (they
    never stop, so their p must be the same)."""
    (a, pa), (b, pb) = outcomes(fixed), outcomes(stopped)
    common = sorted(set(a) & set(b))
    online = sum(a[k][0] != b[k][0] for k in common)
    offline = sum(a[k][1] != b[k][1] for k in common)
    low = [k for k in pa if pa[k] < h / (m + 1) and k[0] in b]
    moved = sum(k not in pb or abs(pa[k] - pb[k]) > 1e-12 for k in low)
    print(f"ledgers compared: {len(common)} hypotheses in both ({len(a)} fixed, {len(b)} "
          f"stopped); online discoveries {sum(a[k][0] for k in common)} / "
          f"{sum(b[k][0] for k in common)}, offline BH {sum(a[k][1] for k in common)} / "
          f"{sum(b[k][1] for k in common)} (every draw / stopped); decisions that differ: "
          f"online {online}, offline {offline}; layer p-values below {h}/{m + 1} with every "
          f"draw: {len(low)}, of which different when stopped: {moved}", flush=True)


def run_engine(groups: list[list], *, reuse: bool, split: bool, workers: int) -> tuple[float,
                                                                                     float]:
    from geoscreen.agent.executor import ProcessSandbox

    c0, t0 = cpu_s(), time.perf_counter()
    failed = []
    with ProcessSandbox(workers=workers, timeout_s=1800, reuse=reuse, split=split) as box:
        for jobs in groups:
            box.run(jobs, lambda j: None, lambda r: failed.append(r) if not r.ok else None,
                    lambda: False)
    assert not failed, [r.reason for r in failed]
    return time.perf_counter() - t0, cpu_s() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=63)
    ap.add_argument("--per-iteration", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=8, help="every N-th iteration is re-run "
                    "through both engines")
    ap.add_argument("--genes", type=int, default=4803)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sequential", type=int, default=10, metavar="H",
                    help="run the campaign with --sequential-stop H (Besag-Clifford; the "
                         "campaign default, 10; 0: every draw)")
    ap.add_argument("--fixed-too", action="store_true",
                    help="run the campaign again with every draw (--sequential-stop 0), side "
                         "by side, and compare the two ledgers' discoveries")
    ap.add_argument("--rotate", action="store_true",
                    help="rotate every layer by one random orthogonal matrix: the same "
                         "singular values and left singular vectors (so the same result for "
                         "every SVD-based probe), but correlated dimensions, as in real layers, "
                         "instead of independent ones, for which a feature shuffle's null "
                         "holds exactly and every copy must be drawn")
    ap.add_argument("--warm-mb", type=int, default=None, metavar="MB",
                    help="GEOSCREEN_WARM_MB for the workers: what a warden may load ahead "
                         "(0: nothing, each worker reads the SVD store and the indexes itself)")
    args = ap.parse_args()
    if args.warm_mb is not None:
        os.environ["GEOSCREEN_WARM_MB"] = str(args.warm_mb)  # the wardens inherit it
    from geoscreen.store.cache import write_cache

    with tempfile.TemporaryDirectory(prefix="bench-screen-") as d:
        root = Path(d)
        os.environ["GEOSCREEN_WORK_DIR"] = str(root / "work")
        rng = np.random.default_rng(1)
        scale = np.linspace(3.0, 0.05, args.dim).astype(np.float32)  # a decaying spectrum
        layers = {f"L{i}": rng.standard_normal((args.genes, args.dim), dtype=np.float32)
                  * scale for i in range(12)}
        if args.rotate:
            R, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((args.dim, args.dim)))
            layers = {name: (X @ R.astype(np.float32)) for name, X in layers.items()}
        cache = write_cache(root / "cache", layers, _gene_symbols(args.genes), model="bench",
                            synthetic=True)
        warm = os.environ.get("GEOSCREEN_WARM_MB", "default")
        print(f"cache 12 x {args.genes:,} x {args.dim}"
              f"{' (rotated: correlated dimensions)' if args.rotate else ''}; "
              f"{args.workers} workers; loading ahead "
              f"GEOSCREEN_WARM_MB={warm}; load average before: {load()}", flush=True)
        ledger = root / "screen.sqlite"
        wall, cpu = campaign(cache, ledger, args, args.sequential)
        if args.fixed_too and args.sequential:
            fixed = root / "fixed.sqlite"
            fwall, fcpu = campaign(cache, fixed, args, 0)
            print(f"every draw / stopping at {args.sequential}: wall {fwall / wall:.2f}x, CPU "
                  f"{fcpu / cpu:.2f}x", flush=True)
            compare_ledgers(fixed, ledger, args.sequential)
        print_breakdown(ledger, wall, args.workers)
        groups = sample_iterations(ledger, cache, args.sample, args.sequential)
        k = sum(len(g) for g in groups)
        print(f"\nthe same hypotheses, every {args.sample}th iteration ({len(groups)} iterations,"
              f" {k} hypotheses), through both engines:", flush=True)
        old = run_engine(groups, reuse=False, split=False, workers=args.workers)
        new = run_engine(groups, reuse=True, split=True, workers=args.workers)
        print(f"{'engine':<58} {'wall s':>8} {'CPU-s':>8}")
        print(f"{'before: new interpreter per hypothesis, whole hypotheses':<58} "
              f"{old[0]:>8.1f} {old[1]:>8.1f}")
        print(f"{'now: persistent workers, layer tasks':<58} {new[0]:>8.1f} {new[1]:>8.1f}")
        print(f"ratio (before / now): wall {old[0] / new[0]:.2f}x, CPU {old[1] / new[1]:.2f}x; "
              f"load average: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
