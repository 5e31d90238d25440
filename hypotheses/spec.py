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

from geoscreen.agent.errors import GeoscreenError

AcrossLayers = Literal["any", "all", "each", "trend"]
Alternative = Literal["greater", "less", "two-sided"]
_SOURCE = re.compile(r"^(human|offline|llm:.+)$")


class HypothesisSpec(BaseModel):
    """One testable hypothesis.  `params` are checked against the named probe's model."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(..., min_length=3, description="the claim in plain words")
    probe: str = Field(..., description="registered probe name (see 'geoscreen probes list')")
    params: dict[str, Any] = Field(default_factory=dict)
    layers: Literal["all"] | list[int | str] = Field(
        "all", description="'all', or layer positions (0-based) / names")
    across_layers: AcrossLayers = Field(
        "any", description="any: some layer (Cauchy combination); all: every layer "
                           "(intersection-union, max p); each: every layer its own test; "
                           "trend: monotone trend of the effect with depth")
    alternative: Alternative | None = Field(
        None, description="direction of the test; the probe's default when omitted")
    rationale: str = ""
    tags: list[str] = Field(default_factory=list)
    source: str = "human"
    parents: list[int] = Field(default_factory=list, description="ledger ids that motivated this")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not _SOURCE.match(v):
            raise ValueError("source must be 'human', 'offline' or 'llm:<model>'")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("layers must be 'all' or a non-empty list")
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
        return ResolvedSpec(spec=self, params=params.model_dump(mode="json"),
                            alternative=alternative, family=info.family,
                            probe_version=info.version)


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
        return {"probe": self.spec.probe, "params": self.params, "layers": layers,
                "across_layers": self.spec.across_layers, "alternative": self.alternative}

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
            from geoscreen.agent.errors import did_you_mean

            msg = (f"unknown field; "
                   f"{did_you_mean(str(err['loc'][-1]), list(HypothesisSpec.model_fields))}")
        return f"{where}: field '{loc}': {msg}"
    return f"{where}: {exc}"
