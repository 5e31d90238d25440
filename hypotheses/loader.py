"""Load hypothesis specs from YAML or JSON files or folders, all-or-nothing.

A file holds one spec (a mapping), several (a list, or a mapping with a `hypotheses:` list), or
several YAML documents.  Every spec is validated against the probe registry before any is
returned, so `queue add` either queues all of them or none, with an error that names the file,
the spec and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.bounded import json_document, read_text_file, yaml_documents
from geoscreen.hypotheses.spec import HypothesisSpec, ResolvedSpec, format_validation_error

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
MAX_SPECS_PER_FILE = 1_000
MAX_SPECS = 10_000  # in one `queue add` (a folder)
MAX_SPEC_FILES = 1_000


def spec_files(path: str | Path) -> list[Path]:
    """The spec files at `path`: the file itself, or every YAML/JSON file below a folder, sorted.

    A name with a spec suffix that is not a regular file (a FIFO, a device, a dangling link) is
    an error rather than silently skipped; the file itself is checked again when it is read.
    """
    p = Path(path)
    if p.is_dir():
        files = []
        for f in sorted(f for f in p.rglob("*") if f.suffix in SPEC_SUFFIXES):
            if f.is_dir():
                continue
            if not f.is_file():
                raise GeoscreenError("is not a regular file", path=str(f),
                                     fix="remove it from the folder or pass the files one by one")
            files.append(f)
            if len(files) > MAX_SPEC_FILES:
                raise GeoscreenError(f"holds more than {MAX_SPEC_FILES:,} spec files",
                                     path=str(p), fix="queue its sub-folders one at a time")
        if not files:
            raise GeoscreenError("holds no .yaml, .yml or .json spec files", path=str(p))
        return files
    if not p.exists() and not p.is_symlink():
        raise GeoscreenError("does not exist", path=str(p))
    return [p]


def _documents(path: Path) -> list[Any]:
    """The file's documents: size, type, encoding, nesting and alias expansion all bounded."""
    text = read_text_file(path)
    if path.suffix == ".json":
        return [json_document(text, str(path))]
    return yaml_documents(text, str(path))


def _yaml_keys(obj: Any) -> Any:
    """YAML reads a bare `null:` key as None; every probe parameter named `null` means the
    string, so restore it (and recurse into nested mappings)."""
    if isinstance(obj, dict):
        return {("null" if k is None else k): _yaml_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_yaml_keys(v) for v in obj]
    return obj


def _raw_specs(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in _documents(path):
        if isinstance(doc, dict) and "hypotheses" in doc and "probe" not in doc:
            doc = doc["hypotheses"]
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                raise GeoscreenError(f"spec #{len(out) + 1} is a {type(item).__name__}, "
                                     "expected a mapping with statement, probe and params",
                                     path=str(path))
            out.append(_yaml_keys(item))
            if len(out) > MAX_SPECS_PER_FILE:
                raise GeoscreenError(f"holds more than {MAX_SPECS_PER_FILE:,} specs",
                                     path=str(path), fix="split it into several files")
    if not out:
        raise GeoscreenError("holds no specs", path=str(path))
    return out


def parse_spec(raw: dict[str, Any], where: str, *, source: str | None = None) -> ResolvedSpec:
    """Validate one raw spec dict; errors become one GeoscreenError line naming `where`."""
    if source is not None and "source" not in raw:
        raw = {**raw, "source": source}
    try:
        spec = HypothesisSpec.model_validate(raw)
        return spec.resolved()
    except (ValidationError, GeoscreenError) as exc:
        raise GeoscreenError(format_validation_error(exc, where)) from None


def load_specs(path: str | Path, *, source: str = "human",
               check: Callable[[ResolvedSpec], str] | None = None) -> list[ResolvedSpec]:
    """Every spec at `path`, validated; raises on the first invalid one (nothing partial).

    `check` is a further test of each resolved spec (e.g. `hypotheses.preflight.preflight`
    against the campaign's cache): '' to accept it, else the problem, reported with the file
    and the spec's position.
    """
    resolved: list[ResolvedSpec] = []
    for f in spec_files(path):
        raws = _raw_specs(f)
        if len(resolved) + len(raws) > MAX_SPECS:
            raise GeoscreenError(f"holds more than {MAX_SPECS:,} specs in all", path=str(path),
                                 fix="queue the files in several batches")
        for k, raw in enumerate(raws, start=1):
            label = raw.get("statement", "")
            label = f" ({label[:40]!r})" if isinstance(label, str) and label else ""
            where = f"{f}: spec #{k}{label}"
            spec = parse_spec(raw, where, source=source)
            if check is not None and (problem := check(spec)):
                raise GeoscreenError(f"{where}: {problem}")
            resolved.append(spec)
    return resolved
