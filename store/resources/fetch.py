"""Download current releases of resources into the user data directory.

A fetch downloads every file of a release into a staging folder, checks it (complete length,
optional expected sha256, gzip / zip integrity, not an HTML error page), parses it and builds its
index, and only then moves it into place and records it in ``index.json`` (newest first).  Any
failure removes the staging folder, so an interrupted or corrupt download never replaces the
previous version.  ``GEOSCREEN_DATA_DIR`` overrides the platformdirs location.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geoscreen.errors import GeoscreenError, did_you_mean
from geoscreen.store.resources import _util, backends, catalog

INDEX_FORMAT = 1


def fetchable() -> list[str]:
    return [r.name for r in catalog.RESOURCES.values() if r.fetchable]


def _resource(name: str) -> catalog.ResourceInfo:
    info = catalog.RESOURCES.get(name) or catalog.RESOURCES.get(name.lower())
    if info is not None and info.base:
        raise GeoscreenError(f"{name!r} is derived from {info.base!r}; fetch that instead",
                             field="resource", fix=f"run 'geoscreen resources fetch {info.base}'")
    if info is None or not info.fetchable:
        raise GeoscreenError(f"cannot fetch {name!r}; {did_you_mean(name, fetchable())}",
                             field="resource")
    return info


def _user_agent() -> str:
    from geoscreen.version import package_version

    return f"geoscreen/{package_version()} (+https://pypi.org/project/geoscreen)"


def download(url: str, dest: Path, *, timeout: float = 60.0,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stream `url` to `dest`, hashing as it goes; reject short or failed transfers."""
    req = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    h = hashlib.sha256()
    n = 0
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as fh:
            length = resp.headers.get("Content-Length")
            last_modified = resp.headers.get("Last-Modified", "")
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                fh.write(block)
                h.update(block)
                n += len(block)
    except urllib.error.HTTPError as exc:
        raise GeoscreenError(f"download failed: HTTP {exc.code} {exc.reason}", path=url,
                             fix="check the URL or try again later") from None
    except http.client.IncompleteRead as exc:
        raise GeoscreenError(f"interrupted download: got {n + len(exc.partial):,} bytes, "
                             f"expected {n + len(exc.partial) + (exc.expected or 0):,}",
                             path=url, fix="try again") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise GeoscreenError(f"download failed: {reason}", path=url,
                             fix="check the network connection or pass --url") from None
    if length is not None and length.isdigit() and int(length) != n:
        raise GeoscreenError(f"interrupted download: got {n:,} of {int(length):,} bytes",
                             path=url, fix="try again")
    if n == 0:
        raise GeoscreenError("download is empty", path=url)
    if progress:
        progress(f"downloaded {dest.name}: {n:,} bytes")
    return {"url": url, "sha256": h.hexdigest(), "bytes": n, "last_modified": last_modified}


def check_integrity(path: Path) -> None:
    """Reject HTML pages, truncated gzip streams and broken zip archives."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise GeoscreenError("the server returned an HTML page, not the data file",
                             path=str(path), fix="check the URL")
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                while gz.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise GeoscreenError(f"corrupt or truncated gzip file ({exc})", path=str(path),
                                 fix="fetch again") from None
    elif head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise GeoscreenError(f"corrupt zip archive ({exc})", path=str(path),
                                 fix="fetch again") from None
        if bad is not None:
            raise GeoscreenError(f"corrupt member {bad!r} in zip archive", path=str(path),
                                 fix="fetch again")
    elif path.name.endswith((".gz", ".zip")):
        raise GeoscreenError("file is not in the expected compressed format", path=str(path),
                             fix="check the URL")


@contextmanager
def _lock(root: Path):  # type: ignore[no-untyped-def]
    """An exclusive lock on the fetched-resource index (POSIX; a no-op elsewhere)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        yield


def _as_map(values: Sequence[str] | dict[str, str] | None, roles: list[str],
            what: str) -> dict[str, str]:
    """`--url` / `--sha256` values, either 'role=value' or positional in file order."""
    if not values:
        return {}
    if isinstance(values, dict):
        out = dict(values)
    else:
        out = {}
        for i, v in enumerate(values):
            role, sep, rest = v.partition("=")
            if sep and re.fullmatch(r"[A-Za-z_]+", role):  # ROLE=VALUE (a URL has ':' first)
                out[role] = rest
            elif i < len(roles):
                out[roles[i]] = v
            else:
                raise GeoscreenError(f"too many {what} values: this resource has "
                                     f"{len(roles)} file(s) ({', '.join(roles)})",
                                     field=what)
    for k in out:
        if k not in roles:
            raise GeoscreenError(f"unknown file {k!r}; {did_you_mean(k, roles)}", field=what)
    return out


