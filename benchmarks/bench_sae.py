"""SAE training throughput and peak memory: our trainer next to the re-typed reference.

    python benchmarks/bench_sae.py [--positions 200000] [--d-in 512] [--expansion 4] [--k 32]
                                   [--batch-size 4096] [--epochs 1]

Both sides train a TopK SAE (dictionary = expansion x d_in, k active) on the same activations:
Gaussian-mixture rows standing in for one layer's residual stream (speed does not depend on
the values).  **Ours** (`extract.sae.train`) streams from memory-mapped shards on disk, computes
the AuxK loss and dead-feature counters, projects decoder gradients and checkpoints (every
200 steps); **reference** (`extract.sae_reference.reference_train`) holds all rows in RAM and
does none of that.  Each side runs in its own process, so peak resident memory (ru_maxrss) is
its own; positions/s = positions x epochs / training seconds (process start and data loading
excluded).  Printed side by side with the ratio, CPU here, and on a GPU when one is present.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(path: Path, n: int, d: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)).astype(np.float32)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 50_000):
        m = min(50_000, n - s)
        arr[s: s + m] = centres[rng.integers(0, 64, m)] + rng.normal(size=(m, d)).astype(
            np.float32)
    arr.flush()


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    X = np.load(args.data, mmap_mode="r")
    d = X.shape[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    if args.side == "ours":
        from geoscreen.extract.sae import ArraySource, SAEConfig, train

        shards = [X[s: s + 100_000] for s in range(0, X.shape[0], 100_000)]
        cfg = SAEConfig(d_in=d, d_sae=args.expansion * d, k=args.k, batch_size=args.batch_size,
                        epochs=args.epochs, seed=0)
        train(ArraySource(shards), cfg, Path(args.out), device=device, progress=False)
    else:
        from geoscreen.extract.sae_reference import reference_train

        reference_train(np.asarray(X), args.expansion * d, args.k, batch_size=args.batch_size,
                        epochs=args.epochs)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": int(X.shape[0]), "device": device,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=200_000)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_sae.") as tmp:
        data = Path(tmp) / "acts.npy"
        make_data(data, args.positions, args.d_in)
        common = ["--d-in", str(args.d_in), "--expansion", str(args.expansion), "--k",
                  str(args.k), "--batch-size", str(args.batch_size), "--epochs",
                  str(args.epochs), "--data", str(data)]
        res = {}
        for side in ("reference", "ours"):
            out = subprocess.run([sys.executable, __file__, "--side", side, "--out",
                                  str(Path(tmp) / side), *common], capture_output=True,
                                 text=True, check=True)
            res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        data_mb = args.positions * args.d_in * 4 / 2**20
        print(f"TopK SAE: {args.positions:,} positions x {args.d_in}-d ({data_mb:.0f} MB), "
              f"{args.expansion * args.d_in:,} features, k={args.k}, batch {args.batch_size}, "
              f"{args.epochs} epoch(s), device {res['ours']['device']}")
        print(f"{'side':>10} {'seconds':>8} {'positions/s':>12} {'peak RSS MB':>12}")
        for side in ("reference", "ours"):
            r = res[side]
            rate = r["rows"] * args.epochs / r["seconds"]
            print(f"{side:>10} {r['seconds']:8.1f} {rate:12,.0f} {r['peak_rss_mb']:12,.0f}")
        ratio = (res["reference"]["seconds"] / res["ours"]["seconds"])
        print(f"ratio ours/reference positions/s: {ratio:.2f}; ours adds AuxK, dead-feature "
              "counters, decoder-gradient projection, checkpoints, and reads from disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
