"""Parameter pieces shared by probes, so the same idea is spelled the same way everywhere."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.stats import normalise_rows

Subspace = Literal["full"] | list[int]
Metric = Literal["cosine", "euclidean"]


def check_subspace(v: object) -> object:
    """'full' or a non-empty list of distinct 1-based singular axes."""
    if v == "full":
        return v
    if isinstance(v, list):
        if not v:
            raise ValueError("subspace must list at least one axis, or be 'full'")
        if any((not isinstance(a, int)) or isinstance(a, bool) or a < 1 for a in v):
            raise ValueError("subspace axes are 1-based positive integers")
        if len(set(v)) != len(v):
            raise ValueError("subspace lists an axis twice")
        return sorted(v)
    raise ValueError("subspace must be 'full' or a list of 1-based axes, e.g. [2, 3, 4]")


def subspace_coords(ctx: ProbeContext, layer: str, subspace: object,
                    include_zero: bool) -> tuple[SVD, np.ndarray]:
    """(svd, Z): gene coordinates in the chosen singular subspace (all axes for 'full')."""
    svd = ctx.svd(layer, include_zero)
    Z = svd.scores(None if subspace == "full" else list(subspace))  # type: ignore[arg-type]
    return svd, Z


def unit_coords(ctx: ProbeContext, layer: str, subspace: object,
                include_zero: bool) -> tuple[SVD, np.ndarray, np.ndarray]:
    """(svd, Z, Zn): `subspace_coords` and the same rows scaled to unit norm (zero rows stay 0).

    The last pair built is kept in the context (`ProbeContext.keep_last`, one only: each is
    genes x width), read-only, so repeated calls on one layer — a profile's half-samples, several
    nulls — share them.
    """
    def build() -> tuple[SVD, np.ndarray, np.ndarray]:
        svd, Z = subspace_coords(ctx, layer, subspace, include_zero)
        Zn = normalise_rows(Z)
        Z.flags.writeable = False
        Zn.flags.writeable = False
        return svd, Z, Zn

    return ctx.keep_last("unit_coords", (layer, str(subspace), include_zero), build)


def subspace_field(default: object = "full") -> object:
    return Field(default, description="'full' or 1-based singular axes, e.g. [2, 3, 4]")


def genes_ref_field(default: object = ..., *, description: str = "gene-set reference",
                    since: str | None = None, min_param: str | None = None,
                    min_present: int | None = None, **kw: Any) -> Any:
    """A parameter holding a gene-set reference (``go:GO:0005615``, ``genes:A,B``, ...).

    The mark lets a spec be checked before it runs: `hypotheses.preflight` resolves every
    marked parameter against the resources and the cache's genes when the spec is queued,
    asking for as many present genes as the parameter named by `min_param` says, or as
    `min_present` says (0: a set the cache lacks is allowed, its reference still checked), else
    one.  `since` marks a parameter added after the probe's first release (see `added_field`).
    """
    extra: dict[str, Any] = {"resource": "genes"}
    if since is not None:
        extra["since"] = since
    if min_param is not None:
        extra["min_param"] = min_param
    if min_present is not None:
        extra["min_present"] = min_present
    return Field(default, description=description, json_schema_extra=extra, **kw)


def pairs_ref_field(default: object = ..., *, description: str = "pair-set reference") -> Any:
    """A parameter holding a pair-set reference (``string:>=700``, ``trrust``, ...)."""
    return Field(default, description=description, json_schema_extra={"resource": "pairs"})


def family_ref_field(default: object = ..., *,
                     description: str = "family of gene sets, e.g. go:*?aspect=CC") -> Any:
    """A parameter holding a family of gene sets (``go:*?aspect=BP``, ``reactome:*``,
    ``trrust:TF=*``); checked at queue time like a gene-set reference."""
    return Field(default, description=description, json_schema_extra={"resource": "family"})


def distinct_refs(refs: list[str], name: str) -> list[str]:
    """A list of references with no repeats (a validator's body), or the one-line refusal."""
    if len(set(refs)) != len(refs):
        raise ValueError(f"{name} lists a set twice")
    return refs


def added_field(default: object, *, since: str, description: str, **kw: Any) -> Any:
    """A parameter added to a probe after its first release.

    While it keeps its default it is left out of the spec's canonical hash, so every spec
    written before it existed keeps its hash (and its place in a ledger's duplicate check)."""
    return Field(default, description=description, json_schema_extra={"since": since}, **kw)


def metric_field() -> object:
    return Field("cosine",
                 description="cosine similarity, or negative euclidean distance (larger = closer)")


def control_field() -> object:
    from geoscreen.probes.control import CONTROL_DESCRIPTION

    return Field(None, description=CONTROL_DESCRIPTION)


def permutations_field(default: int = 1000) -> object:
    return Field(default, ge=99, le=100000, description="null draws; p = (b + 1) / (m + 1)")


def bootstrap_field(default: int = 200) -> object:
    return Field(default, ge=50, le=20000, description="bootstrap replicates for the 95% interval")


def null_label(null: str, control: str | None) -> str:
    return f"{null}+coexpression_residualization" if control else null


def control_validator() -> object:
    """A pydantic 'after' model validator refusing `control: full_space` where it would leave
    nothing (`geoscreen.probes.control.check_control`)."""
    from pydantic import model_validator

    def check(self):  # noqa: ANN001, ANN202
        from geoscreen.probes.control import check_control

        check_control(getattr(self, "control", None), getattr(self, "subspace", None),
                      getattr(self, "metric", "cosine"))
        return self

    return model_validator(mode="after")(check)


def subspace_validator(*names: str) -> object:
    """A pydantic 'before' validator running `check_subspace` on the named fields."""
    from pydantic import field_validator

    return field_validator(*names, mode="before")(classmethod(lambda cls, v: check_subspace(v)))


def explicit_axes_validator(probe: str, most: int = 32) -> object:
    """A pydantic 'before' validator for a classifier's `subspace`: `check_subspace`, then a
    list of at most `most` axes (not 'full'), refused naming the probe."""
    from pydantic import field_validator

    def check(cls: type, v: object) -> object:
        v = check_subspace(v)
        if v == "full" or len(v) > most:  # type: ignore[arg-type]
            raise ValueError(f"{probe} needs an explicit list of at most {most} axes")
        return v
    return field_validator("subspace", mode="before")(classmethod(check))


def changed_fields(model: BaseModel, names: tuple[str, ...]) -> list[str]:
    """Those of `names` whose value differs from the field's default (a resolved spec carries
    every default, so what was written cannot be told from what was filled in)."""
    fields = type(model).model_fields
    return [f for f in names
            if getattr(model, f) != fields[f].get_default(call_default_factory=True)]
