"""Test-only probes that misbehave on purpose, and a slow one with literal-gene examples.

Loaded by tests as a campaign plug-in (`--plugin toy_probes`), exactly as a user's module would.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.separation import AxisSeparationParams, axis_separation
from geoscreen.result import LayerResult


class NoParams(ProbeParams):
    size_mb: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)


@probe("toy_raise", family="null_sensitivity", params=NoParams, nulls=("toy",), version="0",
       statistic="none", effect="none")
def toy_raise(ctx, p, layer):
    """Always raises."""
    raise RuntimeError("probe exploded on purpose")


@probe("toy_hang", family="null_sensitivity", params=NoParams, nulls=("toy",), version="0",
       statistic="none", effect="none")
def toy_hang(ctx, p, layer):
    """Sleeps far longer than any timeout."""
    time.sleep(p.seconds or 3600)
    raise AssertionError("unreachable")


@probe("toy_memory", family="null_sensitivity", params=NoParams, nulls=("toy",), version="0",
       statistic="none", effect="none")
def toy_memory(ctx, p, layer):
    """Allocates more than the worker's address-space limit (or a scheduler's memory limit)
    and holds it for `seconds` (default 5) before returning: a scheduler that samples a task's
    memory once a second (Slurm's jobacct_gather with OverMemoryKill, as CI configures it) must
    see the allocation before the task ends, whatever the machine's speed."""
    blob = np.ones(p.size_mb * 1024 * 1024 // 8)
    time.sleep(p.seconds or 5.0)
    return LayerResult(layer=layer, layer_index=0, statistic_name="x", statistic=float(blob[0]),
                       effect_name="x", effect_size=0.0, p_value=0.5)


PLANTED = ",".join(f"G{i}" for i in range(40))


class SlowAxisParams(AxisSeparationParams):
    delay: float = Field(0.3, ge=0)


@probe("toy_slow_axis", family="module_structure", params=SlowAxisParams,
       nulls=("mann_whitney", "label_shuffle"), version="0", statistic="AUROC", effect="AUROC",
       alternatives=("two-sided", "greater", "less"),
       examples=[{"statement": "axis 1 separates the planted genes",
                  "params": {"axis": 1, "positive": f"genes:{PLANTED}"}},
                 {"statement": "axis 2 separates the planted genes (label shuffle)",
                  "params": {"axis": 2, "positive": f"genes:{PLANTED}", "test": "label_shuffle",
                             "n_permutations": 199}}])
def toy_slow_axis(ctx, p, layer):
    """axis_separation with a delay, so a test can catch a campaign mid-iteration."""
    time.sleep(p.delay)
    base = AxisSeparationParams(**{k: v for k, v in p.model_dump().items() if k != "delay"})
    return axis_separation(ctx, base, layer)


@probe("toy_pid", family="null_sensitivity", params=NoParams, nulls=("toy",), version="0",
       statistic="none", effect="none")
def toy_pid(ctx, p, layer):
    """Reports the process it ran in and that process's parent (the warden), and leaves a
    mark in this process's modules to show the next job does not inherit it."""
    import os
    import sys

    leaked = hasattr(sys, "_geoscreen_toy_mark")
    sys._geoscreen_toy_mark = True  # type: ignore[attr-defined]
    return LayerResult(layer=layer, layer_index=0, statistic_name="x", statistic=0.0,
                       effect_name="x", effect_size=0.0, p_value=0.5,
                       extra={"pid": os.getpid(), "ppid": os.getppid(), "leaked": leaked})
