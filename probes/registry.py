"""The probe registry: every statistical test geoscreen can run, declared with a decorator.

A probe is a pure function ``fn(ctx, params, layer) -> LayerResult`` of (cache, resources, params,
seed).  The decorator records how it was built — name, family, parameter model, null models,
version, effect-size definition — so specs can be validated against it, the LLM prompt can be
generated from it, and every ledger row can say exactly which probe version produced it.
Third-party probes register through the ``geoscreen.probes`` entry-point group.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoscreen.errors import GeoscreenError, did_you_mean

FAMILIES = (
    "module_structure",
    "manifold_distance",
    "intrinsic_dimensionality",
    "graph_topology",
    "null_sensitivity",
    "topology_stability",
    "cross_model_alignment",
    "persistent_homology",
    "sae_atlas",
)


class ProbeParams(BaseModel):
    """Base class of every probe's parameter model.

    Unknown parameters are errors; so are infinite or NaN numbers (``C: inf`` would switch a
    penalty off) and booleans where a number is expected (``axis: true`` is not axis 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict) and (problem := cls.bool_problem(data)):
            raise ValueError(f"'{problem[0]}' {problem[1]}")
        return data

    @classmethod
    def bool_problem(cls, data: dict[str, Any]) -> tuple[str, str] | None:
        """(field, message) for the first boolean given where the field takes no boolean."""
        for name, value in data.items():
            f = cls.model_fields.get(name)
            if f is not None and _holds_bool(value) and not _accepts_bool(f.annotation):
                return name, (f"is a boolean ({value!r}) where {_kind(f.annotation)} is "
                              "expected; write the number or text")
        return None

    include_zero_genes: bool = Field(
        False, description="keep all-zero (out-of-vocabulary) gene rows; excluded by default")


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value)


def _accepts_bool(annotation: Any) -> bool:
    from typing import get_args

    if annotation is bool:
        return True
    return any(_accepts_bool(a) for a in get_args(annotation))


