"""What the commands share: the ``--drag`` syntax, the device and dtype choices, the ``--help-params`` table."""

from __future__ import annotations

import re

import typer

from ...core.errors import InputError, ParameterError

_NUM = r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
_DRAG = re.compile(rf"^{_NUM},{_NUM}:{_NUM},{_NUM}$")


def parse_drag(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"X1,Y1:X2,Y2"`` → ((x1, y1), (x2, y2)) in image pixels."""
    m = _DRAG.match(text)
    if not m:
        raise InputError(f"--drag {text!r}: expected X1,Y1:X2,Y2 (handle x,y then target x,y), e.g. 40,44:46,44")
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    return (x1, y1), (x2, y2)


# The order --help-params lists the parts in: the loop and its parts first, engine internals last.
_SECTIONS = (
    "loop", "supervision", "tracker", "schedule", "terms", "mask", "warp", "composite", "features", "inversion",
    "latent", "sampling", "inpaint", "lora", "guided sampling", "closs", "clip guidance", "fusion", "speed and memory",
)  # fmt: skip


def params_table(method: str | None = None, width: int | None = None) -> str:
    """Every parameter grouped by the part that reads it, ``*`` before the ones a user commonly changes, each with
    its meaning and default: the registry's and every preset that sets another (``method``: that method's only,
    and only its engine's parameters). Wrapped to ``width`` (the terminal's; 100 when not a terminal)."""
    import shutil
    import textwrap

    from ...core import params as P
    from ...methods import METHODS, get_method

    width = max(60, min(width or shutil.get_terminal_size((100, 24)).columns, 120))
    chosen = get_method(method) if method else None
    left = 2 + max(len(n) for n in P.REGISTRY) + 2
    wrap = textwrap.TextWrapper(width=width, subsequent_indent=" " * left)

    order = {name: i for i, name in enumerate(_SECTIONS)}
    params = [p for p in P.REGISTRY.values() if chosen is None or p.read_on(chosen.engine)]
    params.sort(key=lambda p: (order.get(p.section, len(order)), p.section, not p.common, p.name))
    lines = ["Parameters: --set NAME=VALUE, the same names in Python and OUT.json. * = commonly changed."]
    if chosen is None:
        lines.append("Each: its meaning, its default and the presets that set another (--method NAME: one method's).")
    else:
        lines.append(f"The values {chosen.name} ({chosen.engine}) uses, its engine's parameters only.")
    lines = [line for text in lines for line in textwrap.wrap(text, width)]
    section = None
    for p in params:
        if p.section != section:
            section = p.section
            owners = {q.owner for q in params if q.section == section}
            only = owners.pop() if len(owners) == 1 else ""
            engine_only = chosen is None and only.startswith("engine:")
            lines += ["", section + (f" ({only.removeprefix('engine:')} engine only)" if engine_only else "")]
        meaning = p.help + (f" [{'|'.join(p.choices)}]" if p.choices else "")
        if chosen is not None:
            values = f"{chosen.name}: {chosen.defaults.get(p.name, p.default)}"
        else:
            others = [
                f"{m.name} {m.defaults[p.name]}"
                for m in METHODS.values()
                if p.name in m.defaults and m.defaults[p.name] != p.default and p.read_on(m.engine)
            ]
            values = f"default {p.default}" + ("; " + ", ".join(others) if others else "")
        head = f"{'*' if p.common else ' '} {p.name}".ljust(left)
        lines += wrap.wrap(head + meaning)
        lines += wrap.wrap(" " * left + values)
    return "\n".join(lines)


def _help_params(method: str | None) -> None:
    typer.echo(params_table(method))
    raise typer.Exit()


def _select_device(name: str) -> str:
    import torch

    if name == "cpu":
        return name
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device cuda: torch sees no CUDA device here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError("--device mps: torch sees no Apple MPS device here")
    if name not in ("cuda", "mps"):
        raise ParameterError(f"--device {name!r}: choose cpu, cuda or mps")
    return name


def _select_dtype(name: str, device: str):
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if name not in table:
        raise ParameterError(f"--dtype {name!r}: choose auto, float32, float16 or bfloat16")
    if name == "bfloat16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ParameterError("--dtype bfloat16: this CUDA device does not support it")
    return table[name]
