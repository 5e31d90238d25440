"""Process trees of sandbox workers: die with the parent, and kill a whole tree at once.

Standard library only: the sandbox's warden process imports this before anything else.

Linux gives two tools for keeping a worker's descendants in reach: `PR_SET_PDEATHSIG` (a process
is signalled when its parent dies) and `PR_SET_CHILD_SUBREAPER` (orphaned descendants are
re-parented to the nearest subreaper ancestor instead of init).  A process that calls `setsid()`
leaves its process group but not its place in the parent/child tree, so walking `/proc` from the
subreaper finds every descendant, however it detached itself.  Elsewhere (no `/proc`, no `prctl`)
the helpers fall back to the worker's process group.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_MAX_FREEZE_ROUNDS = 64


def _prctl(option: int, value: int) -> bool:
    """Call Linux `prctl(option, value)`; False where it is unavailable or refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int, parent_pid: int) -> bool:
    """Have the kernel send `sig` to this process when its parent dies.

    Returns False when the parent is already gone (the caller should exit) and True otherwise,
    also where `PR_SET_PDEATHSIG` does not exist (callers keep a `getppid()` watchdog for that).

    Parameters
    ----------
    sig
        Signal delivered on the parent's death.
    parent_pid
        The pid the parent had when it started this process: if `getppid()` already differs,
        the parent died before the request could be registered.
    """
    _prctl(PR_SET_PDEATHSIG, int(sig))
    return os.getppid() == parent_pid


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`); False where unsupported."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _ppid_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process visible in `/proc` (empty without `/proc`)."""
    tree: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return tree
    for name in names:
        if not name.isdigit():
            continue
        ppid = _ppid_of(name)
        if ppid is not None:
            tree.setdefault(ppid, []).append(int(name))
    return tree


def descendants(root: int) -> list[int]:
    """Every live descendant of `root` (not `root` itself), found by walking `/proc`."""
    tree = children_map()
    out: list[int] = []
    todo = list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(root: int, *, include_root: bool = True) -> int:
    """SIGKILL `root`'s whole process tree; return how many processes were signalled.

    Processes are stopped (SIGSTOP) as they are found and the tree is walked again until no new
    process appears, so nothing can fork or re-parent its way out between the walk and the kill;
    then every one of them gets SIGKILL.  The root's process group is killed too, which is all
    that is possible where `/proc` does not exist.

    Parameters
    ----------
    root
        Pid of the tree's root (the sandbox warden).
    include_root
        Also stop and kill `root` (False when the root cleans up its own tree).
    """
    frozen: set[int] = set()
    me = os.getpid()
    try:
        for _ in range(_MAX_FREEZE_ROUNDS):
            found = set(descendants(root)) | ({root} if include_root else set())
            new = found - frozen - {me}
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            frozen |= new
    finally:
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
        if include_root:
            try:
                os.killpg(root, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
    return len(frozen)


def reap_children() -> None:
    """Collect every exited child of this process without blocking (orphans a subreaper got)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
