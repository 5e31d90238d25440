"""Small shared helpers: where things live, string packing for `.npz`, atomic writes, TSV reading.

Derived indexes are plain `.npz` files (never pickle): lists of strings are stored as one UTF-8
buffer so that loading 40k GO term names costs a single `bytes.decode().split()`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
_SEP = "\x1f"  # unit separator: never part of a symbol, term name or id


def data_dir() -> Path:
    """Root of fetched resources; GEOSCREEN_DATA_DIR overrides the platformdirs location."""
    env = os.environ.get("GEOSCREEN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("geoscreen"))


def index_dir() -> Path:
    """Where derived indexes are cached: GEOSCREEN_INDEX_DIR, else GEOSCREEN_WORK_DIR (where the
    other derived artefacts go) / resource-index, else the platformdirs user cache."""
    env = os.environ.get("GEOSCREEN_INDEX_DIR")
    if env:
        return Path(env).expanduser()
    work = os.environ.get("GEOSCREEN_WORK_DIR")
    if work:
        return Path(work).expanduser() / "resource-index"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("geoscreen")) / "resource-index"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_checksum(files: dict[str, str]) -> str:
    """One digest for a set of files: sha256 of sorted 'name sha256' lines."""
    text = "\n".join(f"{k} {files[k]}" for k in sorted(files))
    return sha256_bytes(text.encode())


# -- string packing ------------------------------------------------------------------------------
def pack(strings: Sequence[str]) -> np.ndarray:
    """A list of strings as one uint8 buffer (npz-safe without pickle)."""
    if not strings:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer((_SEP.join(strings) + _SEP).encode("utf-8"), dtype=np.uint8)


def unpack(buf: np.ndarray) -> list[str]:
    if buf.size == 0:
        return []
    return buf.tobytes().decode("utf-8").split(_SEP)[:-1]


# -- atomic npz / json -----------------------------------------------------------------------------
def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `path` via a temp file and os.replace, so concurrent readers never see half a file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class LazyArrays(Mapping[str, np.ndarray]):
    """The arrays of an `.npz`, read on first access: a query touches only what it needs.

    Fork-safe: a process forked after the file was opened (a persistent worker's warden loads
    indexes ahead for the workers it forks) opens it again before reading, since the two would
    otherwise share one file offset."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._npz = np.load(path, allow_pickle=False)  # reads the zip directory only
        self._pid = os.getpid()
        self._files = set(self._npz.files)
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        arr = self._cache.get(key)
        if arr is None:
            if key not in self._files:
                raise KeyError(key)
            if self._pid != os.getpid():
                self._npz = np.load(self._path, allow_pickle=False)
                self._pid = os.getpid()
            arr = self._cache[key] = self._npz[key]
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._files))

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, key: object) -> bool:
        return key in self._files


def load_npz(path: Path, required: Iterable[str] = ()) -> Mapping[str, np.ndarray]:
    """Open an index lazily; raise ValueError if it is unreadable or lacks `required` arrays."""
    try:
        arrays = LazyArrays(path)
    except Exception as exc:  # BadZipFile, pickle refusal, truncation...
        raise ValueError(f"unreadable index {path}: {exc}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"index {path} lacks {missing}")
    return arrays


def write_json_atomic(path: Path, obj: Any) -> None:
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- reading text tables ---------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """Whole file as text; gzip is detected from the magic bytes, not the name."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def read_tsv(path: Path, *, header: bool = True, sep: str = "\t",
             comment: str | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a small-to-medium delimited file; rows are padded to the header width."""
    lines = read_text(path).splitlines()
    if comment:
        lines = [ln for ln in lines if not ln.startswith(comment)]
    lines = [ln for ln in lines if ln.strip()]
    head: list[str] = []
    if header and lines:
        head = [h.strip() for h in lines[0].split(sep)]
        lines = lines[1:]
    width = len(head)
    rows = []
    for ln in lines:
        cols = ln.split(sep)
        if width and len(cols) < width:
            cols += [""] * (width - len(cols))
        rows.append(cols)
    return head, rows


def columns(head: list[str], rows: list[list[str]], names: Iterable[str],
            source: str) -> list[list[str]]:
    """The named columns of a table, or a clear error naming the missing ones."""
    from geoscreen.errors import GeoscreenError

    names = list(names)
    lower = [h.lower() for h in head]
    idx = []
    for n in names:
        if n.lower() not in lower:
            raise GeoscreenError(f"missing column {n!r} (found {', '.join(head[:12])})",
                                 path=source, fix="is this the right file for this resource?")
        idx.append(lower.index(n.lower()))
    return [[r[i] for r in rows] for i in idx]

