"""Load hypothesis specs from YAML or JSON files or folders, all-or-nothing.

A file holds one spec (a mapping), several (a list, or a mapping with a `hypotheses:` list), or
several YAML documents.  Every spec is validated against the probe registry before any is
returned, so `queue add` either queues all of them or none, with an error that names the file,
the spec and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from geoscreen.agent.errors import GeoscreenError
from geoscreen.hypotheses.spec import HypothesisSpec, ResolvedSpec, format_validation_error

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def spec_files(path: str | Path) -> list[Path]:
    """The spec files at `path`: the file itself, or every YAML/JSON file below a folder, sorted."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in SPEC_SUFFIXES and f.is_file())
        if not files:
            raise GeoscreenError("holds no .yaml, .yml or .json spec files", path=str(p))
        return files
    if not p.exists():
        raise GeoscreenError("does not exist", path=str(p))
    return [p]


def _documents(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return [json.loads(text)]
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except json.JSONDecodeError as exc:
        raise GeoscreenError(f"is not valid JSON: {exc.msg} at line {exc.lineno}",
                             path=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GeoscreenError(f"is not valid YAML: {problem}{where}", path=str(path)) from None


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


def load_specs(path: str | Path, *, source: str = "human") -> list[ResolvedSpec]:
    """Every spec at `path`, validated; raises on the first invalid one (nothing partial)."""
    resolved: list[ResolvedSpec] = []
    for f in spec_files(path):
        for k, raw in enumerate(_raw_specs(f), start=1):
            label = raw.get("statement", "")
            label = f" ({label[:40]!r})" if isinstance(label, str) and label else ""
            resolved.append(parse_spec(raw, f"{f}: spec #{k}{label}", source=source))
    return resolved
