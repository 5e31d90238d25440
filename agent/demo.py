"""The demo campaign's output folder and its check against what was planted.

The demo cache itself (a synthetic cache over real gene symbols with planted structure) is built
by `geoscreen.extract.synthetic.write_demo_cache`; this module replaces only what the demo wrote
and compares a finished campaign with the planted claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoscreen.extract.synthetic import DEMO_MODEL, PLANTED, build_demo_data, write_demo_cache

__all__ = ["DEMO_MODEL", "PLANTED", "build_demo_data", "write_demo_cache", "MARKER",
           "clear_demo_output", "mark_demo_output", "demo_specs_path", "compare_with_planted"]


# -- the output folder: the demo replaces only what it wrote ------------------------------------
MARKER = ".geoscreen-demo.json"
DEMO_FILES = ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "ledger.sqlite-journal",
              "results.csv", "report.html")
DEMO_CACHE = "cache"


def _cache_files(cache_dir: Path) -> list[Path] | str:
    """The files a demo cache consists of (from its manifest), or why it is not a demo cache."""
    import json

    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "has no readable manifest.json"
    if not isinstance(manifest, dict) or manifest.get("model") != DEMO_MODEL:
        return "is not a demo cache (its manifest names another model)"
    rels = ["manifest.json", "genes.tsv"]
    for key in ("files", "extra_files"):
        if isinstance(manifest.get(key), dict):
            rels += [str(v) for v in manifest[key].values()]
    root = cache_dir.resolve()
    out = []
    for rel in rels:
        p = (cache_dir / rel)
        if root not in p.resolve().parents:
            return f"lists a file outside itself ({rel})"
        out.append(p)
    return out


def clear_demo_output(out: Path, *, overwrite: bool) -> None:
    """Make `out` ready for a demo run without touching anything the demo did not write.

    Absent or free of demo outputs: nothing to do.  Holding them: refused unless `overwrite`,
    and then only the files a demo wrote are removed — the ledger, results.csv, report.html and
    the files listed in the demo cache's manifest — and only if `out` carries the demo's marker
    file; anything else in the folder (a user's notes) stays.  Everything is checked before
    anything is removed.

    Raises
    ------
    GeoscreenError
        `out` is not a folder; demo outputs exist and `overwrite` is false; or they were not
        written by the demo, or its cache folder holds other files.
    """
    from geoscreen.errors import GeoscreenError

    if out.exists() and not out.is_dir():
        raise GeoscreenError("is not a folder", path=str(out), field="--out",
                             fix="choose a folder for the demo's cache, ledger and report")
    present = [n for n in (*DEMO_FILES, DEMO_CACHE) if (out / n).exists()
               or (out / n).is_symlink()]
    if not present:
        return
    names = ", ".join(present)
    if not overwrite:
        raise GeoscreenError(f"already holds demo output ({names})", path=str(out),
                             field="--out", fix="pass --overwrite to replace exactly those "
                             "files (nothing else in the folder is touched), or choose another "
                             "--out")
    if not (out / MARKER).is_file():
        raise GeoscreenError(f"holds {names} but no {MARKER}: geoscreen demo did not write "
                             "them", path=str(out), field="--out",
                             fix="move them away or choose another --out; --overwrite only "
                                 "replaces a demo's own files")
    remove: list[Path] = []
    for n in DEMO_FILES:
        p = out / n
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise GeoscreenError("is not a file the demo wrote", path=str(p), field="--out",
                                 fix="move it away or choose another --out")
        if p.exists():
            remove.append(p)
    cache_dir = out / DEMO_CACHE
    dirs: list[Path] = []
    if cache_dir.exists() or cache_dir.is_symlink():
        if cache_dir.is_symlink() or not cache_dir.is_dir():
            raise GeoscreenError("is not the demo's cache folder", path=str(cache_dir),
                                 field="--out", fix="move it away or choose another --out")
        files = _cache_files(cache_dir)
        if isinstance(files, str):
            raise GeoscreenError(files, path=str(cache_dir), field="--out",
                                 fix="move it away or choose another --out")
        listed = {p.resolve() for p in files}
        foreign = [p for p in cache_dir.rglob("*") if not p.is_dir() and p.resolve() not in listed]
        if foreign:
            shown = ", ".join(str(p.relative_to(cache_dir)) for p in foreign[:3])
            raise GeoscreenError(f"holds files the demo did not write ({shown}"
                                 f"{', ...' if len(foreign) > 3 else ''})", path=str(cache_dir),
                                 field="--out", fix="move them away, or choose another --out")
        remove += [p for p in files if p.exists()]
        dirs = sorted((p for p in cache_dir.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True) + [cache_dir]
    for p in remove:
        p.unlink()
    for d in dirs:
        d.rmdir()  # empty by now: only the demo's files were in it


def mark_demo_output(out: Path, seed: int) -> None:
    """Record in `out` that the demo writes its outputs there (what `clear_demo_output` checks)."""
    import json
    from datetime import datetime, timezone

    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({
        "written_by": "geoscreen demo", "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [*DEMO_FILES, DEMO_CACHE + "/"]}, indent=1) + "\n")


def demo_specs_path() -> Path:
    return Path(__file__).parent / "demo_hypotheses.yaml"


def compare_with_planted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each planted claim (and negative control), the matching tested hypothesis."""
    out = []
    for item in PLANTED:
        match = None
        for r in rows:
            spec = r.get("spec") or {}
            params = spec.get("params", {})
            if r["probe"] != item["probe"] or r["status"] != "done":
                continue
            ok = True
            for k, v in item["match"].items():
                if v == "genes:@random":
                    ok = ok and str(params.get(k, "")).startswith("genes:")
                else:
                    ok = ok and params.get(k) == v
            if ok and spec.get("layers", "all") == "all":
                match = r
                break
        out.append({**item, "hypothesis": match})
    return out
