"""A method: a named preset, the engine it runs on and the default of every parameter it reads (its parts, and for
diffusion methods its driver, are parameters too); and the registry of methods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .. import engines as _engines  # noqa: F401 - the engines register their parameters on import
from ..core import params as P
from ..core.errors import ParameterError
from ..core.loop import GradientFusion, LossTerm, Schedule, Supervision, Tracker
from ..parts import SCHEDULES, SUPERVISIONS, build_fusion, build_tracker

# `mask` is read by the interfaces (a path is loaded before the engine runs); registered so it is listed and set
# the same way as every other name.
P.register(
    P.Param(
        "mask",
        str,
        "none",
        "editable region: a path to a mask image (white = may change), none, or auto (needs AdaptiveDrag's part)",
        "interface",
        group="mask",
        common=True,
    )
)


@dataclass(frozen=True)
class Method:
    """A named preset: which engine, which parts, every default; ``citation`` goes into docs and results.

    ``variants`` holds what the preset changes on one family of models (``"stylegan2"``: the parts DragGAN's own
    code uses on its StyleGAN generators), applied over the model's own defaults (its geometry, which the engine
    gives: feature block, radii scaled to its resolution)."""

    name: str
    engine: Literal["gan", "diffusion", "identity"]
    summary: str
    citation: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resolve(
        self,
        overrides: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        family: str | None = None,
    ) -> dict[str, Any]:
        """Full parameter set: the registry defaults, then this preset's, then the model's (``model``: what the
        engine's model sets, e.g. a StyleGAN generator's feature block and radii), then this preset's variant for
        the model's ``family``, then the overrides (all validated)."""
        engine_params = {k: p.default for k, p in P.REGISTRY.items() if p.read_on(self.engine)}
        base = {**engine_params, **self.defaults, **(model or {}), **self.variants.get(family or "", {})}
        for k in overrides or {}:
            if not P.lookup(k).read_on(self.engine):
                engine = P.lookup(k).owner.split(":")[1]
                raise ParameterError(f"{k} is a {engine} engine parameter; method {self.name!r} runs on {self.engine}")
        return P.resolve(base, overrides or {})


METHODS: dict[str, Method] = {}


def add_method(m: Method) -> Method:
    unknown = [k for k in [*m.defaults, *(k for v in m.variants.values() for k in v)] if k not in P.REGISTRY]
    if unknown:
        raise RuntimeError(f"method {m.name!r} sets unregistered parameters {unknown}")
    METHODS[m.name] = m
    return m


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        hint = P.did_you_mean(name, METHODS)
        raise ParameterError(f"unknown method {name!r}{hint}; available: {', '.join(sorted(METHODS))}") from None


@dataclass
class LoopParts:
    tracker: Tracker
    supervision: Supervision
    schedule: Schedule
    terms: list[LossTerm]
    fusion: GradientFusion | None = None


def build_parts(params: Mapping[str, Any], terms: list[LossTerm] | None = None) -> LoopParts:
    """Instantiate the parts a resolved parameter set names."""
    return LoopParts(
        tracker=build_tracker(params),
        supervision=SUPERVISIONS[params["supervision"]].from_params(params),
        schedule=SCHEDULES[params["schedule"]].from_params(params),
        terms=list(terms or []),
        fusion=build_fusion(params),
    )


def adam(lr: float):
    """The optimizer every preset uses: Adam on the latent."""
    return lambda p: torch.optim.Adam(p, lr=lr)
