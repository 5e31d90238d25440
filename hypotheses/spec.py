"""Hypothesis specs: the structured form every proposal takes, human or LLM.

A spec names a registered probe and its parameters; validation runs the probe's own parameter
model, so a bad spec is refused before it reaches the queue.  The canonical hash of
(probe, validated params with defaults, layers, across_layers, alternative) identifies the test:
the same test is never run twice in one campaign, however it was written.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from geoscreen.errors import GeoscreenError

AcrossLayers = Literal["any", "all", "each", "trend", "changepoint", "slope_change"]
#: across_layers values that test the shape of the effect over depth, not each layer's p-value
SHAPE_TESTS = ("trend", "changepoint", "slope_change")
Alternative = Literal["greater", "less", "two-sided"]
_SOURCE = re.compile(r"^(human|offline|llm:.+)$")

# Caps on what one spec may hold (far above any real spec; they bound memory and time for
# hostile or runaway input, from a file or a model).
MAX_STATEMENT = 1_000  # characters
MAX_RATIONALE = 4_000
MAX_TAGS, MAX_TAG = 32, 100
MAX_PARENTS = 100
MAX_UNIVERSE = 400_000  # characters of a `universe` reference (an inline gene list)
MIN_UNIVERSE = 10  # fewest genes of a universe present in the cache
MAX_LAYERS = 1_000
MAX_PARAM_STRING = 400_000  # characters of one parameter value (an inline gene list)
MAX_PARAM_ITEMS = 50_000  # values inside `params`, nested ones included
MAX_PARAM_DEPTH = 8
MAX_INLINE_GENES = 30_000  # symbols in one `genes:A,B,...` list
MAX_INLINE_PAIRS = 50_000  # pairs in one `pairs:A-B,...` list


def check_params_size(params: dict[str, Any]) -> None:
    """Refuse `params` beyond the caps above (iteratively: no recursion on hostile nesting).

    Raises
    ------
    ValueError
        With the offending parameter's path and the cap.
    """
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in params.items()]
    items = 0
    while stack:
        where, v, depth = stack.pop()
        items += 1
        if items > MAX_PARAM_ITEMS:
            raise ValueError(f"params hold more than {MAX_PARAM_ITEMS:,} values")
        if depth > MAX_PARAM_DEPTH:
            raise ValueError(f"'{where}' is nested deeper than {MAX_PARAM_DEPTH} levels")
        if isinstance(v, str):
            if len(v) > MAX_PARAM_STRING:
                raise ValueError(f"'{where}' is {len(v):,} characters long (at most "
                                 f"{MAX_PARAM_STRING:,})")
            for prefix, cap, what in (("genes:", MAX_INLINE_GENES, "genes"),
                                      ("pairs:", MAX_INLINE_PAIRS, "pairs")):
                if v.startswith(prefix) and v.count(",") + 1 > cap:
                    raise ValueError(f"'{where}' lists {v.count(',') + 1:,} {what} (at most "
                                     f"{cap:,}); use a named resource or file: instead")
        elif isinstance(v, dict):
            stack.extend((f"{where}.{k}", x, depth + 1) for k, x in v.items())
        elif isinstance(v, list | tuple):
            stack.extend((f"{where}[{i}]", x, depth + 1) for i, x in enumerate(v))


_FILE_TOKEN = re.compile(r"(?<![A-Za-z0-9_])file:")


def file_refs(params: dict[str, Any]) -> list[str]:
    """Every ``file:`` path a spec's parameters name, set-algebra operands included.

    A string that mentions ``file:`` where the reference grammar cannot find it whole (a path
    with spaces, unbalanced quotes) is returned as its raw text after ``file:``, so a caller that
    refuses files (`agent.llm.validate` for model proposals) refuses it rather than miss it.
    """
    from geoscreen.store.resources.grammar import parse, refs

    out: list[str] = []
    stack: list[Any] = list(params.values())
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, str) and _FILE_TOKEN.search(v):
            try:
                found = [r.selector for r in refs(parse(v)) if r.name == "file"]
            except Exception:  # noqa: BLE001 - any parse failure: fall back to the raw text
                found = []
            if len(found) < len(_FILE_TOKEN.findall(v)):
                found = [m.strip().strip('"') for m in _FILE_TOKEN.split(v)[1:]]
            out.extend(found)
    return out


class HypothesisSpec(BaseModel):
    """One testable hypothesis.  `params` are checked against the named probe's model."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(..., min_length=3, max_length=MAX_STATEMENT,
                           description="the claim in plain words")
    probe: str = Field(..., max_length=100,
                       description="registered probe name (see 'geoscreen probes list')")
    params: dict[str, Any] = Field(default_factory=dict)
    layers: Literal["all"] | list[int | str] = Field(
        "all", description="'all', or layer positions (0-based) / names")
    across_layers: AcrossLayers = Field(
        "any", description="any: some layer (Cauchy combination); all: every layer "
                           "(intersection-union, max p); each: every layer its own test; "
                           "trend: monotone trend of the effect with depth; changepoint: one "
                           "change in its level, and at which layer; slope_change: one bend "
                           "in its slope (5 layers or more)")
    alternative: Alternative | None = Field(
        None, description="direction of the test; the probe's default when omitted")
    universe: str | None = Field(
        None, max_length=MAX_UNIVERSE,
        description="gene-set reference: the test sees these genes only (its SVD, sets and "
                    "nulls), e.g. the genes a study named; default: every gene of the cache")
    rationale: str = Field("", max_length=MAX_RATIONALE)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    source: str = Field("human", max_length=200)
    parents: list[int] = Field(default_factory=list, max_length=MAX_PARENTS,
                               description="ledger ids that motivated this")

    @field_validator("params")
    @classmethod
    def _params_size(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_params_size(v)
        return v

    @field_validator("statement")
    @classmethod
    def _one_line(cls, v: str) -> str:
        # a claim is one line: newlines or tabs in it (a model's, or pasted) become spaces, so a
        # statement shown in a later prompt, a table or a log line cannot break its layout
        return " ".join(v.split())

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        long = [t for t in v if len(t) > MAX_TAG]
        if long:
            raise ValueError(f"a tag is {len(long[0])} characters long (at most {MAX_TAG})")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not _SOURCE.match(v):
            raise ValueError("source must be 'human', 'offline' or 'llm:<model>'")
        return v

    @field_validator("layers", "parents", mode="before")
    @classmethod
    def _no_bools(cls, v: Any) -> Any:
        if isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise ValueError("lists a boolean (true/false); write layer positions, layer names "
                             "or ledger ids")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("layers must be 'all' or a non-empty list")
            if len(v) > MAX_LAYERS:
                raise ValueError(f"layers lists {len(v):,} layers (at most {MAX_LAYERS:,})")
            if len(set(map(str, v))) != len(v):
                raise ValueError("layers lists a layer twice")
        return v

    # -- validation against the registry --------------------------------------------------------
    def resolved(self) -> ResolvedSpec:
        """Validate against the probe registry; return the spec with params and defaults filled."""
        from geoscreen.probes.registry import get_probe

        info = get_probe(self.probe)
        params = info.validate_params(self.params)
        alternative = self.alternative or info.alternatives[0]
        if alternative not in info.alternatives:
            raise GeoscreenError(f"probe {self.probe!r} does not support alternative "
                                 f"{alternative!r}; use one of {', '.join(info.alternatives)}",
                                 field="alternative")
        dumped = params.model_dump(mode="json")
        self._check_across(info, dumped)
        return ResolvedSpec(spec=self, params=dumped, alternative=alternative,
                            family=info.family, probe_version=info.version)

    def _check_across(self, info: Any, params: dict[str, Any]) -> None:
        """A descriptive probe (null 'none': no per-layer p-value) is tested only by its trend
        across layers, and a trend needs at least three layers."""
        from geoscreen.probes.nulls import spec_null

        if info.whole_stack and (not isinstance(self.layers, list) or len(self.layers) != 1):
            raise GeoscreenError(
                f"probe {self.probe!r} reads the layers it compares itself (its params name "
                "them); the spec names the one layer its result is filed under",
                field="layers", fix="write layers: [last]")
        null = spec_null(self.probe, params)
        # only a probe that declares 'none' among its nulls is descriptive by its own account
        if null == "none" and "none" in info.nulls and \
                self.across_layers not in SHAPE_TESTS:
            raise GeoscreenError(
                f"probe {self.probe!r} with null 'none' reports a value per layer but no "
                f"p-value, so across_layers {self.across_layers!r} has nothing to combine",
                field="across_layers",
                fix="write across_layers: trend (or changepoint, slope_change), or choose a "
                    "null with a per-layer test")
        if self.across_layers in SHAPE_TESTS and isinstance(self.layers, list) \
                and len(self.layers) < min_shape_layers(self.across_layers):
            need = min_shape_layers(self.across_layers)
            what = {"trend": "a trend", "changepoint": "a change-point",
                    "slope_change": "a change in slope"}[self.across_layers]
            raise GeoscreenError(f"{what} across layers needs at least {need} layers; this "
                                 f"spec lists {len(self.layers)}", field="layers",
                                 fix=f"list {need} or more layers, or write layers: all")


def min_shape_layers(across: str) -> int:
    """Layers a shape test across layers needs (a slope change: 3 on each side of its knot)."""
    return 5 if across == "slope_change" else 3


def _hashed_params(probe: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params a spec's hash covers: all of them, except parameters added to the probe later
    (`probes.params.added_field`) while they keep their default."""
    from geoscreen.probes.registry import get_probe

    fields = get_probe(probe).params.model_fields
    out = {}
    for name, value in params.items():
        f = fields.get(name)
        extra = f.json_schema_extra if f is not None and isinstance(f.json_schema_extra, dict) \
            else {}
        if extra.get("since") and value == f.default:  # type: ignore[union-attr]
            continue
        out[name] = value
    return out


class ResolvedSpec(BaseModel):
    """A spec after validation: full params with defaults and the effective alternative."""

    spec: HypothesisSpec
    params: dict[str, Any]
    alternative: str
    family: str
    probe_version: str

    def canonical(self) -> dict[str, Any]:
        layers = self.spec.layers
        if isinstance(layers, list):
            layers = [x if isinstance(x, int) else str(x) for x in layers]
        out = {"probe": self.spec.probe, "params": _hashed_params(self.spec.probe, self.params),
               "layers": layers, "across_layers": self.spec.across_layers,
               "alternative": self.alternative}
        if self.spec.universe is not None:  # absent when unset: earlier hashes stay valid
            out["universe"] = self.spec.universe
        return out

    @property
    def hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """Spec JSON as stored in the ledger: the resolved params and alternative."""
        d = self.spec.model_dump(mode="json")
        d["params"] = self.params
        d["alternative"] = self.alternative
        return d


def format_validation_error(exc: Exception, where: str) -> str:
    """One line from a pydantic ValidationError or GeoscreenError, prefixed with its location."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            from geoscreen.errors import did_you_mean

            msg = (f"unknown field; "
                   f"{did_you_mean(str(err['loc'][-1]), list(HypothesisSpec.model_fields))}")
        return f"{where}: field '{loc}': {msg}"
    return f"{where}: {exc}"
