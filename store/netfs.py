"""Which filesystem holds a SQLite ledger, and a warning when it is a network filesystem.

SQLite's locking (POSIX advisory locks, and the shared memory of WAL mode) is unreliable on NFS,
SMB, Lustre, GPFS, BeeGFS, CephFS and the like: several processes on several hosts writing one
SQLite file there can corrupt it.  A campaign driving workers across a cluster should keep its
ledger on a database server instead (``--ledger postgresql://...``).  Linux only: elsewhere the
filesystem is reported as unknown (None) and nothing is warned about.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# filesystem types (as /proc/self/mountinfo names them) whose locking SQLite cannot rely on
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs", "beegfs",
    "fhgfs", "ceph", "glusterfs", "orangefs", "pvfs2", "panfs", "wekafs", "davfs", "coda",
})
# FUSE filesystems ("fuse.<name>") that reach storage over the network
NETWORK_FUSE = frozenset({
    "sshfs", "ceph-fuse", "glusterfs", "s3fs", "rclone", "juicefs", "gcsfuse", "goofys",
    "davfs", "beegfs", "lustre", "cvmfs", "blobfuse", "blobfuse2",
})


def _unescape(field: str) -> str:
    """A mountinfo path field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of a ``/proc/self/mountinfo`` text.

    Also reads the ``/proc/mounts`` format (``source mountpoint fstype options 0 0``).
    Malformed lines are skipped.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " in line:  # mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE
            head, _, tail = line.partition(" - ")
            before, after = head.split(), tail.split()
            if len(before) >= 5 and after:
                mounts.append((_unescape(before[4]), after[0]))
        elif len(fields) >= 3 and fields[1].startswith("/"):  # /proc/mounts
            mounts.append((_unescape(fields[1]), fields[2]))
    return mounts


def fstype_of(path: str | os.PathLike, mountinfo: str) -> str | None:
    """The filesystem type of the mount holding `path` (absolute), per a mountinfo text.

    The longest mount point that contains `path` wins; the last of equal ones (a mount over
    another at the same point hides it).  None when no line matches.
    """
    p = Path(path).as_posix()
    best: tuple[int, str] | None = None
    for point, fstype in parse_mountinfo(mountinfo):
        point = point.rstrip("/") or "/"
        inside = point == "/" or p == point or p.startswith(point + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best else None


def is_network_fstype(fstype: str) -> bool:
    """Whether a filesystem type names a network (or cluster) filesystem."""
    t = fstype.lower()
    if t.startswith("fuse."):
        return t[len("fuse."):] in NETWORK_FUSE
    return t in NETWORK_FS_TYPES or t.startswith("nfs")


def _mount_table() -> str | None:
    for name in ("/proc/self/mountinfo", "/proc/mounts"):
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as fh:
                return fh.read()
        except OSError:
            continue
    return None


def network_filesystem(path: str | os.PathLike, mountinfo: str | None = None) -> str | None:
    """The network filesystem type (``nfs4``, ``lustre``, ...) holding `path`, else None.

    Parameters
    ----------
    path
        A file or folder; it need not exist yet (a ledger about to be created).  Symbolic
        links are resolved, as far as the path exists, when reading this machine's table.
    mountinfo
        A ``/proc/self/mountinfo`` text, `path` then taken as written (absolute); by default
        this process's (None where there is none, as on macOS or Windows).

    Returns
    -------
    str or None
        The filesystem type when it is a network filesystem; None for a local one or when
        unknown.
    """
    text = _mount_table() if mountinfo is None else mountinfo
    if not text:
        return None
    p = Path(path).expanduser()
    p = p.resolve() if mountinfo is None else Path(os.path.abspath(p))
    fstype = fstype_of(p, text)
    return fstype if fstype is not None and is_network_fstype(fstype) else None


def sqlite_file_of(target: str | os.PathLike) -> Path | None:
    """The file behind a SQLite ledger target (a path or ``sqlite:///`` URL), else None."""
    s = str(target)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///"):]
    elif "://" in s or s.startswith(":memory:") or not s:
        return None
    return Path(s).expanduser()


def sqlite_on_network_warning(target: str | os.PathLike, mountinfo: str | None = None) -> str:
    """One line to print when a SQLite ledger lies on a network filesystem, else "".

    For a campaign that drives workers on a cluster: several hosts writing one SQLite file on
    NFS (or Lustre, GPFS, ...) can corrupt it.  A database URL gets "" (nothing to warn).
    The line names the file (also for a ``sqlite:///`` URL) and starts with ``warning:``.
    """
    path = sqlite_file_of(target)
    fstype = network_filesystem(path, mountinfo) if path is not None else None
    if fstype is None:
        return ""
    return (f"warning: {path}: SQLite on {fstype} is unsupported for cluster drivers: its "
            "locking is unreliable there; use --ledger postgresql://user@host/dbname (pip "
            "install 'geoscreen[team]'; 'geoscreen ledger copy' moves this ledger there)")