def fetch(name: str, urls: Sequence[str] | dict[str, str] | None = None,
          sha256: Sequence[str] | dict[str, str] | None = None, *, timeout: float = 60.0,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fetch the current release of `name`; return its index entry (plus 'unchanged')."""
    info = _resource(name)
    roles = [f.role for f in info.fetch_files]
    url_map = {f.role: f.url for f in info.fetch_files}
    url_map.update(_as_map(urls, roles, "url"))
    want = {k: v.lower() for k, v in _as_map(sha256, roles, "sha256").items()}
    root = _util.data_dir() / "resources"
    (root / info.name).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root / info.name))
    try:
        files: dict[str, dict[str, Any]] = {}
        paths: dict[str, Path] = {}
        for f in info.fetch_files:
            dest = staging / f.filename
            meta = download(url_map[f.role], dest, timeout=timeout, progress=progress)
            if f.role in want and meta["sha256"] != want[f.role]:
                raise GeoscreenError(f"sha256 mismatch for {f.filename}: got {meta['sha256']}, "
                                     f"expected {want[f.role]}", path=url_map[f.role],
                                     fix="check --sha256 or the URL")
            check_integrity(dest)
            files[f.role] = {**meta, "filename": f.filename}
            paths[f.role] = dest
        sums = {role: m["sha256"] for role, m in files.items()}
        checksum = _util.combined_checksum(sums)
        for old in catalog.versions(info.name):
            if old.origin == "fetched" and old.checksum == checksum:
                shutil.rmtree(staging, ignore_errors=True)
                entry = _entry(info.name, old.id)
                return {**(entry or {}), "unchanged": True}
        if progress:
            progress(f"parsing and indexing {info.name} ...")
        arrays = backends.build_arrays(info.name, info.backend, "fetched", paths)
        _util.save_npz_atomic(backends.index_path(info.name, checksum), arrays)
        stats = _stats(info.backend, arrays)
        with _lock(root):
            index = catalog.read_fetched_index()
            taken = {e["id"] for e in index["resources"].get(info.name, [])}
            vid = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            base, k = vid, 2
            while vid in taken or (root / info.name / vid).exists():
                vid, k = f"{base}-{k}", k + 1
            final = root / info.name / vid
            os.replace(staging, final)
            lm = next((m["last_modified"] for m in files.values() if m["last_modified"]), "")
            entry = {
                "id": vid, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "label": f"fetched {vid}" + (f" (upstream Last-Modified: {lm})" if lm else ""),
                "checksum": checksum, "stats": stats,
                "files": {role: {"path": f"{info.name}/{vid}/{m['filename']}",
                                 "url": m["url"], "sha256": m["sha256"], "bytes": m["bytes"],
                                 "last_modified": m["last_modified"]}
                          for role, m in files.items()},
            }
            entries = [entry] + index["resources"].get(info.name, [])
            index["resources"][info.name] = entries
            index["format"] = INDEX_FORMAT
            _util.write_json_atomic(catalog.fetched_index_path(), index)
        return {**entry, "unchanged": False}
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _entry(name: str, vid: str) -> dict[str, Any] | None:
    for e in catalog.read_fetched_index()["resources"].get(name, []):
        if e["id"] == vid:
            return dict(e)
    return None


def _stats(backend: str, arrays: dict[str, Any]) -> dict[str, int]:
    """A few counts for the fetch report and `resources list`."""
    genes = int(arrays["v_status"].size)
    if backend == "go":
        return {"genes": genes, "terms": int(arrays["term_num"].size),
                "annotations": int(arrays["ann_gene"].size)}
    if backend == "string":
        return {"genes": genes, "pairs": int(arrays["a"].size)}
    if backend == "regnet":
        return {"genes": genes, "edges": int(arrays["tf"].size)}
    return {"genes": genes, "sets": len(_util.unpack(arrays["set_ids"])),
            "memberships": int(arrays["m_gene"].size)}
