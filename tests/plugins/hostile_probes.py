"""Test-only probes that attack the sandbox on purpose (issue 12, items 1, 3, 6, 7).

Loaded as a campaign plug-in (`--plugin hostile_probes`), exactly as a user's module would be.
None of them has examples, so no brainstormer ever proposes them.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.result import LayerResult

_FLAGS = dict(family="null_sensitivity", nulls=("toy",), version="0", statistic="none",
              effect="none")


class ReplyParams(ProbeParams):
    mode: str
    marker: str = ""


class PidParams(ProbeParams):
    pid_file: str
    seconds: float = Field(3600.0, ge=0)
    grandchild: bool = True
    release: str = ""  # once this file exists the probe returns a result instead of hanging


class PoisonParams(ProbeParams):
    store: str


class _Exploit:
    """Unpickling this creates `marker`: proof that the campaign ran the worker's code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def reply_fds() -> list[int]:
    """Write-only pipes this process holds above stderr: the sandbox's reply channel."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = open(f"/proc/self/fdinfo/{fd}").read().split("flags:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if target.startswith("pipe:") and int(flags, 8) & os.O_ACCMODE == os.O_WRONLY:
            out.append(fd)
    return out


def _frame(body: bytes, size: int | None = None) -> bytes:
    return struct.pack(">Q", len(body) if size is None else size) + body


def _payload(mode: str, marker: str) -> tuple[bytes, bool]:
    """(bytes to write, whether to hang afterwards instead of exiting)."""
    exploit = pickle.dumps(_Exploit(marker))
    table = {
        "pickle": (struct.pack("!i", len(exploit)) + exploit, False),
        "garbage": (b"\xff\x00garbage" * 40, False),
        "non_dict": (_frame(b"[1, 2, 3]"), False),
        "deep": (_frame(b"[" * 200_000 + b"]" * 200_000), False),
        "truncated_exit": (_frame(b'{"ok": fal', size=1000), False),
        "truncated_hang": (_frame(b'{"ok": fal', size=1000), True),
        "huge": (_frame(b"", size=1 << 40), True),
    }
    return table[mode]


@probe("hostile_reply", params=ReplyParams, **_FLAGS)
def hostile_reply(ctx, p, layer):
    """Writes a forged reply of the given kind to the reply channel, then exits or hangs."""
    data, hang = _payload(p.mode, p.marker)
    for fd in reply_fds():
        os.write(fd, data)
    if hang:
        time.sleep(3600)
    os._exit(0)


@probe("hostile_pids", params=PidParams, **_FLAGS)
def hostile_pids(ctx, p, layer):
    """Records its pid (and a `setsid` grandchild's), then hangs until `release` exists."""
    pids = [os.getpid(), os.getppid()]
    if p.grandchild:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pids.append(child.pid)
    Path(p.pid_file).write_text(" ".join(map(str, pids)) + "\n")
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline and not (p.release and Path(p.release).exists()):
        time.sleep(0.05)
    return LayerResult(layer=layer, layer_index=0, statistic_name="x", statistic=1.0,
                       effect_name="x", effect_size=0.0, p_value=0.5)


@probe("hostile_poison_svd", params=PoisonParams, **_FLAGS)
def hostile_poison_svd(ctx, p, layer):
    """Computes this layer's SVD, then overwrites every stored SVD with a wrong one."""
    ctx.svd(layer)
    for path in sorted(Path(p.store).rglob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["U"] = -np.roll(arrays["U"], 1, axis=0)  # other genes' coordinates, flipped
        arrays["Vt"] = -arrays["Vt"]
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return LayerResult(layer=layer, layer_index=0, statistic_name="x", statistic=1.0,
                       effect_name="x", effect_size=0.0, p_value=0.5)