def _kind(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    if isinstance(annotation, type):
        text = annotation.__name__
    return f"a value of type {text}"


@dataclass(frozen=True)
class ProbeInfo:
    """How a probe was declared; what specs are validated against and the ledger records."""

    name: str
    family: str
    params: type[ProbeParams]
    nulls: tuple[str, ...]
    version: str
    statistic: str
    effect: str
    description: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    examples: tuple[dict[str, Any], ...] = ()
    alternatives: tuple[str, ...] = ("greater", "less", "two-sided")
    module: str = ""
    # the effect size's no-effect value (0.5 for an AUROC, 0 for a z-score); None: a
    # descriptive measure with no such value (an effective rank, a dimension)
    effect_null: float | None = 0.0
    # the no-effect value where a parameter changes the effect (an AUROC instead of a
    # difference, a ratio to a null instead of a distance): params dict -> value
    effect_null_by: Callable[[dict[str, Any]], float | None] | None = field(
        default=None, repr=False, compare=False)
    # True: the probe reads every layer it needs itself (its params name them), so a spec names
    # one layer, where its single result is filed (`layer_profile`)
    whole_stack: bool = False
    # third-party modules the probe imports when it runs (not at module import) and that take
    # long to import; a persistent warden imports them once before forking the probe's workers
    imports: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """JSON view for `probes list --json` and the LLM system prompt."""
        return {
            "name": self.name,
            "family": self.family,
            "version": self.version,
            "description": self.description,
            "statistic": self.statistic,
            "effect_size": self.effect,
            "nulls": list(self.nulls),
            "effect_null": self.effect_null,
            "whole_stack": self.whole_stack,
            "alternatives": list(self.alternatives),
            "params": self.params.model_json_schema(),
            "examples": list(self.examples),
            "module": self.module,
        }

    def effect_null_for(self, params: dict[str, Any] | None) -> float | None:
        """The no-effect value of the effect these (validated) params give."""
        if self.effect_null_by is not None:
            return self.effect_null_by(dict(params or {}))
        return self.effect_null

    def validate_params(self, params: dict[str, Any] | None) -> ProbeParams:
        """Validate raw params, raising a GeoscreenError that names the field and closest names."""
        from pydantic import ValidationError

        params = dict(params or {})
        known = list(self.params.model_fields)
        for key in params:
            if key not in known:
                raise GeoscreenError(
                    f"unknown parameter {key!r} for probe {self.name!r}; "
                    f"{did_you_mean(key, known)}",
                    field=f"params.{key}")
        if problem := self.params.bool_problem(params):
            raise GeoscreenError(f"{problem[1]} (probe {self.name!r})",
                                 field=f"params.{problem[0]}")
        try:
            return self.params.model_validate(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise GeoscreenError(f"{err['msg']} (probe {self.name!r})",
                                 field=f"params.{loc}" if loc else "params") from None


_REGISTRY: dict[str, ProbeInfo] = {}
_LOADED = False


def probe(
    name: str,
    *,
    family: str,
    params: type[ProbeParams],
    nulls: tuple[str, ...] | list[str],
    version: str,
    statistic: str,
    effect: str,
    description: str = "",
    examples: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    alternatives: tuple[str, ...] = ("greater", "less", "two-sided"),
    effect_null: float | None = 0.0,
    whole_stack: bool = False,
    effect_null_by: Callable[[dict[str, Any]], float | None] | None = None,
    imports: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx, params, layer) -> LayerResult`` as probe `name`.

    The registered function fills each result's `layer`, `layer_index`, `seed` (when the probe
    left it unset) and `runtime_s`; a probe reports its statistics only.

    `examples` are ready-to-run spec fragments (`params`, `statement`, optional `across_layers`,
    `alternative`, `layers`) that the offline brainstormer starts from.

    `imports` names the slow-to-import third-party modules the probe imports inside its
    function (ripser, igraph); a persistent warden imports them once, before it forks the
    probe's first worker, so that every layer task does not import them again.
    """
    if isinstance(imports, str) or not all(isinstance(m, str) and m for m in imports):
        raise TypeError(f"probe {name!r}: imports must be a tuple of module names")
    if family not in FAMILIES:
        raise ValueError(f"probe {name!r}: unknown family {family!r}; "
                         f"{did_you_mean(family, FAMILIES)}")
    if not issubclass(params, ProbeParams):
        raise TypeError(f"probe {name!r}: params must subclass ProbeParams")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = description or " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())

        @functools.wraps(fn)
        def run_layer(ctx: Any, p: Any, layer: str) -> Any:
            """The probe on one layer, with the per-layer bookkeeping every result needs: the
            layer's name and depth, its seed (unless the probe set one) and the run time."""
            t0 = time.perf_counter()
            res = fn(ctx, p, layer)
            res.layer = layer
            res.layer_index = ctx.cache.layer_index(layer)
            if res.seed is None:
                res.seed = ctx.layer_seed(layer)
            res.runtime_s = time.perf_counter() - t0
            return res

        info = ProbeInfo(name=name, family=family, params=params, nulls=tuple(nulls),
                         version=version, statistic=statistic, effect=effect, description=doc,
                         fn=run_layer, examples=tuple(examples),
                         alternatives=tuple(alternatives), module=fn.__module__,
                         effect_null=effect_null, whole_stack=whole_stack,
                         effect_null_by=effect_null_by, imports=tuple(imports))
        existing = _REGISTRY.get(name)
        if existing is not None and existing.module != info.module:
            raise ValueError(f"probe {name!r} is registered twice "
                             f"({existing.module}, {info.module})")
        _REGISTRY[name] = info
        run_layer.probe_info = info  # type: ignore[attr-defined]
        return run_layer

    return deco


# The built-in catalogue: each probe's module, so that validating or running one spec imports
# only the module it needs (tests/test_probe_registry.py checks this map against the modules).
BUILTIN_PROBES: dict[str, str] = {
    "axis_separation": "geoscreen.probes.separation",
    "role_separation": "geoscreen.probes.separation",
    "role_projection": "geoscreen.probes.separation",
    "role_margins": "geoscreen.probes.role_margins",
    "pole_enrichment": "geoscreen.probes.enrichment",
    "pair_proximity": "geoscreen.probes.proximity",
    "co_pole": "geoscreen.probes.proximity",
    "graded_proximity": "geoscreen.probes.proximity",
    "pair_retrieval": "geoscreen.probes.retrieval",
    "pair_regression": "geoscreen.probes.pair_regression",
    "annotation_similarity": "geoscreen.probes.shared_annotation",
    "spectrum": "geoscreen.probes.spectrum",
    "intrinsic_dimension": "geoscreen.probes.dimension",
    "edge_specificity": "geoscreen.probes.regulation",
    "edge_direction": "geoscreen.probes.direction",
    "regulatory_motifs": "geoscreen.probes.motifs",
    "knn_homophily": "geoscreen.probes.graph",
    "knn_graph": "geoscreen.probes.graph",
    "knn_communities": "geoscreen.probes.graph",
    "community_concentration": "geoscreen.probes.concentration",
    "sign_contrast": "geoscreen.probes.regulation",
    "anchor_convergence": "geoscreen.probes.convergence",
    "centroid_convergence": "geoscreen.probes.convergence",
    "set_centroids": "geoscreen.probes.centroids",
    "set_cohesion": "geoscreen.probes.cohesion",
    "gene_score_association": "geoscreen.probes.association",
    "gene_drift": "geoscreen.probes.drift",
    "centroid_drift": "geoscreen.probes.centroid_drift",
    "axis_pole_overlap": "geoscreen.probes.pole_overlap",
    "layer_similarity": "geoscreen.probes.layers",
    "layer_transport": "geoscreen.probes.transport",
    "layer_profile": "geoscreen.probes.profile",
    "subspace_alignment": "geoscreen.probes.subspaces",
    "network_spectrum_alignment": "geoscreen.probes.network_spectrum",
    "persistent_homology": "geoscreen.probes.homology",
    "cross_model_alignment": "geoscreen.probes.alignment",
    "null_robustness": "geoscreen.probes.robustness",
    "feature_annotation": "geoscreen.probes.atlas_annotation",
    "feature_network_coherence": "geoscreen.probes.atlas_annotation",
    "superposition": "geoscreen.probes.atlas_annotation",
    "coactivation_modules": "geoscreen.probes.atlas_coactivation",
    "cross_layer_highways": "geoscreen.probes.atlas_coactivation",
    "perturbation_specificity": "geoscreen.probes.atlas_perturbation",
}
BUILTIN_MODULES: tuple[str, ...] = tuple(dict.fromkeys(BUILTIN_PROBES.values()))


def _load() -> None:
    """Import the whole catalogue and every plug-in (``geoscreen.probes`` entry points)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for ep in entry_points(group="geoscreen.probes"):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the tool down
            import warnings

            warnings.warn(f"probe plug-in {ep.name!r} failed to load: {exc}", stacklevel=2)


def get_probe(name: str) -> ProbeInfo:
    """The registered probe `name`; a built-in one is loaded alone, by name.

    Raises
    ------
    GeoscreenError
        No such probe (the message lists the closest names).
    """
    if name not in _REGISTRY and name in BUILTIN_PROBES:
        importlib.import_module(BUILTIN_PROBES[name])
    if name not in _REGISTRY:
        _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GeoscreenError(f"unknown probe {name!r}; {did_you_mean(name, list(_REGISTRY))}",
                             field="probe", fix="see 'geoscreen probes list'") from None


def list_probes() -> list[ProbeInfo]:
    _load()
    return sorted(_REGISTRY.values(), key=lambda p: (p.family, p.name))
