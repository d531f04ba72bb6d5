"""Stable parameter names: one registry read by presets, the CLI (``--set``), the Python API and the JSON.

Each part declares the parameters it reads as :class:`Param` entries; ``dragkit edit --help-params`` prints
them all. Values given as text (the CLI) are parsed by the same entries that validate Python values, so a bad
value gets the same one-line error from every interface.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import ParameterError


@dataclass(frozen=True)
class Param:
    """One named parameter: its type, default, meaning and valid range.

    ``default`` is the value used when no method preset sets it; presets override it. ``owner`` names the part
    or layer that reads it (``engine:NAME`` when only that engine reads it). ``group`` is the heading it is listed
    under in ``--help-params`` (the owner when empty); ``common`` marks the few a user commonly changes.
    """

    name: str
    kind: type  # int, float, str or bool
    default: Any
    help: str
    owner: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    group: str = ""
    common: bool = False

    def read_on(self, engine: str) -> bool:
        """Whether a method on ``engine`` reads this parameter (an ``engine:NAME`` owner restricts it to that one)."""
        return not self.owner.startswith("engine:") or self.owner == f"engine:{engine}"

    @property
    def section(self) -> str:
        """The heading in ``--help-params``: the group, else the owner without its engine prefix."""
        return self.group or self.owner.removeprefix("engine:")

    def parse(self, text: str) -> Any:
        """Parse a CLI string into a validated value."""
        t = text.strip()
        if self.kind is bool:
            low = t.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ParameterError(f"{self.name}={text!r}: expected true or false")
        if self.kind is int:
            try:
                value: Any = int(t)
            except ValueError:
                raise ParameterError(f"{self.name}={text!r}: expected an integer") from None
        elif self.kind is float:
            try:
                value = float(t)
            except ValueError:
                raise ParameterError(f"{self.name}={text!r}: expected a number") from None
        else:
            value = t
        return self.validate(value)

    def validate(self, value: Any) -> Any:
        """Check a Python value (ints are accepted for float parameters) and return it normalized."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ParameterError(f"{self.name}={value!r}: expected true or false")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ParameterError(f"{self.name}={value!r}: expected an integer")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(f"{self.name}={value!r}: expected a number")
            value = float(value)
            if not math.isfinite(value):
                raise ParameterError(f"{self.name}={value!r}: must be a finite number")
        elif not isinstance(value, str):
            raise ParameterError(f"{self.name}={value!r}: expected text")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"{self.name}={value!r}: choose one of {', '.join(self.choices)}")
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            op = ">" if self.min_exclusive else "≥"
            raise ParameterError(f"{self.name}={value!r}: must be {op} {self.min:g}")
        if self.max is not None and value > self.max:
            raise ParameterError(f"{self.name}={value!r}: must be ≤ {self.max:g}")
        return value


REGISTRY: dict[str, Param] = {}

# Upper bounds of the parameters that size work or memory (step counts, radii, widths, batch sizes), kept in one
# place: an absurd value (r_p=1000000000) is refused with a one-line error instead of exhausting the machine. A
# parameter declared with its own ``max`` keeps it. Every integer parameter is bounded (a test checks it).
BOUNDS: dict[str, float] = {
    "drag_steps": 10_000,
    "adaptive_step_cap": 10_000,
    "auto_mask_segments": 10_000,
    "auto_mask_dilate": 256,
    "closs_radius": 256,
    "closs_steps": 1_000,
    "discriminator_steps": 10_000,
    "feature_block": 16,
    "guide_radius": 256,
    "guide_steps": 1_000,
    "invert_restarts": 256,
    "invert_steps": 100_000,
    "latent_block": 64,
    "lora_batch": 64,
    "lora_rank": 1_024,
    "lora_steps": 100_000,
    "mutual_attn_start_layer": 1_000,
    "pti_steps": 100_000,
    "r_m": 256,
    "r_p": 256,
    "repair_band": 64,
    "resize_width": 4_096,
    "track_learn_steps": 10_000,
    "track_train_radius": 256,
    "w_layers": 64,
}


def register(*params: Param) -> None:
    """Add parameters to the registry (a name may be registered once; re-registering the same entry is a no-op).
    A parameter in :data:`BOUNDS` without a ``max`` of its own gets that bound."""
    for p in params:
        if p.max is None and p.name in BOUNDS:
            p = replace(p, max=BOUNDS[p.name])
        old = REGISTRY.get(p.name)
        if old is not None and old != p:
            raise RuntimeError(f"parameter {p.name!r} registered twice with different definitions")
        REGISTRY[p.name] = p


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean a, b?)`` for the close matches of a mistyped name, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def lookup(name: str) -> Param:
    try:
        return REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, REGISTRY)
        raise ParameterError(
            f"unknown parameter {name!r}{hint}; `dragkit edit --help-params` lists them all"
        ) from None


def default(name: str) -> Any:
    """The registered default of ``name``. A part's dataclass field defaults to it, so the value has one home."""
    return lookup(name).default


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse one ``NAME=VALUE`` string from ``--set``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ParameterError(f"--set {text!r}: expected NAME=VALUE, for example r_p=6")
    return name, lookup(name).parse(value)


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME`` or ``NAME:k=v,k=v`` (a method with its own overrides, as ``--method`` takes it in the
    benchmarks that compare methods); every value is checked, the method name is not (the methods layer does)."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise ParameterError(f"--method {spec!r}: expected NAME or NAME:k=v,k=v, for example gooddrag:drag_steps=3")
    return name.strip(), dict(parse_assignment(s) for s in rest.split(",") if s)


def resolve(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> dict:
    """Merge a preset's defaults with user overrides; every name is checked, every value validated."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    out = {k: lookup(k).validate(v) for k, v in defaults.items()}
    for k, v in items:
        p = lookup(k)
        out[k] = p.parse(v) if isinstance(v, str) and p.kind is not str else p.validate(v)
    return out


# Parameters of the loop itself (parts register their own next to their code).
register(
    Param(
        "drag_steps",
        int,
        80,
        "maximum latent-optimization steps (n_pix_step in the peers' code)",
        "loop",
        min=0,
        common=True,
    ),
    Param(
        "latent_lr", float, 0.01, "Adam learning rate on the latent", "loop", min=0, min_exclusive=True, common=True
    ),
    Param(
        "stop_distance",
        float,
        2.0,
        "a handle closer than this to its target (supervision-grid pixels) has arrived; the loop stops when all have",
        "loop",
        min=0,
        common=True,
    ),
)
