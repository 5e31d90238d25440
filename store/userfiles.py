"""Reading files a spec names (``file:PATH``): regular files only, size-capped, under a policy.

A spec may point a probe at a gene list, a pair table or a co-expression matrix on disk.  Such a
path is untrusted when the spec came from a language model, and even a human's path may name a
FIFO (blocks for ever), a device (`/dev/zero` never ends) or a kernel pseudo-file under `/proc`
(reports size 0, then returns secrets such as the environment).  Every read goes through here:

* the file is opened with ``O_NONBLOCK`` and checked on the open descriptor: a regular file, not
  under ``/proc``, ``/sys`` or ``/dev`` (after resolving symbolic links), at most `max_bytes`;
* a *file policy* set by the worker for the spec being run says which folders may be read:
  ``None`` (human specs: any regular file) or a tuple of folders (specs proposed by a model:
  only files inside the folders the user allowed with ``--allow-files``, none by default);
* errors name the path and what is wrong with it, never the file's content (a model sees the
  error messages of its earlier proposals).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from geoscreen.errors import GeoscreenError

MAX_DATA_FILE_BYTES = 512 << 20  # a gene list, pair table or text matrix (STRING's is ~80 MB)
MAX_MAPPED_BYTES = 64 << 30  # a memory-mapped matrix (.npy) is not read whole
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
ALLOW_FIX = ("a spec proposed by a model may read files only inside folders the user allows "
             "(geoscreen campaign run --allow-files DIR)")

# None: no restriction (human and offline specs); a tuple: the only folders that may be read
_allowed: ContextVar[tuple[Path, ...] | None] = ContextVar("geoscreen_allowed_files",
                                                           default=None)


def allowed_roots(folders: list[str] | tuple[str, ...] | None) -> tuple[Path, ...] | None:
    """Folders as resolved absolute paths (None stays None: no restriction)."""
    if folders is None:
        return None
    return tuple(Path(f).expanduser().resolve() for f in folders)


@contextmanager
def file_policy(folders: list[str] | tuple[str, ...] | None) -> Iterator[None]:
    """Within the block, files may be read only inside `folders` (None: anywhere)."""
    token = _allowed.set(allowed_roots(folders))
    try:
        yield
    finally:
        _allowed.reset(token)


def is_allowed(path: str | os.PathLike[str],
               folders: tuple[Path, ...] | None) -> bool:
    """Whether `path` (symbolic links resolved) lies inside one of `folders`."""
    if folders is None:
        return True
    real = Path(path).expanduser().resolve()
    return any(real == f or f in real.parents for f in folders)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_path(p: str, field: str | None) -> None:
    real = os.path.realpath(os.path.expanduser(p))
    for root in PSEUDO_ROOTS:
        if real == root or real.startswith(root + os.sep):
            raise GeoscreenError(f"is under {root} (a kernel pseudo-file or device), not a "
                                 "regular data file", path=p, field=field,
                                 fix="copy the data into a regular file")
    if not is_allowed(real, _allowed.get()):
        raise GeoscreenError("is outside the folders this spec may read", path=p, field=field,
                             fix=ALLOW_FIX)


def _check_stat(st: os.stat_result, p: str, field: str | None, what: str, max_bytes: int,
                fix: str) -> None:
    """A regular file of at most `max_bytes`, else the one-line error saying what it is."""
    if not stat.S_ISREG(st.st_mode):
        raise GeoscreenError(f"is {_kind(st.st_mode)}, not a regular {what}", path=p,
                             field=field, fix="give a regular file")
    if st.st_size > max_bytes:
        raise GeoscreenError(f"is {st.st_size:,} bytes; a {what} may hold at most "
                             f"{max_bytes:,}", path=p, field=field, fix=fix)


def read_bytes(path: str | os.PathLike[str], *, field: str | None = None,
               what: str = "data file", max_bytes: int = MAX_DATA_FILE_BYTES,
               fix: str = "split it, or use a named resource", peek: int | None = None
               ) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read under the current file policy.

    Parameters
    ----------
    path
        The file (``~`` expanded).
    field
        The spec field that named it, for errors.
    what
        How the file is called in errors ("gene list", "spec file", ...).
    max_bytes
        Size cap, checked before reading and enforced while reading (a growing file).
    fix
        The advice appended when the file is too large.
    peek
        Read only the first `peek` bytes (to sniff the format) and skip the size cap.

    Raises
    ------
    GeoscreenError
        Missing, outside the allowed folders, a pseudo-file, not a regular file, too large or
        unreadable.  The message never holds any of the file's content.
    """
    p = os.path.expanduser(str(path))
    _check_path(p, field)
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise GeoscreenError("does not exist", path=p, field=field) from None
    except OSError as exc:
        raise GeoscreenError(f"cannot be opened ({exc.strerror})", path=p, field=field) from None
    try:
        st = os.fstat(fd)
        # sniffing the head (`peek`) reads any size of file, but only its first `peek` bytes
        _check_stat(st, p, field, what, max_bytes if peek is None else st.st_size, fix)
        if peek is not None:
            max_bytes = peek
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if peek is not None and total >= peek:
                return b"".join(chunks)[:peek]
            if total > max_bytes:
                raise GeoscreenError(f"grew beyond {max_bytes:,} bytes while being read",
                                     path=p, field=field, fix=fix)
    except OSError as exc:
        raise GeoscreenError(f"cannot be read ({exc.strerror})", path=p, field=field) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], *, field: str | None = None,
              what: str = "data file", max_bytes: int = MAX_DATA_FILE_BYTES,
              fix: str = "split it, or use a named resource") -> str:
    """`read_bytes` decoded as strict UTF-8 (the error gives the offset, not the bytes' text)."""
    data = read_bytes(path, field=field, what=what, max_bytes=max_bytes, fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GeoscreenError(f"is not UTF-8 text (invalid byte at offset {exc.start})",
                             path=os.path.expanduser(str(path)), field=field,
                             fix="save it as UTF-8") from None


def regular_file(path: str | os.PathLike[str], *, field: str | None = None,
                 what: str = "data file", max_bytes: int = MAX_MAPPED_BYTES) -> Path:
    """Check a file that will be memory-mapped (a ``.npy`` matrix) and return its path.

    The same checks as `read_bytes` (policy, pseudo-files, regular file, size), without reading.
    """
    p = os.path.expanduser(str(path))
    _check_path(p, field)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise GeoscreenError("does not exist", path=p, field=field) from None
    except OSError as exc:
        raise GeoscreenError(f"cannot be opened ({exc.strerror})", path=p, field=field) from None
    _check_stat(st, p, field, what, max_bytes, "split it")
    return Path(p)
